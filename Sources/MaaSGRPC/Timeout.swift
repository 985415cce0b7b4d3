/// The `grpc-timeout` header: at most 8 ASCII digits followed by a unit (H, M, S, m, u, n).
enum GRPCTimeout {
    /// Parses a header value into nanoseconds, or nil if it is malformed.
    static func parse(_ value: some BidirectionalCollection<UInt8>) -> Int64? {
        guard value.count >= 2, value.count <= 9, let unit = value.last else { return nil }
        var amount: Int64 = 0
        for byte in value.dropLast() {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            amount = amount * 10 + Int64(byte - UInt8(ascii: "0"))
        }
        let nanosPerUnit: Int64
        switch unit {
        case UInt8(ascii: "H"): nanosPerUnit = 3_600_000_000_000
        case UInt8(ascii: "M"): nanosPerUnit = 60_000_000_000
        case UInt8(ascii: "S"): nanosPerUnit = 1_000_000_000
        case UInt8(ascii: "m"): nanosPerUnit = 1_000_000
        case UInt8(ascii: "u"): nanosPerUnit = 1_000
        case UInt8(ascii: "n"): nanosPerUnit = 1
        default: return nil
        }
        // 99_999_999 hours overflows Int64 nanoseconds; such a deadline is as good as none.
        let (product, overflow) = amount.multipliedReportingOverflow(by: nanosPerUnit)
        return overflow ? Int64.max : product
    }

    /// Encodes a duration in the finest unit whose amount fits in 8 digits.
    static func encode(nanoseconds: Int64) -> String {
        let nanos = max(nanoseconds, 0)
        let units: [(Int64, Character)] = [
            (1, "n"), (1_000, "u"), (1_000_000, "m"), (1_000_000_000, "S"),
            (60_000_000_000, "M"), (3_600_000_000_000, "H"),
        ]
        for (size, unit) in units {
            // Round up so the peer never sees a shorter deadline than ours.
            let amount = nanos / size + (nanos % size == 0 ? 0 : 1)
            if amount <= 99_999_999 { return "\(amount)\(unit)" }
        }
        return "99999999H"
    }
}
