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

/// KServe v2 REST over ``InferenceCore``: health, server and model metadata and readiness,
/// inference (JSON and Triton's binary data extension), and the seed's `/predict`.
struct RESTRouter: Sendable {
    let core: InferenceCore
    /// The model `POST /predict` runs (`--predict-model`; the built-in seed by default).
    let predictModel: String?
    /// What `/metrics` serves; nil answers 404.
    var metrics: MetricsEndpoint? = nil

    /// Answers through `respond`, at once or when an inference completes (on a pool thread).
    func answer(_ head: HTTPRequestHead, body: ByteBuffer, respond: @escaping @Sendable (RESTResponse) -> Void) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map { $0.removingPercentEncoding ?? String($0) }
        if parts.first == "predict", parts.count <= 2 {
            guard head.method == .POST else {
                var response = RESTResponse.error(405, "\(path) takes POST, not \(head.method.rawValue)")
                response.headers.add(name: "allow", value: "POST")
                return respond(response)
            }
            return predict(parts.count == 2 ? parts[1] : predictModel, body: body, respond: respond)
        }
        if MetricsRoute.matches(parts) { return respond(MetricsRoute.answer(head, endpoint: metrics)) }
        if let route = Route(parts), case .infer(let name, let version) = route, head.method == .POST {
            let headerLength = head.headers.first(name: "inference-header-content-length").map { Int($0) ?? -1 }
            return infer(name, version, body: body, headerLength: headerLength, respond: respond)
        }
        respond(answer(head, parts: parts, path: path))
    }

    /// KServe v2 REST inference, JSON or with Triton's binary data extension.
    private func infer(_ name: String, _ version: String, body: ByteBuffer, headerLength: Int?, respond: @escaping @Sendable (RESTResponse) -> Void) {
        do throws(InferenceError) {
            if let headerLength, headerLength < 0 { throw InferenceError(.invalidArgument, "Inference-Header-Content-Length must be a byte count") }
            let decoded = try KServeJSON.request(model: name, version: version, body: Array(body.readableBytesView), headerLength: headerLength)
            core.infer([InferenceCore.Call(request: decoded.request, deadline: nil, cancellation: nil) { result in
                switch result {
                case .success(let response):
                    let (json, binary) = KServeJSON.response(response) { decoded.allOutputsBinary || decoded.binaryOutputs.contains($0) }
                    var answer = RESTResponse(status: 200, body: ByteBuffer(bytes: json + binary))
                    if binary.isEmpty {
                        answer.headers.add(name: "content-type", value: "application/json")
                    } else {
                        answer.headers.add(name: "content-type", value: "application/octet-stream")
                        answer.headers.add(name: "inference-header-content-length", value: String(json.count))
                    }
                    respond(answer)
                case .failure(let error):
                    respond(.error(error.code.httpStatus, error.message))
                }
            }])
        } catch {
            respond(.error(error.code.httpStatus, error.message))
        }
    }

    private func predict(_ name: String?, body: ByteBuffer, respond: @escaping @Sendable (RESTResponse) -> Void) {
        do throws(InferenceError) {
            guard let name else {
                throw InferenceError(.notFound, "no default model for /predict: start the server with --predict-model NAME, or POST /predict/{model}")
            }
            let model = try core.model(name, "")
            guard model.config.inputs.count == 1, model.config.outputs.count == 1 else {
                throw InferenceError(.invalidArgument, "/predict serves single-input, single-output models; '\(name)' has \(model.config.inputs.count) inputs and \(model.config.outputs.count) outputs")
            }
            let input = model.config.inputs[0]
            guard input.dataType == .float32 else {
                throw InferenceError(.invalidArgument, "/predict sends FP32 numbers, but input '\(input.name)' of '\(name)' is \(input.dataType.kserveName)")
            }
            let (values, shape) = try PredictRoute.input(from: Array(body.readableBytesView))
            let request = InferenceRequest(modelName: name, inputs: [
                InferInput(name: input.name, datatype: "FP32", shape: shape.map(Int64.init), contents: .fp32(values)),
            ])
            core.infer([InferenceCore.Call(request: request, deadline: nil, cancellation: nil) { result in
                switch result {
                case .success(let response):
                    respond(response.outputs.first.map { .json(200, PredictRoute.body($0.tensor)) } ?? .error(500, "the model returned no output"))
                case .failure(let error):
                    respond(.error(error.code.httpStatus, error.message))
                }
            }])
        } catch {
            respond(.error(error.code.httpStatus, error.message))
        }
    }

    private func answer(_ head: HTTPRequestHead, parts: [String], path: String) -> RESTResponse {
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
        case .infer:
            // POST went to infer(...) before this, any other method got 405: not reached.
            throw InferenceError(.internal, "inference is answered asynchronously")
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
