import Foundation
import MaaSText
import Testing

/// Fixtures copied from shared/fixtures/transformers/tokenizer, and the corpus HF `tokenizers` tokenized
/// (scripts/peers/make_tokenizer_corpus.py; Tests/interop/test_tokenizer.py checks it is still HF's).
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

    static func path(_ name: String) -> String { root + "/" + name }

    static func bytes(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: path(name))))
    }

    static func minilmJSON() throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(bytes("minilm_tokenizer.json"))) as? [String: Any])
    }

    /// MiniLM's tokenizer.json with `edit` applied.
    static func tokenizer(editing edit: (inout [String: Any]) -> Void) throws -> WordPieceTokenizer {
        var json = try minilmJSON()
        edit(&json)
        return try WordPieceTokenizer(json: Array(try JSONSerialization.data(withJSONObject: json)))
    }

    struct Case {
        var text: String
        var ids: [Int32]
        var idsMax16: [Int32]
    }

    static func corpus() throws -> (version: String, cases: [Case]) {
        let document = try #require(
            try JSONSerialization.jsonObject(with: Data(bytes("tokenizer_corpus.json"))) as? [String: Any])
        let cases = try #require(document["cases"] as? [[String: Any]])
        return (
            document["tokenizers_version"] as? String ?? "?",
            try cases.map { item in
                Case(
                    text: try #require(item["text"] as? String),
                    ids: try #require(item["ids"] as? [Int]).map { Int32($0) },
                    idsMax16: try #require(item["ids_max16"] as? [Int]).map { Int32($0) }
                )
            }
        )
    }
}

/// Text, expected, got and the first differing index: enough to reproduce a mismatch by hand.
func mismatch(_ text: String, _ expected: [Int32], _ got: [Int32]) -> String {
    let first = zip(expected, got).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(expected.count, got.count)
    let scalars = text.unicodeScalars.map { String($0.value, radix: 16) }.joined(separator: " ")
    return "text \(text.debugDescription) [\(scalars)]\n expected \(expected)\n got      \(got)\n first difference at index \(first)"
}

@Suite("WordPiece tokenizer against HF tokenizers")
struct WordPieceTokenizerTests {
    static let minilm: WordPieceTokenizer = {
        do { return try WordPieceTokenizer(json: Fixtures.bytes("minilm_tokenizer.json")) } catch { fatalError("\(error)") }
    }()

    @Test("every corpus case gives HF's ids, untruncated and with max_length 16")
    func corpus() throws {
        let (version, cases) = try Fixtures.corpus()
        #expect(cases.count >= 1200, "corpus from tokenizers \(version)")
        var failures = 0
        for item in cases {
            let full = Self.minilm.encode(item.text, maxLength: Int.max)
            let short = Self.minilm.encode(item.text, maxLength: 16)
            if full != item.ids || short != item.idsMax16 {
                failures += 1
                if failures <= 5 {
                    let message =
                        full != item.ids
                        ? mismatch(item.text, item.ids, full) : "max16: " + mismatch(item.text, item.idsMax16, short)
                    Issue.record("mismatch \(failures) against tokenizers \(version):\n\(message)")
                }
            }
        }
        #expect(failures == 0, "\(failures) of \(cases.count) cases differ")
    }

    /// shared/fixtures/transformers/tokenizer/sentences.json: the sentences the MiniLM fixtures were made from.
    static let sentences: [(String, [Int32])] = [
        ("A man is playing a guitar.", [101, 1037, 2158, 2003, 2652, 1037, 2858, 1012, 102]),
        ("The cat sits outside.", [101, 1996, 4937, 7719, 2648, 1012, 102]),
        ("The new movie is awesome and everyone loves it.", [101, 1996, 2047, 3185, 2003, 12476, 1998, 3071, 7459, 2009, 1012, 102]),
        (
            "A man is playing a guitar on stage in front of a crowd.",
            [101, 1037, 2158, 2003, 2652, 1037, 2858, 2006, 2754, 1999, 2392, 1997, 1037, 4306, 1012, 102]
        ),
        ("The new movie is awesome.", [101, 1996, 2047, 3185, 2003, 12476, 1012, 102]),
        ("A man is playing music.", [101, 1037, 2158, 2003, 2652, 2189, 1012, 102]),
        ("The new movie is so great.", [101, 1996, 2047, 3185, 2003, 2061, 2307, 1012, 102]),
    ]

    @Test("the MiniLM fixture sentences", arguments: sentences.indices)
    func sentence(index: Int) {
        let (text, expected) = Self.sentences[index]
        let got = Self.minilm.encode(text, maxLength: 128)
        #expect(got == expected, "\(mismatch(text, expected, got))")
    }

    @Test("pad id and vocabulary size")
    func metadata() throws {
        #expect(Self.minilm.padID == 0)
        #expect(Self.minilm.vocabularySize == 30522)
        let noPadding = try Fixtures.tokenizer { json in
            json["padding"] = NSNull()
            var model = json["model"] as! [String: Any]
            var vocab = model["vocab"] as! [String: Any]
            vocab["[PAD]"] = nil
            vocab["[unused-pad]"] = 0
            model["vocab"] = vocab
            json["model"] = model
        }
        #expect(noPadding.padID == 0)
        let padFromVocab = try Fixtures.tokenizer { json in json["padding"] = NSNull() }
        #expect(padFromVocab.padID == 0)
        let padFromField = try Fixtures.tokenizer { json in json["padding"] = ["pad_id": 7] }
        #expect(padFromField.padID == 7)
    }

    @Test("truncation keeps the special tokens and never exceeds maxLength")
    func truncation() {
        let text = "one two three four five six seven"
        // HF: enable_truncation(max_length=2/3/4) on this text.
        #expect(Self.minilm.encode(text, maxLength: 2) == [101, 102])
        #expect(Self.minilm.encode(text, maxLength: 3) == [101, 2028, 102])
        #expect(Self.minilm.encode(text, maxLength: 4) == [101, 2028, 2048, 102])
        // Below the template's two special tokens HF returns the whole text; we return at most maxLength.
        #expect(Self.minilm.encode(text, maxLength: 1) == [101])
        #expect(Self.minilm.encode(text, maxLength: 0) == [])
        #expect(Self.minilm.encode(text, maxLength: -5) == [])
        let long = String(repeating: "word ", count: 10_000)
        #expect(Self.minilm.encode(long, maxLength: 128).count == 128)
    }

    @Test("strip_accents false and lowercase false keep case and accents")
    func casedAndAccented() throws {
        // HF ids for these texts with the same edit (the uncased vocabulary has no "C", "Ü", "é" pieces).
        let cased = try Fixtures.tokenizer { json in
            var normalizer = json["normalizer"] as! [String: Any]
            normalizer["strip_accents"] = false
            normalizer["lowercase"] = false
            json["normalizer"] = normalizer
        }
        #expect(cased.encode("Café Über naïve", maxLength: 64) == [101, 100, 100, 100, 102])
        #expect(cased.encode("Hello World", maxLength: 64) == [101, 100, 100, 102])
        #expect(cased.encode("résumé", maxLength: 64) == [101, 100, 102])
        #expect(cased.encode("hello world", maxLength: 64) == [101, 7592, 2088, 102])
        #expect(Self.minilm.encode("Café Über naïve", maxLength: 64) == [101, 7668, 19169, 15743, 102])
        let lowercaseOnly = try Fixtures.tokenizer { json in
            var normalizer = json["normalizer"] as! [String: Any]
            normalizer["strip_accents"] = false
            json["normalizer"] = normalizer
        }
        #expect(lowercaseOnly.encode("Café Über naïve", maxLength: 64) == [101, 100, 100, 100, 102])
        #expect(lowercaseOnly.encode("HELLO", maxLength: 64) == [101, 7592, 102])
    }

    @Test("added tokens: single_word, lstrip/rstrip, normalized, and ids already in the vocabulary")
    func addedTokenOptions() throws {
        let tokenizer = try Fixtures.tokenizer { json in
            var added = json["added_tokens"] as! [Any]
            func token(_ id: Int, _ content: String, singleWord: Bool = false, strip: Bool = false, normalized: Bool = false)
                -> [String: Any]
            {
                ["id": id, "content": content, "single_word": singleWord, "lstrip": strip, "rstrip": strip,
                 "normalized": normalized, "special": false]
            }
            added += [
                token(30522, "<ent>", singleWord: true), token(30523, "<L>", strip: true),
                token(30524, "hello world", normalized: true), token(30525, "hello"),
            ]
            json["added_tokens"] = added
        }
        #expect(tokenizer.vocabularySize == 30525)
        // Expected ids from HF tokenizers 0.23.3 with the same added tokens.
        let cases: [(String, [Int32])] = [
            ("a <ent> b", [101, 1037, 30522, 1038, 102]),
            ("a<ent> b", [101, 1037, 1026, 4372, 2102, 1028, 1038, 102]),
            ("<ent>", [101, 30522, 102]),
            ("<ent>é", [101, 1026, 4372, 2102, 1028, 1041, 102]),
            ("é<ent>", [101, 1041, 1026, 4372, 2102, 1028, 102]),
            ("<ent>,", [101, 30522, 1010, 102]),
            ("x <L>  y", [101, 1060, 30523, 1061, 102]),
            ("x<L>y", [101, 1060, 30523, 1061, 102]),
            ("  <L>  ", [101, 30523, 102]),
            ("Hello World!", [101, 30524, 999, 102]),
            ("HELLO WORLD", [101, 30524, 102]),
            ("hello world", [101, 7592, 2088, 102]),
            ("hellO", [101, 7592, 102]),
        ]
        for (text, expected) in cases {
            let got = tokenizer.encode(text, maxLength: 64)
            #expect(got == expected, "\(mismatch(text, expected, got))")
        }
    }

    @Test("BertProcessing gives the same ids as the TemplateProcessing it replaces")
    func bertProcessing() throws {
        let tokenizer = try Fixtures.tokenizer { json in
            json["post_processor"] = ["type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]]
        }
        for (text, expected) in Self.sentences {
            #expect(tokenizer.encode(text, maxLength: 128) == expected)
        }
    }

    static let badFiles: [(String, @Sendable (inout [String: Any]) -> Void, String)] = [
        ("normalizer type", { $0["normalizer"] = ["type": "NFKC"] }, "normalizer.type: expected BertNormalizer, found \"NFKC\""),
        ("no normalizer", { $0["normalizer"] = NSNull() }, "normalizer: expected BertNormalizer, found null"),
        ("pre-tokenizer", { $0["pre_tokenizer"] = ["type": "Whitespace"] }, "pre_tokenizer.type: expected BertPreTokenizer"),
        ("model type", { json in
            var model = json["model"] as! [String: Any]
            model["type"] = "BPE"
            json["model"] = model
        }, "model.type: expected WordPiece, found \"BPE\""),
        ("missing vocab", { json in
            var model = json["model"] as! [String: Any]
            model["vocab"] = nil
            json["model"] = model
        }, "model.vocab: expected an object of token to id, found nothing (missing)"),
        ("bad vocab id", { json in
            var model = json["model"] as! [String: Any]
            model["vocab"] = ["[UNK]": 0, "a": "one"]
            json["model"] = model
        }, "model.vocab[\"a\"]: expected a token id"),
        ("unknown token", { json in
            var model = json["model"] as! [String: Any]
            model["unk_token"] = "<unk>"
            json["model"] = model
        }, "model.unk_token \"<unk>\" is not in model.vocab"),
        ("post-processor", { $0["post_processor"] = ["type": "RobertaProcessing"] },
         "post_processor.type: expected TemplateProcessing or BertProcessing, found \"RobertaProcessing\""),
        ("strip_accents", { json in
            var normalizer = json["normalizer"] as! [String: Any]
            normalizer["strip_accents"] = "yes"
            json["normalizer"] = normalizer
        }, "normalizer.strip_accents: expected true, false or null"),
    ]

    @Test("unsupported or broken tokenizer.json names the field", arguments: badFiles.indices)
    func badFile(index: Int) throws {
        let (name, edit, expected) = Self.badFiles[index]
        #expect(throws: TokenizerError.self, "\(name)") { _ = try Fixtures.tokenizer(editing: edit) }
        do {
            _ = try Fixtures.tokenizer(editing: edit)
        } catch let error as TokenizerError {
            #expect(error.message.hasPrefix(expected), "\(name): \(error.message)")
        }
    }

    @Test("invalid JSON and a non-object are refused")
    func invalidJSON() {
        for (bytes, expected) in [(Array("{\"model\": ".utf8), "tokenizer.json is not valid JSON"),
                                  (Array("[1, 2]".utf8), "tokenizer.json: expected a JSON object at the top level")] {
            do {
                _ = try WordPieceTokenizer(json: bytes)
                Issue.record("no error for \(expected)")
            } catch {
                #expect(error.message.hasPrefix(expected), "\(error.message)")
            }
        }
    }
}
