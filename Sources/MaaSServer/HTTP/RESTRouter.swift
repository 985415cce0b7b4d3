import Foundation
import MaaSCore
import MaaSModels
import NIOCore
import NIOHTTP1

/// An HTTP answer: status, headers, body.
struct RESTResponse {
    var status: Int
    var headers: HTTPHeaders = [:]
    var body = ByteBuffer()

    /// `{"error": "..."}`, KServe REST's error body, with the same text gRPC sends.
    static func error(_ status: Int, _ message: String) -> RESTResponse {
        json(status, ["error": message])
    }

    static func json(_ status: Int, _ object: Any) -> RESTResponse {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        var response = RESTResponse(status: status, body: ByteBuffer(bytes: data))
        response.headers.add(name: "content-type", value: "application/json")
        return response
    }

    static func empty(_ status: Int) -> RESTResponse { RESTResponse(status: status) }
}

/// KServe v2 REST over ``InferenceCore``: health, server and model metadata and readiness.
/// Inference over REST is not served yet (gRPC on the same port serves it).
struct RESTRouter: Sendable {
    let core: InferenceCore

    func answer(_ head: HTTPRequestHead, body: ByteBuffer) -> RESTResponse {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map { $0.removingPercentEncoding ?? String($0) }
        guard let route = Route(parts) else {
            return .error(404, "no route for \(head.method.rawValue) \(path)")
        }
        guard route.methods.contains(head.method) else {
            var response = RESTResponse.error(405, "\(path) takes \(route.methods.map(\.rawValue).joined(separator: ", ")), not \(head.method.rawValue)")
            response.headers.add(name: "allow", value: route.methods.map(\.rawValue).joined(separator: ", "))
            return response
        }
        do throws(InferenceError) {
            return try answer(route)
        } catch {
            return .error(error.code.httpStatus, error.message)
        }
    }

    private func answer(_ route: Route) throws(InferenceError) -> RESTResponse {
        switch route {
        case .serverMetadata:
            return .json(200, ["name": InferenceCore.serverName, "version": InferenceCore.serverVersion, "extensions": InferenceCore.extensions])
        case .live:
            return .empty(200)
        case .ready:
            // KServe v2: 200 means true, a 4xx false.
            return .empty(core.readiness.isReady ? 200 : 400)
        case .modelReady(let name, let version):
            return .empty(core.isModelReady(name, version) ? 200 : 400)
        case .modelMetadata(let name, let version):
            let (model, versions) = try core.metadata(name, version)
            func tensors(_ list: [TensorMetadata]) -> [[String: Any]] {
                list.map { ["name": $0.name, "datatype": $0.datatype, "shape": $0.shape] }
            }
            return .json(200, [
                "name": name, "versions": versions, "platform": model.config.platform,
                "inputs": tensors(model.inputMetadata), "outputs": tensors(model.outputMetadata),
            ])
        case .infer(let name, _):
            throw InferenceError(.unimplemented, "inference over REST is not served yet; model '\(name)' takes ModelInfer over gRPC on this port")
        }
    }

    enum Route {
        case serverMetadata, live, ready
        case modelMetadata(String, String)
        case modelReady(String, String)
        case infer(String, String)

        init?(_ parts: [String]) {
            guard parts.first == "v2" else { return nil }
            let rest = Array(parts.dropFirst())
            switch rest {
            case []: self = .serverMetadata
            case ["health", "live"]: self = .live
            case ["health", "ready"]: self = .ready
            default:
                guard rest.count >= 2, rest[0] == "models" else { return nil }
                var tail = Array(rest.dropFirst(2))
                var version = ""
                if tail.count >= 2, tail[0] == "versions" {
                    version = tail[1]
                    tail.removeFirst(2)
                }
                switch tail {
                case []: self = .modelMetadata(rest[1], version)
                case ["ready"]: self = .modelReady(rest[1], version)
                case ["infer"]: self = .infer(rest[1], version)
                default: return nil
                }
            }
        }

        var methods: [HTTPMethod] {
            switch self {
            case .infer: [.POST]
            default: [.GET, .HEAD]
            }
        }
    }
}
