/// Rows of features with their targets, in memory.
public struct TrainingData: Sendable {
    public enum Targets: Sendable, Equatable {
        /// Regression targets, `width` per row (MSE).
        case values([Float], width: Int)
        /// Class indices (cross-entropy).
        case classes([Int32])
    }

    public let rows: Int
    public let featureWidth: Int
    /// `rows × featureWidth`, row-major.
    public let features: [Float]
    public let targets: Targets
    /// Where rows came from, so that errors can name the file, line and column.
    public var featureSource = DataSource(file: "features")
    public var targetSource = DataSource(file: "targets")

    public init(features: [Float], featureWidth: Int, targets: Targets) throws(TrainingError) {
        guard featureWidth > 0, features.count % featureWidth == 0 else {
            throw TrainingError("\(features.count) feature values do not split into rows of \(featureWidth)")
        }
        let rows = features.count / featureWidth
        switch targets {
        case .values(let values, let width):
            guard width > 0, values.count == rows * width else {
                throw TrainingError("\(rows) rows of features but \(values.count) target values (expected \(rows) × \(width))")
            }
        case .classes(let labels):
            guard labels.count == rows else {
                throw TrainingError("\(rows) rows of features but \(labels.count) class labels")
            }
        }
        self.rows = rows
        self.featureWidth = featureWidth
        self.features = features
        self.targets = targets
    }

    /// The rows of `ranges`, in order, keeping where each came from (a data-parallel rank's share).
    public func rows(in ranges: [Range<Int>]) -> TrainingData {
        if ranges.count == 1 { return slice(ranges[0]) }
        var result = rows(at: ranges.joined())
        result.featureSource = featureSource.rows(in: ranges)
        result.targetSource = targetSource.rows(in: ranges)
        return result
    }

    /// Rows `range`, in order.
    public func slice(_ range: Range<Int>) -> TrainingData {
        let features = Array(self.features[range.lowerBound * featureWidth..<range.upperBound * featureWidth])
        let targets: Targets =
            switch self.targets {
            case .values(let values, let width): .values(Array(values[range.lowerBound * width..<range.upperBound * width]), width: width)
            case .classes(let labels): .classes(Array(labels[range]))
            }
        // Slices of valid data are valid.
        var slice = try! TrainingData(features: features, featureWidth: featureWidth, targets: targets)
        slice.featureSource = featureSource.rows(range)
        slice.targetSource = targetSource.rows(range)
        return slice
    }

    /// The rows at `indices`, in that order (a permutation of `0..<rows`, or any selection).
    func rows(at indices: some Collection<Int>) -> TrainingData {
        func gather<T>(_ values: [T], width: Int) -> [T] {
            [T](unsafeUninitializedCapacity: indices.count * width) { buffer, count in
                values.withUnsafeBufferPointer { source in
                    for (row, index) in indices.enumerated() {
                        (buffer.baseAddress! + row * width).initialize(from: source.baseAddress! + index * width, count: width)
                    }
                }
                count = indices.count * width
            }
        }
        let targets: Targets =
            switch self.targets {
            case .values(let values, let width): .values(gather(values, width: width), width: width)
            case .classes(let labels): .classes(gather(labels, width: 1))
            }
        // Rows of valid data are valid; only .npy/CSV positions no longer line up.
        var result = try! TrainingData(features: gather(features, width: featureWidth), featureWidth: featureWidth, targets: targets)
        result.featureSource = DataSource(file: featureSource.file)
        result.targetSource = DataSource(file: targetSource.file)
        return result
    }

    /// Checks that the data fits a model and a loss: widths, finite values, labels in range.
    /// Errors name the file and the row and column (CSV: line and column).
    public func check(for model: MLP, loss: Loss) throws(TrainingError) {
        guard featureWidth == model.inputWidth else {
            throw TrainingError("\(featureSource.file): rows have \(featureWidth) features but the model's input width is \(model.inputWidth)")
        }
        if let bad = features.firstIndex(where: { !$0.isFinite }) {
            throw TrainingError("\(featureSource.locate(row: bad / featureWidth, column: bad % featureWidth)): \(features[bad]) is not a finite number")
        }
        switch (targets, loss) {
        case (.values(let values, let width), .mse):
            guard width == model.outputWidth else {
                throw TrainingError("\(targetSource.file): targets have \(width) columns but the model's output width is \(model.outputWidth)")
            }
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw TrainingError("\(targetSource.locate(row: bad / width, column: bad % width)): \(values[bad]) is not a finite number")
            }
        case (.classes(let labels), .crossEntropy):
            if let bad = labels.firstIndex(where: { $0 < 0 || Int($0) >= model.outputWidth }) {
                throw TrainingError(
                    "\(targetSource.locate(row: bad, column: 0)): label \(labels[bad]) is out of range for \(model.outputWidth) classes (0..<\(model.outputWidth))")
            }
        case (.values, .crossEntropy):
            throw TrainingError("\(targetSource.file): cross-entropy needs integer class labels as targets, got float values")
        case (.classes, .mse):
            throw TrainingError("\(targetSource.file): MSE needs float targets, got integer class labels")
        }
    }
}

/// A file rows were read from: `.npy` rows and columns are 0-based indices as NumPy prints
/// them; CSV rows keep their 1-based line and column numbers, as editors show them.
public struct DataSource: Sendable, Equatable {
    public var file: String
    /// For CSV: the line of each row.
    public var lines: [Int]?
    /// For CSV: the column of each value within a row.
    public var columns: [Int]?
    /// For `.npy`: the file row of this data's first row.
    public var firstRow = 0
    /// For `.npy` rows picked from several places: the file row of each.
    public var fileRows: [Int]?

    public init(file: String, lines: [Int]? = nil, columns: [Int]? = nil) {
        self.file = file
        self.lines = lines
        self.columns = columns
    }

    public func locate(row: Int, column: Int) -> String {
        guard let lines, row < lines.count else {
            let fileRow = fileRows.map { row < $0.count ? $0[row] : row } ?? firstRow + row
            return "\(file): row \(fileRow), column \(column)"
        }
        let csvColumn = columns.map { column < $0.count ? $0[column] : column + 1 } ?? column + 1
        return "\(file):\(lines[row]):\(csvColumn)"
    }

    func rows(in ranges: [Range<Int>]) -> DataSource {
        var picked = self
        if let lines {
            picked.lines = ranges.flatMap { Array(lines[$0]) }
        } else {
            picked.fileRows = ranges.flatMap { range in range.map { fileRows?[$0] ?? firstRow + $0 } }
            picked.firstRow = 0
        }
        return picked
    }

    func rows(_ range: Range<Int>) -> DataSource {
        var slice = self
        if let lines {
            slice.lines = Array(lines[range])
        } else if let fileRows {
            slice.fileRows = Array(fileRows[range])
        } else {
            slice.firstRow += range.lowerBound
        }
        return slice
    }
}

/// The training loss.
public enum Loss: String, Sendable, CaseIterable {
    /// Mean squared error over all elements (`nn.MSELoss()`).
    case mse
    /// Log-softmax + negative log-likelihood on logits, mean over rows (`nn.CrossEntropyLoss()`).
    case crossEntropy = "cross-entropy"
}
