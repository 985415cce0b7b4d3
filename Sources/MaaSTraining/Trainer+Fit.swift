import Glibc
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
        var batchFeatures = [Float](repeating: 0, count: options.shuffle ? batch * data.featureWidth : 0)
        var batchTargets = TargetBuffer(data.targets, rows: options.shuffle ? batch : 0)
        var losses: [Double] = []
        losses.reserveCapacity(min(options.epochs * stepsPerEpoch, 1 << 20))
        var reports: [EpochReport] = []
        var best = (model: model, epoch: 0, loss: Double.infinity)
        var interrupted = false

        epochs: for epoch in stride(from: 1, through: options.epochs, by: 1) {
            let started = monotonicSeconds()
            if options.shuffle {
                for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, generator.next(below: i + 1)) }
            }
            var weightedLoss = 0.0
            for step in 0..<stepsPerEpoch {
                let start = step * batch, rows = min(batch, data.rows - start)
                let loss: Double
                if options.shuffle {
                    let indices = order[start..<start + rows]
                    gather(data, indices, into: &batchFeatures)
                    batchTargets.gather(data.targets, indices)
                    loss = batchFeatures.withUnsafeBufferPointer { features in
                        batchTargets.withRows { targets in self.step(features: features.baseAddress!, targets: targets, rows: rows) }
                    }
                } else {
                    loss = data.features.withUnsafeBufferPointer { features in
                        withTargets(data) { targets in
                            self.step(
                                features: features.baseAddress! + start * data.featureWidth,
                                targets: targets.advanced(by: start, width: data.targetWidth), rows: rows)
                        }
                    }
                }
                losses.append(loss)
                weightedLoss += loss * Double(rows)
                onEvent(.step(epoch: epoch, step: step + 1, stepsPerEpoch: stepsPerEpoch, loss: loss))
                if shouldStop() && !(epoch == options.epochs && step == stepsPerEpoch - 1) {
                    interrupted = true
                    break epochs
                }
            }
            let evaluation = validation.map { evaluateChecked($0) }
            let report = EpochReport(
                epoch: epoch, trainingLoss: weightedLoss / Double(data.rows), validation: evaluation,
                seconds: monotonicSeconds() - started)
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

    private func gather(_ data: TrainingData, _ indices: ArraySlice<Int>, into buffer: inout [Float]) {
        let width = data.featureWidth
        data.features.withUnsafeBufferPointer { source in
            buffer.withUnsafeMutableBufferPointer { target in
                for (row, index) in indices.enumerated() {
                    (target.baseAddress! + row * width).update(from: source.baseAddress! + index * width, count: width)
                }
            }
        }
    }
}

extension TrainingData {
    /// How many values a target row holds: its width for values, one label for classes.
    var targetWidth: Int {
        if case .values(_, let width) = targets { return width }
        return 1
    }
}

/// A shuffled minibatch's targets.
private enum TargetBuffer {
    case values([Float], width: Int)
    case classes([Int32])

    init(_ targets: TrainingData.Targets, rows: Int) {
        switch targets {
        case .values(_, let width): self = .values([Float](repeating: 0, count: rows * width), width: width)
        case .classes: self = .classes([Int32](repeating: 0, count: rows))
        }
    }

    mutating func gather(_ targets: TrainingData.Targets, _ indices: ArraySlice<Int>) {
        switch (self, targets) {
        case (.values(var buffer, let width), .values(let source, _)):
            self = .classes([])
            for (row, index) in indices.enumerated() {
                for j in 0..<width { buffer[row * width + j] = source[index * width + j] }
            }
            self = .values(buffer, width: width)
        case (.classes(var buffer), .classes(let source)):
            self = .classes([])
            for (row, index) in indices.enumerated() { buffer[row] = source[index] }
            self = .classes(buffer)
        default:
            preconditionFailure("target kinds do not change during training")
        }
    }

    func withRows<Result>(_ body: (Trainer.TargetRows) -> Result) -> Result {
        switch self {
        case .values(let buffer, _): buffer.withUnsafeBufferPointer { body(.values($0.baseAddress!)) }
        case .classes(let buffer): buffer.withUnsafeBufferPointer { body(.classes($0.baseAddress!)) }
        }
    }
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
