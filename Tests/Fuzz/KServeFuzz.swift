// libFuzzer harness: the KServe REST request decoder (JSON and Triton's binary extension) and
// the seed's /predict body. The first byte picks a header length (none, or a split point) so
// that binary data is reached. Properties: no crash; a decoded tensor never holds more bytes
// than its shape needs (and the body could hold).
import MaaSCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzKServe(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let body = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    let headerLength: Int? = data[0] == 0 ? nil : min(Int(data[0]) * 4, body.count)
    if let decoded = try? KServeJSON.request(model: "m", version: "", body: body, headerLength: headerLength) {
        for (input, bytes) in zip(decoded.request.inputs, decoded.request.rawInputContents) {
            let count = input.shape.reduce(1) { $0 * Int($1) }
            if let size = DataType(kserveName: input.datatype)?.byteSize, headerLength == nil {
                precondition(bytes.count == count * size, "decoded \(bytes.count) bytes for \(count) \(input.datatype) values")
            }
            precondition(bytes.count <= max(body.count * 8, 64), "a tensor larger than its body could describe")
        }
    }
    if let (values, shape) = try? PredictRoute.input(from: body) {
        precondition(values.count == shape.reduce(1, *), "/predict values do not fill their shape")
    }
    return 0
}
