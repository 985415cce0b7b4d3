extension StringProtocol {
    /// Without leading and trailing blanks: tabs and space separators (Unicode Zs), the set
    /// Foundation calls `.whitespaces`, so CSV fields and comma lists read as they did.
    public func trimmingBlanks() -> String {
        let scalars = unicodeScalars
        func isBlank(_ scalar: Unicode.Scalar) -> Bool {
            scalar == "\t" || scalar.properties.generalCategory == .spaceSeparator
        }
        guard let first = scalars.firstIndex(where: { !isBlank($0) }) else { return "" }
        let last = scalars.lastIndex(where: { !isBlank($0) })!
        var result = String.UnicodeScalarView()
        result.append(contentsOf: scalars[first...last])
        return String(result)
    }
}
