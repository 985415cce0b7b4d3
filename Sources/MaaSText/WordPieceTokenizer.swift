/// A BERT WordPiece tokenizer read from a Hugging Face `tokenizer.json`, giving the ids HF's
/// `tokenizers` gives: added tokens split out of the raw text, then BertNormalizer,
/// BertPreTokenizer and WordPiece on the rest, then the post-processor's special tokens.
///
/// ```swift
/// let tokenizer = try WordPieceTokenizer(json: Array(fileBytes))
/// let ids = tokenizer.encode("A man is playing a guitar.", maxLength: 128)  // [101, 1037, …, 102]
/// ```
public struct WordPieceTokenizer: Sendable {
    /// `padding.pad_id` if the file has one, else the id of "[PAD]" in the vocabulary, else 0.
    public let padID: Int32
    /// Distinct token strings of the model vocabulary and the added tokens (HF `get_vocab_size(True)`).
    public let vocabularySize: Int

    let normalizer: BertNormalizer
    let model: WordPieceModel
    /// Added tokens matched on the raw text (`normalized: false`), then those matched after normalizing.
    let rawAddedTokens: AddedTokenMatcher
    let normalizedAddedTokens: AddedTokenMatcher
    /// The single-sequence template around the content, e.g. [CLS] … [SEP].
    let prefixIDs: [Int32]
    let suffixIDs: [Int32]
    /// False when an added token could span a chunk boundary (it holds whitespace, or matches normalized text).
    let chunksAtWhitespace: Bool

    /// Parses a Hugging Face tokenizer.json (normalizer BertNormalizer, pre_tokenizer BertPreTokenizer,
    /// model WordPiece, post_processor TemplateProcessing, BertProcessing or null).
    /// - Throws: ``TokenizerError`` naming the field and what it held when anything else is found.
    public init(json bytes: [UInt8]) throws(TokenizerError) {
        var file = try TokenizerFile(json: bytes)
        // HF gives an added token already in the vocabulary the vocabulary's id, whatever the file says.
        for index in file.addedTokens.indices {
            let content = String(String.UnicodeScalarView(file.addedTokens[index].token.content))
            if let id = file.vocabulary[content] { file.addedTokens[index].token.id = id }
        }
        normalizer = file.normalizer
        model = try WordPieceModel(
            vocabulary: file.vocabulary, unknownToken: file.unknownToken,
            continuingSubwordPrefix: file.continuingSubwordPrefix, maxInputCharsPerWord: file.maxInputCharsPerWord
        )
        rawAddedTokens = AddedTokenMatcher(file.addedTokens.filter { !$0.normalized }.map(\.token))
        normalizedAddedTokens = AddedTokenMatcher(
            file.addedTokens.filter(\.normalized).map { [normalizer] added in
                var token = added.token
                var normalized: [Unicode.Scalar] = []
                normalizer.normalize(token.content[...], into: &normalized)
                token.content = normalized
                return token
            }
        )
        chunksAtWhitespace = file.addedTokens.allSatisfy { added in
            !added.normalized && !added.token.content.contains { BertPreTokenizer.isWhitespace($0) }
        }
        prefixIDs = file.prefixIDs
        suffixIDs = file.suffixIDs
        padID = file.padID ?? file.vocabulary["[PAD]"] ?? 0
        var names = Set(file.vocabulary.keys)
        for added in file.addedTokens { names.insert(String(String.UnicodeScalarView(added.token.content))) }
        vocabularySize = names.count
    }

    /// Token ids of `text` as HF `tokenizer.encode(text).ids` gives them with padding off and
    /// truncation to `maxLength` (longest_first, right): the content is cut to `maxLength` minus the
    /// template's special tokens, which are then added.
    ///
    /// Work stops once there is enough content for `maxLength`, so a long text costs no more than a short one.
    /// - Important: when `maxLength` is below the number of special tokens, HF ignores the truncation and
    ///   returns everything; this returns the special tokens cut to `maxLength`, so the result never exceeds it.
    public func encode(_ text: String, maxLength: Int) -> [Int32] {
        let specials = prefixIDs.count + suffixIDs.count
        guard maxLength >= specials else { return Array((prefixIDs + suffixIDs).prefix(max(0, maxLength))) }
        let budget = maxLength - specials
        var ids = prefixIDs
        ids.reserveCapacity(min(maxLength, text.utf8.count + specials))
        let contentStart = ids.count
        let limit = contentStart + budget
        var pass = EncodingPass()
        var scalars = text.unicodeScalars.makeIterator()
        var exhausted = false
        while !exhausted && ids.count < limit {
            pass.raw.removeAll(keepingCapacity: true)
            exhausted = fillChunk(&pass.raw, from: &scalars)
            pass.segments.removeAll(keepingCapacity: true)
            rawAddedTokens.split(pass.raw, 0..<pass.raw.count, into: &pass.segments)
            for segment in pass.segments {
                if ids.count >= limit { break }
                switch segment {
                case .token(let id):
                    ids.append(id)
                case .text(let range):
                    normalizer.normalize(pass.raw[range], into: &pass.normalized)
                    encodeNormalized(&pass, into: &ids, until: limit)
                }
            }
        }
        if ids.count > limit { ids.removeSubrange(limit...) }
        ids.append(contentsOf: suffixIDs)
        return ids
    }

    /// Moves the next chunk of the text into `chunk`; true when the text is used up.
    ///
    /// A chunk ends just after a space, tab or newline once it has `chunkScalars` scalars: no word,
    /// combining sequence or (whitespace-free) added token spans such a scalar, so chunks tokenize as
    /// the whole text would, and a long text is read only as far as `maxLength` needs.
    private func fillChunk(_ chunk: inout [Unicode.Scalar], from scalars: inout String.UnicodeScalarView.Iterator) -> Bool {
        while let scalar = scalars.next() {
            chunk.append(scalar)
            if chunksAtWhitespace && chunk.count >= Self.chunkScalars {
                switch scalar.value {
                case 0x20, 0x09, 0x0A, 0x0D: return false
                default: continue
                }
            }
        }
        return true
    }

    static let chunkScalars = 512

    /// Splits out normalized added tokens, then pre-tokenizes and WordPieces the remaining text.
    private func encodeNormalized(_ pass: inout EncodingPass, into ids: inout [Int32], until limit: Int) {
        let normalized = pass.normalized
        guard !normalizedAddedTokens.isEmpty else {
            encodeWords(normalized, into: &ids, until: limit, scratch: &pass.utf8)
            return
        }
        var segments: [AddedTokenMatcher.Segment] = []
        normalizedAddedTokens.split(normalized, 0..<normalized.count, into: &segments)
        for segment in segments {
            if ids.count >= limit { return }
            switch segment {
            case .token(let id):
                ids.append(id)
            case .text(let range):
                encodeWords(Array(normalized[range]), into: &ids, until: limit, scratch: &pass.utf8)
            }
        }
    }

    private func encodeWords(_ scalars: [Unicode.Scalar], into ids: inout [Int32], until limit: Int, scratch: inout [UInt8]) {
        BertPreTokenizer.forEachWord(in: scalars) { word in
            model.tokenize(word, into: &ids, scratch: &scratch)
            return ids.count < limit
        }
    }
}

/// Buffers one `encode` call reuses across its segments and words.
private struct EncodingPass {
    var raw: [Unicode.Scalar] = []
    var normalized: [Unicode.Scalar] = []
    var segments: [AddedTokenMatcher.Segment] = []
    var utf8: [UInt8] = []
}
