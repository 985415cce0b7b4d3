/// NumPy `.npy` files (format versions 1.0-3.0), little-endian, C order.
public enum NPY {
    /// Reads an array. Errors say what is wrong: magic, version, header, dtype, order, size.
    public static func decode(_ bytes: [UInt8], source: String = "array") throws(InferenceError) -> Tensor {
        let layout = try Layout(prefix: bytes, fileSize: bytes.count, source: source)
        return try bytes.withUnsafeBufferPointer { buffer throws(InferenceError) in
            try Tensor(
                dataType: layout.dataType, shape: layout.shape,
                bytes: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[layout.dataStart...]))
        }
    }

    /// Where a file's array lies, from its header: enough to read some rows without the rest.
    public struct Layout: Sendable, Equatable {
        public var dataType: DataType
        public var shape: [Int]
        /// The offset of the first element.
        public var dataStart: Int

        /// The bytes a header may take before the data: a version 1.0 header's length is 16-bit.
        public static let typicalPrefix = 10 + 65_535

        /// - Parameters:
        ///   - prefix: the file's first bytes, at least its header (``typicalPrefix`` covers every
        ///     version 1.0 file; a longer 2.0/3.0 header is reported as ``requiredPrefix(_:)``).
        ///   - fileSize: the whole file's size, which must match the shape.
        public init(prefix bytes: [UInt8], fileSize: Int, source: String) throws(InferenceError) {
            let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY
            guard bytes.count >= 10, Array(bytes[0..<6]) == magic else {
                throw .invalidInput("\(source): not a .npy file (wrong magic)")
            }
            guard let (headerStart, headerLength) = try Self.headerBounds(bytes, source: source) else {
                throw .invalidInput("\(source): truncated .npy header")
            }
            guard headerStart + headerLength <= bytes.count else {
                throw .invalidInput("\(source): truncated .npy header (\(headerLength) bytes announced, \(bytes.count - headerStart) present)")
            }
            let header = String(decoding: bytes[headerStart..<headerStart + headerLength], as: UTF8.self)
            guard let descr = NPY.field("descr", in: header), let order = NPY.field("fortran_order", in: header),
                let shapeText = NPY.field("shape", in: header)
            else {
                throw .invalidInput("\(source): malformed .npy header \(header.debugDescription)")
            }
            let dtype = descr.trimmingQuotes()
            guard let dataType = NPY.dataType(for: dtype) else {
                throw .invalidInput("\(source): unsupported dtype '\(dtype)' (supported: <f4 <f8 <i8 <i4 <i2 |i1 |u1 <u2 <u4 <u8 |b1)")
            }
            guard order == "False" else {
                throw .invalidInput("\(source): Fortran-ordered arrays are not supported; save with np.ascontiguousarray")
            }
            var shape: [Int] = []
            for part in shapeText.dropFirst().dropLast().split(separator: ",") {
                let text = part.filter { $0 != " " && $0 != "L" }
                guard let dim = Int(text), dim >= 0 else { throw .invalidInput("\(source): bad shape \(shapeText)") }
                shape.append(dim)
            }
            let dataStart = headerStart + headerLength
            let expected: Int
            do {
                expected = try Shape.elementCount(shape) * dataType.byteSize!
            } catch {
                throw .invalidInput("\(source): shape \(shape) is too large")
            }
            guard fileSize - dataStart == expected else {
                throw .invalidInput("\(source): \(fileSize - dataStart) bytes of data, but shape \(shape) of \(dtype) needs \(expected) (truncated?)")
            }
            self.dataType = dataType
            self.shape = shape
            self.dataStart = dataStart
        }

        /// How many leading bytes hold the header, once the first 12 are known; nil if fewer.
        public static func requiredPrefix(_ bytes: [UInt8]) -> Int? {
            guard let bounds = try? headerBounds(bytes, source: "") else { return nil }
            return bounds.start + bounds.length
        }

        private static func headerBounds(_ bytes: [UInt8], source: String) throws(InferenceError) -> (start: Int, length: Int)? {
            guard bytes.count >= 10 else { return nil }
            switch bytes[6] {
            case 1:
                return (10, Int(bytes[8]) | Int(bytes[9]) << 8)
            case 2, 3:
                guard bytes.count >= 12 else { return nil }
                return (12, Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24)
            default:
                throw .invalidInput("\(source): unsupported .npy version \(bytes[6]).\(bytes[7])")
            }
        }
    }

    /// Writes a version 1.0 file, header padded so the data starts 64-byte aligned.
    public static func encode(_ tensor: Tensor) throws(InferenceError) -> [UInt8] {
        var bytes = try header(tensor.dataType, shape: tensor.shape)
        tensor.withUnsafeBytes { bytes += $0 }
        return bytes
    }

    /// The magic, version and header of a version 1.0 file: what precedes the data.
    /// - Parameters:
    ///   - length: the total to pad to (a multiple of 64), so that a writer streaming rows can
    ///     reserve room first and rewrite the header with the final shape in place; nil pads to
    ///     the next multiple of 64.
    public static func header(_ dataType: DataType, shape: [Int], length: Int? = nil) throws(InferenceError) -> [UInt8] {
        guard let descr = descr(for: dataType) else {
            throw .unsupported("cannot write \(dataType) to .npy")
        }
        let dims = shape.count == 1 ? "(\(shape[0]),)" : "(\(shape.map(String.init).joined(separator: ", ")))"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(dims), }"
        let unpadded = 10 + header.utf8.count + 1
        let total = length ?? (unpadded + 63) / 64 * 64
        guard total >= unpadded, total - 10 <= Int(UInt16.max) else {
            throw .invalidInput(".npy header for shape \(shape) needs \(unpadded) bytes, more than the \(total) reserved")
        }
        header += String(repeating: " ", count: total - unpadded) + "\n"
        var bytes: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0]
        let count = header.utf8.count
        bytes += [UInt8(count & 0xFF), UInt8(count >> 8)]
        bytes += Array(header.utf8)
        return bytes
    }

    private static func field(_ name: String, in header: String) -> String? {
        guard let range = header.firstRange(of: "'\(name)':") else { return nil }
        var rest = header[range.upperBound...].drop { $0 == " " }
        if rest.first == "(" {
            guard let close = rest.firstIndex(of: ")") else { return nil }
            return String(rest[...close])
        }
        rest = rest.prefix { $0 != "," && $0 != "}" }
        return String(rest).trimmingSpaces()
    }

    private static let table: [(String, DataType)] = [
        ("<f4", .float32), ("<f8", .float64), ("<i8", .int64), ("<i4", .int32), ("<i2", .int16),
        ("|i1", .int8), ("|u1", .uint8), ("<u2", .uint16), ("<u4", .uint32), ("<u8", .uint64), ("|b1", .bool),
    ]

    private static func dataType(for descr: String) -> DataType? {
        table.first { $0.0 == descr }?.1
    }

    private static func descr(for type: DataType) -> String? {
        table.first { $0.1 == type }?.0
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }

    fileprivate func trimmingQuotes() -> String {
        filter { $0 != "'" && $0 != "\"" }
    }
}
