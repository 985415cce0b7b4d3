import MaaSCompute
import MaaSCore

/// The ranks of a data-parallel run, as training needs them: MaaSDistributed implements it over
/// MPI; this module knows no transport.
public protocol DataParallelGroup: AnyObject {
    /// 0-based; rank 0 reports progress and writes the model.
    var rank: Int { get }
    var size: Int { get }
    /// Sums `count` floats element-wise over every rank, in place.
    /// - Important: every rank must get the same bits back, or the parameters drift apart (the
    ///   hash check in ``Trainer/fit(_:share:options:validation:group:onEvent:)`` catches it).
    func sumInPlace(_ values: UnsafeMutablePointer<Float>, count: Int)
    /// Every rank's `value`, in rank order.
    func allGather(_ value: UInt64) -> [UInt64]
}

/// The rows of a training set one rank works on.
///
/// Every step's global minibatch (rows in file order, or in the epoch's seeded permutation,
/// computed alike on every rank) is cut into `size` contiguous slices, and rank r takes slice r.
/// So the ranks together run exactly the steps one process would, on the same rows, and differ
/// from it only in the order the gradient's terms are summed.
public struct DataShare: Sendable {
    /// Rows in the whole training set (all ranks).
    public let totalRows: Int
    public let rank: Int
    public let size: Int
    /// Rows per global step; 0 is the full batch.
    public let batchSize: Int
    public let shuffle: Bool

    public init(totalRows: Int, rank: Int, size: Int, batchSize: Int, shuffle: Bool) {
        precondition(size > 0 && (0..<size).contains(rank) && totalRows > 0)
        self.totalRows = totalRows
        self.rank = rank
        self.size = size
        self.batchSize = batchSize
        self.shuffle = shuffle
    }

    var batch: Int { batchSize <= 0 ? totalRows : min(batchSize, totalRows) }
    var stepsPerEpoch: Int { (totalRows + batch - 1) / batch }

    /// This rank's part of step `step`'s `count` rows: positions within the step.
    func slice(ofStepRows count: Int) -> Range<Int> {
        (count * rank / size)..<(count * (rank + 1) / size)
    }

    /// The global rows this rank must hold: without shuffling the same rows every epoch (its
    /// slices of every step, in order; for the full batch one contiguous shard), with shuffling
    /// any row, since each epoch's permutation hands it different ones.
    public var rowsToLoad: [Range<Int>] {
        guard !shuffle else { return [0..<totalRows] }
        var ranges: [Range<Int>] = []
        for step in 0..<stepsPerEpoch {
            let start = step * batch, count = min(batch, totalRows - start)
            let slice = slice(ofStepRows: count)
            guard !slice.isEmpty else { continue }
            let rows = (start + slice.lowerBound)..<(start + slice.upperBound)
            if let last = ranges.last, last.upperBound == rows.lowerBound {
                ranges[ranges.count - 1] = last.lowerBound..<rows.upperBound
            } else {
                ranges.append(rows)
            }
        }
        return ranges
    }
}

/// Why a data-parallel run stopped early.
public struct DataParallelError: Error, Sendable {
    public var message: String

    public init(message: String) {
        self.message = message
    }
}

extension Trainer {
    /// Data-parallel ``fit(_:options:validation:shouldStop:onEvent:)``: this rank trains on its
    /// share of every step (`data` holds the rows of ``DataShare/rowsToLoad``, in that order),
    /// the ranks' gradients are summed with one ``DataParallelGroup/sumInPlace(_:count:)`` per
    /// step, and every rank applies the same update.
    ///
    /// - Parameters:
    ///   - checkEvery: compare the ranks' parameter hashes every this many steps (and after
    ///     the last); a mismatch stops every rank with ``DataParallelError`` naming the hashes.
    ///   - validation: evaluated on the rank that passes it (rank 0), which also keeps the best
    ///     epoch's model; the others pass nil.
    /// - Important: every rank must call this with the same options and share geometry, or the
    ///   collectives pair up wrongly.
    public func fit(
        _ data: TrainingData, share: DataShare, options: FitOptions, validation: TrainingData? = nil,
        group: any DataParallelGroup, checkEvery: Int = 100, onEvent: (TrainingEvent) -> Void = { _ in }
    ) throws -> FitResult {
        // A rank may hold no rows at all (more ranks than rows in every step); it still takes
        // part in every sum, with a zero gradient.
        if data.rows > 0 { try check(data) }
        if let validation { try check(validation) }
        let expected = share.rowsToLoad.reduce(0) { $0 + $1.count }
        guard data.rows == expected else {
            throw TrainingError("rank \(share.rank) holds \(data.rows) rows but its share of \(share.totalRows) is \(expected)")
        }
        guard options.epochs > 0, options.epochs <= 100_000_000 else { throw TrainingError("epochs must be between 1 and 10^8, got \(options.epochs)") }
        guard checkEvery > 0 else { throw TrainingError("the parameter check interval must be at least 1 step, got \(checkEvery)") }
        return try pool.run { () throws -> FitResult in
            try fitShare(data, share: share, options: options, validation: validation, group: group, checkEvery: checkEvery, onEvent: onEvent)
        }
    }

    private func fitShare(
        _ data: TrainingData, share: DataShare, options: FitOptions, validation: TrainingData?,
        group: any DataParallelGroup, checkEvery: Int, onEvent: (TrainingEvent) -> Void
    ) throws -> FitResult {
        let batch = share.batch, stepsPerEpoch = share.stepsPerEpoch
        var generator = SplitMix64(seed: options.seed)
        var order = Array(0..<share.totalRows)
        var losses: [Double] = []
        var reports: [EpochReport] = []
        var best = (model: model, epoch: 0, loss: Double.infinity)
        var steps = 0

        func checkInSync() throws {
            let hashes = group.allGather(parameterHash())
            if let other = hashes.indices.first(where: { hashes[$0] != hashes[0] }) {
                let when = steps == 0 ? "before the first step (started from different weights?)" : "after step \(steps)"
                throw DataParallelError(
                    message: "the ranks' parameters differ \(when): rank 0 has hash \(cFormat("%016lx", hashes[0])), rank \(other) has \(cFormat("%016lx", hashes[other]))")
            }
        }

        // Ranks started with other data or options would pair their collectives wrongly, or
        // silently train different models; the geometry and the initial weights must agree.
        var geometry: UInt64 = 0xcbf2_9ce4_8422_2325
        for value in [share.totalRows, batch, options.epochs, share.shuffle ? 1 : 0, Int(truncatingIfNeeded: options.seed), parameterCount] {
            geometry = (geometry ^ UInt64(bitPattern: Int64(value))) &* 0x0000_0100_0000_01b3
        }
        let geometries = group.allGather(geometry)
        if let other = geometries.indices.first(where: { geometries[$0] != geometries[0] }) {
            throw DataParallelError(
                message: "rank \(other) was started with other data or options than rank 0 (rows, batch size, epochs, shuffle, seed or model size differ)")
        }
        try checkInSync()
        let timed = TimedGroup(group)

        for epoch in 1...options.epochs {
            let started = ContinuousClock.now
            if share.shuffle {
                // The same generator as single-process fit, so the same permutation.
                for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, generator.next(below: i + 1)) }
            }
            var weightedLoss = 0.0, localOffset = 0
            for step in 0..<stepsPerEpoch {
                let start = step * batch, count = min(batch, share.totalRows - start)
                let slice = share.slice(ofStepRows: count)
                let rows = share.shuffle ? data.rows(at: order[(start + slice.lowerBound)..<(start + slice.upperBound)]) : nil
                let source = rows ?? data
                let offset = rows == nil ? localOffset : 0
                let loss: Double
                if slice.isEmpty {
                    // Nothing of this step is ours; the pointers are not read.
                    let none: Float = 0
                    loss = withUnsafePointer(to: none) { self.step(features: $0, targets: .values($0), rows: 0, batchRows: count, group: timed) }
                } else {
                    loss = source.features.withUnsafeBufferPointer { features in
                        withTargets(source) { targets in
                            self.step(
                                features: features.baseAddress! + offset * source.featureWidth,
                                targets: targets.advanced(by: offset, width: source.targetWidth), rows: slice.count,
                                batchRows: count, group: timed)
                        }
                    }
                }
                localOffset += slice.count
                steps += 1
                losses.append(loss)
                weightedLoss += loss * Double(count)
                onEvent(.step(epoch: epoch, step: step + 1, stepsPerEpoch: stepsPerEpoch, loss: loss))
                if steps % checkEvery == 0 { try checkInSync() }
            }
            let evaluation = validation.map { evaluateChecked($0) }
            let report = EpochReport(
                epoch: epoch, trainingLoss: weightedLoss / Double(share.totalRows), validation: evaluation,
                seconds: (ContinuousClock.now - started).inSeconds)
            reports.append(report)
            if let evaluation, evaluation.loss < best.loss { best = (model, epoch, evaluation.loss) }
            onEvent(.epoch(report))
        }
        if steps % checkEvery != 0 { try checkInSync() }
        if validation == nil || best.epoch == 0 { best = (model, reports.last?.epoch ?? 0, 0) }
        var result = FitResult(model: best.model, losses: losses, epochs: reports, bestEpoch: best.epoch, interrupted: false)
        result.allreduceSeconds = timed.seconds
        result.allreduceBytesPerStep = (parameterCount + 1) * MemoryLayout<Float>.stride
        return result
    }
}

/// Times the sums, for the share of a step spent communicating.
private final class TimedGroup: DataParallelGroup {
    let group: any DataParallelGroup
    private(set) var seconds = 0.0

    init(_ group: any DataParallelGroup) { self.group = group }

    var rank: Int { group.rank }
    var size: Int { group.size }

    func sumInPlace(_ values: UnsafeMutablePointer<Float>, count: Int) {
        let started = ContinuousClock.now
        group.sumInPlace(values, count: count)
        seconds += (ContinuousClock.now - started).inSeconds
    }

    func allGather(_ value: UInt64) -> [UInt64] { group.allGather(value) }
}
