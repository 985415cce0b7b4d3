/// HF's BertPreTokenizer: words end at whitespace (dropped) and every punctuation scalar is a word of its own.
enum BertPreTokenizer {
    /// Calls `body` with each word of `scalars` in order; `body` returns false to stop early.
    static func forEachWord(
        in scalars: [Unicode.Scalar], _ body: (ArraySlice<Unicode.Scalar>) -> Bool
    ) {
        var start = 0
        var index = 0
        let count = scalars.count
        while index < count {
            let scalar = scalars[index]
            if isWhitespace(scalar) {
                if start < index, !body(scalars[start..<index]) { return }
                start = index + 1
            } else if isPunctuation(scalar) {
                if start < index, !body(scalars[start..<index]) { return }
                if !body(scalars[index...index]) { return }
                start = index + 1
            }
            index += 1
        }
        if start < count { _ = body(scalars[start..<count]) }
    }

    /// Rust's `char::is_whitespace` (the White_Space property), which agrees with Swift's on all 25 scalars.
    @inline(__always)
    static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        let value = scalar.value
        if value < 0x80 { return value == 0x20 || (value >= 0x09 && value <= 0x0D) }
        return scalar.properties.isWhitespace
    }

    @inline(__always)
    static func isPunctuation(_ scalar: Unicode.Scalar) -> Bool {
        let value = scalar.value
        if value < 0x80 {
            return (value >= 0x21 && value <= 0x2F) || (value >= 0x3A && value <= 0x40)
                || (value >= 0x5B && value <= 0x60) || (value >= 0x7B && value <= 0x7E)
        }
        return BertUnicodeTables.punctuation.containsScalar(value)
    }
}
