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

    /// Rows `range`, in order.
    public func slice(_ range: Range<Int>) -> TrainingData {
        let features = Array(self.features[range.lowerBound * featureWidth..<range.upperBound * featureWidth])
        let targets: Targets =
            switch self.targets {
            case .values(let values, let width): .values(Array(values[range.lowerBound * width..<range.upperBound * width]), width: width)
            case .classes(let labels): .classes(Array(labels[range]))
            }
        // Slices of valid data are valid.
        return try! TrainingData(features: features, featureWidth: featureWidth, targets: targets)
    }

    /// Checks that the data fits a model and a loss: widths, finite values, labels in range.
    /// Errors name the row and column (0-based, as NumPy would index them).
    public func check(for model: MLP, loss: Loss, source: String) throws(TrainingError) {
        guard featureWidth == model.inputWidth else {
            throw TrainingError("\(source): rows have \(featureWidth) features but the model's input width is \(model.inputWidth)")
        }
        if let bad = features.firstIndex(where: { !$0.isFinite }) {
            throw TrainingError("\(source): row \(bad / featureWidth), column \(bad % featureWidth): \(features[bad]) is not a finite number")
        }
        switch (targets, loss) {
        case (.values(let values, let width), .mse):
            guard width == model.outputWidth else {
                throw TrainingError("\(source): targets have \(width) columns but the model's output width is \(model.outputWidth)")
            }
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw TrainingError("\(source): target row \(bad / width), column \(bad % width): \(values[bad]) is not a finite number")
            }
        case (.classes(let labels), .crossEntropy):
            if let bad = labels.firstIndex(where: { $0 < 0 || Int($0) >= model.outputWidth }) {
                throw TrainingError(
                    "\(source): target row \(bad): label \(labels[bad]) is out of range for \(model.outputWidth) classes (0..<\(model.outputWidth))")
            }
        case (.values, .crossEntropy):
            throw TrainingError("\(source): cross-entropy needs integer class labels as targets, got float values")
        case (.classes, .mse):
            throw TrainingError("\(source): MSE needs float targets, got integer class labels")
        }
    }
}

/// The training loss.
public enum Loss: String, Sendable, CaseIterable {
    /// Mean squared error over all elements (`nn.MSELoss()`).
    case mse
    /// Log-softmax + negative log-likelihood on logits, mean over rows (`nn.CrossEntropyLoss()`).
    case crossEntropy = "cross-entropy"
}
