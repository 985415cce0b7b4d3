public import MaaSCore
public import MaaSGRPC
import NIOHTTP1

// REST over h2c lives apart from the HTTP/1.1 pipeline: the http fuzz harness builds that one
// without the gRPC transport (nghttp2, NIOSSL), which this needs.
extension HTTPFrontend {
    /// REST over h2c: the HTTP/2 requests of the serving port that are not gRPC calls.
    public static func plainHTTPHandler(core: InferenceCore, limits: Limits = Limits()) -> PlainHTTPHandler {
        let router = RESTRouter(core: core, predictModel: limits.predictModel, metrics: limits.metrics, access: limits.access)
        return { request, respond in
            var headers = HTTPHeaders()
            for (name, value) in request.headers { headers.add(name: name, value: value) }
            let rest = RESTRequest(
                method: HTTPMethod(rawValue: request.method), uri: request.path, headers: headers, body: request.body, notes: request.notes)
            var calls: [InferenceCore.Call] = []
            router.answer(rest, calls: &calls) { response in
                respond(PlainHTTPResponse(status: response.status, headers: response.headers.map { ($0.name, $0.value) }, body: response.body))
            }
            if !calls.isEmpty { router.core.infer(calls) }
        }
    }
}
