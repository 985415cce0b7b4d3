import MaaSModels
import Metrics
import Prometheus

/// As `maas serve` does (Sources/maas/Metrics+Prometheus.swift): swift-metrics, as the libraries record it,
/// goes to a swift-prometheus registry that `GET /metrics` renders.
enum PrometheusBackend {
    /// Bootstraps the metrics system (once per process, before any server exists) and returns
    /// what renders the registry as Prometheus text.
    static func bootstrap() -> @Sendable () -> [UInt8] {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[ModelMetrics.Name.requestLatency] = ModelMetrics.latencyBuckets
        MetricsSystem.bootstrap(factory)
        return { registry.emitToBuffer() }
    }
}
