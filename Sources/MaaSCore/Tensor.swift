import Glibc
/// An n-dimensional array of fixed-size elements in one 64-byte-aligned allocation.
///
/// A value with copy-on-write storage: copies share bytes until one of them is written.
public struct Tensor: Sendable {
    public let dataType: DataType
    public let shape: [Int]
    private var storage: TensorStorage

    /// A zero-filled tensor. Throws if the shape is negative or its size overflows.
    public init(zeros dataType: DataType, shape: [Int]) throws(InferenceError) {
        guard let elementSize = dataType.byteSize else {
            throw .unsupported("tensors of \(dataType) are not supported")
        }
        let count = try Shape.elementCount(shape)
        let (bytes, overflow) = count.multipliedReportingOverflow(by: elementSize)
        guard !overflow else { throw .invalidInput("tensor of shape \(shape) and type \(dataType) is too large") }
        self.dataType = dataType
        self.shape = shape
        self.storage = TensorStorage(byteCount: bytes)
    }

    /// A tensor holding a copy of `bytes`, which must be exactly the shape's size.
    public init(dataType: DataType, shape: [Int], bytes: UnsafeRawBufferPointer) throws(InferenceError) {
        try self.init(zeros: dataType, shape: shape)
        guard bytes.count == byteCount else {
            throw .invalidInput("\(bytes.count) bytes given for a \(dataType) tensor of shape \(shape), which needs \(byteCount)")
        }
        if bytes.count > 0 { storage.bytes.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
    }

    /// A float32 tensor from values (count must match the shape).
    public init(_ values: [Float], shape: [Int]) throws(InferenceError) {
        try self.init(dataType: .float32, values: values, shape: shape)
    }

    /// An int64 tensor from values (count must match the shape).
    public init(_ values: [Int64], shape: [Int]) throws(InferenceError) {
        try self.init(dataType: .int64, values: values, shape: shape)
    }

    private init<Element>(dataType: DataType, values: [Element], shape: [Int]) throws(InferenceError) {
        try self.init(zeros: dataType, shape: shape)
        guard values.count == elementCount else {
            throw .invalidInput("\(values.count) values given for shape \(shape)")
        }
        values.withUnsafeBytes { storage.bytes.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    public var elementCount: Int { storage.byteCount / (dataType.byteSize ?? 1) }
    public var byteCount: Int { storage.byteCount }
    public var rank: Int { shape.count }

    /// This tensor's bytes under another shape with the same element count.
    public func reshaped(_ newShape: [Int]) throws(InferenceError) -> Tensor {
        guard try Shape.elementCount(newShape) == elementCount else {
            throw .invalidInput("cannot reshape \(shape) to \(newShape)")
        }
        return Tensor(dataType: dataType, shape: newShape, storage: storage)
    }

    private init(dataType: DataType, shape: [Int], storage: TensorStorage) {
        self.dataType = dataType
        self.shape = shape
        self.storage = storage
    }

    public func withUnsafeBytes<Result, Failure>(_ body: (UnsafeRawBufferPointer) throws(Failure) -> Result) throws(Failure) -> Result {
        try body(UnsafeRawBufferPointer(start: storage.bytes, count: storage.byteCount))
    }

    public mutating func withUnsafeMutableBytes<Result, Failure>(
        _ body: (UnsafeMutableRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
        return try body(UnsafeMutableRawBufferPointer(start: storage.bytes, count: storage.byteCount))
    }

    /// The elements as an array; `Element` must match ``dataType``'s size.
    public func scalars<Element>(as type: Element.Type = Element.self) -> [Element] {
        precondition(MemoryLayout<Element>.stride == dataType.byteSize, "element type does not match \(dataType)")
        return withUnsafeBytes { Array($0.bindMemory(to: Element.self)) }
    }

    /// The raw pointer, for this package's kernels and codecs, which manage their own access.
    /// Valid while the tensor lives. `package`, so that no client of the library can write
    /// through it behind copy-on-write.
    package var unsafeBaseAddress: UnsafeMutableRawPointer { storage.bytes }
}

/// Owns a tensor's bytes.
final class TensorStorage {
    let bytes: UnsafeMutableRawPointer
    let byteCount: Int

    init(byteCount: Int) {
        self.byteCount = byteCount
        if byteCount >= Self.hugePage && Self.useHugePages {
            // Weights and activations of MiBs are streamed on every pass: on 4 KiB pages that is
            // a TLB miss every 4 KiB. Aligned to 2 MiB and marked, the kernel backs the whole
            // 2 MiB stretches with huge pages (this machine's THP mode is `madvise`): wide MLP
            // +7-8% at batch 8 and 32, no change at 128 (maas-bench, paired runs).
            bytes = .allocate(byteCount: byteCount, alignment: Self.hugePage)
            _ = madvise(bytes, byteCount, Int32(MADV_HUGEPAGE))
        } else {
            bytes = .allocate(byteCount: max(byteCount, 1), alignment: 64)
        }
        bytes.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 1))
    }

    static let hugePage = 2 << 20
    /// `MAAS_NO_HUGE_PAGES` turns the huge-page hint off (to measure it).
    static let useHugePages = getenv("MAAS_NO_HUGE_PAGES") == nil

    func copy() -> TensorStorage {
        let copy = TensorStorage(byteCount: byteCount)
        copy.bytes.copyMemory(from: bytes, byteCount: byteCount)
        return copy
    }

    deinit {
        bytes.deallocate()
    }
}

// Written only through Tensor's copy-on-write paths or by package kernels that own the tensor.
extension TensorStorage: @unchecked Sendable {}

/// Shape arithmetic with every size checked.
public enum Shape {
    /// The product of `dims`; throws for a negative dim or an overflowing product.
    public static func elementCount(_ dims: [Int]) throws(InferenceError) -> Int {
        var count = 1
        for dim in dims {
            guard dim >= 0 else { throw .invalidInput("negative dimension \(dim) in shape \(dims)") }
            let (product, overflow) = count.multipliedReportingOverflow(by: dim)
            guard !overflow, product <= Int(Int32.max) * 64 else {
                throw .invalidInput("shape \(dims) has too many elements")
            }
            count = product
        }
        return count
    }

    /// NumPy broadcasting of two shapes, or nil if they are incompatible.
    public static func broadcast(_ a: [Int], _ b: [Int]) -> [Int]? {
        let rank = max(a.count, b.count)
        var out = [Int](repeating: 1, count: rank)
        for index in 0..<rank {
            let x = index < rank - a.count ? 1 : a[index - (rank - a.count)]
            let y = index < rank - b.count ? 1 : b[index - (rank - b.count)]
            if x == y || y == 1 {
                out[index] = x
            } else if x == 1 {
                out[index] = y
            } else {
                return nil
            }
        }
        return out
    }

    /// Row-major strides of `dims`, in elements.
    public static func strides(_ dims: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: dims.count)
        var running = 1
        for index in dims.indices.reversed() {
            strides[index] = running
            running *= dims[index]
        }
        return strides
    }
}
