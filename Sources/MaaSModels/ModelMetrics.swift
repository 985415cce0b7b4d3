import CoreMetrics

/// Why a request failed: the `reason` label of `nv_inference_request_failure`, with Triton's
/// four values. How our failures map:
/// - `REJECTED`: the scheduler refused it: the queue was full, the model was unloading, or it
///   waited past the queue policy's timeout (UNAVAILABLE).
/// - `CANCELED`: its caller stopped waiting while it was queued: cancelled, or its deadline
///   passed (CANCELLED, DEADLINE_EXCEEDED).
/// - `BACKEND`: the forward pass failed.
/// - `OTHER`: it did not fit the model (INVALID_ARGUMENT from request validation).
public enum FailureReason: String, CaseIterable, Sendable, Hashable {
    case rejected = "REJECTED"
    case canceled = "CANCELED"
    case backend = "BACKEND"
    case other = "OTHER"
}

/// One model version's metric handles, made once when it loads, so that recording a request
/// looks nothing up and allocates nothing. Names and labels are Triton's (`model`, `version`),
/// so dashboards written for Triton read them; durations are cumulative microseconds, as there.
/// Only ``ModelStatistics`` updates them, from the values it records.
public struct ModelMetrics: Sendable {
    /// Triton's metric names, and the latency histogram's.
    public enum Name {
        public static let requestSuccess = "nv_inference_request_success"
        public static let requestFailure = "nv_inference_request_failure"
        public static let inferenceCount = "nv_inference_count"
        public static let executionCount = "nv_inference_exec_count"
        public static let requestDuration = "nv_inference_request_duration_us"
        public static let queueDuration = "nv_inference_queue_duration_us"
        public static let computeInputDuration = "nv_inference_compute_input_duration_us"
        public static let computeInferDuration = "nv_inference_compute_infer_duration_us"
        public static let computeOutputDuration = "nv_inference_compute_output_duration_us"
        public static let pendingRequests = "nv_inference_pending_request_count"
        /// Successful requests' end-to-end latency (queue + compute), a histogram in seconds.
        /// Triton has no such histogram; the name is ours.
        public static let requestLatency = "maas_inference_request_duration_seconds"
    }

    /// Bucket bounds for ``Name/requestLatency``: 100 µs (a small model alone) to 10 s (a
    /// transformer batch under load), about three per decade. The backend is told these.
    public static let latencyBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .microseconds(2500), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    /// One line per metric for `# HELP`: backends made through swift-metrics get no help text.
    public static let help: [String: String] = [
        Name.requestSuccess: "Number of successful inference requests, all batch sizes",
        Name.requestFailure: "Number of failed inference requests, all batch sizes, by reason",
        Name.inferenceCount: "Number of inferences performed (a batch of n counts n)",
        Name.executionCount: "Number of model executions (batches) performed",
        Name.requestDuration: "Cumulative end-to-end duration of successful requests, in microseconds",
        Name.queueDuration: "Cumulative time successful requests waited in the queue, in microseconds",
        Name.computeInputDuration: "Cumulative time spent gathering inputs into batches, in microseconds",
        Name.computeInferDuration: "Cumulative time spent executing the model, in microseconds",
        Name.computeOutputDuration: "Cumulative time spent splitting outputs per request, in microseconds",
        Name.pendingRequests: "Number of requests queued or executing",
        Name.requestLatency: "End-to-end latency of successful requests (queue and compute), in seconds",
    ]

    let success: Counter
    let inferenceCount: Counter
    let executionCount: Counter
    let rejected: Counter
    let canceled: Counter
    let backend: Counter
    let other: Counter
    let requestDuration: Counter
    let queueDuration: Counter
    let computeInputDuration: Counter
    let computeInferDuration: Counter
    let computeOutputDuration: Counter
    let pending: Meter
    let latency: Timer

    init(model: String, version: Int64, factory: any MetricsFactory) {
        let labels = [("model", model), ("version", String(version))]
        func counter(_ name: String) -> Counter { Counter(label: name, dimensions: labels, factory: factory) }
        func failure(_ reason: FailureReason) -> Counter {
            Counter(label: Name.requestFailure, dimensions: labels + [("reason", reason.rawValue)], factory: factory)
        }
        success = counter(Name.requestSuccess)
        inferenceCount = counter(Name.inferenceCount)
        executionCount = counter(Name.executionCount)
        rejected = failure(.rejected)
        canceled = failure(.canceled)
        backend = failure(.backend)
        other = failure(.other)
        requestDuration = counter(Name.requestDuration)
        queueDuration = counter(Name.queueDuration)
        computeInputDuration = counter(Name.computeInputDuration)
        computeInferDuration = counter(Name.computeInferDuration)
        computeOutputDuration = counter(Name.computeOutputDuration)
        pending = Meter(label: Name.pendingRequests, dimensions: labels, factory: factory)
        latency = Timer(label: Name.requestLatency, dimensions: labels, factory: factory)
    }

    func failure(_ reason: FailureReason) -> Counter {
        switch reason {
        case .rejected: rejected
        case .canceled: canceled
        case .backend: backend
        case .other: other
        }
    }
}
