import FoundationEssentials
public import MaaSCore
import MaaSJSON

/// Input files for batch inference: `.npy`, `.csv` and `.json`, read as one tensor whose first
/// axis is the rows.
///
/// - `.npy`: any dtype ``NPY`` reads; converted to the model's datatype when it differs
///   (float64 to FP32 is the usual case: `np.save` of a default NumPy array).
/// - `.csv`: one row per line, comma-separated numbers. The first line is a header, and skipped,
///   when any of its fields is not a number. Every line must have as many fields as the first.
///   Values are parsed as the model's datatype (FP32 when it is not known).
/// - `.json`: nested arrays of numbers (or booleans), rectangular, rows outermost.
///
/// When each row's element count equals the product of the model's fixed non-batch dimensions,
/// rows are reshaped to them: a CSV of 12 columns feeds an input of shape [-1, 3, 4].
public enum InputFile {
    /// Reads `path` for an input of `datatype` (a KServe name; nil: keep the file's, or FP32 for
    /// text) and the model's `shape` (batch dimension first, -1 variable; empty: unknown).
    public static func read(_ path: String, datatype: String?, shape: [Int64] = []) throws(InferenceError) -> Tensor {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .invalidInput("cannot read '\(path)'")
        }
        var type: DataType?
        if let datatype {
            guard let known = DataType(kserveName: datatype), known.byteSize != nil else {
                throw .unsupported("\(path): the model's input is \(datatype), which maas infer cannot read from a file")
            }
            type = known
        }
        var tensor: Tensor
        let name = path.split(separator: "/").last ?? ""
        let fileExtension = name.contains(".") ? name.split(separator: ".").last.map { $0.lowercased() } ?? "" : ""
        switch fileExtension {
        case "npy":
            tensor = try NPY.decode(Array(data), source: path)
            if let type, type != tensor.dataType { tensor = try converted(tensor, to: type, source: path) }
        case "csv":
            tensor = try csv(String(decoding: data, as: UTF8.self), type: type ?? .float32, source: path)
        case "json":
            tensor = try json(Array(data), type: type ?? .float32, source: path)
        default:
            throw .invalidInput("\(path): expected a .npy, .csv or .json file")
        }
        guard tensor.rank >= 1 else { throw .invalidInput("\(path): a scalar has no rows; expected an array with rows first") }
        return try fitted(tensor, to: shape)
    }

    /// `tensor` with each row reshaped to the model's fixed non-batch dimensions when the element
    /// counts agree; unchanged otherwise (the server then says what it expected).
    static func fitted(_ tensor: Tensor, to shape: [Int64]) throws(InferenceError) -> Tensor {
        guard shape.count >= 2, shape.dropFirst().allSatisfy({ $0 > 0 }) else { return tensor }
        let dims = shape.dropFirst().map { Int($0) }
        let rows = tensor.shape[0]
        guard Array(tensor.shape.dropFirst()) != dims, rows > 0,
            tensor.elementCount / rows == dims.reduce(1, *)
        else { return tensor }
        return try tensor.reshaped([rows] + dims)
    }

    static func csv(_ text: String, type: DataType, source: String) throws(InferenceError) -> Tensor {
        var lines: [(number: Int, fields: [Substring])] = []
        var number = 0
        // "\r\n" is one Character in Swift, so it is a separator of its own.
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            number += 1
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            lines.append((number, line.split(separator: ",", omittingEmptySubsequences: false).map(trim)))
        }
        if let first = lines.first, first.fields.contains(where: { Double($0) == nil && Bool(String($0)) == nil }) {
            lines.removeFirst()  // a header row
        }
        guard let columns = lines.first?.fields.count else { throw .invalidInput("\(source): no rows of numbers") }
        var fields: [Substring] = []
        fields.reserveCapacity(lines.count * columns)
        for line in lines {
            guard line.fields.count == columns else {
                throw .invalidInput("\(source) line \(line.number): \(line.fields.count) values, but the first row has \(columns)")
            }
            fields += line.fields
        }
        return try build(type, shape: [lines.count, columns], count: fields.count, source: source) { index throws(InferenceError) in
            let field = fields[index]
            let row = index / columns, column = index % columns
            guard let scalar = Scalar(field, as: type) else {
                throw .invalidInput("\(source) line \(lines[row].number), column \(column + 1): '\(field)' is not a \(type.kserveName) value")
            }
            return scalar
        }
    }

    static func json(_ data: [UInt8], type: DataType, source: String) throws(InferenceError) -> Tensor {
        let root: JSONValue
        do {
            root = try data.withUnsafeBytes { (raw) throws(JSONError) in try JSONReader.parse(raw) }
        } catch {
            throw .invalidInput("\(source): not valid JSON (\(error))")
        }
        var shape: [Int] = []
        var probe = root
        while let array = probe.array {
            shape.append(array.count)
            guard let first = array.first else { break }
            probe = first
        }
        guard !shape.isEmpty else { throw .invalidInput("\(source): expected nested arrays of numbers, rows outermost") }
        var leaves: [JSONValue] = []
        func collect(_ value: JSONValue, depth: Int, path: String) throws(InferenceError) {
            if depth == shape.count {
                guard value.number != nil || value.bool != nil else {
                    throw .invalidInput("\(source): expected a number at \(path), got \(JSONValue.describe(value))")
                }
                leaves.append(value)
                return
            }
            guard let array = value.array, array.count == shape[depth] else {
                throw .invalidInput("\(source): expected an array of \(shape[depth]) at \(path) (the arrays are not rectangular)")
            }
            for (index, element) in array.enumerated() { try collect(element, depth: depth + 1, path: "\(path)[\(index)]") }
        }
        try collect(root, depth: 0, path: "$")
        return try tensor(numbers: leaves, type: type, shape: shape, source: source)
    }

    /// JSON numbers (or booleans) as a tensor of `type` and `shape` (which the count must fill).
    static func tensor(numbers: [JSONValue], type: DataType, shape: [Int], source: String) throws(InferenceError) -> Tensor {
        guard try Shape.elementCount(shape) == numbers.count else {
            throw .invalidInput("\(source): \(numbers.count) values for shape \(shape)")
        }
        return try build(type, shape: shape, count: numbers.count, source: source) { index in Scalar(numbers[index], as: type) }
    }

    /// `tensor`'s values as `type` (integers through Int64 or UInt64, floats through Double).
    static func converted(_ tensor: Tensor, to type: DataType, source: String) throws(InferenceError) -> Tensor {
        try build(type, shape: tensor.shape, count: tensor.elementCount, source: source) { index in
            tensor.withUnsafeBytes { Scalar(bytes: $0, index: index, type: tensor.dataType) }
        }
    }

    /// One value read from text, JSON or another tensor, stored as whichever element type asks.
    enum Scalar {
        case double(Double), int(Int64), uint(UInt64), bool(Bool)

        init?(_ text: Substring, as type: DataType) {
            switch type {
            case .bool:
                if let value = Bool(String(text.lowercased())) { self = .bool(value) } else if let value = Int64(text) { self = .bool(value != 0) } else { return nil }
            case .uint8, .uint16, .uint32, .uint64:
                guard let value = UInt64(text) else { return nil }
                self = .uint(value)
            case .int8, .int16, .int32, .int64:
                guard let value = Int64(text) else { return nil }
                self = .int(value)
            default:
                guard let value = Double(text) else { return nil }
                self = .double(value)
            }
        }

        /// A JSON number or boolean (checked by the caller) as its literal was: exact integers stay
        /// integers, so INT64 and UINT64 values past 2^53 are not rounded.
        init(_ value: JSONValue, as type: DataType) {
            switch value {
            case .bool(let flag): self = .bool(flag)
            case .number(.int(let number)): self = .int(number)
            case .number(.uint(let number)): self = .uint(number)
            case .number(.double(let number)): self = .double(number)
            default: self = .double(.nan)
            }
        }

        init(bytes: UnsafeRawBufferPointer, index: Int, type: DataType) {
            func load<T>(_: T.Type) -> T { bytes.loadUnaligned(fromByteOffset: index * MemoryLayout<T>.stride, as: T.self) }
            switch type {
            case .float32: self = .double(Double(load(Float.self)))
            case .float64: self = .double(load(Double.self))
            case .int8: self = .int(Int64(load(Int8.self)))
            case .int16: self = .int(Int64(load(Int16.self)))
            case .int32: self = .int(Int64(load(Int32.self)))
            case .int64: self = .int(load(Int64.self))
            case .uint8: self = .uint(UInt64(load(UInt8.self)))
            case .uint16: self = .uint(UInt64(load(UInt16.self)))
            case .uint32: self = .uint(UInt64(load(UInt32.self)))
            case .uint64: self = .uint(load(UInt64.self))
            case .bool: self = .bool(load(UInt8.self) != 0)
            case .float16, .bfloat16, .string: self = .double(.nan)
            }
        }

        var double: Double {
            switch self {
            case .double(let v): v
            case .int(let v): Double(v)
            case .uint(let v): Double(v)
            case .bool(let v): v ? 1 : 0
            }
        }

        var int: Int64 {
            switch self {
            case .double(let v): v.isFinite ? Int64(exactly: v.rounded(.towardZero)) ?? (v < 0 ? .min : .max) : 0
            case .int(let v): v
            case .uint(let v): Int64(clamping: v)
            case .bool(let v): v ? 1 : 0
            }
        }

        var uint: UInt64 {
            switch self {
            case .double(let v): v.isFinite && v > 0 ? UInt64(exactly: v.rounded(.towardZero)) ?? .max : 0
            case .int(let v): UInt64(clamping: v)
            case .uint(let v): v
            case .bool(let v): v ? 1 : 0
            }
        }

        var bool: Bool {
            switch self {
            case .double(let v): v != 0
            case .int(let v): v != 0
            case .uint(let v): v != 0
            case .bool(let v): v
            }
        }
    }

    /// A tensor of `type` and `shape` whose element `i` is `value(i)`.
    private static func build(
        _ type: DataType, shape: [Int], count: Int, source: String, value: (Int) throws(InferenceError) -> Scalar
    ) throws(InferenceError) -> Tensor {
        var tensor = try Tensor(zeros: type, shape: shape)
        try tensor.withUnsafeMutableBytes { bytes throws(InferenceError) in
            func fill<T>(_: T.Type, _ convert: (Scalar) -> T) throws(InferenceError) {
                let typed = bytes.bindMemory(to: T.self)
                for index in 0..<count { typed[index] = convert(try value(index)) }
            }
            switch type {
            case .float32: try fill(Float.self) { Float($0.double) }
            case .float64: try fill(Double.self) { $0.double }
            case .int8: try fill(Int8.self) { Int8(clamping: $0.int) }
            case .int16: try fill(Int16.self) { Int16(clamping: $0.int) }
            case .int32: try fill(Int32.self) { Int32(clamping: $0.int) }
            case .int64: try fill(Int64.self) { $0.int }
            case .uint8: try fill(UInt8.self) { UInt8(clamping: $0.uint) }
            case .uint16: try fill(UInt16.self) { UInt16(clamping: $0.uint) }
            case .uint32: try fill(UInt32.self) { UInt32(clamping: $0.uint) }
            case .uint64: try fill(UInt64.self) { $0.uint }
            case .bool: try fill(UInt8.self) { $0.bool ? 1 : 0 }
            case .float16, .bfloat16, .string:
                throw .unsupported("\(source): cannot convert values to \(type.kserveName)")
            }
        }
        return tensor
    }

    private static func trim(_ field: Substring) -> Substring {
        var field = field.drop { $0 == " " || $0 == "\t" }
        while let last = field.last, last == " " || last == "\t" { field = field.dropLast() }
        if field.count >= 2, field.first == "\"", field.last == "\"" { field = field.dropFirst().dropLast() }
        return field
    }
}
