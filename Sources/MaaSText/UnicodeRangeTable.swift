extension [ClosedRange<UInt32>] {
    /// Binary search over sorted, disjoint ranges (the generated tables are both).
    func containsScalar(_ value: UInt32) -> Bool {
        var low = 0
        var high = count
        while low < high {
            let mid = (low + high) / 2
            let range = self[mid]
            if value < range.lowerBound {
                high = mid
            } else if value > range.upperBound {
                low = mid + 1
            } else {
                return true
            }
        }
        return false
    }
}
