/// One model's row in the repository's lifecycle table, as Triton's `model_lifecycle.h` keeps
/// it: a state with its reason and the versions behind it, changed together under one lock so
/// that RepositoryIndex, ModelReady and inference never see half of a change.
struct ModelLifecycle {
    var state: ModelRepository.State = .unavailable
    /// Why the last load failed; nil when it did not (or the model was unloaded).
    var failure: String?
    /// Serving while `.ready` or `.loading` (a reload keeps the old versions until the new
    /// ones are warm); finishing their queued work while `.unloading`.
    var versions: [Int64: ModelVersion] = [:]
    /// A load or unload of this model is under way; the next waits for it.
    var busy = false
    var waiters: [CheckedContinuation<Void, Never>] = []

    /// The versions that take requests now.
    var serving: [Int64: ModelVersion] {
        state == .ready || state == .loading ? versions : [:]
    }

    /// The RepositoryIndex rows of this model.
    func entries(name: String) -> [ModelRepository.Entry] {
        let numbers = versions.keys.sorted()
        switch state {
        case .ready:
            return numbers.map { .init(name: name, version: String($0), state: .ready, reason: "") }
        case .loading:
            // The old versions still answer while the new ones compile.
            return numbers.map { .init(name: name, version: String($0), state: .ready, reason: "") }
                + [.init(name: name, version: "", state: .loading, reason: "loading")]
        case .unloading:
            return numbers.map { .init(name: name, version: String($0), state: .unloading, reason: "finishing queued requests") }
        case .unavailable:
            return [.init(name: name, version: "", state: .unavailable, reason: failure ?? "unloaded")]
        }
    }

    /// Why `version(_:_:)` has nothing to serve, for a model this table knows.
    var unavailableReason: String? {
        switch state {
        case .loading: "it is loading"
        case .unloading: "it is unloading"
        case .unavailable, .ready: failure
        }
    }
}
