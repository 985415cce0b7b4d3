import Foundation
import MaaSCore

/// The seed's own API, `POST /predict` with `{"input": [[...], ...]}` answered by
/// `{"output": [[...], ...]}`: nested JSON arrays of numbers in, the model's single output out.
enum PredictRoute {
    /// The request's `input` as FP32 values and shape; errors say what was expected where
    /// (`expected a number at input[3][2]`).
    static func input(from body: [UInt8]) throws(InferenceError) -> (values: [Float], shape: [Int]) {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(body))
        } catch {
            throw .invalidInput("the body is not valid JSON: \(error.localizedDescription)")
        }
        guard let root = object as? [String: Any] else { throw .invalidInput("expected a JSON object {\"input\": [[...], ...]}") }
        if let unknown = root.keys.sorted().first(where: { $0 != "input" }) {
            throw .invalidInput("unknown field '\(unknown)'; the body is {\"input\": [[...], ...]}")
        }
        guard let input = root["input"] else { throw .invalidInput("missing field 'input'") }
        guard input is [Any] else { throw .invalidInput("expected an array at input, got \(describe(input))") }
        let shape = firstPath(input)
        guard let count = try? Shape.elementCount(shape), count <= 1 << 26 else {
            throw .invalidInput("input of shape \(shape) is too large")
        }
        var values: [Float] = []
        values.reserveCapacity(count)
        try walk(input, path: "input", depth: 0, shape: shape, values: &values)
        return (values, shape)
    }

    /// Depth-first over nested arrays, each as long as the first path says at its depth.
    private static func walk(_ value: Any, path: String, depth: Int, shape: [Int], values: inout [Float]) throws(InferenceError) {
        if let array = value as? [Any] {
            guard depth < shape.count else { throw .invalidInput("expected a number at \(path), got an array") }
            guard array.count == shape[depth] else {
                throw .invalidInput("\(path) has \(array.count) elements where its siblings have \(shape[depth])")
            }
            for (index, element) in array.enumerated() {
                try walk(element, path: "\(path)[\(index)]", depth: depth + 1, shape: shape, values: &values)
            }
            return
        }
        guard let number = value as? NSNumber, CFNumberLike.isNumeric(number) else {
            throw .invalidInput("expected a number at \(path), got \(describe(value))")
        }
        guard depth == shape.count else { throw .invalidInput("expected an array at \(path), got a number") }
        values.append(number.floatValue)
    }

    /// The shape along the first elements: [len(input), len(input[0]), ...]; an empty array ends it.
    private static func firstPath(_ value: Any) -> [Int] {
        var dims: [Int] = []
        var current: Any = value
        while let array = current as? [Any] {
            dims.append(array.count)
            guard let next = array.first else { break }
            current = next
        }
        return dims
    }

    private static func describe(_ value: Any) -> String {
        switch value {
        case is String: "a string"
        case let number as NSNumber where !CFNumberLike.isNumeric(number): "a boolean"
        case is NSNull: "null"
        case is [String: Any]: "an object"
        default: "\(value)"
        }
    }

    /// `{"output": [[...], ...]}` nested as the tensor's shape.
    static func body(_ output: Tensor) -> [String: Any] {
        let values = output.dataType == .float32 ? output.scalars(as: Float.self).map(Double.init)
            : output.dataType == .float64 ? output.scalars(as: Double.self)
            : output.dataType == .int64 ? output.scalars(as: Int64.self).map(Double.init) : []
        func nest(_ offset: Int, _ dims: ArraySlice<Int>) -> Any {
            guard let first = dims.first else { return values[offset] }
            let stride = dims.dropFirst().reduce(1, *)
            return (0..<first).map { nest(offset + $0 * stride, dims.dropFirst()) }
        }
        return ["output": nest(0, output.shape[...])]
    }
}

/// JSON numbers arrive as NSNumber, and so do booleans on some Foundations: only real numbers pass.
enum CFNumberLike {
    static func isNumeric(_ number: NSNumber) -> Bool {
        let type = String(cString: number.objCType)
        return type != "c" && type != "B"
    }
}
