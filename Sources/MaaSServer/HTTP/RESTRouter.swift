import MaaSCore
import MaaSGRPC
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
    /// What routing tells the access log (model, token name); nil when it is off.
    var notes: RequestNotes? = nil
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
        var response = RESTResponse.error(error.code.httpStatus, error.message)
        response.addRetryAfter(error)
        return response
    }

    /// `Retry-After` in whole seconds (at least 1) for a request shed under load.
    mutating func addRetryAfter(_ error: InferenceError) {
        guard let retry = error.retryAfter else { return }
        headers.add(name: "retry-after", value: String(max(1, Int(retry.inSeconds.rounded(.up)))))
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
    /// What `/metrics` serves; nil answers 404.
    var metrics: MetricsEndpoint? = nil
    /// Tokens and scopes; nil serves everyone.
    var access: AccessPolicy? = nil

    typealias Respond = @Sendable (RESTResponse) -> Void

    /// Answers through `respond`, at once or when the work completes (on another thread).
    /// Inference calls are added to `calls` for the caller to submit with the others of its read
    /// cycle, one hop per model, as the gRPC frontend does.
    func answer(_ request: RESTRequest, calls: inout [InferenceCore.Call], respond: @escaping Respond) {
        let path = request.uri.utf8.firstIndex(of: UInt8(ascii: "?")).map { String(request.uri[..<$0]) } ?? request.uri
        // Split as bytes: splitting Characters runs grapheme breaking, which costs more than the
        // rest of a request's routing.
        let parts = path.utf8.split(separator: UInt8(ascii: "/")).map { bytes in
            let segment = String(Substring(bytes))
            return bytes.contains(UInt8(ascii: "%")) ? PercentEncoding.decode(segment) : segment
        }
        if MetricsRoute.matches(parts) {
            if let refused = refusal(.metrics, request, openAI: false) { return respond(refused) }
            return respond(MetricsRoute.answer(request.method, request.headers, endpoint: metrics))
        }
        let openAI = parts.first == "v1"
        let route = Route(parts, predictModel: predictModel)
        if let notes = request.notes, let model = route?.model { notes.model(model.name, version: model.version) }
        // Before 404 and 405, so that what exists is told only to someone who may ask.
        if let refused = refusal(route?.requirement ?? .authenticated, request, openAI: openAI) { return respond(refused) }
        guard let route else {
            let error = InferenceError(.notFound, "no route for \(request.method.rawValue) \(path)")
            return respond(openAI ? OpenAIEmbeddings.error(error) : .error(error))
        }
        guard route.allows(request.method) else {
            let allowed = route.methods.map(\.rawValue).joined(separator: ", ")
            let message = "\(path) takes \(allowed), not \(request.method.rawValue)"
            var response = openAI ? OpenAIEmbeddings.error(InferenceError(.unimplemented, message)) : RESTResponse.error(405, message)
            response.status = 405
            response.headers.add(name: "allow", value: allowed)
            return respond(response)
        }
        switch route {
        case .infer(let name, let version):
            infer(name, version, request, calls: &calls, respond: respond)
        case .predict(let name):
            predict(name, request, calls: &calls, respond: respond)
        case .embeddings:
            do throws(InferenceError) {
                let decoded = try request.body.withUnsafeReadableBytes { body throws(InferenceError) in try OpenAIEmbeddings.decode(body) }
                request.notes?.model(decoded.model, version: "")
                calls += try OpenAIEmbeddings.calls(for: decoded, core: core, respond: respond).map { call in
                    var call = call
                    call.notes = request.notes
                    return call
                }
            } catch {
                respond(OpenAIEmbeddings.error(error))
            }
        case .openAIModels:
            respond(.json(200, OpenAIEmbeddings.models(core)))
        case .load(let name), .unload(let name):
            let load = if case .load = route { true } else { false }
            // Refused at once on the event loop (the usual case: the server is not in explicit
            // mode); only real loads and unloads go to a Task.
            if let refusal = core.controlRefusal(load: load, model: name) { return respond(.error(refusal)) }
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

    /// The 401 or 403 for a request the policy refuses (the OpenAI error shape under `/v1`),
    /// with its `WWW-Authenticate` challenge; nil when it may go on.
    private func refusal(_ requirement: AccessRequirement, _ request: RESTRequest, openAI: Bool) -> RESTResponse? {
        guard let access else { return nil }
        let decision = access.check(requirement, headers: request.headers)
        decision.note(in: request.notes)
        guard let refusal = decision.refusal else { return nil }
        let error = InferenceError(refusal.code, refusal.message)
        var response = openAI ? OpenAIEmbeddings.error(error) : RESTResponse.error(error)
        if let challenge = decision.challenge { response.headers.add(name: "www-authenticate", value: challenge) }
        return response
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
            calls.append(InferenceCore.Call(request: decoded.request, deadline: nil, cancellation: nil, notes: http.notes) { result in
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

    private func predict(_ name: String?, _ http: RESTRequest, calls: inout [InferenceCore.Call], respond: @escaping Respond) {
        let body = http.body
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
            calls.append(InferenceCore.Call(request: request, deadline: nil, cancellation: nil, notes: http.notes) { result in
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
        case .infer, .predict, .load, .unload, .embeddings, .openAIModels:
            // answer(_:calls:respond:) takes these before they reach here.
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
        case embeddings
        case openAIModels

        /// Compares segments in place: array-literal patterns would build an array per case
        /// for every request.
        init?(_ parts: [String], predictModel: String?) {
            let n = parts.count
            func at(_ index: Int, _ word: String) -> Bool { index < n && parts[index] == word }
            if at(0, "predict") {
                guard n <= 2 else { return nil }
                self = .predict(n == 2 ? parts[1] : predictModel)
                return
            }
            if at(0, "v1") {
                guard n == 2 else { return nil }
                if parts[1] == "embeddings" { self = .embeddings; return }
                if parts[1] == "models" { self = .openAIModels; return }
                return nil
            }
            guard at(0, "v2") else { return nil }
            if n == 1 { self = .serverMetadata; return }
            if n == 3, parts[1] == "health" {
                if parts[2] == "live" { self = .live; return }
                if parts[2] == "ready" { self = .ready; return }
                return nil
            }
            if n == 3, parts[1] == "repository", parts[2] == "index" { self = .index; return }
            if n == 5, parts[1] == "repository", parts[2] == "models" {
                if parts[4] == "load" { self = .load(parts[3]); return }
                if parts[4] == "unload" { self = .unload(parts[3]); return }
                return nil
            }
            guard at(1, "models"), n >= 3 else { return nil }
            if n == 3, parts[2] == "stats" { self = .statistics("", ""); return }
            let name = parts[2]
            var next = 3
            var version = ""
            if at(3, "versions"), n >= 5 {
                version = parts[4]
                next = 5
            }
            switch n - next {
            case 0: self = .modelMetadata(name, version)
            case 1:
                switch parts[next] {
                case "infer": self = .infer(name, version)
                case "ready": self = .modelReady(name, version)
                case "config": self = .modelConfig(name, version)
                case "stats": self = .statistics(name, version)
                default: return nil
                }
            default: return nil
            }
        }

        /// The model and version the route names, for the access log.
        var model: (name: String, version: String)? {
            switch self {
            case .modelMetadata(let name, let version), .modelReady(let name, let version), .modelConfig(let name, let version),
                .statistics(let name, let version), .infer(let name, let version):
                name.isEmpty ? nil : (name: name, version: version)
            case .load(let name), .unload(let name): (name: name, version: "")
            case .predict(let name): name.map { (name: $0, version: "") }
            case .serverMetadata, .live, .ready, .index, .embeddings, .openAIModels: nil
            }
        }

        /// What the route needs under ``AccessPolicy``.
        var requirement: AccessRequirement {
            switch self {
            case .live, .ready, .modelReady: .health
            case .infer, .predict, .embeddings: .scope(.infer)
            case .serverMetadata, .modelMetadata, .modelConfig, .statistics, .index, .openAIModels: .scope(.read)
            case .load, .unload: .scope(.admin)
            }
        }

        func allows(_ method: HTTPMethod) -> Bool {
            switch self {
            case .infer, .predict, .index, .load, .unload, .embeddings: method == .POST
            default: method == .GET || method == .HEAD
            }
        }

        var methods: [HTTPMethod] {
            switch self {
            case .infer, .predict, .index, .load, .unload, .embeddings: [.POST]
            default: [.GET, .HEAD]
            }
        }
    }
}
