import Foundation
public import MaaSCore
import MaaSProto

/// Writes new model versions into a repository directory, the layout ``ModelRepository`` reads.
///
/// A version appears all at once: its files go into a hidden directory that is renamed to the
/// version number at the end, so a server polling the repository never sees half a model.
public struct RepositoryDeployment: Sendable {
    public let repository: String
    public let model: String

    public init(repository: String, model: String) throws(InferenceError) {
        guard !model.isEmpty, !model.hasPrefix("."), !model.contains("/") else {
            throw .invalidInput("model name '\(model)' must be a plain directory name (no '/', not starting with '.')")
        }
        self.repository = repository
        self.model = model
    }

    var directory: String { repository + "/" + model }

    /// Refuses, before any work is done, a graph that the model's existing config.json would
    /// not serve: other input/output names, types or dims.
    public func check(_ graph: ModelGraph) throws(InferenceError) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: repository, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw .invalidInput("repository \(repository) is not a directory")
        }
        guard let declared = try existingConfig() else { return }
        try ModelRepository.check(declared, against: graph, model: model)
        let config = ModelConfig.derived(name: model, graph: graph, declared: declared)
        for (kind, declaredTensors, infos) in [("input", declared.inputs, graph.inputs), ("output", declared.outputs, graph.outputs)] {
            for tensor in declaredTensors {
                guard let info = infos.first(where: { $0.name == tensor.name }) else {
                    throw .invalidModel("\(directory)/config.json names \(kind) '\(tensor.name)', which the new model does not have (it has \(infos.map(\.name)))")
                }
                let dims = info.shape.dropFirst(config.maxBatchSize > 0 ? 1 : 0).map { dimension -> Int64 in
                    if case .fixed(let value) = dimension { return Int64(value) }
                    return -1
                }
                guard dims == tensor.dims else {
                    throw .invalidModel("\(directory)/config.json declares \(kind) '\(tensor.name)' with dims \(tensor.dims), the new model has \(dims)")
                }
            }
        }
    }

    /// Writes `files` (at least `model.onnx`) as the next version and, when the model has none
    /// yet, a config.json for it. Returns the version number and its directory.
    public func deploy(_ graph: ModelGraph, files: [String: [UInt8]]) throws(InferenceError) -> (version: Int64, path: String) {
        try check(graph)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            if try existingConfig() == nil {
                try write(Self.configJSON(for: graph, model: model), to: directory + "/config.json")
            }
            let staging = "\(directory)/.staging-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false)
            for (name, bytes) in files { try write(bytes, to: staging + "/" + name) }
            // Another writer may take the same number first; rename then fails and we try the next.
            for _ in 0..<100 {
                let version = nextVersion()
                let target = "\(directory)/\(version)"
                if rename(staging, target) == 0 { return (version, target) }
                guard errno == EEXIST || errno == ENOTEMPTY else {
                    throw InferenceError(.internal, "cannot rename \(staging) to \(target): \(String(cString: strerror(errno)))")
                }
            }
            throw InferenceError(.internal, "could not find a free version number in \(directory)")
        } catch let error as InferenceError {
            throw error
        } catch {
            throw InferenceError(.internal, "cannot write into \(directory): \(error.localizedDescription)")
        }
    }

    private func existingConfig() throws(InferenceError) -> ModelConfig? {
        guard let bytes = FileManager.default.contents(atPath: directory + "/config.json") else { return nil }
        return try ModelConfig.parse(json: Array(bytes), modelName: model)
    }

    private func nextVersion() -> Int64 {
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).compactMap { Int64($0) }
        return (versions.max() ?? 0) + 1
    }

    private func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// The config.json for a newly trained model: what the server would derive from the graph
    /// (batching up to 64 rows, 100 µs queue delay), written out so that users can edit it.
    static func configJSON(for graph: ModelGraph, model: String) -> [UInt8] {
        func tensors(_ infos: [ValueInfo]) -> [[String: Any]] {
            infos.map { info in
                let dims = info.shape.dropFirst().map { dimension -> Int in
                    if case .fixed(let value) = dimension { return value }
                    return -1
                }
                return ["name": info.name, "data_type": info.dataType.modelConfigName, "dims": dims]
            }
        }
        let config: [String: Any] = [
            "name": model,
            "max_batch_size": 64,
            "input": tensors(graph.inputs),
            "output": tensors(graph.outputs),
            "dynamic_batching": ["max_queue_delay_microseconds": 100],
            "version_policy": ["latest": ["num_versions": 1]],
        ]
        // Only strings, numbers, arrays and dictionaries: serialization cannot fail.
        let data = try! JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        return Array(data) + [0x0A]
    }
}
