import CoreMetrics
import MaaSModels
import NIOCore
import NIOHTTP1
import Prometheus
import Testing

@testable import MaaSServer

/// `/metrics` rendering over a real swift-prometheus registry: HELP lines, the OpenMetrics
/// rewrite of counters, content negotiation, and the bad requests.
@Suite("GET /metrics")
struct MetricsRouteTests {
    let registry = PrometheusCollectorRegistry()

    func populate() {
        // As the executable sets it up.
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[ModelMetrics.Name.requestLatency] = ModelMetrics.latencyBuckets
        let labels = [("model", "seed"), ("version", "1")]
        Counter(label: "nv_inference_request_success", dimensions: labels, factory: factory).increment(by: 3)
        Counter(label: "nv_inference_request_failure", dimensions: labels + [("reason", "OTHER")], factory: factory).increment()
        FloatingPointCounter(label: "process_cpu_seconds_total", factory: factory).increment(by: 1.5)
        Gauge(label: "process_open_fds", factory: factory).record(7)
        Timer(label: ModelMetrics.Name.requestLatency, dimensions: labels, factory: factory).recordMicroseconds(300)
    }

    func lines(_ bytes: [UInt8]) -> [String] { String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init) }

    @Test("Prometheus text: HELP before each TYPE, samples as the backend wrote them, families sorted")
    func prometheusText() {
        populate()
        let text = lines(MetricsExposition.render(registry.emitToBuffer(), openMetrics: false, help: MetricsRoute.help))
        let success = text.firstIndex(of: "# TYPE nv_inference_request_success counter")!
        #expect(text[success - 1] == "# HELP nv_inference_request_success Number of successful inference requests, all batch sizes")
        #expect(text[success + 1] == #"nv_inference_request_success{model="seed",version="1"} 3"#)
        #expect(text.contains("# TYPE process_cpu_seconds_total counter") && text.contains("process_cpu_seconds_total 1.5"))
        #expect(text.contains(#"maas_inference_request_duration_seconds_bucket{model="seed",version="1",le="0.0005"} 1"#))
        let families = text.filter { $0.hasPrefix("# TYPE ") }
        #expect(families == families.sorted() && families.count == 5)
        #expect(!text.contains("# EOF"))
    }

    @Test("OpenMetrics: counter families drop _total, their samples carry it; ends with # EOF")
    func openMetrics() {
        populate()
        let text = lines(MetricsExposition.render(registry.emitToBuffer(), openMetrics: true, help: MetricsRoute.help))
        #expect(text.last == "# EOF")
        #expect(text.contains("# TYPE nv_inference_request_success counter"))
        #expect(text.contains(#"nv_inference_request_success_total{model="seed",version="1"} 3"#))
        #expect(text.contains(#"nv_inference_request_failure_total{model="seed",version="1",reason="OTHER"} 1"#))
        #expect(text.contains("# TYPE process_cpu_seconds counter") && text.contains("# HELP process_cpu_seconds Total user and system CPU time spent in seconds"))
        #expect(text.contains("process_cpu_seconds_total 1.5") && !text.contains("process_cpu_seconds_total_total 1.5"))
        #expect(text.contains("# TYPE process_open_fds gauge") && text.contains("process_open_fds 7.0"))
        #expect(text.contains(#"maas_inference_request_duration_seconds_count{model="seed",version="1"} 1"#))
        #expect(!text.contains { $0.hasPrefix("nv_inference_request_success{") })
    }

    @Test("HELP escapes backslash and line feed, and in OpenMetrics the double quote")
    func helpEscaping() {
        let text: [UInt8] = Array("# TYPE odd gauge\nodd 1\n".utf8)
        let help = ["odd": #"a "quoted" \ path"# + "\nnext"]
        #expect(lines(MetricsExposition.render(text, openMetrics: false, help: help))[0] == #"# HELP odd a "quoted" \\ path\nnext"#)
        #expect(lines(MetricsExposition.render(text, openMetrics: true, help: help))[1] == #"# HELP odd a \"quoted\" \\ path\nnext"#)
    }

    @Test(
        "OpenMetrics only when Accept ranks it at least as high as text/plain",
        arguments: [
            ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", true),
            ("application/openmetrics-text", true),
            ("text/plain;q=0.9, application/openmetrics-text; q=0.8", false),
            ("application/openmetrics-text;q=0", false),
            ("*/*", false),
            ("", false),
        ])
    func negotiation(accept: String, openMetrics: Bool) {
        var headers = HTTPHeaders()
        if !accept.isEmpty { headers.add(name: "accept", value: accept) }
        #expect(MetricsRoute.prefersOpenMetrics(headers[canonicalForm: "accept"].map(String.init)) == openMetrics)
    }

    @Test("the route: 200 with the chosen content type, 405 for other methods, 404 without a backend")
    func route() {
        populate()
        let endpoint = MetricsEndpoint(exporter: { [registry] in registry.emitToBuffer() })
        var get = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/metrics")
        #expect(MetricsRoute.answer(get.method, get.headers, endpoint: endpoint).headers["content-type"] == [MetricsRoute.prometheusType])
        get.headers.add(name: "accept", value: "application/openmetrics-text; version=1.0.0")
        let open = MetricsRoute.answer(get.method, get.headers, endpoint: endpoint)
        #expect(open.status == 200 && open.headers["content-type"] == [MetricsRoute.openMetricsType])
        #expect(String(buffer: open.body).hasSuffix("# EOF\n"))

        let post = MetricsRoute.answer(.POST, [:], endpoint: endpoint)
        #expect(post.status == 405 && post.headers["allow"] == ["GET, HEAD"])
        let none = MetricsRoute.answer(.GET, [:], endpoint: nil)
        #expect(none.status == 404 && String(buffer: none.body).contains("no metrics backend"))
    }
}
