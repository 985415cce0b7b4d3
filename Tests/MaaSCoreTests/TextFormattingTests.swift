import MaaSCore
import Testing

@Suite struct TextFormattingTests {
    @Test func cFormatFollowsPrintf() {
        #expect(cFormat("%.3f ms", 1.23456) == "1.235 ms")
        #expect(cFormat("%3.0f%%", 7.0) == "  7%")
        #expect(cFormat("%ld:%02ld:%02ld", 1, 2, 3) == "1:02:03")
        #expect(cFormat("%02x", UInt8(10)) == "0a")
        #expect(cFormat("%.6f", Float(0.5)) == "0.500000")
    }

    @Test func cFormatGrowsPastItsFirstBuffer() {
        let long = cFormat("%0300ld", 42)
        #expect(long.count == 300 && long.hasSuffix("42") && long.hasPrefix("000"))
    }

    @Test func trimmingBlanksKeepsInnerSpaceAndNewlines() {
        #expect(" \t a b \u{00A0}".trimmingBlanks() == "a b")
        #expect("\n x \n".trimmingBlanks() == "\n x \n")
        #expect("   ".trimmingBlanks() == "")
        #expect("x"[...].trimmingBlanks() == "x")
    }
}
