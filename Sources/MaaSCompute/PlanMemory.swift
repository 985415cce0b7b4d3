import MaaSCore

/// Where a plan's intermediate values live: values whose lifetimes do not overlap share a
/// buffer, so a plan holds about as much as its widest point needs rather than every value at
/// once (MiniLM at 20 x 40 tokens: a few buffers instead of hundreds of megabytes), and new
/// shapes fault in and zero that much less memory.
struct PlanMemory {
    private struct Value {
        var bytes: Int
        var defined: Int
        var lastUse: Int
    }

    private var values: [Int: Value] = [:]
    /// A view of another value's buffer (a reshape): slot → the value that owns the bytes.
    private var owner: [Int: Int] = [:]

    /// `slot` needs `bytes` from step `step` on (-1: a graph input, written before step 0).
    mutating func define(_ slot: Int, bytes: Int, at step: Int) {
        values[slot] = Value(bytes: max(bytes, 64), defined: step, lastUse: step)
    }

    /// `slot` shares the buffer of `source`, if a plan buffer holds it; false otherwise.
    mutating func alias(_ slot: Int, of source: Int) -> Bool {
        guard let root = owner[source] ?? (values[source] != nil ? source : nil) else { return false }
        owner[slot] = root
        return true
    }

    func holds(_ slot: Int) -> Bool { values[slot] != nil || owner[slot] != nil }

    /// Step `step` reads `slot` (Int.max: a graph output, kept to the end).
    mutating func use(_ slot: Int, at step: Int) {
        let root = owner[slot] ?? slot
        guard var value = values[root] else { return }
        value.lastUse = max(value.lastUse, step)
        values[root] = value
    }

    /// Assigns every value a buffer no other live value uses, in step order: a value takes the
    /// smallest free buffer that fits, or else the largest free one, grown (nothing is allocated
    /// until all is assigned), or else a new one.
    /// - Returns: each buffer's size, and each slot's buffer index (views included).
    func assign() -> (sizes: [Int], buffers: [Int: Int]) {
        var sizes: [Int] = []
        var free: [Int] = []
        var busy: [(until: Int, buffer: Int)] = []
        var assignment: [Int: Int] = [:]
        for (slot, value) in values.sorted(by: { ($0.value.defined, $0.key) < ($1.value.defined, $1.key) }) {
            // Values last read before this one is written give their buffers back.
            busy.removeAll { entry in
                guard entry.until < value.defined else { return false }
                free.append(entry.buffer)
                return true
            }
            let buffer: Int
            if let fit = free.filter({ sizes[$0] >= value.bytes }).min(by: { sizes[$0] < sizes[$1] }) {
                buffer = fit
            } else if let largest = free.max(by: { sizes[$0] < sizes[$1] }) {
                buffer = largest
                sizes[buffer] = value.bytes
            } else {
                buffer = sizes.count
                sizes.append(value.bytes)
            }
            free.removeAll { $0 == buffer }
            busy.append((value.lastUse, buffer))
            assignment[slot] = buffer
        }
        for (slot, root) in owner { assignment[slot] = assignment[root] }
        return (sizes, assignment)
    }
}
