// libFuzzer harness: the WordPiece tokenizer on arbitrary text (invalid UTF-8 repaired as the
// server's BYTES decoding refuses it first; here every string the tokenizer could be given).
// Properties: no crash; ids inside the vocabulary; no more ids than max_length.
import Foundation
import MaaSText

private let tokenizer: WordPieceTokenizer = {
    let path = ProcessInfo.processInfo.environment["MAAS_FUZZ_TOKENIZER"] ?? "Tests/MaaSTextTests/Fixtures/minilm_tokenizer.json"
    guard let data = FileManager.default.contents(atPath: path), let loaded = try? WordPieceTokenizer(json: Array(data)) else {
        fatalError("cannot read the tokenizer at \(path) (MAAS_FUZZ_TOKENIZER)")
    }
    return loaded
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTokenizer(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let ids = tokenizer.encode(text, maxLength: 128)
    precondition(ids.count <= 128, "\(ids.count) ids past max_length 128")
    precondition(ids.allSatisfy { $0 >= 0 && $0 < 30522 }, "an id outside the vocabulary")
    return 0
}
