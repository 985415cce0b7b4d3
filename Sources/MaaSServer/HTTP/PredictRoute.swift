import MaaSCore
import MaaSJSON

/// The seed's own API, `POST /predict` with `{"input": [[...], ...]}` answered by
/// `{"output": [[...], ...]}`: nested JSON arrays of numbers in, the model's single output out.
enum PredictRoute {
    /// Largest input accepted, in values (256 MiB as FP32), before the model's own checks.
    static let maxValues = 1 << 26

    /// The request's `input` as FP32 values and shape; errors say what was expected where
    /// (`expected a number at input[3][2]`).
    static func input(from body: UnsafeRawBufferPointer) throws(InferenceError) -> (values: [Float], shape: [Int]) {
        let root: JSONValue
        do {
            root = try JSONReader.parse(body, deferring: ["input"])
        } catch {
            throw .invalidInput("the body is not valid JSON: \(error)")
        }
        guard let members = root.members else { throw .invalidInput("expected a JSON object {\"input\": [[...], ...]}, got \(root.kind)") }
        if let unknown = members.map(\.key).sorted().first(where: { $0 != "input" }) {
            throw .invalidInput("unknown field '\(unknown)'; the body is {\"input\": [[...], ...]}")
        }
        guard case .deferred(let range)? = root["input"] else { throw .invalidInput("missing field 'input'") }
        var reader = Rectangular(bodyBytes: range.count)
        do {
            try JSONReader.walkNested(body, range, &reader)
        } catch let error as InferenceError {
            throw error
        } catch {
            throw .invalidInput("input: \(error)")
        }
        guard let shape = reader.shape else { throw .invalidInput("expected an array at input, got \(reader.scalarKind ?? "nothing")") }
        return (reader.values, shape)
    }

    /// Nested arrays that must be rectangular: the first array to end at each depth sets that
    /// dimension, and every later one must match it.
    private struct Rectangular: NestedArrayVisitor {
        var values: [Float] = []
        var dims: [Int?] = []
        /// The depth of the first scalar (or empty array) fixes the rank.
        var rank: Int?
        var scalarKind: String?

        init(bodyBytes: Int) {
            values.reserveCapacity(min(maxValues, bodyBytes / 2 + 1))
        }

        var shape: [Int]? {
            guard let rank, rank > 0 else { return nil }
            return dims.prefix(rank).map { $0 ?? 0 }
        }

        mutating func enterArray(at path: [Int]) throws {
            if let rank, path.count >= rank { throw InferenceError.invalidInput("expected a number at \(Self.name(path)), got an array") }
            if dims.count <= path.count { dims.append(nil) }
        }

        mutating func exitArray(at path: [Int], count: Int) throws {
            if count == 0, rank == nil { rank = path.count + 1 }
            if let expected = dims[path.count], expected != count {
                throw InferenceError.invalidInput("\(Self.name(path)) has \(count) elements where its siblings have \(expected)")
            }
            dims[path.count] = count
        }

        mutating func element(_ value: JSONValue, at path: [Int]) throws {
            if rank == nil { rank = path.count }
            guard path.count > 0 else {
                scalarKind = value.kind
                return
            }
            guard let number = value.number else {
                throw InferenceError.invalidInput("expected a number at \(Self.name(path)), got \(value.kind)")
            }
            guard path.count == rank else { throw InferenceError.invalidInput("expected an array at \(Self.name(path)), got a number") }
            guard values.count < maxValues else { throw InferenceError.invalidInput("input has more than \(maxValues) values") }
            let value = Float(number.double)
            guard value.isFinite else { throw InferenceError.invalidInput("\(Self.name(path)) is out of FP32's range") }
            values.append(value)
        }

        static func name(_ path: [Int]) -> String {
            "input" + path.map { "[\($0)]" }.joined()
        }
    }

    /// `{"output": [[...], ...]}` nested as the tensor's shape.
    static func body(_ output: Tensor) -> [UInt8] {
        var json = JSONWriter(capacity: 32 + output.elementCount * 12)
        json.beginObject()
        json.key("output")
        switch output.dataType {
        case .float32: nest(output.scalars(as: Float.self), output.shape[...], &json) { $1.float($0) }
        case .float64: nest(output.scalars(as: Double.self), output.shape[...], &json) { $1.double($0) }
        case .int64: nest(output.scalars(as: Int64.self), output.shape[...], &json) { $1.int($0) }
        case .int32: nest(output.scalars(as: Int32.self), output.shape[...], &json) { $1.int($0) }
        default: json.null()
        }
        json.endObject()
        return json.bytes
    }

    private static func nest<T>(_ values: [T], _ shape: ArraySlice<Int>, _ json: inout JSONWriter, _ write: (T, inout JSONWriter) -> Void) {
        var offset = 0
        func level(_ dims: ArraySlice<Int>) {
            guard let first = dims.first else {
                write(values[offset], &json)
                offset += 1
                return
            }
            json.beginArray()
            for _ in 0..<first { level(dims.dropFirst()) }
            json.endArray()
        }
        level(shape)
    }
}
