import FoundationEssentials
import MaaSCore
import MaaSJSON
import MaaSModels
import Synchronization

/// OpenAI's embeddings API over the models that take text (`text_input`), as
/// text-embeddings-inference, vLLM and Ollama serve it: `POST /v1/embeddings` and
/// `GET /v1/models`, errors in OpenAI's `{"error": {"message", "type", "code"}}`.
enum OpenAIEmbeddings {
    /// OpenAI's own limit on inputs per request.
    static let maxInputs = 2048

    struct Request {
        var model: String
        var texts: [String]
        var base64: Bool
        /// `dimensions`, checked against the model once it is known (see ``calls(for:core:respond:)``).
        var dimensions: Int64?
    }

    static func decode(_ body: UnsafeRawBufferPointer) throws(InferenceError) -> Request {
        let root: JSONValue
        do {
            root = try JSONReader.parse(body)
        } catch {
            throw .invalidInput("the body is not valid JSON: \(error)")
        }
        guard root.members != nil else { throw .invalidInput("the body must be a JSON object, got \(root.kind)") }
        guard let model = root["model"]?.string else { throw .invalidInput("'model' is required: the name of a text model") }
        let texts: [String]
        switch root["input"] {
        case .string(let text)?:
            texts = [text]
        case .array(let items)?:
            guard !items.isEmpty else { throw .invalidInput("'input' is an empty list") }
            guard items.count <= maxInputs else { throw .invalidInput("'input' has \(items.count) texts; at most \(maxInputs) per request") }
            texts = try items.enumerated().map { (index, item) throws(InferenceError) in
                guard let text = item.string else {
                    throw .invalidInput("input[\(index)] must be a string, got \(item.kind) (token-id input is not supported: send text)")
                }
                return text
            }
        case let other?:
            throw .invalidInput("'input' must be a string or a list of strings, got \(other.kind)")
        case nil:
            throw .invalidInput("'input' is required: a string or a list of strings")
        }
        var base64 = false
        if let format = root["encoding_format"] {
            switch format.string {
            case "float"?: base64 = false
            case "base64"?: base64 = true
            default: throw .invalidInput("'encoding_format' must be \"float\" or \"base64\", got \(KServeJSON.describe(format))")
            }
        }
        var dimensions: Int64?
        if let value = root["dimensions"], value != .null {
            guard let number = value.number?.int64 else { throw .invalidInput("'dimensions' must be a whole number") }
            dimensions = number
        }
        return Request(model: model, texts: texts, base64: base64, dimensions: dimensions)
    }

    /// The inference calls for `request` (as many as the model's batch limit asks), and the
    /// answer once all are back.
    static func calls(
        for request: Request, core: InferenceCore, respond: @escaping @Sendable (RESTResponse) -> Void
    ) throws(InferenceError) -> [InferenceCore.Call] {
        let model: ModelVersion
        do {
            model = try core.model(request.model, "")
        } catch {
            throw InferenceError(.notFound, "the model '\(request.model)' does not exist")
        }
        guard let text = model.text, let input = model.config.inputs.first, let output = model.config.outputs.first else {
            throw InferenceError(.invalidArgument, "the model '\(request.model)' does not take text (its config has no text_input)")
        }
        if let dimensions = request.dimensions, let width = output.dims.last, dimensions != width {
            throw InferenceError(.invalidArgument, "the model '\(request.model)' has \(width) dimensions; 'dimensions' \(dimensions) cannot be served")
        }
        let tokens = request.texts.reduce(0) { $0 + text.tokenCount($1) }
        let chunk = max(model.config.maxBatchSize, 1)
        let starts = Array(stride(from: 0, to: request.texts.count, by: chunk))
        let gather = Gather(parts: starts.count) { result in
            switch result {
            case .success(let embeddings):
                respond(.json(200, body(embeddings, model: request.model, base64: request.base64, tokens: tokens)))
            case .failure(let error):
                respond(Self.error(error))
            }
        }
        return starts.enumerated().map { part, start in
            let texts = request.texts[start..<min(start + chunk, request.texts.count)]
            let inference = InferenceRequest(modelName: request.model, inputs: [
                InferInput(name: input.name, datatype: "BYTES", shape: [Int64(texts.count), 1], contents: .bytes(texts.map { Array($0.utf8) })),
            ], outputs: [output.name])
            return InferenceCore.Call(request: inference, deadline: nil, cancellation: nil) { result in
                gather.complete(part, result.flatMap { response in
                    guard let tensor = response.outputs.first?.tensor, tensor.dataType == .float32, tensor.rank == 2 else {
                        return .failure(InferenceError(.internal, "the model '\(request.model)' returned no [texts, dimensions] FP32 embedding"))
                    }
                    return .success(tensor)
                })
            }
        }
    }

    /// The embeddings of each part, in order, once every part is back; the first error otherwise.
    private final class Gather: Sendable {
        private let state: Mutex<(parts: [Tensor?], left: Int, failed: Bool)>
        private let done: @Sendable (Result<[Tensor], InferenceError>) -> Void

        init(parts: Int, done: @escaping @Sendable (Result<[Tensor], InferenceError>) -> Void) {
            state = Mutex((Array(repeating: nil, count: parts), parts, false))
            self.done = done
        }

        func complete(_ part: Int, _ result: Result<Tensor, InferenceError>) {
            let finished: Result<[Tensor], InferenceError>? = state.withLock { state in
                guard !state.failed else { return nil }
                switch result {
                case .success(let tensor):
                    state.parts[part] = tensor
                    state.left -= 1
                    return state.left == 0 ? .success(state.parts.map { $0! }) : nil
                case .failure(let error):
                    state.failed = true
                    return .failure(error)
                }
            }
            if let finished { done(finished) }
        }
    }

    private static func body(_ parts: [Tensor], model: String, base64: Bool, tokens: Int) -> [UInt8] {
        var json = JSONWriter(capacity: 256 + parts.reduce(0) { $0 + $1.elementCount * 12 })
        json.beginObject()
        json.key("object")
        json.string("list")
        json.key("data")
        json.beginArray()
        var index = 0
        for tensor in parts {
            let width = tensor.shape[1]
            let values = tensor.scalars(as: Float.self)
            for row in 0..<tensor.shape[0] {
                let embedding = values[row * width..<(row + 1) * width]
                json.beginObject()
                json.key("object")
                json.string("embedding")
                json.key("index")
                json.int(index)
                json.key("embedding")
                if base64 {
                    // Little-endian float32 bytes, as OpenAI's client decodes them.
                    json.string(embedding.withUnsafeBytes { Data($0).base64EncodedString() })
                } else {
                    json.beginArray()
                    for value in embedding { json.float(value) }
                    json.endArray()
                }
                json.endObject()
                index += 1
            }
        }
        json.endArray()
        json.key("model")
        json.string(model)
        json.key("usage")
        json.beginObject()
        json.key("prompt_tokens")
        json.int(tokens)
        json.key("total_tokens")
        json.int(tokens)
        json.endObject()
        json.endObject()
        return json.bytes
    }

    /// `GET /v1/models`: the models that take text, each version once by name.
    static func models(_ core: InferenceCore) -> JSONValue {
        var seen = Set<String>()
        let text = core.repository.loadedVersions().filter { $0.text != nil && seen.insert($0.name).inserted }
        return .object([
            ("object", .string("list")),
            ("data", .array(text.sorted { $0.name < $1.name }.map { model in
                .object([
                    ("id", .string(model.name)), ("object", .string("model")),
                    ("created", .number(.int(model.loadedAt))), ("owned_by", .string(InferenceCore.serverName)),
                ])
            })),
        ])
    }

    /// OpenAI's error body: `invalid_request_error` for what the client sent (with
    /// `model_not_found` for an unknown model), `server_error` for the rest.
    static func error(_ error: InferenceError) -> RESTResponse {
        let status = error.code.httpStatus
        let type = switch status {
        case 400..<500 where status != 429: "invalid_request_error"
        case 429: "rate_limit_error"
        default: "server_error"
        }
        var json = JSONWriter()
        json.beginObject()
        json.key("error")
        json.beginObject()
        json.key("message")
        json.string(error.message)
        json.key("type")
        json.string(type)
        json.key("param")
        json.null()
        json.key("code")
        switch status {
        case 401: json.string("invalid_api_key")
        case 403: json.string("insufficient_permissions")
        case 404: json.string("model_not_found")
        default: json.null()
        }
        json.endObject()
        json.endObject()
        var response = RESTResponse.json(status, json.bytes)
        response.addRetryAfter(error)
        return response
    }
}
