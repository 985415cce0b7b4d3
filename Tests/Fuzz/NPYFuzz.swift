// libFuzzer harness: the .npy reader. Properties: no crash; what decodes encodes back to a
// file that decodes to the same tensor.
import MaaSCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNPY(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let tensor = try? NPY.decode(bytes) else { return 0 }
    let again = try? NPY.decode(try NPY.encode(tensor))
    precondition(again?.shape == tensor.shape && again?.dataType == tensor.dataType, "an encoded .npy reads back differently")
    return 0
}
