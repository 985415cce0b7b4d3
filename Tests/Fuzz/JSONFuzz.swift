// libFuzzer harness: MaaSJSON's tree reader, pull reader, nested walk and writer.
// Properties: no crash; both readers agree on what is well-formed; what the writer writes
// reads back as the same value.
import MaaSJSON

private struct Count: NestedArrayVisitor {
    var elements = 0
    mutating func element(_ value: JSONValue, at path: [Int]) { elements += 1 }
}

private func pullAccepts(_ buffer: UnsafeRawBufferPointer) -> Bool {
    var reader = JSONReader(buffer)
    do {
        _ = try reader.readValue()
        try reader.finish()
        return true
    } catch {
        return false
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let buffer = UnsafeRawBufferPointer(start: data, count: size)
    let tree = try? JSONReader.parse(buffer)
    precondition((tree != nil) == pullAccepts(buffer), "the tree and pull readers disagree")
    if let tree {
        var writer = JSONWriter()
        writer.value(tree)
        let again = writer.bytes.withUnsafeBytes { try? JSONReader.parse($0) }
        precondition(again == tree, "written JSON does not read back as the same value")
    }
    if let root = try? JSONReader.parse(buffer, deferring: ["data"]), case .deferred(let range)? = root["data"] {
        var count = Count()
        try? JSONReader.walkNested(buffer, range, &count)
    }
    return 0
}
