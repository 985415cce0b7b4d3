import MaaSCore
import MaaSCompute

/// How ``Trainer/fit(_:options:validation:shouldStop:onEvent:)`` walks the data.
public struct FitOptions: Sendable, Equatable {
    public var epochs: Int
    /// Rows per step; 0 is the full batch. The last step of an epoch may have fewer rows
    /// (PyTorch's DataLoader with drop_last=False).
    public var batchSize: Int = 0
    /// Visit rows in a new seeded random order every epoch; otherwise in file order.
    public var shuffle = false
    public var seed: UInt64 = 0

    public init(epochs: Int, batchSize: Int = 0, shuffle: Bool = false, seed: UInt64 = 0) {
        self.epochs = epochs
        self.batchSize = batchSize
        self.shuffle = shuffle
        self.seed = seed
    }
}

/// What training reports as it goes.
public enum TrainingEvent: Sendable {
    /// After each optimizer step: the loss before its update.
    case step(epoch: Int, step: Int, stepsPerEpoch: Int, loss: Double)
    case epoch(EpochReport)
}

public struct EpochReport: Sendable, Equatable {
    /// 1-based.
    public var epoch: Int
    /// The mean of the steps' losses, weighted by their rows.
    public var trainingLoss: Double
    public var validation: Trainer.Evaluation?
    public var seconds: Double
}

public struct FitResult: Sendable {
    /// The best model: the one with the lowest validation loss at the end of an epoch when there
    /// is validation data, otherwise the latest.
    public var model: MLP
    /// Every step's loss, before its update.
    public var losses: [Double]
    public var epochs: [EpochReport]
    /// The epoch ``model`` comes from (0 if no epoch finished).
    public var bestEpoch: Int
    /// Stopped before the last epoch because `shouldStop` said so.
    public var interrupted: Bool
    /// Data-parallel runs: the time this rank spent summing gradients with the others (waiting
    /// for the slowest included), and the bytes it sent into each step's sum.
    public var allreduceSeconds = 0.0
    public var allreduceBytesPerStep = 0
}

extension Trainer {
    /// Trains for `options.epochs` epochs, checking `shouldStop` after every step.
    ///
    /// The loop runs on a pool thread, so steps follow each other without a thread hand-off;
    /// `onEvent` and `shouldStop` are called there too.
    ///
    /// - Throws: when the data does not fit the model and the loss (``TrainingData/check(for:loss:)``),
    ///   has no rows, or `options` ask for no epochs or a negative batch size.
    public func fit(
        _ data: TrainingData, options: FitOptions, validation: TrainingData? = nil,
        shouldStop: () -> Bool = { false }, onEvent: (TrainingEvent) -> Void = { _ in }
    ) throws(TrainingError) -> FitResult {
        try check(data)
        if let validation { try check(validation) }
        guard options.epochs > 0, options.epochs <= 100_000_000 else { throw TrainingError("epochs must be between 1 and 10^8, got \(options.epochs)") }
        guard options.batchSize >= 0 else { throw TrainingError("batch size must be 0 (full batch) or more, got \(options.batchSize)") }
        return pool.run { fitOnPool(data, options: options, validation: validation, shouldStop: shouldStop, onEvent: onEvent) }
    }

    private func fitOnPool(
        _ data: TrainingData, options: FitOptions, validation: TrainingData?,
        shouldStop: () -> Bool, onEvent: (TrainingEvent) -> Void
    ) -> FitResult {
        let batch = options.batchSize <= 0 ? data.rows : min(options.batchSize, data.rows)
        let stepsPerEpoch = (data.rows + batch - 1) / batch
        var generator = SplitMix64(seed: options.seed)
        var order = Array(0..<data.rows)
        var losses: [Double] = []
        losses.reserveCapacity(min(options.epochs * stepsPerEpoch, 1 << 20))
        var reports: [EpochReport] = []
        var best = (model: model, epoch: 0, loss: Double.infinity)
        var interrupted = false

        epochs: for epoch in stride(from: 1, through: options.epochs, by: 1) {
            let started = ContinuousClock.now
            // A shuffled epoch is a permuted copy of the rows, so that every step reads its
            // minibatch contiguously, as in file order.
            var rows = data
            if options.shuffle {
                for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, generator.next(below: i + 1)) }
                rows = data.rows(at: order)
            }
            var weightedLoss = 0.0
            for step in 0..<stepsPerEpoch {
                let start = step * batch, count = min(batch, data.rows - start)
                let loss = rows.features.withUnsafeBufferPointer { features in
                    withTargets(rows) { targets in
                        self.step(
                            features: features.baseAddress! + start * rows.featureWidth,
                            targets: targets.advanced(by: start, width: rows.targetWidth), rows: count)
                    }
                }
                losses.append(loss)
                weightedLoss += loss * Double(count)
                onEvent(.step(epoch: epoch, step: step + 1, stepsPerEpoch: stepsPerEpoch, loss: loss))
                if shouldStop() && !(epoch == options.epochs && step == stepsPerEpoch - 1) {
                    interrupted = true
                    break epochs
                }
            }
            let evaluation = validation.map { evaluateChecked($0) }
            let report = EpochReport(
                epoch: epoch, trainingLoss: weightedLoss / Double(data.rows), validation: evaluation,
                seconds: (ContinuousClock.now - started).inSeconds)
            reports.append(report)
            if let evaluation, evaluation.loss < best.loss {
                best = (model, epoch, evaluation.loss)
            }
            onEvent(.epoch(report))
        }
        if validation == nil || best.epoch == 0 {
            best = (model, reports.last?.epoch ?? 0, 0)
        }
        return FitResult(model: best.model, losses: losses, epochs: reports, bestEpoch: best.epoch, interrupted: interrupted)
    }
}

extension TrainingData {
    /// How many values a target row holds: its width for values, one label for classes.
    var targetWidth: Int {
        if case .values(_, let width) = targets { return width }
        return 1
    }
}
