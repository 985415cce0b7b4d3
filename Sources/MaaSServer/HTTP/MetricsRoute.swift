import MaaSModels
import NIOCore
import NIOHTTP1

/// What `GET /metrics` serves: the metrics backend's registry, rendered by the executable that
/// bootstrapped it (libraries know only swift-metrics), plus the process metrics sampled first.
public struct MetricsEndpoint: Sendable {
    /// The registry in Prometheus text format 0.0.4.
    public var exporter: @Sendable () -> [UInt8]
    /// Sampled before each scrape.
    public var process: ProcessMetrics?

    public init(exporter: @escaping @Sendable () -> [UInt8], process: ProcessMetrics? = nil) {
        self.exporter = exporter
        self.process = process
    }
}

/// `GET /metrics` in Prometheus text format, or OpenMetrics 1.0 when the scrape's `Accept`
/// prefers `application/openmetrics-text` (as Prometheus itself asks). Answered on the event
/// loop: sampling reads two small `/proc` files and one directory, and the text is a few KB
/// per model version.
enum MetricsRoute {
    static let prometheusType = "text/plain; version=0.0.4; charset=utf-8"
    static let openMetricsType = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    static let help = ModelMetrics.help.merging(ProcessMetrics.help) { first, _ in first }
        .merging([TokenStore.metricName: TokenStore.metricHelp, AccessLog.droppedMetricName: AccessLog.droppedMetricHelp]) { first, _ in first }

    /// Whether `path` is this route's.
    static func matches(_ parts: [String]) -> Bool { parts == ["metrics"] }

    static func answer(_ method: HTTPMethod, _ headers: HTTPHeaders, endpoint: MetricsEndpoint?) -> RESTResponse {
        guard method == .GET || method == .HEAD else {
            var response = RESTResponse.error(405, "/metrics takes GET, HEAD, not \(method.rawValue)")
            response.headers.add(name: "allow", value: "GET, HEAD")
            return response
        }
        guard let endpoint else {
            return .error(404, "no metrics backend: /metrics is served when the executable bootstraps one (maas serve does)")
        }
        endpoint.process?.sample()
        let openMetrics = prefersOpenMetrics(headers[canonicalForm: "accept"].map(String.init))
        let text = MetricsExposition.render(endpoint.exporter(), openMetrics: openMetrics, help: help)
        var response = RESTResponse(status: 200, body: ByteBuffer(bytes: text))
        response.headers.add(name: "content-type", value: openMetrics ? openMetricsType : prometheusType)
        return response
    }

    /// Whether the media ranges of `Accept` give `application/openmetrics-text` a quality at
    /// least as high as `text/plain`'s (through `text/*` or `*/*` too), and above zero.
    static func prefersOpenMetrics(_ ranges: [String]) -> Bool {
        var openMetrics = 0.0, text = 0.0
        for range in ranges {
            let parameters = range.split(separator: ";").map { $0.trimmingSpaces.lowercased() }
            guard let type = parameters.first else { continue }
            var quality = 1.0
            for parameter in parameters.dropFirst() where parameter.hasPrefix("q=") {
                quality = Double(parameter.dropFirst(2)) ?? 0
            }
            switch type {
            case "application/openmetrics-text": openMetrics = max(openMetrics, quality)
            case "text/plain", "text/*", "*/*": text = max(text, quality)
            default: break
            }
        }
        return openMetrics > 0 && openMetrics >= text
    }
}

/// Prometheus text from the backend, with `# HELP` lines added, families sorted by name, and
/// optionally as OpenMetrics: a counter's family is named without `_total` and its samples
/// with it (`nv_inference_request_success` becomes family `nv_inference_request_success`,
/// sample `nv_inference_request_success_total`), `untyped` becomes `unknown`, HELP escapes
/// `"` too, and the exposition ends with `# EOF`.
enum MetricsExposition {
    struct Family {
        var name: String
        var type = "untyped"
        var help: String?
        var samples: [Substring] = []
    }

    static func render(_ text: [UInt8], openMetrics: Bool, help: [String: String]) -> [UInt8] {
        var output = ""
        for family in parse(String(decoding: text, as: UTF8.self)).sorted(by: { $0.name < $1.name }) {
            let description = family.help ?? help[family.name]
            guard openMetrics else {
                if let description { output += "# HELP \(family.name) \(escape(description, quotes: false))\n" }
                output += "# TYPE \(family.name) \(family.type)\n"
                for sample in family.samples {
                    output += sample
                    output += "\n"
                }
                continue
            }
            let isCounter = family.type == "counter"
            let name = isCounter && family.name.hasSuffix("_total") ? String(family.name.dropLast(6)) : family.name
            output += "# TYPE \(name) \(family.type == "untyped" ? "unknown" : family.type)\n"
            if let description { output += "# HELP \(name) \(escape(description, quotes: true))\n" }
            for sample in family.samples {
                let nameEnd = sample.firstIndex { $0 == "{" || $0 == " " } ?? sample.endIndex
                if isCounter, sample[..<nameEnd] == name {
                    output += name
                    output += "_total"
                    output += sample[nameEnd...]
                } else {
                    output += sample
                }
                output += "\n"
            }
        }
        if openMetrics { output += "# EOF\n" }
        return Array(output.utf8)
    }

    /// Families in the order the text has them; a sample belongs to the family last typed.
    static func parse(_ text: String) -> [Family] {
        var families: [Family] = []
        var index: [String: Int] = [:]
        func family(_ name: String) -> Int {
            if let at = index[name] { return at }
            families.append(Family(name: name))
            index[name] = families.count - 1
            return families.count - 1
        }
        var current: Int?
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# HELP ") || line.hasPrefix("# TYPE ") {
                let rest = line.dropFirst(7)
                let name = rest.prefix { $0 != " " }
                let value = rest.dropFirst(name.count).drop { $0 == " " }
                let at = family(String(name))
                if line.hasPrefix("# HELP ") {
                    families[at].help = unescape(value)
                } else {
                    families[at].type = String(value)
                }
                current = at
            } else if line.hasPrefix("#") {
                continue
            } else {
                let name = String(line.prefix { $0 != "{" && $0 != " " })
                if let at = current, belongs(name, to: families[at]) {
                    families[at].samples.append(line)
                } else {
                    let at = family(name)
                    families[at].samples.append(line)
                    current = at
                }
            }
        }
        return families
    }

    private static func belongs(_ sample: String, to family: Family) -> Bool {
        guard sample.hasPrefix(family.name) else { return false }
        let suffix = sample.dropFirst(family.name.count)
        switch family.type {
        case "histogram": return suffix == "_bucket" || suffix == "_sum" || suffix == "_count" || suffix.isEmpty
        case "summary": return suffix == "_sum" || suffix == "_count" || suffix.isEmpty
        default: return suffix.isEmpty
        }
    }

    /// HELP text escaping: backslash and line feed in both formats, the double quote in OpenMetrics.
    static func escape(_ text: String, quotes: Bool) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\"" where quotes: escaped += "\\\""
            default: escaped.append(character)
            }
        }
        return escaped
    }

    private static func unescape(_ text: Substring) -> String {
        var result = ""
        var escaping = false
        for character in text {
            if escaping {
                result.append(character == "n" ? "\n" : character)
                escaping = false
            } else if character == "\\" {
                escaping = true
            } else {
                result.append(character)
            }
        }
        return result
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        let start = firstIndex { $0 != " " && $0 != "\t" } ?? endIndex
        let end = lastIndex { $0 != " " && $0 != "\t" }.map { index(after: $0) } ?? start
        return self[start..<end]
    }
}
