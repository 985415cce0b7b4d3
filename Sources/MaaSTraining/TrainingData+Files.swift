import FoundationEssentials
import MaaSCore

extension TrainingData {
    /// Reads training data the way `maas train` takes it: features from a `.npy` (2-D, any
    /// numeric dtype) or a CSV file; targets from their own `.npy`/CSV file, or from columns of
    /// the features' CSV (`targetColumns`: header names, or 0-based indices, negative from the
    /// end). Cross-entropy targets must be integer class labels.
    ///
    /// Errors name the file and where in it: `data.csv:12:3: 'abc' is not a number`.
    public static func load(data: String, targets: String?, targetColumns: String?, loss: Loss) throws(TrainingError) -> TrainingData {
        let features: Table
        var targetTable: Table
        if isCSV(data) {
            let table = try Table.csv(data)
            if let targetColumns {
                guard targets == nil else { throw TrainingError("give --targets or --target-columns, not both") }
                (features, targetTable) = try table.split(targetColumns: targetColumns)
            } else {
                guard let targets else { throw TrainingError("\(data): say which columns are targets with --target-columns, or give --targets FILE") }
                features = table
                targetTable = try isCSV(targets) ? Table.csv(targets) : Table.npy(targets, role: "targets")
            }
        } else {
            guard targetColumns == nil else { throw TrainingError("--target-columns needs CSV data, \(data) is not a .csv file") }
            guard let targets else { throw TrainingError("--targets FILE is required with .npy data") }
            features = try Table.npy(data, role: "features")
            targetTable = try isCSV(targets) ? Table.csv(targets) : Table.npy(targets, role: "targets")
        }
        guard features.rows == targetTable.rows else {
            throw TrainingError("\(features.source.file) has \(features.rows) rows but \(targetTable.source.file) has \(targetTable.rows)")
        }
        guard features.rows > 0 else { throw TrainingError("\(features.source.file) has no rows") }
        let targetValues: Targets
        switch loss {
        case .mse:
            targetValues = .values(targetTable.values, width: targetTable.width)
        case .crossEntropy:
            guard targetTable.width == 1 else {
                throw TrainingError("\(targetTable.source.file): cross-entropy needs one class label per row, found \(targetTable.width) columns")
            }
            if let type = targetTable.npyType, type != .int64, type != .int32, type != .int16, type != .int8, type != .uint8 {
                throw TrainingError("\(targetTable.source.file): cross-entropy needs integer class labels, the array is \(type)")
            }
            var labels: [Int32] = []
            labels.reserveCapacity(targetTable.rows)
            for (row, value) in targetTable.values.enumerated() {
                guard value.isFinite, value == value.rounded(), abs(value) < 16_777_216 else {
                    throw TrainingError("\(targetTable.source.locate(row: row, column: 0)): label \(value) is not an integer class index")
                }
                labels.append(Int32(value))
            }
            targetValues = .classes(labels)
        }
        var result = try TrainingData(features: features.values, featureWidth: features.width, targets: targetValues)
        result.featureSource = features.source
        result.targetSource = targetTable.source
        return result
    }

    static func isCSV(_ path: String) -> Bool { path.lowercased().hasSuffix(".csv") }
}

/// A file's numbers as rows × width floats, with where each came from.
private struct Table {
    var values: [Float]
    var rows: Int
    var width: Int
    var source: DataSource
    var header: [String]? = nil
    /// The dtype, for `.npy` files.
    var npyType: DataType? = nil

    static func read(_ path: String) throws(TrainingError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TrainingError("\(path): cannot read the file (missing or not readable)")
        }
        return Array(data)
    }

    static func npy(_ path: String, role: String) throws(TrainingError) -> Table {
        let tensor: Tensor
        do {
            tensor = try NPY.decode(read(path), source: path)
        } catch let error as InferenceError {
            throw TrainingError(error.message)
        } catch {
            throw error as! TrainingError
        }
        let (rows, width): (Int, Int)
        switch tensor.rank {
        case 1 where role == "targets": (rows, width) = (tensor.shape[0], 1)
        case 2: (rows, width) = (tensor.shape[0], tensor.shape[1])
        default:
            throw TrainingError("\(path): \(role) must be a 2-D array [rows, columns]\(role == "targets" ? " or 1-D [rows]" : ""), got shape \(tensor.shape)")
        }
        let values: [Float]
        switch tensor.dataType {
        case .float32: values = tensor.scalars(as: Float.self)
        case .float64: values = tensor.scalars(as: Double.self).map { Float($0) }
        case .int64: values = tensor.scalars(as: Int64.self).map { Float($0) }
        case .int32: values = tensor.scalars(as: Int32.self).map { Float($0) }
        case .int16: values = tensor.scalars(as: Int16.self).map { Float($0) }
        case .int8: values = tensor.scalars(as: Int8.self).map { Float($0) }
        case .uint8: values = tensor.scalars(as: UInt8.self).map { Float($0) }
        default: throw TrainingError("\(path): \(role) of dtype \(tensor.dataType) are not supported (use float32, float64 or integers)")
        }
        return Table(values: values, rows: rows, width: width, source: DataSource(file: path), npyType: tensor.dataType)
    }

    /// Comma-separated numbers, one row per line; a first line that is not all numbers is the
    /// header. Blank lines are skipped; quotes around a field are removed.
    static func csv(_ path: String) throws(TrainingError) -> Table {
        var bytes = try read(path)
        // Spreadsheets often start UTF-8 CSV files with a byte-order mark; it is not data.
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        let text = String(decoding: bytes, as: UTF8.self)
        var values: [Float] = []
        var lines: [Int] = []
        var header: [String]?
        var width: Int?
        var lineNumber = 0
        // "\r\n" is one Character in Swift, so both line endings are separators here.
        for trimmed in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            if trimmed.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            let fields = trimmed.split(separator: ",", omittingEmptySubsequences: false).map { field in
                var value = field.trimmingBlanks()
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
                return value
            }
            if let expected = width {
                guard fields.count == expected else {
                    throw TrainingError("\(path):\(lineNumber): expected \(expected) columns, found \(fields.count)")
                }
            } else {
                width = fields.count
                if fields.contains(where: { Float($0) == nil }) {
                    header = fields
                    continue
                }
            }
            for (column, field) in fields.enumerated() {
                guard let value = Float(field) else {
                    throw TrainingError("\(path):\(lineNumber):\(column + 1): '\(field)' is not a number")
                }
                values.append(value)
            }
            lines.append(lineNumber)
        }
        guard let width else { throw TrainingError("\(path): the file is empty") }
        return Table(
            values: values, rows: lines.count, width: width, source: DataSource(file: path, lines: lines, columns: Array(1...width)),
            header: header)
    }

    /// Splits off the target columns, named or indexed in `spec`.
    func split(targetColumns spec: String) throws(TrainingError) -> (features: Table, targets: Table) {
        var targetIndices: [Int] = []
        for part in spec.split(separator: ",").map({ $0.trimmingBlanks() }) {
            let index: Int
            if let name = header?.firstIndex(of: part) {
                index = name
            } else if let number = Int(part) {
                index = number < 0 ? width + number : number
                guard (0..<width).contains(index) else {
                    throw TrainingError("\(source.file): --target-columns \(part) is out of range for \(width) columns")
                }
            } else {
                throw TrainingError(
                    "\(source.file): --target-columns '\(part)' is not a column \(header.map { "(header: \($0.joined(separator: ", ")))" } ?? "(the file has no header; use 0-based indices)")")
            }
            guard !targetIndices.contains(index) else { throw TrainingError("--target-columns names column \(part) twice") }
            targetIndices.append(index)
        }
        guard !targetIndices.isEmpty else { throw TrainingError("--target-columns is empty") }
        let featureIndices = (0..<width).filter { !targetIndices.contains($0) }
        guard !featureIndices.isEmpty else { throw TrainingError("\(source.file): every column is a target; no features remain") }
        func pick(_ indices: [Int]) -> Table {
            var picked: [Float] = []
            picked.reserveCapacity(rows * indices.count)
            for row in 0..<rows {
                for index in indices { picked.append(values[row * width + index]) }
            }
            return Table(
                values: picked, rows: rows, width: indices.count,
                source: DataSource(file: source.file, lines: source.lines, columns: indices.map { $0 + 1 }))
        }
        return (pick(featureIndices), pick(targetIndices))
    }
}
