// The standard library's own canonical decomposition (what swift-foundation's
// decomposedStringWithCanonicalMapping calls): Foundation's version would load Foundation and
// ICU, about 6 MB resident, into a server that otherwise needs neither.
@_spi(_Unicode) import Swift

/// HF's BertNormalizer: clean_text, then CJK spacing, then strip_accents, then lowercase — the order
/// `tokenizers/src/normalizers/bert.rs` applies them in, which matters (accents are stripped before
/// lowercasing, so "İ" loses its dot before it becomes "i").
struct BertNormalizer: Sendable {
    var cleanText: Bool
    var handleChineseChars: Bool
    var stripAccents: Bool
    var lowercase: Bool

    /// Normalizes `input` into `output` (cleared first); both are scalar arrays so a caller can reuse them.
    func normalize(_ input: ArraySlice<Unicode.Scalar>, into output: inout [Unicode.Scalar]) {
        output.removeAll(keepingCapacity: true)
        var needsDecomposition = false
        for scalar in input {
            let value = scalar.value
            if cleanText {
                if value < 0x80 {
                    if value == 0x09 || value == 0x0A || value == 0x0D {
                        output.append(" ")
                        continue
                    }
                    if value < 0x20 || value == 0x7F { continue }
                } else if BertUnicodeTables.removedByCleanText.containsScalar(value) {
                    continue
                } else if scalar.properties.isWhitespace {
                    output.append(" ")
                    continue
                }
            }
            // Nothing below U+00C0 decomposes, so ASCII-and-Latin-1-punctuation text skips NFD.
            if value >= 0xC0 { needsDecomposition = true }
            if handleChineseChars && Self.isChineseChar(value) {
                // Compatibility ideographs (F900–FAFF) still decompose to unified ones below.
                output.append(" ")
                output.append(scalar)
                output.append(" ")
                continue
            }
            output.append(scalar)
        }
        if stripAccents && needsDecomposition { decomposeAndStripMarks(&output) }
        if lowercase { lowercaseInPlace(&output) }
    }

    /// The code point blocks HF treats as Chinese (`is_chinese_char`). Note 0x2B920, not 0x2B820:
    /// HF's table skips 2B820–2B91F, and tokenizers 0.23.3 leaves U+2B820 unspaced.
    static func isChineseChar(_ value: UInt32) -> Bool {
        switch value {
        case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F,
            0x2B740...0x2B81F, 0x2B920...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F:
            return true
        default:
            return false
        }
    }

    private func decomposeAndStripMarks(_ scalars: inout [Unicode.Scalar]) {
        var text = String.UnicodeScalarView()
        text.append(contentsOf: scalars)
        scalars.removeAll(keepingCapacity: true)
        for scalar in String(text)._nfd where !BertUnicodeTables.nonspacingMarks.containsScalar(scalar.value) {
            scalars.append(scalar)
        }
    }

    private func lowercaseInPlace(_ scalars: inout [Unicode.Scalar]) {
        var index = 0
        while index < scalars.count {
            let scalar = scalars[index]
            if scalar.value < 0x80 {
                if scalar.value >= 0x41 && scalar.value <= 0x5A { scalars[index] = Unicode.Scalar(UInt8(scalar.value + 0x20)) }
                index += 1
                continue
            }
            guard scalar.properties.changesWhenLowercased else {
                index += 1
                continue
            }
            // Full mapping, per scalar as Rust's char::to_lowercase (so no final-sigma context): İ → i + U+0307.
            let mapped = Array(scalar.properties.lowercaseMapping.unicodeScalars)
            scalars.replaceSubrange(index...index, with: mapped)
            index += mapped.count
        }
    }
}
