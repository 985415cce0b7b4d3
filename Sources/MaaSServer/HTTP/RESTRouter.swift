import Foundation
import MaaSCore
import MaaSJSON
import MaaSModels
import NIOCore
import NIOHTTP1

/// An HTTP request as both frontends (HTTP/1.1 and REST over h2c) hand it over.
struct RESTRequest {
    var method: HTTPMethod
    var uri: String
    var headers: HTTPHeaders
    var body: ByteBuffer
}

/// An HTTP answer: status, headers, body.
struct RESTResponse {
    var status: Int
    var headers: HTTPHeaders = [:]
    var body = ByteBuffer()

    /// `{"error": "..."}`, KServe REST's error body, with the same text gRPC sends.
    static func error(_ status: Int, _ message: String) -> RESTResponse {
        var writer = JSONWriter(capacity: message.utf8.count + 16)
        writer.beginObject()
        writer.key("error")
        writer.string(message)
        writer.endObject()
        return json(status, writer.bytes)
    }

    static func error(_ error: InferenceError) -> RESTResponse {
        .error(error.code.httpStatus, error.message)
    }

    static func json(_ status: Int, _ value: JSONValue) -> RESTResponse {
        var writer = JSONWriter()
        writer.value(value)
        return json(status, writer.bytes)
    }

    static func json(_ status: Int, _ bytes: [UInt8]) -> RESTResponse {
        var response = RESTResponse(status: status, body: ByteBuffer(bytes: bytes))
        response.headers.add(name: "content-type", value: "application/json")
        return response
    }

    static func empty(_ status: Int) -> RESTResponse { RESTResponse(status: status) }
}

/// KServe v2 REST over ``InferenceCore``: health, server and model metadata, readiness, config
/// and statistics, the repository extension, inference (JSON and Triton's binary data
/// extension), and the seed's `/predict`.
struct RESTRouter: Sendable {
    let core: InferenceCore
    /// The model `POST /predict` runs (`--predict-model`; the built-in seed by default).
    let predictModel: String?

    typealias Respond = @Sendable (RESTResponse) -> Void

    /// Answers through `respond`, at once or when the work completes (on another thread).
    /// Inference calls are added to `calls` for the caller to submit with the others of its read
    /// cycle, one hop per model, as the gRPC frontend does.
    func answer(_ request: RESTRequest, calls: inout [InferenceCore.Call], respond: @escaping Respond) {
        let path = request.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? request.uri
        let parts = path.split(separator: "/").map { $0.contains("%") ? ($0.removingPercentEncoding ?? String($0)) : String($0) }
        guard let route = Route(parts, predictModel: predictModel) else {
            return respond(.error(404, "no route for \(request.method.rawValue) \(path)"))
        }
        guard route.methods.contains(request.method) else {
            let allowed = route.methods.map(\.rawValue).joined(separator: ", ")
            var response = RESTResponse.error(405, "\(path) takes \(allowed), not \(request.method.rawValue)")
            response.headers.add(name: "allow", value: allowed)
            return respond(response)
        }
        switch route {
        case .infer(let name, let version):
            infer(name, version, request, calls: &calls, respond: respond)
        case .predict(let name):
            predict(name, request.body, calls: &calls, respond: respond)
        case .load(let name), .unload(let name):
            let load = if case .load = route { true } else { false }
            Task {
                do throws(InferenceError) {
                    try await core.control(load: load, model: name)
                    respond(.empty(200))
                } catch {
                    respond(.error(error))
                }
            }
        default:
            do throws(InferenceError) {
                respond(try document(route, request))
            } catch {
                respond(.error(error))
            }
        }
    }

    /// KServe v2 REST inference, JSON or with Triton's binary data extension.
    private func infer(_ name: String, _ version: String, _ http: RESTRequest, calls: inout [InferenceCore.Call], respond: @escaping Respond) {
        do throws(InferenceError) {
            var headerLength: Int?
            if let value = http.headers.first(name: "inference-header-content-length") {
                guard let length = Int(value), length >= 0 else {
                    throw InferenceError(.invalidArgument, "Inference-Header-Content-Length must be a byte count, got '\(value)'")
                }
                headerLength = length
            }
            let decoded = try http.body.withUnsafeReadableBytes { body throws(InferenceError) in
                try KServeJSON.request(model: name, version: version, body: body, headerLength: headerLength)
            }
            calls.append(InferenceCore.Call(request: decoded.request, deadline: nil, cancellation: nil) { result in
                switch result {
                case .success(let response):
                    let (json, binary) = KServeJSON.response(response) { decoded.allOutputsBinary || decoded.binaryOutputs.contains($0) }
                    var body = ByteBuffer()
                    body.reserveCapacity(json.count + binary.count)
                    body.writeBytes(json)
                    body.writeBytes(binary)
                    var answer = RESTResponse(status: 200, body: body)
                    if binary.isEmpty {
                        answer.headers.add(name: "content-type", value: "application/json")
                    } else {
                        answer.headers.add(name: "content-type", value: "application/octet-stream")
                        answer.headers.add(name: "inference-header-content-length", value: String(json.count))
                    }
                    respond(answer)
                case .failure(let error):
                    respond(.error(error))
                }
            })
        } catch {
            respond(.error(error))
        }
    }

    private func predict(_ name: String?, _ body: ByteBuffer, calls: inout [InferenceCore.Call], respond: @escaping Respond) {
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
            let (values, shape) = try body.withUnsafeReadableBytes { bytes throws(InferenceError) in try PredictRoute.input(from: bytes) }
            let request = InferenceRequest(modelName: name, inputs: [
                InferInput(name: input.name, datatype: "FP32", shape: shape.map(Int64.init), contents: .fp32(values)),
            ])
            calls.append(InferenceCore.Call(request: request, deadline: nil, cancellation: nil) { result in
                switch result {
                case .success(let response):
                    respond(response.outputs.first.map { .json(200, PredictRoute.body($0.tensor)) } ?? .error(500, "the model returned no output"))
                case .failure(let error):
                    respond(.error(error))
                }
            })
        } catch {
            respond(.error(error))
        }
    }

    /// The routes answered from the core's state at once.
    private func document(_ route: Route, _ request: RESTRequest) throws(InferenceError) -> RESTResponse {
        switch route {
        case .serverMetadata:
            return .json(200, KServeDocuments.serverMetadata())
        case .live:
            return .empty(200)
        case .ready:
            // KServe v2: 200 means true, a 4xx false.
            return .empty(core.readiness.isReady ? 200 : 400)
        case .modelReady(let name, let version):
            return .empty(core.isModelReady(name, version) ? 200 : 400)
        case .modelMetadata(let name, let version):
            let (model, versions) = try core.metadata(name, version)
            return .json(200, KServeDocuments.modelMetadata(model, name: name, versions: versions))
        case .modelConfig(let name, let version):
            return .json(200, KServeDocuments.modelConfig(try core.model(name, version).config))
        case .statistics(let name, let version):
            return .json(200, KServeDocuments.statistics(try core.statistics(name, version)))
        case .index:
            return .json(200, KServeDocuments.index(core.index(readyOnly: try Self.readyOnly(request.body))))
        case .infer, .predict, .load, .unload:
            // answer(_:respond:) takes these before they reach here.
            throw InferenceError(.internal, "\(route) is answered asynchronously")
        }
    }

    /// The index request's optional `{"ready": true}`.
    private static func readyOnly(_ body: ByteBuffer) throws(InferenceError) -> Bool {
        guard body.readableBytes > 0 else { return false }
        let root: JSONValue
        do {
            root = try body.withUnsafeReadableBytes { bytes throws(JSONError) in try JSONReader.parse(bytes) }
        } catch {
            throw .invalidInput("the index request is not valid JSON: \(error)")
        }
        guard root.members != nil else { throw .invalidInput("the index request must be a JSON object, got \(root.kind)") }
        guard let ready = root["ready"] else { return false }
        guard let flag = ready.bool else { throw .invalidInput("'ready' must be true or false, got \(ready.kind)") }
        return flag
    }

    enum Route {
        case serverMetadata, live, ready
        case modelMetadata(String, String)
        case modelReady(String, String)
        case modelConfig(String, String)
        case statistics(String, String)
        case infer(String, String)
        case index
        case load(String)
        case unload(String)
        case predict(String?)

        init?(_ parts: [String], predictModel: String?) {
            if parts.first == "predict" {
                switch parts.count {
                case 1: self = .predict(predictModel)
                case 2: self = .predict(parts[1])
                default: return nil
                }
                return
            }
            guard parts.first == "v2" else { return nil }
            let rest = Array(parts.dropFirst())
            switch rest {
            case []: self = .serverMetadata
            case ["health", "live"]: self = .live
            case ["health", "ready"]: self = .ready
            case ["models", "stats"]: self = .statistics("", "")
            case ["repository", "index"]: self = .index
            case let r where r.count == 4 && r[0] == "repository" && r[1] == "models" && r[3] == "load": self = .load(r[2])
            case let r where r.count == 4 && r[0] == "repository" && r[1] == "models" && r[3] == "unload": self = .unload(r[2])
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
                case ["config"]: self = .modelConfig(rest[1], version)
                case ["stats"]: self = .statistics(rest[1], version)
                case ["infer"]: self = .infer(rest[1], version)
                default: return nil
                }
            }
        }

        var methods: [HTTPMethod] {
            switch self {
            case .infer, .predict, .index, .load, .unload: [.POST]
            default: [.GET, .HEAD]
            }
        }
    }
}
