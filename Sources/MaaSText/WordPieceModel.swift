/// HF's WordPiece model: greedy longest-match-first over the vocabulary, pieces after the first
/// carrying the continuing-subword prefix; a word with no full cover, or longer than
/// `maxInputCharsPerWord` scalars, is the unknown token alone.
///
/// The vocabulary is a byte trie, so finding the longest match from a position walks the word's
/// UTF-8 once instead of hashing every shorter candidate string (HF's loop, O(n²) per word).
struct WordPieceModel: Sendable {
    private var trie = ByteTrie()
    /// Where continuation pieces start matching: the node reached by the prefix ("##") from the root.
    private let continuationNode: Int32?
    let unknownID: Int32
    let maxInputCharsPerWord: Int
    let vocabularyCount: Int

    init(vocabulary: [String: Int32], unknownToken: String, continuingSubwordPrefix: String, maxInputCharsPerWord: Int)
        throws(TokenizerError)
    {
        guard let unknownID = vocabulary[unknownToken] else {
            throw TokenizerError("model.unk_token \"\(unknownToken)\" is not in model.vocab")
        }
        for (token, id) in vocabulary { trie.insert(Array(token.utf8), id: id) }
        self.unknownID = unknownID
        self.maxInputCharsPerWord = maxInputCharsPerWord
        self.vocabularyCount = vocabulary.count
        var node: Int32? = 0
        for byte in continuingSubwordPrefix.utf8 {
            guard let current = node else { break }
            node = trie.child(of: current, byte)
        }
        continuationNode = node
    }

    /// Appends the ids of `word` to `ids`; `scratch` holds its UTF-8 between calls.
    func tokenize(_ word: ArraySlice<Unicode.Scalar>, into ids: inout [Int32], scratch: inout [UInt8]) {
        if word.count > maxInputCharsPerWord {
            ids.append(unknownID)
            return
        }
        scratch.removeAll(keepingCapacity: true)
        for scalar in word { UTF8.encode(scalar) { scratch.append($0) } }
        let mark = ids.count
        var start = 0
        while start < scratch.count {
            let from = start == 0 ? 0 : continuationNode
            guard let from, let (id, end) = trie.longestMatch(scratch, from: start, node: from) else {
                ids.removeSubrange(mark...)
                ids.append(unknownID)
                return
            }
            ids.append(id)
            start = end
        }
    }
}

/// A byte trie in flat arrays: children of a node live in a hash map keyed by (node, byte).
private struct ByteTrie: Sendable {
    private var children: [UInt64: Int32] = [:]
    private var ids: [Int32] = [-1]

    mutating func insert(_ bytes: [UInt8], id: Int32) {
        var node: Int32 = 0
        for byte in bytes {
            let key = Self.key(node, byte)
            if let next = children[key] {
                node = next
            } else {
                let next = Int32(ids.count)
                ids.append(-1)
                children[key] = next
                node = next
            }
        }
        ids[Int(node)] = id
    }

    func child(of node: Int32, _ byte: UInt8) -> Int32? { children[Self.key(node, byte)] }

    /// The id and end of the longest token spelled by `bytes[start...]` below `node`.
    func longestMatch(_ bytes: [UInt8], from start: Int, node: Int32) -> (Int32, Int)? {
        var node = node
        var best: (Int32, Int)?
        var index = start
        while index < bytes.count, let next = children[Self.key(node, bytes[index])] {
            node = next
            index += 1
            let id = ids[Int(node)]
            if id >= 0 { best = (id, index) }
        }
        return best
    }

    @inline(__always)
    private static func key(_ node: Int32, _ byte: UInt8) -> UInt64 { UInt64(UInt32(bitPattern: node)) << 8 | UInt64(byte) }
}
