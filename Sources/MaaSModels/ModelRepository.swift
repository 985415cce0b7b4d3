public import CoreMetrics
import Dispatch
import FoundationEssentials
import Glibc
import MaaSText
public import Logging
public import MaaSCompute
public import MaaSCore
import MaaSProto
import Synchronization

/// A model repository on disk, laid out as Triton and TF Serving users know it:
/// `REPO/NAME/config.json` (optional) and `REPO/NAME/VERSION/model.onnx` (+ external data).
///
/// Loading is all-or-nothing per version; a model that fails keeps its reason for ModelReady and
/// RepositoryIndex, and other models load regardless. Loads and unloads of one model take turns
/// (as in Triton's `model_lifecycle.h`): a reload keeps the old versions serving until the new
/// ones are compiled and warm, then lets the old ones finish their queued requests.
public final class ModelRepository: Sendable {
    public enum State: String, Sendable {
        case ready = "READY"
        case unavailable = "UNAVAILABLE"
        case loading = "LOADING"
        case unloading = "UNLOADING"
    }

    /// What RepositoryIndex reports for one model version (or for a model with no usable version).
    public struct Entry: Sendable, Hashable {
        public var name: String
        public var version: String
        public var state: State
        public var reason: String
    }

    public let path: String?
    let pool: ComputePool
    private let logger: Logger?
    let clock: any BatchingClock
    /// Where each loaded version's metrics are made.
    let metrics: any MetricsFactory
    private let lifecycles = Mutex<[String: ModelLifecycle]>([:])
    private let builtIn: [String: (ModelGraph, ModelConfig?)]
    /// Compiling reads files and keeps a core busy: it runs here, not on Swift's few
    /// cooperative threads, which serve the event loops' async work.
    private static let loaders = DispatchQueue(label: "maas.repository.load", attributes: .concurrent)

    /// - Parameters:
    ///   - path: the repository directory, or nil for only the built-in models.
    ///   - builtIn: models that exist without files (the default seed model).
    ///   - clock: the batchers' clock (tests move it by hand).
    ///   - logger: where each compiled model reports its plans' kernel choices (debug level).
    ///   - metrics: the metrics backend for the versions' `nv_inference_*` metrics (the one the
    ///     executable bootstrapped, by default).
    public init(
        path: String?, builtIn: [String: (ModelGraph, ModelConfig?)] = [:], pool: ComputePool = .shared,
        clock: any BatchingClock = .system, logger: Logger? = nil, metrics: any MetricsFactory = MetricsSystem.factory
    ) {
        self.metrics = metrics
        self.logger = logger
        self.path = path
        self.builtIn = builtIn
        self.pool = pool
        self.clock = clock
    }

    /// Model names present in the repository (directories, plus built-in models).
    public func modelNames() -> [String] {
        var names = Set(builtIn.keys)
        if let path, let entries = try? FileManager.default.contentsOfDirectory(atPath: path) {
            for entry in entries where !entry.hasPrefix(".") && isDirectory(path + "/" + entry) { names.insert(entry) }
        }
        return names.sorted()
    }

    /// Loads (or reloads) every model in the repository; stops early when the task is cancelled.
    public func loadAll() async {
        for name in modelNames() where !Task.isCancelled { _ = try? await load(name) }
    }

    /// Loads the versions of `name` its version policy selects, after any load or unload of
    /// `name` already under way. The old versions serve until the new ones are compiled and
    /// warmed up, then finish their queued work before this returns. If the load fails, the
    /// model is unavailable with the reason.
    @discardableResult
    public func load(_ name: String) async throws(InferenceError) -> [ModelVersion] {
        await beginOperation(name)
        defer { endOperation(name) }
        lifecycles.withLock { $0[name]!.state = .loading }
        let result = await withCheckedContinuation { (done: CheckedContinuation<Result<[ModelVersion], InferenceError>, Never>) in
            Self.loaders.async {
                done.resume(returning: Result { () throws(InferenceError) in try self.loadVersions(name) })
            }
        }
        let replaced = lifecycles.withLock { table in
            let old = Array(table[name]!.versions.values)
            switch result {
            case .success(let loaded):
                table[name]!.versions = Dictionary(uniqueKeysWithValues: loaded.map { ($0.version, $0) })
                table[name]!.state = .ready
                table[name]!.failure = nil
            case .failure(let error):
                table[name]!.versions = [:]
                table[name]!.state = .unavailable
                table[name]!.failure = error.message
            }
            return old
        }
        await Self.drain(replaced)
        return try result.get()
    }

    /// Stops serving `name`: it shows UNLOADING until its queued requests are answered, then
    /// is gone (NOT_FOUND) until loaded again.
    public func unload(_ name: String) async {
        await beginOperation(name)
        defer { endOperation(name) }
        let versions = lifecycles.withLock { table in
            table[name]!.state = .unloading
            table[name]!.failure = nil
            return Array(table[name]!.versions.values)
        }
        await Self.drain(versions)
        lifecycles.withLock { table in
            table[name]!.versions = [:]
            table[name]!.state = .unavailable
        }
    }

    /// Unloads every model, for shutdown: queued requests are answered first.
    public func unloadAll() async {
        let names = lifecycles.withLock { Array($0.keys) }
        await withTaskGroup(of: Void.self) { group in
            for name in names { group.addTask { await self.unload(name) } }
        }
    }

    /// The version a request names ("" = the newest ready one).
    public func version(_ name: String, _ version: String) throws(InferenceError) -> ModelVersion {
        let (versions, reason) = lifecycles.withLock { ($0[name]?.serving ?? [:], $0[name]?.unavailableReason) }
        guard let newest = versions.keys.max() else {
            if let reason { throw InferenceError(.unavailable, "model '\(name)' is not ready: \(reason)") }
            throw InferenceError(.notFound, "unknown model '\(name)'")
        }
        if version.isEmpty { return versions[newest]! }
        guard let number = Int64(version), let match = versions[number] else {
            throw InferenceError(.notFound, "model '\(name)' has no ready version '\(version)' (ready: \(versions.keys.sorted().map(String.init).joined(separator: ", ")))")
        }
        return match
    }

    /// Every model's versions and state from one view of the table, for RepositoryIndex.
    public func index() -> [Entry] {
        let known = lifecycles.withLock { table in
            Dictionary(uniqueKeysWithValues: table.map { ($0.key, $0.value.entries(name: $0.key)) })
        }
        var entries: [Entry] = []
        for name in Set(modelNames()).union(known.keys).sorted() {
            entries += known[name] ?? [Entry(name: name, version: "", state: .unavailable, reason: "unloaded")]
        }
        return entries
    }

    /// Every version that takes requests now.
    public func loadedVersions() -> [ModelVersion] {
        lifecycles.withLock { $0.values.flatMap { $0.serving.values } }.sorted { ($0.name, $0.version) < ($1.name, $1.version) }
    }

    // MARK: Turns

    /// Waits until no other load or unload of `name` is under way, then claims the turn.
    private func beginOperation(_ name: String) async {
        await withCheckedContinuation { (turn: CheckedContinuation<Void, Never>) in
            let now = lifecycles.withLock { table in
                if table[name]?.busy == true {
                    table[name]!.waiters.append(turn)
                    return false
                }
                table[name, default: ModelLifecycle()].busy = true
                return true
            }
            if now { turn.resume() }
        }
    }

    /// Hands the turn to the next waiter in arrival order; forgets a model that is unloaded
    /// and unclaimed, so that it reads as unknown again.
    private func endOperation(_ name: String) {
        let next: CheckedContinuation<Void, Never>? = lifecycles.withLock { table in
            guard table[name]!.waiters.isEmpty else { return table[name]!.waiters.removeFirst() }
            table[name]!.busy = false
            if table[name]!.state == .unavailable && table[name]!.failure == nil { table[name] = nil }
            return nil
        }
        next?.resume()
    }

    /// Loads and unloads of `name` waiting for their turn (for tests).
    func waitingOperations(_ name: String) -> Int {
        lifecycles.withLock { $0[name]?.waiters.count ?? 0 }
    }

    /// Every batcher stops taking requests at once, then each finishes its queue.
    private static func drain(_ versions: [ModelVersion]) async {
        for version in versions { version.batcher.stop() }
        for version in versions { await version.batcher.drain() }
    }

    // MARK: Loading

    private func loadVersions(_ name: String) throws(InferenceError) -> [ModelVersion] {
        if let (graph, config) = builtIn[name], path.map({ !isDirectory($0 + "/" + name) }) ?? true {
            return [try compile(name: name, version: 1, graph: graph, declared: config)]
        }
        guard let path else { throw InferenceError(.notFound, "unknown model '\(name)'") }
        guard !name.contains("/"), name != "..", isDirectory(path + "/" + name) else {
            throw InferenceError(.notFound, "unknown model '\(name)' (no directory \(path)/\(name))")
        }
        let directory = path + "/" + name
        var declared: ModelConfig?
        if let bytes = FileManager.default.contents(atPath: directory + "/config.json") {
            declared = try ModelConfig.parse(json: Array(bytes), modelName: name)
        }
        let filename = declared?.defaultModelFilename ?? "model.onnx"
        let available = (try? FileManager.default.contentsOfDirectory(atPath: directory))?
            .compactMap { Int64($0) }
            .filter { $0 > 0 && FileManager.default.fileExists(atPath: "\(directory)/\($0)/\(filename)") }
            .sorted() ?? []
        guard !available.isEmpty else {
            throw .invalidModel("model '\(name)' has no version: expected \(directory)/<N>/\(filename)")
        }
        let selected: [Int64]
        switch declared?.versionPolicy ?? .latest(1) {
        case .latest(let count): selected = Array(available.suffix(count))
        case .all: selected = available
        case .specific(let versions):
            selected = available.filter { versions.contains($0) }
            guard !selected.isEmpty else {
                throw .invalidModel("model '\(name)': none of the versions \(versions) in version_policy exists (found \(available))")
            }
        }
        var loaded: [ModelVersion] = []
        for version in selected {
            let graph: ModelGraph
            do {
                graph = try ONNXModel.load(path: "\(directory)/\(version)/\(filename)")
            } catch {
                throw InferenceError(error.code, "model '\(name)' version \(version): \(error.message)")
            }
            loaded.append(try compile(name: name, version: version, graph: graph, declared: declared, folder: "\(directory)/\(version)"))
        }
        return loaded
    }

    private func compile(name: String, version: Int64, graph: ModelGraph, declared: ModelConfig?, folder: String? = nil) throws(InferenceError) -> ModelVersion {
        let compiled: CompiledModel
        do {
            var modelLogger = logger
            modelLogger?[metadataKey: "model"] = "\(name)"
            modelLogger?[metadataKey: "version"] = "\(version)"
            compiled = try CompiledModel(graph: graph, pool: pool, logger: modelLogger)
            if let fused = compiled.fusionSummary { modelLogger?.debug("fused: \(fused)") }
        } catch {
            throw InferenceError(error.code, "model '\(name)' version \(version): \(error.message)")
        }
        let config = ModelConfig.derived(name: name, graph: graph, declared: declared)
        try Self.check(config, against: graph, model: name)
        var text: TextPipeline?
        if let settings = config.textInput {
            let path = "\(folder ?? ".")/\(settings.tokenizer)"
            guard let bytes = FileManager.default.contents(atPath: path) else {
                throw .invalidModel("model '\(name)' version \(version): text_input's tokenizer \(path) cannot be read")
            }
            do {
                text = TextPipeline(settings: settings, tokenizer: try WordPieceTokenizer(json: Array(bytes)), graph: graph)
            } catch {
                throw .invalidModel("model '\(name)' version \(version): \(settings.tokenizer): \(error.message)")
            }
        }
        let loaded = ModelVersion(name: name, version: version, config: config, compiled: compiled, text: text, clock: clock, metrics: metrics)
        try warmUp(loaded)
        // Loading read the file, decoded its protobuf and copied every tensor out of it: those
        // buffers are freed but glibc keeps much of them mapped; give them back (MiniLM: 296 MB
        // peak, 175 MB resident after load without this).
        releaseFreedMemory()
        return loaded
    }

    /// A configuration must agree with the graph it describes.
    static func check(_ config: ModelConfig, against graph: ModelGraph, model: String) throws(InferenceError) {
        try config.checkSequenceFields(against: graph, model: model)
        // A text model's own input (and pooled output) stand in for the graph's.
        let text = config.textInput
        let checked = [
            ("input", text == nil ? config.inputs : [], graph.inputs),
            ("output", text?.pooling == .mean ? [] : config.outputs, graph.outputs),
        ]
        for (kind, declared, infos) in checked {
            for tensor in declared {
                guard let info = infos.first(where: { $0.name == tensor.name }) else {
                    throw .invalidModel("config.json of '\(model)' names \(kind) '\(tensor.name)', which the model does not have (it has \(infos.map(\.name)))")
                }
                guard info.dataType == tensor.dataType else {
                    throw .invalidModel("config.json of '\(model)': \(kind) '\(tensor.name)' is \(tensor.dataType.modelConfigName) in the config but \(info.dataType.modelConfigName) in the model")
                }
                guard !info.shape.isEmpty else { continue }  // the file does not say; the config does
                let dims = info.shape.dropFirst(config.maxBatchSize > 0 ? 1 : 0).map { dimension -> Int64 in
                    if case .fixed(let value) = dimension { return Int64(value) }
                    return -1
                }
                let agrees = dims.count == tensor.dims.count && zip(dims, tensor.dims).allSatisfy { $0 < 0 || $1 < 0 || $0 == $1 }
                guard agrees else {
                    throw .invalidModel(
                        "config.json of '\(model)': \(kind) '\(tensor.name)' has dims \(tensor.dims) but the model's are \(dims)\(config.maxBatchSize > 0 ? " besides the batch dimension" : "")")
                }
            }
        }
        if config.maxBatchSize > 0 {
            for input in graph.inputs {
                if case .fixed(let size) = input.shape.first, size != 1 || config.maxBatchSize > 1 {
                    throw .invalidModel("config.json of '\(model)': max_batch_size \(config.maxBatchSize) but input '\(input.name)' has a fixed first dimension \(size)")
                }
            }
        }
    }

    /// One forward pass before the version takes traffic, so its first request pays no plan cost.
    private func warmUp(_ model: ModelVersion) throws(InferenceError) {
        var shapes: [String: [Int]] = [:]
        if model.text != nil {
            // The graph's token inputs, one text of one token.
            for input in model.compiled.graph.inputs {
                shapes[input.name] = input.shape.map { dimension in
                    if case .fixed(let size) = dimension { return size }
                    return 1
                }
            }
        }
        for input in model.config.inputs where model.text == nil {
            shapes[input.name] = (model.config.maxBatchSize > 0 ? [1] : []) + input.dims.map { $0 < 0 ? 1 : Int($0) }
        }
        let feeds: [String: Tensor]
        do {
            // Shapes come from the model file (or its config): the plan is built, and checked
            // against the plan memory budget, before the zeros are allocated. A 66-byte model
            // declaring a [60000, 60000] input asked for 14.4 GB here (found with the onnx fuzz
            // harness).
            feeds = try model.compiled.zeroInputs(shapes)
            _ = try model.compiled.run(feeds)
        } catch {
            throw InferenceError(error.code, "model '\(model.name)' version \(model.version) failed its warm-up pass: \(error.message)")
        }
        // The batcher will form every batch size up to the maximum; kernel choices are made per
        // power-of-two bucket, so time those now rather than on a request's path. Only an
        // optimization: a size whose plan cannot be built (over the plan memory budget) fails
        // the requests of that size, not the model.
        var size = 2
        while size < Int(model.config.maxBatchSize) * 2 {
            let batch = min(size, Int(model.config.maxBatchSize))
            do {
                try model.compiled.tune(for: [feeds.mapValues { [batch] + $0.shape.dropFirst() }])
            } catch {
                logger?.warning("kernel timing skipped", metadata: [
                    "model": "\(model.name)", "version": "\(model.version)", "batch": "\(batch)", "reason": "\(error.message)",
                ])
                break
            }
            size *= 2
        }
    }

    private func isDirectory(_ path: String) -> Bool {
        var directory = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &directory) && directory
    }
}

extension ModelRepository {
    /// What a model's files look like now (paths, sizes, modification times), so that polling
    /// notices added and removed versions and changed files.
    public func fingerprint(_ name: String) -> [String]? {
        guard let path else { return builtIn[name] != nil ? [] : nil }
        let directory = path + "/" + name
        guard let paths = try? FileManager.default.subpathsOfDirectory(atPath: directory) else { return nil }
        return paths.map { relative in
            var info = stat()
            guard stat(directory + "/" + relative, &info) == 0 else { return "\(relative)|gone" }
            return "\(relative)|\(info.st_size)|\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
        }.sorted()
    }
}
