// libFuzzer harness: config.json (ModelConfig's JSON form). Property: no crash, errors only.
import MaaSCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = try? ModelConfig.parse(json: Array(UnsafeBufferPointer(start: data, count: size)), modelName: "m")
    return 0
}
