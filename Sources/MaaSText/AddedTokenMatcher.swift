/// A token from tokenizer.json's `added_tokens`, found in the text before the model sees it.
struct AddedToken: Sendable {
    var content: [Unicode.Scalar]
    var id: Int32
    var singleWord: Bool
    var lstrip: Bool
    var rstrip: Bool
}

/// HF's AddedVocabulary split: leftmost-longest matches of the added tokens, scanned left to right
/// without overlap (as its Aho-Corasick `find_iter` does), each match then checked for `single_word`
/// and widened over whitespace for `lstrip`/`rstrip`.
struct AddedTokenMatcher: Sendable {
    enum Segment: Equatable {
        case text(Range<Int>)
        case token(Int32)
    }

    private let tokens: [AddedToken]
    /// Indices into `tokens` by first scalar, so most positions cost one dictionary probe.
    private let byFirstScalar: [UInt32: [Int]]

    init(_ tokens: [AddedToken]) {
        self.tokens = tokens
        var index: [UInt32: [Int]] = [:]
        for (position, token) in tokens.enumerated() {
            guard let first = token.content.first else { continue }
            index[first.value, default: []].append(position)
        }
        byFirstScalar = index
    }

    var isEmpty: Bool { byFirstScalar.isEmpty }

    /// Splits `scalars[range]` into text and token segments covering it in order.
    func split(_ scalars: [Unicode.Scalar], _ range: Range<Int>, into segments: inout [Segment]) {
        var textStart = range.lowerBound
        var position = range.lowerBound
        while position < range.upperBound {
            guard let (token, matchEnd) = longestMatch(scalars, at: position, end: range.upperBound) else {
                position += 1
                continue
            }
            if token.singleWord {
                let wordBefore = position > range.lowerBound && Self.isWordScalar(scalars[position - 1])
                let wordAfter = matchEnd < range.upperBound && Self.isWordScalar(scalars[matchEnd])
                // The scan resumes after a rejected match, as find_iter's does.
                if wordBefore || wordAfter {
                    position = matchEnd
                    continue
                }
            }
            var start = position
            var stop = matchEnd
            if token.lstrip {
                while start > textStart && scalars[start - 1].properties.isWhitespace { start -= 1 }
            }
            if token.rstrip {
                while stop < range.upperBound && scalars[stop].properties.isWhitespace { stop += 1 }
            }
            if textStart < start { segments.append(.text(textStart..<start)) }
            segments.append(.token(token.id))
            textStart = stop
            position = stop
        }
        if textStart < range.upperBound { segments.append(.text(textStart..<range.upperBound)) }
    }

    private func longestMatch(_ scalars: [Unicode.Scalar], at position: Int, end: Int) -> (AddedToken, Int)? {
        guard let candidates = byFirstScalar[scalars[position].value] else { return nil }
        var best: (AddedToken, Int)?
        for candidate in candidates {
            let token = tokens[candidate]
            let stop = position + token.content.count
            guard stop <= end, stop > (best?.1 ?? position) else { continue }
            if scalars[position..<stop].elementsEqual(token.content) { best = (token, stop) }
        }
        return best
    }

    /// Rust regex `\w`: alphabetic, marks, decimal digits, connector punctuation, join controls.
    private static func isWordScalar(_ scalar: Unicode.Scalar) -> Bool {
        let properties = scalar.properties
        if properties.isAlphabetic || properties.isJoinControl { return true }
        switch properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }
}
