import Glibc
public import MaaSCompute

/// Trains an ``MLP`` with backpropagation on the compute pool.
///
/// Each step is data-parallel: the minibatch's rows are split into one shard per pool thread
/// (fewer when the batch is too small to be worth it), every shard runs forward and backward
/// through OpenBLAS into its own gradient vector, and the optimizer sums the shards' gradients
/// chunk by chunk while it updates, on the same threads. No more threads compute than the pool
/// has, so training and serving in one process never oversubscribe the cores.
///
/// ```swift
/// let trainer = try Trainer(model: MLP(layerSizes: [10, 20, 10], activation: .relu, seed: 1),
///                           loss: .mse, optimizer: OptimizerConfiguration(kind: .adam, learningRate: 1e-3))
/// let result = trainer.fit(data, options: FitOptions(epochs: 1000))
/// ```
public final class Trainer {
    /// The layer sizes and activation; its parameters are the initial ones.
    private let architecture: MLP
    private let parameters: UnsafeMutablePointer<Float>
    private let parameterCount: Int
    public let loss: Loss
    private let optimizer: OptimizerState
    let pool: ComputePool
    private var shards: [Shard] = []
    /// Multiply-adds a shard must get before a step is split across threads: below it the
    /// hand-off (a few microseconds) costs more than it saves. Tests lower it to split tiny batches.
    var minimumShardWork = 32_768

    public init(
        model: MLP, loss: Loss, optimizer: OptimizerConfiguration, pool: ComputePool = .shared
    ) throws(TrainingError) {
        try optimizer.validate()
        architecture = model
        parameterCount = model.parameters.count
        parameters = .allocate(capacity: max(parameterCount, 1))
        parameters.initialize(from: model.parameters, count: parameterCount)
        self.loss = loss
        self.optimizer = OptimizerState(configuration: optimizer, parameterCount: model.parameters.count)
        self.pool = pool
    }

    deinit {
        parameters.deallocate()
    }

    /// The model with its current parameters.
    public var model: MLP {
        var model = architecture
        model.parameters = Array(UnsafeBufferPointer(start: parameters, count: parameterCount))
        return model
    }

    /// The rows' targets, as the loss reads them.
    public enum TargetRows {
        case values(UnsafePointer<Float>)
        case classes(UnsafePointer<Int32>)

        func advanced(by rows: Int, width: Int) -> TargetRows {
            switch self {
            case .values(let pointer): .values(pointer + rows * width)
            case .classes(let pointer): .classes(pointer + rows)
            }
        }
    }

    /// One optimizer step on `rows` rows (`features` is `rows × inputWidth`).
    /// - Returns: the loss before the update, as PyTorch reports it.
    public func step(features: UnsafePointer<Float>, targets: TargetRows, rows: Int) -> Double {
        pool.run { () -> Double in
            let (shards, loss) = backpropagate(features: features, targets: targets, rows: rows)
            let scalars = optimizer.beginStep()
            let gradients = shards.map(\.gradients)
            let chunks = split(parameterCount, into: parameterCount < 32_768 ? 1 : pool.threadCount * 4)
            pool.parallelFor(chunks.count) { index in
                optimizer.update(parameters, gradients: gradients, range: chunks[index], scalars: scalars)
            }
            return loss
        }
    }

    /// The loss and its gradient with respect to every parameter (in ``MLP/parameters`` order),
    /// without updating anything.
    public func gradients(features: UnsafePointer<Float>, targets: TargetRows, rows: Int) -> (loss: Double, gradients: [Float]) {
        pool.run {
            let (shards, loss) = backpropagate(features: features, targets: targets, rows: rows)
            var sum = [Float](repeating: 0, count: parameterCount)
            for shard in shards {
                for i in 0..<parameterCount { sum[i] += shard.gradients[i] }
            }
            return (loss, sum)
        }
    }

    /// Forward and backward on every shard; each shard's gradient vector then holds its part.
    private func backpropagate(features: UnsafePointer<Float>, targets: TargetRows, rows: Int) -> ([Shard], Double) {
        precondition(rows > 0)
        let inputWidth = architecture.inputWidth
        let targetWidth = loss == .mse ? architecture.outputWidth : 1
        let shards = prepareShards(rows: rows)
        let parts = split(rows, into: shards.count)
        pool.parallelFor(shards.count) { index in
            let part = parts[index], shard = shards[index]
            let x = features + part.lowerBound * inputWidth
            shard.forward(x, rows: part.count, parameters: parameters)
            shard.loss(
                loss, targets: targets.advanced(by: part.lowerBound, width: targetWidth), rows: part.count,
                totalRows: rows, wantDelta: true)
            shard.backward(x, rows: part.count, parameters: parameters)
        }
        return (shards, lossValue(shards.reduce(0) { $0 + $1.lossSum }, rows: rows))
    }

    /// The mean loss over `data`, and for cross-entropy the fraction of rows whose largest
    /// logit is the label.
    public func evaluate(_ data: TrainingData) -> Evaluation {
        let inputWidth = architecture.inputWidth, targetWidth = data.targetWidth
        return pool.run { () -> Evaluation in
            var lossSum = 0.0, correct = 0
            let chunkRows = 4096
            data.features.withUnsafeBufferPointer { features in
                withTargets(data) { targets in
                    var start = 0
                    while start < data.rows {
                        let rows = min(chunkRows, data.rows - start)
                        let shards = prepareShards(rows: rows)
                        let parts = split(rows, into: shards.count)
                        pool.parallelFor(shards.count) { index in
                            let part = parts[index], first = start + part.lowerBound
                            shards[index].forward(features.baseAddress! + first * inputWidth, rows: part.count, parameters: parameters)
                            shards[index].loss(
                                loss, targets: targets.advanced(by: first, width: targetWidth), rows: part.count,
                                totalRows: part.count, wantDelta: false)
                        }
                        lossSum += shards.reduce(0) { $0 + $1.lossSum }
                        correct += shards.reduce(0) { $0 + $1.correct }
                        start += rows
                    }
                }
            }
            return Evaluation(
                loss: lossValue(lossSum, rows: data.rows),
                accuracy: loss == .crossEntropy ? Double(correct) / Double(max(data.rows, 1)) : nil)
        }
    }

    /// The model's outputs for `rows` rows of `features` (`rows × outputWidth`).
    public func predict(_ features: [Float], rows: Int) -> [Float] {
        precondition(features.count == rows * architecture.inputWidth)
        let inputWidth = architecture.inputWidth, outputWidth = architecture.outputWidth
        var result = [Float](repeating: 0, count: rows * outputWidth)
        guard rows > 0 else { return result }
        pool.run {
            let shards = prepareShards(rows: rows)
            let parts = split(rows, into: shards.count)
            features.withUnsafeBufferPointer { x in
                result.withUnsafeMutableBufferPointer { y in
                    pool.parallelFor(shards.count) { index in
                        let part = parts[index]
                        shards[index].forward(x.baseAddress! + part.lowerBound * inputWidth, rows: part.count, parameters: parameters)
                        shards[index].copyOutput(to: y.baseAddress! + part.lowerBound * outputWidth, rows: part.count)
                    }
                }
            }
        }
        return result
    }

    public struct Evaluation: Sendable, Equatable {
        public var loss: Double
        public var accuracy: Double?
    }

    /// Runs `body` with pointers to `data`'s targets.
    func withTargets<Result>(_ data: TrainingData, _ body: (TargetRows) -> Result) -> Result {
        switch data.targets {
        case .values(let values, _): values.withUnsafeBufferPointer { body(.values($0.baseAddress!)) }
        case .classes(let labels): labels.withUnsafeBufferPointer { body(.classes($0.baseAddress!)) }
        }
    }

    private func lossValue(_ sum: Double, rows: Int) -> Double {
        switch loss {
        case .mse: sum / Double(rows * architecture.outputWidth)
        case .crossEntropy: sum / Double(rows)
        }
    }

    /// One shard per pool thread, or fewer when a shard would get less than ``minimumShardWork``.
    private func prepareShards(rows: Int) -> [Shard] {
        let work = rows * parameterCount
        let count = max(1, min(pool.threadCount, rows, work / max(minimumShardWork, 1)))
        let capacity = (rows + count - 1) / count
        while shards.count < count { shards.append(Shard(model: architecture)) }
        for shard in shards[0..<count] { shard.reserve(rows: capacity) }
        return Array(shards[0..<count])
    }
}

/// Contiguous, nearly equal parts of `0..<count`.
func split(_ count: Int, into parts: Int) -> [Range<Int>] {
    let parts = max(1, min(parts, count))
    return (0..<parts).map { index in (count * index / parts)..<(count * (index + 1) / parts) }
}

/// One thread's share of a step: its activations, deltas and gradient vector.
private final class Shard {
    let sizes: [Int]
    let activation: Activation
    let weightOffsets: [Int]
    let biasOffsets: [Int]
    private(set) var capacity = 0
    /// Pre-activations and activations per layer, `capacity × width`.
    private var z: [UnsafeMutablePointer<Float>] = []
    private var a: [UnsafeMutablePointer<Float>] = []
    private var delta: UnsafeMutablePointer<Float>?
    private var deltaPrevious: UnsafeMutablePointer<Float>?
    private(set) var gradients: UnsafeMutablePointer<Float>
    let parameterCount: Int
    var lossSum = 0.0
    var correct = 0

    init(model: MLP) {
        sizes = model.layerSizes
        activation = model.activation
        weightOffsets = model.weightOffsets
        biasOffsets = (0..<model.layerCount).map(model.biasOffset)
        parameterCount = model.parameters.count
        gradients = .allocate(capacity: parameterCount)
        gradients.initialize(repeating: 0, count: parameterCount)
    }

    deinit {
        release()
        gradients.deallocate()
    }

    private func release() {
        for pointer in z + a { pointer.deallocate() }
        delta?.deallocate()
        deltaPrevious?.deallocate()
        z = []
        a = []
    }

    func reserve(rows: Int) {
        guard rows > capacity else { return }
        release()
        capacity = rows
        let widest = sizes.max()!
        for layer in 1..<sizes.count {
            z.append(.allocate(capacity: rows * sizes[layer]))
            a.append(.allocate(capacity: rows * sizes[layer]))
        }
        delta = .allocate(capacity: rows * widest)
        deltaPrevious = .allocate(capacity: rows * widest)
    }

    /// The model's output for these rows is then in `z.last`.
    func forward(_ x: UnsafePointer<Float>, rows: Int, parameters: UnsafePointer<Float>) {
        var input = x
        for layer in 0..<sizes.count - 1 {
            let width = sizes[layer], outputs = sizes[layer + 1]
            let output = z[layer], bias = parameters + biasOffsets[layer]
            for row in 0..<rows { (output + row * outputs).update(from: bias, count: outputs) }
            BLAS.sgemm(
                m: rows, n: outputs, k: width, alpha: 1, a: input, lda: width,
                b: parameters + weightOffsets[layer], ldb: width, transposeB: true, beta: 1, c: output, ldc: outputs)
            if layer < sizes.count - 2 {
                activation.apply(output, a[layer], count: rows * outputs)
                input = UnsafePointer(a[layer])
            }
        }
    }

    func copyOutput(to target: UnsafeMutablePointer<Float>, rows: Int) {
        target.update(from: z[sizes.count - 2], count: rows * sizes[sizes.count - 1])
    }

    /// Adds this shard's loss to ``lossSum`` (and correct predictions to ``correct``) and, when
    /// asked, writes dLoss/dOutput for a mean over `totalRows` rows into `delta`.
    func loss(
        _ loss: Loss, targets: Trainer.TargetRows, rows: Int, totalRows: Int, wantDelta: Bool
    ) {
        let output = z[sizes.count - 2], delta = self.delta!, width = sizes[sizes.count - 1]
        var sum = 0.0
        correct = 0
        switch (loss, targets) {
        case (.mse, .values(let targets)):
            let scale = 2 / Float(totalRows * width)
            for i in 0..<rows * width {
                let difference = output[i] - targets[i]
                sum += Double(difference * difference)
                delta[i] = scale * difference
            }
        case (.crossEntropy, .classes(let labels)):
            let scale = 1 / Float(totalRows)
            for row in 0..<rows {
                let logits = output + row * width, label = Int(labels[row])
                var largest = logits[0], best = 0
                for j in 1..<width where logits[j] > largest { (largest, best) = (logits[j], j) }
                var total: Float = 0
                for j in 0..<width { total += expf(logits[j] - largest) }
                let logTotal = logf(total)
                sum -= Double((logits[label] - largest) - logTotal)
                if best == label { correct += 1 }
                guard wantDelta else { continue }
                let rowDelta = delta + row * width
                for j in 0..<width {
                    let probability = expf((logits[j] - largest) - logTotal)
                    rowDelta[j] = (probability - (j == label ? 1 : 0)) * scale
                }
            }
        default:
            preconditionFailure("targets do not match the loss; TrainingData.check rules this out")
        }
        lossSum = sum
    }

    /// Backpropagates `delta` into ``gradients``.
    func backward(_ x: UnsafePointer<Float>, rows: Int, parameters: UnsafePointer<Float>) {
        var delta = self.delta!, previous = self.deltaPrevious!
        for layer in stride(from: sizes.count - 2, through: 0, by: -1) {
            let width = sizes[layer], outputs = sizes[layer + 1]
            let input = layer == 0 ? x : UnsafePointer(a[layer - 1])
            BLAS.sgemm(
                m: outputs, n: width, k: rows, alpha: 1, a: delta, lda: outputs, transposeA: true,
                b: input, ldb: width, beta: 0, c: gradients + weightOffsets[layer], ldc: width)
            let biasGradient = gradients + biasOffsets[layer]
            biasGradient.update(repeating: 0, count: outputs)
            for row in 0..<rows {
                let rowDelta = delta + row * outputs
                for j in 0..<outputs { biasGradient[j] += rowDelta[j] }
            }
            guard layer > 0 else { break }
            BLAS.sgemm(
                m: rows, n: width, k: outputs, alpha: 1, a: delta, lda: outputs,
                b: parameters + weightOffsets[layer], ldb: width, beta: 0, c: previous, ldc: width)
            activation.backward(delta: previous, z: z[layer - 1], a: a[layer - 1], count: rows * width)
            swap(&delta, &previous)
        }
    }
}
