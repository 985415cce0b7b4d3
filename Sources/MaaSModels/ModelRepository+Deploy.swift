import FoundationEssentials
import Glibc
internal import MaaSJSON
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
        guard !repository.isEmpty else { throw .invalidInput("the repository path is empty") }
        guard !model.isEmpty, !model.hasPrefix("."), !model.contains("/") else {
            throw .invalidInput("model name '\(model)' must be a plain directory name (no '/', not starting with '.')")
        }
        self.repository = repository
        self.model = model
    }

    var directory: String { repository + "/" + model }

    /// Refuses, before any work is done, a graph that the model's existing config.json would
    /// not serve: other input/output names, types or dims, or a version_policy that names
    /// specific versions (the new number would not be among them).
    public func check(_ graph: ModelGraph) throws(InferenceError) {
        var isDirectory = false
        if FileManager.default.fileExists(atPath: repository, isDirectory: &isDirectory), !isDirectory {
            throw .invalidInput("repository \(repository) is not a directory")
        }
        guard let declared = try existingConfig() else { return }
        if case .specific(let versions) = declared.versionPolicy {
            throw .invalidModel("\(directory)/config.json serves only versions \(versions) (version_policy specific); a new version would not be loaded")
        }
        try ModelRepository.check(declared, against: graph, model: model)
    }

    /// Writes the model (under the config's `default_model_filename`, `model.onnx` unless set)
    /// and `files` as the next version and, when the model has no config.json yet, one for it.
    /// Returns the version number and the model file's path.
    public func deploy(_ graph: ModelGraph, modelBytes: [UInt8], files: [String: [UInt8]] = [:]) throws(InferenceError) -> (version: Int64, path: String) {
        try check(graph)
        var staging: String?
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let declared = try existingConfig()
            if declared == nil {
                try write(Self.configJSON(for: graph, model: model), to: directory + "/config.json")
            }
            let filename = declared?.defaultModelFilename ?? "model.onnx"
            let stage = "\(directory)/.staging-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
            staging = stage
            try FileManager.default.createDirectory(atPath: stage, withIntermediateDirectories: false)
            try write(modelBytes, to: stage + "/" + filename)
            for (name, bytes) in files { try write(bytes, to: stage + "/" + name) }
            // Another writer may take the same number first; then we try the next one.
            for _ in 0..<100 {
                let version = nextVersion()
                let target = "\(directory)/\(version)"
                if renameWithoutReplacing(stage, target) {
                    staging = nil
                    return (version, target + "/" + filename)
                }
                guard errno == EEXIST || errno == ENOTEMPTY else {
                    throw InferenceError(.internal, "cannot rename \(stage) to \(target): \(String(cString: strerror(errno)))")
                }
            }
            throw InferenceError(.internal, "could not find a free version number in \(directory)")
        } catch let error as InferenceError {
            if let staging { try? FileManager.default.removeItem(atPath: staging) }
            throw error
        } catch {
            if let staging { try? FileManager.default.removeItem(atPath: staging) }
            throw InferenceError(.internal, "cannot write into \(directory): \(error)")
        }
    }

    /// Claims `target` with mkdir (atomic: it fails if the number is taken, even by a directory
    /// someone is filling by hand), then renames the staged version over the claimed, still
    /// empty directory. A version directory without its model file is ignored by the loader,
    /// so the claim is never served half-made.
    private func renameWithoutReplacing(_ source: String, _ target: String) -> Bool {
        guard mkdir(target, 0o755) == 0 else { return false }
        if rename(source, target) == 0 { return true }
        let error = errno
        rmdir(target)
        errno = error
        return false
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
        var json = JSONWriter(indent: 2)
        func tensors(_ infos: [ValueInfo]) {
            json.beginArray()
            for info in infos {
                json.beginObject()
                json.key("data_type")
                json.string(info.dataType.modelConfigName)
                json.key("dims")
                json.beginArray()
                for dimension in info.shape.dropFirst() {
                    if case .fixed(let value) = dimension { json.int(value) } else { json.int(-1) }
                }
                json.endArray()
                json.key("name")
                json.string(info.name)
                json.endObject()
            }
            json.endArray()
        }
        // Keys in sorted order, as the file has always been written.
        json.beginObject()
        json.key("dynamic_batching")
        json.beginObject()
        json.key("max_queue_delay_microseconds")
        json.int(100)
        json.endObject()
        json.key("input")
        tensors(graph.inputs)
        json.key("max_batch_size")
        json.int(64)
        json.key("name")
        json.string(model)
        json.key("output")
        tensors(graph.outputs)
        json.key("version_policy")
        json.beginObject()
        json.key("latest")
        json.beginObject()
        json.key("num_versions")
        json.int(1)
        json.endObject()
        json.endObject()
        json.endObject()
        return json.bytes + [0x0A]
    }
}
