internal import MaaSJSON

/// The parts of a tokenizer.json this module implements, checked field by field so an unsupported
/// file fails at load with the field's name rather than giving wrong ids later.
struct TokenizerFile {
    struct Added {
        var token: AddedToken
        var normalized: Bool
    }

    var normalizer: BertNormalizer
    var vocabulary: [String: Int32] = [:]
    var unknownToken: String
    var continuingSubwordPrefix: String
    var maxInputCharsPerWord: Int
    var addedTokens: [Added] = []
    var prefixIDs: [Int32] = []
    var suffixIDs: [Int32] = []
    var padID: Int32?

    init(json bytes: [UInt8]) throws(TokenizerError) {
        let root: JSONValue
        do {
            root = try bytes.withUnsafeBytes { (raw) throws(JSONError) in try JSONReader.parse(raw) }
        } catch {
            throw TokenizerError("tokenizer.json is not valid JSON: \(error)")
        }
        guard case .object = root else {
            throw TokenizerError("tokenizer.json: expected a JSON object at the top level, found \(Self.kind(root))")
        }

        let normalizerObject = try Self.typed(root["normalizer"], field: "normalizer", expected: "BertNormalizer")
        let lowercase = try Self.bool(normalizerObject["lowercase"], field: "normalizer.lowercase", default: true)
        normalizer = BertNormalizer(
            cleanText: try Self.bool(normalizerObject["clean_text"], field: "normalizer.clean_text", default: true),
            handleChineseChars: try Self.bool(
                normalizerObject["handle_chinese_chars"], field: "normalizer.handle_chinese_chars", default: true),
            // null (the usual value) means "as lowercase", as HF's BertNormalizer does.
            stripAccents: try Self.bool(normalizerObject["strip_accents"], field: "normalizer.strip_accents", default: lowercase),
            lowercase: lowercase
        )
        _ = try Self.typed(root["pre_tokenizer"], field: "pre_tokenizer", expected: "BertPreTokenizer")

        let model = try Self.typed(root["model"], field: "model", expected: "WordPiece")
        guard let vocab = model["vocab"]?.members else {
            throw TokenizerError("model.vocab: expected an object of token to id, found \(Self.kind(model["vocab"]))")
        }
        vocabulary.reserveCapacity(vocab.count)
        for (token, value) in vocab {
            let id = try Self.id(value, field: "model.vocab[\"\(token)\"]")
            guard vocabulary.updateValue(id, forKey: token) == nil else {
                throw TokenizerError("model.vocab: token \"\(token)\" appears twice")
            }
        }
        unknownToken = try Self.string(model["unk_token"], field: "model.unk_token", default: "[UNK]")
        continuingSubwordPrefix = try Self.string(
            model["continuing_subword_prefix"], field: "model.continuing_subword_prefix", default: "##")
        maxInputCharsPerWord = try Self.int(
            model["max_input_chars_per_word"], field: "model.max_input_chars_per_word", default: 100)

        try readAddedTokens(root["added_tokens"])
        try readPostProcessor(root["post_processor"])
        if let padding = root["padding"], case .object = padding, let pad = padding["pad_id"], pad != .null {
            padID = try Self.id(pad, field: "padding.pad_id")
        }
    }

    private mutating func readAddedTokens(_ value: JSONValue?) throws(TokenizerError) {
        guard let value, value != .null else { return }
        guard let list = value.array else {
            throw TokenizerError("added_tokens: expected an array, found \(Self.kind(value))")
        }
        for (index, item) in list.enumerated() {
            let field = "added_tokens[\(index)]"
            guard case .object = item else {
                throw TokenizerError("\(field): expected an object, found \(Self.kind(item))")
            }
            let content = try Self.string(item["content"], field: "\(field).content", default: nil)
            // Skipped as HF skips them: an empty pattern would match everywhere.
            if content.isEmpty { continue }
            let token = AddedToken(
                content: Array(content.unicodeScalars),
                id: try Self.id(item["id"], field: "\(field).id"),
                singleWord: try Self.bool(item["single_word"], field: "\(field).single_word", default: false),
                lstrip: try Self.bool(item["lstrip"], field: "\(field).lstrip", default: false),
                rstrip: try Self.bool(item["rstrip"], field: "\(field).rstrip", default: false)
            )
            let normalized = try Self.bool(item["normalized"], field: "\(field).normalized", default: true)
            addedTokens.append(Added(token: token, normalized: normalized))
        }
    }

    private mutating func readPostProcessor(_ value: JSONValue?) throws(TokenizerError) {
        guard let object = value, object != .null else { return }
        guard case .object = object else {
            throw TokenizerError("post_processor: expected an object, found \(Self.kind(object))")
        }
        switch object["type"]?.string {
        case "TemplateProcessing":
            try readTemplate(object)
        case "BertProcessing":
            prefixIDs = [try Self.pairID(object["cls"], field: "post_processor.cls")]
            suffixIDs = [try Self.pairID(object["sep"], field: "post_processor.sep")]
        default:
            throw TokenizerError(
                "post_processor.type: expected TemplateProcessing or BertProcessing, found \(Self.kind(object["type"]))")
        }
    }

    private mutating func readTemplate(_ object: JSONValue) throws(TokenizerError) {
        guard let single = object["single"]?.array else {
            throw TokenizerError("post_processor.single: expected an array, found \(Self.kind(object["single"]))")
        }
        let specials = object["special_tokens"] ?? .object([])
        var seenSequence = false
        for (index, item) in single.enumerated() {
            let field = "post_processor.single[\(index)]"
            if let piece = item["SpecialToken"], case .object = piece {
                let name = try Self.string(piece["id"], field: "\(field).SpecialToken.id", default: nil)
                guard let ids = specials[name]?["ids"]?.array else {
                    throw TokenizerError("\(field): special token \"\(name)\" has no ids in post_processor.special_tokens")
                }
                for (position, id) in ids.enumerated() {
                    let value = try Self.id(id, field: "post_processor.special_tokens[\"\(name)\"].ids[\(position)]")
                    if seenSequence { suffixIDs.append(value) } else { prefixIDs.append(value) }
                }
            } else if let piece = item["Sequence"], case .object = piece {
                let name = try Self.string(piece["id"], field: "\(field).Sequence.id", default: nil)
                guard name == "A", !seenSequence else {
                    throw TokenizerError("\(field): expected one Sequence A in the single template, found Sequence \(name)")
                }
                seenSequence = true
            } else {
                throw TokenizerError("\(field): expected SpecialToken or Sequence, found \(Self.kind(item))")
            }
        }
        guard seenSequence else { throw TokenizerError("post_processor.single: no Sequence A in the template") }
    }

    // MARK: Field readers: each names its field and what it found.

    private static func typed(_ value: JSONValue?, field: String, expected: String) throws(TokenizerError) -> JSONValue {
        guard let object = value, case .object = object else {
            throw TokenizerError("\(field): expected \(expected), found \(kind(value))")
        }
        let type = object["type"]?.string
        guard type == expected else {
            throw TokenizerError("\(field).type: expected \(expected), found \(type.map { "\"\($0)\"" } ?? kind(object["type"]))")
        }
        return object
    }

    private static func bool(_ value: JSONValue?, field: String, default fallback: Bool) throws(TokenizerError) -> Bool {
        guard let value, value != .null else { return fallback }
        guard let bool = value.bool else {
            throw TokenizerError("\(field): expected true, false or null, found \(kind(value))")
        }
        return bool
    }

    private static func string(_ value: JSONValue?, field: String, default fallback: String?) throws(TokenizerError) -> String {
        if let string = value?.string { return string }
        if let fallback, value == nil || value == .null { return fallback }
        throw TokenizerError("\(field): expected a string, found \(kind(value))")
    }

    private static func int(_ value: JSONValue?, field: String, default fallback: Int) throws(TokenizerError) -> Int {
        guard let value, value != .null else { return fallback }
        guard let number = value.number?.int64, let int = Int(exactly: number), int >= 0 else {
            throw TokenizerError("\(field): expected a non-negative integer, found \(kind(value))")
        }
        return int
    }

    private static func id(_ value: JSONValue?, field: String) throws(TokenizerError) -> Int32 {
        guard let number = value?.number?.int64, let id = Int32(exactly: number), id >= 0 else {
            throw TokenizerError("\(field): expected a token id in 0...\(Int32.max), found \(kind(value))")
        }
        return id
    }

    /// BertProcessing's `["[CLS]", 101]`.
    private static func pairID(_ value: JSONValue?, field: String) throws(TokenizerError) -> Int32 {
        guard let pair = value?.array, pair.count == 2, pair[0].string != nil else {
            throw TokenizerError("\(field): expected [token, id], found \(kind(value))")
        }
        return try id(pair[1], field: "\(field)[1]")
    }

    /// A short description of a JSON value for error messages.
    static func kind(_ value: JSONValue?) -> String {
        guard let value else { return "nothing (missing)" }
        if case .object = value, let type = value["type"]?.string { return "an object of type \"\(type)\"" }
        return JSONValue.describe(value)
    }
}
