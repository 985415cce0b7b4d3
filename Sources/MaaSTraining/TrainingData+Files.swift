import FoundationEssentials
import Glibc
import MaaSCore

extension TrainingData {
    /// Reads training data the way `maas train` takes it: features from a `.npy` (2-D, any
    /// numeric dtype) or a CSV file; targets from their own `.npy`/CSV file, or from columns of
    /// the features' CSV (`targetColumns`: header names, or 0-based indices, negative from the
    /// end). Cross-entropy targets must be integer class labels.
    ///
    /// Errors name the file and where in it: `data.csv:12:3: 'abc' is not a number`.
    ///
    /// - Parameter selecting: given the files' row count, the rows to keep (a data-parallel
    ///   rank's share), in order. Rows of `.npy` files outside them are never read; CSV files are
    ///   parsed whole, since a text row cannot be found without reading the ones before it.
    public static func load(
        data: String, targets: String?, targetColumns: String?, loss: Loss,
        selecting: ((Int) throws(TrainingError) -> [Range<Int>])? = nil
    ) throws(TrainingError) -> TrainingData {
        var features: Table
        var targetTable: Table
        if isCSV(data) {
            let table = try Table.csv(data)
            if let targetColumns {
                guard targets == nil else { throw TrainingError("give --targets or --target-columns, not both") }
                (features, targetTable) = try table.split(targetColumns: targetColumns)
            } else {
                guard let targets else { throw TrainingError("\(data): say which columns are targets with --target-columns, or give --targets FILE") }
                features = table
                targetTable = try isCSV(targets) ? Table.csv(targets) : Table.npy(NPYFile(targets), role: "targets", rows: nil)
            }
            try checkRows(features.rows, features.source.file, targetTable.rows, targetTable.source.file)
            if let selecting {
                let ranges = try selecting(features.rows)
                features = features.rows(in: ranges)
                targetTable = targetTable.rows(in: ranges)
            }
        } else {
            guard targetColumns == nil else { throw TrainingError("--target-columns needs CSV data, \(data) is not a .csv file") }
            guard let targets else { throw TrainingError("--targets FILE is required with .npy data") }
            let featureFile = try NPYFile(data)
            if isCSV(targets) {
                targetTable = try Table.csv(targets)
                try checkRows(featureFile.rows, data, targetTable.rows, targets)
                let ranges = try selecting?(featureFile.rows)
                features = try Table.npy(featureFile, role: "features", rows: ranges)
                if let ranges { targetTable = targetTable.rows(in: ranges) }
            } else {
                let targetFile = try NPYFile(targets)
                try checkRows(featureFile.rows, data, targetFile.rows, targets)
                let ranges = try selecting?(featureFile.rows)
                features = try Table.npy(featureFile, role: "features", rows: ranges)
                targetTable = try Table.npy(targetFile, role: "targets", rows: ranges)
            }
        }
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

    private static func checkRows(_ rows: Int, _ file: String, _ targetRows: Int, _ targetFile: String) throws(TrainingError) {
        guard rows == targetRows else { throw TrainingError("\(file) has \(rows) rows but \(targetFile) has \(targetRows)") }
        guard rows > 0 else { throw TrainingError("\(file) has no rows") }
    }
}

/// A `.npy` file whose header has been read, so that rows can be read on their own.
private struct NPYFile: ~Copyable {
    let path: String
    let layout: NPY.Layout
    private let descriptor: Int32

    init(_ path: String) throws(TrainingError) {
        self.path = path
        descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw TrainingError("\(path): cannot read the file (missing or not readable)") }
        var status = stat()
        guard fstat(descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else {
            close(descriptor)
            throw TrainingError("\(path): not a regular file")
        }
        let size = Int(status.st_size)
        do {
            var prefix = try Self.read(descriptor, path, offset: 0, count: min(size, NPY.Layout.typicalPrefix))
            if let needed = NPY.Layout.requiredPrefix(prefix), needed > prefix.count, needed <= size {
                prefix = try Self.read(descriptor, path, offset: 0, count: needed)
            }
            layout = try NPY.Layout(prefix: prefix, fileSize: size, source: path)
        } catch let error as InferenceError {
            close(descriptor)
            throw TrainingError(error.message)
        } catch {
            close(descriptor)
            throw error as! TrainingError
        }
    }

    deinit { close(descriptor) }

    var rows: Int { layout.shape.first ?? 0 }

    /// Rows `ranges` (all rows when nil) as one array of shape [rows, ...].
    func tensor(rows ranges: [Range<Int>]?) throws(TrainingError) -> Tensor {
        let ranges = ranges ?? [0..<rows]
        let rowElements = layout.shape.dropFirst().reduce(1, *)
        let rowBytes = rowElements * layout.dataType.byteSize!
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ranges.reduce(0) { $0 + $1.count } * rowBytes)
        for range in ranges {
            guard range.lowerBound >= 0, range.upperBound <= rows else {
                throw TrainingError("\(path): rows \(range) are outside its \(rows) rows")
            }
            bytes += try Self.read(descriptor, path, offset: layout.dataStart + range.lowerBound * rowBytes, count: range.count * rowBytes)
        }
        let shape = [bytes.count / max(rowBytes, 1)] + layout.shape.dropFirst()
        let tensor = bytes.withUnsafeBytes { buffer in
            Result { () throws(InferenceError) in try Tensor(dataType: layout.dataType, shape: shape, bytes: buffer) }
        }
        switch tensor {
        case .success(let tensor): return tensor
        case .failure(let error): throw TrainingError("\(path): \(error.message)")
        }
    }

    private static func read(_ descriptor: Int32, _ path: String, offset: Int, count: Int) throws(TrainingError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if got < 0, errno == EINTR { continue }
            guard got > 0 else { throw TrainingError("\(path): read failed at byte \(offset + done) (file changed while reading?)") }
            done += got
        }
        return bytes
    }
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

    /// The rows `ranges` of a `.npy` file (all when nil), reading no others.
    static func npy(_ file: borrowing NPYFile, role: String, rows ranges: [Range<Int>]?) throws(TrainingError) -> Table {
        let path = file.path
        let tensor = try file.tensor(rows: ranges)
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
        var source = DataSource(file: path)
        if let ranges { source = source.rows(in: ranges) }
        return Table(values: values, rows: rows, width: width, source: source, npyType: tensor.dataType)
    }

    /// The rows of `ranges`, in order.
    func rows(in ranges: [Range<Int>]) -> Table {
        var picked: [Float] = []
        picked.reserveCapacity(ranges.reduce(0) { $0 + $1.count } * width)
        for range in ranges { picked += values[range.lowerBound * width..<range.upperBound * width] }
        return Table(values: picked, rows: picked.count / width, width: width, source: source.rows(in: ranges), header: header, npyType: npyType)
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
