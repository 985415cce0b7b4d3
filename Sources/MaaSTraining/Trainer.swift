import Glibc
public import MaaSCompute

/// Trains an ``MLP`` with backpropagation on the compute pool.
///
/// Each step is data-parallel: the minibatch's rows are split into parts (up to ``maxParts``,
/// fewer when the batch is too small to be worth a hand-off) for the forward pass, the loss and
/// the backward pass of the deltas, and the pool's threads take the parts. The weight gradients
/// are reduced over the batch inside the GEMMs, each part computing the gradient of its own slice
/// of every layer's outputs over all rows (a reduce-scatter). No thread keeps a copy of the whole
/// gradient and there is no separate summing pass. Throughput matched per-thread gradient copies
/// with a fused reduction (maas-bench train). No more threads compute than the pool has, so
/// training and serving in one process never oversubscribe the cores.
///
/// - Important: on one machine, the same data, model and options give the same bits on any
///   number of pool threads. The parts depend on the batch and the model only, never on the
///   thread count, so the same BLAS calls with the same shapes and operands run whatever the pool
///   size (OpenBLAS picks its kernels, and so each dot product's order, by CPU and by shape: the
///   shapes must not follow the thread count); each call writes its own outputs, and the per-part
///   loss sums are added in part order. Across CPUs the bits differ, within rounding (see
///   PyTorchRunTests for how far from PyTorch).
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
    private let gradient: UnsafeMutablePointer<Float>
    let parameterCount: Int
    public let loss: Loss
    private let optimizer: OptimizerState
    let pool: ComputePool
    private var workspace: Workspace
    /// The most parts a step is split into: enough for 16 cores. A constant, not the pool's
    /// thread count, so that results do not depend on the pool size.
    static let maxParts = 16
    /// Multiply-adds (rows × parameters) a part must get before a step is split.
    /// A step has a parallel section per layer, and each hand-off costs microseconds: the seed
    /// recipe (1000 × 430) ran no faster on two threads and sometimes half as fast (measured
    /// with maas-bench train), so it stays on one. Tests lower it to split tiny batches.
    var minimumShardWork = 1 << 20

    public init(
        model: MLP, loss: Loss, optimizer: OptimizerConfiguration, pool: ComputePool = .shared
    ) throws(TrainingError) {
        try optimizer.validate()
        do { try BLAS.require() } catch { throw TrainingError("training runs on OpenBLAS, but \(error)") }
        architecture = model
        parameterCount = model.parameters.count
        parameters = .allocate(capacity: max(parameterCount, 1))
        parameters.initialize(from: model.parameters, count: parameterCount)
        // One slot past the gradient carries the step's loss sum, so that data-parallel ranks sum
        // both with one Allreduce.
        gradient = .allocate(capacity: parameterCount + 1)
        gradient.initialize(repeating: 0, count: parameterCount + 1)
        self.loss = loss
        self.optimizer = OptimizerState(configuration: optimizer, parameterCount: model.parameters.count)
        self.pool = pool
        workspace = Workspace(model: model, parts: Self.maxParts)
    }

    deinit {
        parameters.deallocate()
        gradient.deallocate()
    }

    /// The model with its current parameters.
    public var model: MLP {
        var model = architecture
        model.parameters = Array(UnsafeBufferPointer(start: parameters, count: parameterCount))
        return model
    }

    /// The rows' targets, as the loss reads them.
    enum TargetRows {
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
    /// - Parameters:
    ///   - batchRows: the rows of the whole step when `group`'s ranks each hold a part of it
    ///     (`rows` may then be 0); the gradient is the mean over these.
    ///   - group: the data-parallel ranks whose gradients are summed before the update.
    /// - Returns: the loss before the update, as PyTorch reports it.
    /// Unchecked: callers (``fit(_:options:validation:shouldStop:onEvent:)``, tests) pass data that
    /// passed ``check(_:)``.
    func step(
        features: UnsafePointer<Float>, targets: TargetRows, rows: Int, batchRows: Int? = nil, group: (any DataParallelGroup)? = nil
    ) -> Double {
        let batchRows = batchRows ?? rows
        return pool.run { () -> Double in
            var lossSum = 0.0
            if rows > 0 {
                lossSum = backpropagate(features: features, targets: targets, rows: rows, batchRows: batchRows)
            } else {
                gradient.update(repeating: 0, count: parameterCount)
            }
            if let group {
                // The loss only reports progress; float is enough for it and keeps one buffer.
                gradient[parameterCount] = Float(lossSum)
                group.sumInPlace(gradient, count: parameterCount + 1)
                lossSum = Double(gradient[parameterCount])
            }
            let scalars = optimizer.beginStep()
            let chunks = split(parameterCount, into: parameterCount < 32_768 ? 1 : pool.threadCount * 4)
            pool.parallelFor(chunks.count) { index in
                optimizer.update(parameters, gradient: gradient, range: chunks[index], scalars: scalars)
            }
            return lossValue(lossSum, rows: batchRows)
        }
    }

    /// The loss and its gradient with respect to every parameter (in ``MLP/parameters`` order),
    /// without updating anything.
    func gradients(features: UnsafePointer<Float>, targets: TargetRows, rows: Int) -> (loss: Double, gradients: [Float]) {
        pool.run {
            let loss = backpropagate(features: features, targets: targets, rows: rows, batchRows: rows)
            return (lossValue(loss, rows: rows), Array(UnsafeBufferPointer(start: gradient, count: parameterCount)))
        }
    }

    /// A hash of the parameters' bits, to check that data-parallel ranks hold the same model.
    func parameterHash() -> UInt64 {
        // FNV-1a over 32-bit words: any changed bit changes it, and 4 MB hash in about a millisecond.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        let words = UnsafeRawPointer(parameters).assumingMemoryBound(to: UInt32.self)
        for index in 0..<parameterCount { hash = (hash ^ UInt64(words[index])) &* 0x0000_0100_0000_01b3 }
        return hash
    }

    /// Forward, loss and backward into ``gradient``, for the mean over `batchRows` rows of which
    /// these are `rows`; returns these rows' loss sum.
    private func backpropagate(features: UnsafePointer<Float>, targets: TargetRows, rows: Int, batchRows: Int) -> Double {
        precondition(rows > 0)
        let sizes = architecture.layerSizes
        let targetWidth = loss == .mse ? architecture.outputWidth : 1
        let parts = split(rows, into: partCount(rows: rows))
        let workspace = prepareWorkspace(rows: rows)
        pool.parallelFor(parts.count) { index in
            workspace.forward(features, rows: parts[index], parameters: parameters)
            workspace.loss(
                loss, targets: targets.advanced(by: parts[index].lowerBound, width: targetWidth), rows: parts[index], part: index,
                totalRows: batchRows, wantDelta: true)
        }
        for layer in stride(from: sizes.count - 2, through: 0, by: -1) {
            let slices = split(sizes[layer + 1], into: parts.count)
            pool.parallelFor(max(slices.count, parts.count)) { index in
                if index < slices.count {
                    workspace.weightGradient(layer, outputs: slices[index], rows: rows, input: features, parameters: parameters, into: gradient)
                }
                if layer > 0, index < parts.count {
                    workspace.inputGradient(layer, rows: parts[index], parameters: parameters)
                }
            }
            workspace.swapDeltas()
        }
        return workspace.lossSums[0..<parts.count].reduce(0, +)
    }

    /// The model's outputs for `rows` rows of `features` (`rows × outputWidth`).
    public func predict(_ features: [Float], rows: Int) -> [Float] {
        precondition(features.count == rows * architecture.inputWidth)
        let outputWidth = architecture.outputWidth
        var result = [Float](repeating: 0, count: rows * outputWidth)
        guard rows > 0 else { return result }
        pool.run {
            let parts = split(rows, into: partCount(rows: rows))
            let workspace = prepareWorkspace(rows: rows)
            features.withUnsafeBufferPointer { x in
                result.withUnsafeMutableBufferPointer { y in
                    pool.parallelFor(parts.count) { index in
                        workspace.forward(x.baseAddress!, rows: parts[index], parameters: parameters)
                        workspace.copyOutput(rows: parts[index], to: y.baseAddress!)
                    }
                }
            }
        }
        return result
    }

    /// The mean loss over `data`, and for cross-entropy the fraction of rows whose largest
    /// logit is the label.
    public func evaluate(_ data: TrainingData) throws(TrainingError) -> Evaluation {
        try check(data)
        return evaluateChecked(data)
    }

    /// ``evaluate(_:)`` for data already checked (fit's validation rows, every epoch).
    func evaluateChecked(_ data: TrainingData) -> Evaluation {
        let inputWidth = architecture.inputWidth, targetWidth = data.targetWidth
        return pool.run { () -> Evaluation in
            var lossSum = 0.0, correct = 0
            let chunkRows = 4096
            data.features.withUnsafeBufferPointer { features in
                withTargets(data) { targets in
                    var start = 0
                    while start < data.rows {
                        let rows = min(chunkRows, data.rows - start)
                        let parts = split(rows, into: partCount(rows: rows))
                        let workspace = prepareWorkspace(rows: rows)
                        let x = features.baseAddress! + start * inputWidth
                        let chunkTargets = targets.advanced(by: start, width: targetWidth)
                        pool.parallelFor(parts.count) { index in
                            workspace.forward(x, rows: parts[index], parameters: parameters)
                            workspace.loss(
                                loss, targets: chunkTargets.advanced(by: parts[index].lowerBound, width: targetWidth), rows: parts[index],
                                part: index, totalRows: rows, wantDelta: false)
                        }
                        lossSum += workspace.lossSums[0..<parts.count].reduce(0, +)
                        correct += workspace.corrects[0..<parts.count].reduce(0, +)
                        start += rows
                    }
                }
            }
            return Evaluation(
                loss: lossValue(lossSum, rows: data.rows),
                accuracy: loss == .crossEntropy ? Double(correct) / Double(max(data.rows, 1)) : nil)
        }
    }

    public struct Evaluation: Sendable, Equatable {
        public var loss: Double
        public var accuracy: Double?
    }

    /// Everything the unsafe loops rely on: widths, labels in range, finite values, some rows.
    func check(_ data: TrainingData) throws(TrainingError) {
        guard data.rows > 0 else { throw TrainingError("\(data.featureSource.file): no rows") }
        try data.check(for: architecture, loss: loss)
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

    /// ``maxParts``, or fewer when a part would get less than ``minimumShardWork``.
    private func partCount(rows: Int) -> Int {
        max(1, min(Self.maxParts, rows, rows * parameterCount / max(minimumShardWork, 1)))
    }

    private func prepareWorkspace(rows: Int) -> Workspace {
        workspace.reserve(rows: rows)
        return workspace
    }
}

/// Contiguous, nearly equal parts of `0..<count`.
func split(_ count: Int, into parts: Int) -> [Range<Int>] {
    let parts = max(1, min(parts, count))
    return (0..<parts).map { index in (count * index / parts)..<(count * (index + 1) / parts) }
}

/// A step's activations and deltas for every row of the batch. Threads write disjoint rows (or,
/// for weight gradients, disjoint output slices), so the buffers are shared without locks.
private final class Workspace {
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
    /// Per part: the loss sum and correct predictions of its rows. Raw buffers, because parts
    /// write their own elements concurrently (an Array would be one shared variable).
    let lossSums: UnsafeMutableBufferPointer<Double>
    let corrects: UnsafeMutableBufferPointer<Int>

    init(model: MLP, parts: Int) {
        sizes = model.layerSizes
        activation = model.activation
        weightOffsets = model.weightOffsets
        biasOffsets = (0..<model.layerCount).map(model.biasOffset)
        lossSums = .allocate(capacity: parts)
        lossSums.initialize(repeating: 0)
        corrects = .allocate(capacity: parts)
        corrects.initialize(repeating: 0)
    }

    deinit {
        release()
        lossSums.deallocate()
        corrects.deallocate()
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

    /// Forward for `rows` of `x` (the whole batch's input); the outputs land in `z.last`.
    func forward(_ x: UnsafePointer<Float>, rows: Range<Int>, parameters: UnsafePointer<Float>) {
        var input = x + rows.lowerBound * sizes[0]
        for layer in 0..<sizes.count - 1 {
            let width = sizes[layer], outputs = sizes[layer + 1]
            let output = z[layer] + rows.lowerBound * outputs, bias = parameters + biasOffsets[layer]
            for row in 0..<rows.count { (output + row * outputs).update(from: bias, count: outputs) }
            BLAS.sgemm(
                m: rows.count, n: outputs, k: width, alpha: 1, a: input, lda: width,
                b: parameters + weightOffsets[layer], ldb: width, transposeB: true, beta: 1, c: output, ldc: outputs)
            if layer < sizes.count - 2 {
                let activated = a[layer] + rows.lowerBound * outputs
                activation.apply(output, activated, count: rows.count * outputs)
                input = UnsafePointer(activated)
            }
        }
    }

    func copyOutput(rows: Range<Int>, to target: UnsafeMutablePointer<Float>) {
        let width = sizes[sizes.count - 1]
        (target + rows.lowerBound * width).update(from: z[sizes.count - 2] + rows.lowerBound * width, count: rows.count * width)
    }

    /// Stores these rows' loss sum (and correct predictions) as part `part`'s and, when asked,
    /// writes dLoss/dOutput for a mean over `totalRows` rows into the deltas.
    /// `targets` points at the first of these rows' targets.
    func loss(
        _ loss: Loss, targets: Trainer.TargetRows, rows: Range<Int>, part: Int, totalRows: Int, wantDelta: Bool
    ) {
        let width = sizes[sizes.count - 1]
        let output = z[sizes.count - 2] + rows.lowerBound * width, delta = self.delta! + rows.lowerBound * width
        var sum = 0.0, correct = 0
        switch (loss, targets) {
        case (.mse, .values(let targets)):
            let scale = 2 / Float(totalRows * width)
            for i in 0..<rows.count * width {
                let difference = output[i] - targets[i]
                sum += Double(difference * difference)
                delta[i] = scale * difference
            }
        case (.crossEntropy, .classes(let labels)):
            let scale = 1 / Float(totalRows)
            for row in 0..<rows.count {
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
        lossSums[part] = sum
        corrects[part] = correct
    }

    /// The gradient of layer `layer`'s weight rows and bias entries `outputs`, summed over all
    /// `rows` rows of the batch: one GEMM with the batch as its inner dimension.
    func weightGradient(
        _ layer: Int, outputs slice: Range<Int>, rows: Int, input x: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
        into gradient: UnsafeMutablePointer<Float>
    ) {
        let width = sizes[layer], outputs = sizes[layer + 1]
        let input = layer == 0 ? x : UnsafePointer(a[layer - 1])
        let delta = self.delta!
        BLAS.sgemm(
            m: slice.count, n: width, k: rows, alpha: 1, a: delta + slice.lowerBound, lda: outputs, transposeA: true,
            b: input, ldb: width, beta: 0, c: gradient + weightOffsets[layer] + slice.lowerBound * width, ldc: width)
        let biasGradient = gradient + biasOffsets[layer]
        for j in slice { biasGradient[j] = 0 }
        for row in 0..<rows {
            let rowDelta = delta + row * outputs
            for j in slice { biasGradient[j] += rowDelta[j] }
        }
    }

    /// These rows' deltas for layer `layer - 1`: delta · W, times the activation's derivative.
    func inputGradient(_ layer: Int, rows: Range<Int>, parameters: UnsafePointer<Float>) {
        let width = sizes[layer], outputs = sizes[layer + 1]
        let previous = deltaPrevious! + rows.lowerBound * width
        BLAS.sgemm(
            m: rows.count, n: width, k: outputs, alpha: 1, a: delta! + rows.lowerBound * outputs, lda: outputs,
            b: parameters + weightOffsets[layer], ldb: width, beta: 0, c: previous, ldc: width)
        activation.backward(
            delta: previous, z: z[layer - 1] + rows.lowerBound * width, a: a[layer - 1] + rows.lowerBound * width,
            count: rows.count * width)
    }

    func swapDeltas() {
        swap(&delta, &deltaPrevious)
    }
}
