import ArgumentParser
import Crypto
import Dispatch
import FoundationEssentials
import MaaSJSON
import Glibc
import MaaSCompute
import MaaSCore
import MaaSModels
import MaaSProto
import MaaSTraining
import Synchronization

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train an MLP and write it as ONNX, to a file or as the next version in a model repository.",
        discussion: """
            The seed's recipe, deployed where a server polling REPO picks it up:
              maas train --data x.npy --targets y.npy --layers 10,20,10 --loss mse --optimizer adam \\
                --lr 0.001 --epochs 1000 --repository REPO --model seed
            Classification from CSV, with a validation split:
              maas train --data iris.csv --target-columns species --layers 4,16,3 --loss cross-entropy \\
                --batch-size 16 --shuffle --validation-split 0.2 --output iris.onnx
            Ctrl-C stops after the current step and still writes the best model so far (a second
            Ctrl-C quits without writing).
            Data-parallel over MPI (a maas built with `swift build --traits MPI`):
              mpirun -np 4 maas train ... --output model.onnx
            Every step's minibatch is cut into one contiguous slice per rank, and the gradients
            are summed with one MPI_Allreduce, so the result is the single-process one up to
            rounding; rank 0 prints and writes. Ctrl-C ends every rank without writing.
            """
    )

    @Option(help: "Features: a 2-D .npy file, or a CSV file (a non-numeric first line is the header).")
    var data: String

    @Option(help: "Targets: .npy or CSV (float values for mse, integer class labels for cross-entropy).")
    var targets: String?

    @Option(help: "With CSV data: the target columns, by header name or 0-based index (negative from the end), comma-separated.")
    var targetColumns: String?

    @Option(help: "Layer widths from input to output, e.g. 10,20,10 (taken from --init-from when omitted).")
    var layers: String?

    @Option(help: "Activation between layers: relu, tanh, sigmoid, gelu, none (default relu, or --init-from's).")
    var activation: String?

    @Option(help: "Loss: mse or cross-entropy (on logits).")
    var loss = "mse"

    @Option(help: "Optimizer: sgd, adam or adamw.")
    var optimizer = "adam"

    @Option(help: "Learning rate.")
    var lr: Double = 0.001

    @Option(help: "SGD momentum.")
    var momentum: Double = 0

    @Flag(help: "Nesterov momentum (SGD).")
    var nesterov = false

    @Option(help: "Weight decay: L2 added to the gradient (sgd, adam) or decoupled (adamw).")
    var weightDecay: Double = 0

    @Option(help: "Adam betas, e.g. 0.9,0.999.")
    var betas = "0.9,0.999"

    @Option(help: "Adam epsilon.")
    var eps: Double = 1e-8

    @Option(help: "Passes over the training rows.")
    var epochs = 100

    @Option(help: "Rows per step; 0 is the full batch.")
    var batchSize = 0

    @Flag(help: "Visit rows in a new seeded random order every epoch (file order otherwise).")
    var shuffle = false

    @Option(help: "Seed for the initial weights and the shuffle.")
    var seed: UInt64 = 0

    @Option(help: "Hold out this fraction of rows (the last ones in the file) to report a validation metric per epoch and keep the best epoch's model.")
    var validationSplit: Double = 0

    @Option(help: "Start from this ONNX model's weights (fine-tuning, or resuming a deployed version).")
    var initFrom: String?

    @Option(help: "Write the model to this .onnx file.")
    var output: String?

    @Option(help: "Deploy into this model repository as the next version of --model.")
    var repository: String?

    @Option(help: "The model's name in --repository.")
    var model: String?

    @Option(help: "Under mpirun: compare the ranks' parameter hashes every this many steps (and after the last).")
    var syncCheckSteps = 100

    func validate() throws {
        guard (output == nil) != (repository == nil) else {
            throw ValidationError("give --output FILE.onnx, or --repository REPO --model NAME")
        }
        guard (repository == nil) == (model == nil) else { throw ValidationError("--repository and --model go together") }
        guard epochs > 0 else { throw ValidationError("--epochs must be at least 1, got \(epochs)") }
        guard batchSize >= 0 else { throw ValidationError("--batch-size must be 0 (full batch) or more, got \(batchSize)") }
        guard (0..<1).contains(validationSplit) else { throw ValidationError("--validation-split must be in [0, 1), got \(validationSplit)") }
        guard Loss(rawValue: loss) != nil else { throw ValidationError("--loss must be mse or cross-entropy, got '\(loss)'") }
        guard OptimizerConfiguration.Kind(rawValue: optimizer) != nil else {
            throw ValidationError("--optimizer must be sgd, adam or adamw, got '\(optimizer)'")
        }
        if let activation, Activation(rawValue: activation) == nil {
            throw ValidationError("--activation must be relu, tanh, sigmoid, gelu or none, got '\(activation)'")
        }
        guard layers != nil || initFrom != nil else { throw ValidationError("give --layers (e.g. 10,20,10) or --init-from MODEL.onnx") }
        guard syncCheckSteps > 0 else { throw ValidationError("--sync-check-steps must be at least 1, got \(syncCheckSteps)") }
    }

    func run() throws {
        var ranks: TrainingRanks?
        do {
            ranks = try TrainingRanks.start()
            try train(ranks: ranks)
            ranks?.finish()
        } catch let error as ExitCode {
            throw error
        } catch {
            let message = (error as? TrainingError)?.message ?? (error as? InferenceError)?.message ?? (error as? DataParallelError)?.message ?? "\(error)"
            // One rank failing alone would leave the others waiting in a collective.
            if let ranks { ranks.abort(message) }
            Terminal.stderr("error: \(message)\n")
            throw ExitCode(1)
        }
    }

    private func train(ranks: TrainingRanks?) throws {
        let isLeader = ranks?.isLeader ?? true
        let loss = Loss(rawValue: loss)!
        // Hashed now, so that the metadata names the bytes trained on even if the files change.
        // Only the rank that writes the metadata reads the files whole.
        let dataHash = isLeader ? try sha256(of: data) : ""
        let targetsHash = isLeader ? try targets.map { try sha256(of: $0) } : nil
        let split = validationSplit
        // A rank reads its share of the training rows, and rank 0 the validation rows (the last).
        var share: DataShare?
        var selecting: ((Int) throws(TrainingError) -> [Range<Int>])?
        if let ranks {
            let (rank, size, isLeader, batchSize, shuffle) = (ranks.rank, ranks.size, ranks.isLeader, batchSize, shuffle)
            selecting = { (rows: Int) throws(TrainingError) -> [Range<Int>] in
                let validationRows = try Self.validationCount(rows, split: split)
                let mine = DataShare(totalRows: rows - validationRows, rank: rank, size: size, batchSize: batchSize, shuffle: shuffle)
                share = mine
                return mine.rowsToLoad + (isLeader && validationRows > 0 ? [rows - validationRows..<rows] : [])
            }
        }
        let loaded = try TrainingData.load(data: data, targets: targets, targetColumns: targetColumns, loss: loss, selecting: selecting)
        let initial = try initialModel()
        // fit checks the rows (widths, values, labels) before it trains.
        let training: TrainingData, validation: TrainingData?, trainingRows: Int
        if let share {
            let local = share.rowsToLoad.reduce(0) { $0 + $1.count }
            training = loaded.slice(0..<local)
            // Validation and the best-epoch choice happen on rank 0, which writes the model.
            validation = local < loaded.rows ? loaded.slice(local..<loaded.rows) : nil
            trainingRows = share.totalRows
        } else {
            let validationRows = try Self.validationCount(loaded.rows, split: split)
            training = validationRows > 0 ? loaded.slice(0..<loaded.rows - validationRows) : loaded
            validation = validationRows > 0 ? loaded.slice(loaded.rows - validationRows..<loaded.rows) : nil
            trainingRows = training.rows
        }

        // Refuse a destination that cannot take the model before spending time training it.
        var deployment: RepositoryDeployment?
        if isLeader, let repository, let model {
            deployment = try RepositoryDeployment(repository: repository, model: model)
            try deployment?.check(initial.graph())
        }
        if isLeader, let output {
            let directory = URL(fileURLWithPath: output).deletingLastPathComponent().path
            guard FileManager.default.isWritableFile(atPath: directory) else {
                throw TrainingError("cannot write \(output): \(directory) is not a writable directory")
            }
        }

        let trainer = try Trainer(model: initial, loss: loss, optimizer: optimizerConfiguration())
        // Under MPI a rank stopping on its own would leave the others waiting: Ctrl-C ends them all.
        let interrupt = ranks == nil ? InterruptFlag() : nil
        let progress = ProgressPrinter(epochs: epochs, loss: loss)
        let threads = "\(ComputePool.shared.threadCount) threads" + (ranks.map { " on each of \($0.size) ranks" } ?? "")
        if isLeader {
            print(
                "training \(MLPDescription(initial)) on \(trainingRows) rows\(validation.map { ", validating on \($0.rows)" } ?? "") "
                    + "(\(optimizer), lr \(lr), \(batchSize == 0 ? "full batch" : "batch \(batchSize)"), \(epochs) epochs, \(threads))")
        }
        let started = ContinuousClock.now
        let options = FitOptions(epochs: epochs, batchSize: batchSize, shuffle: shuffle, seed: seed)
        let result: FitResult
        if let ranks, let share {
            result = try trainer.fit(
                training, share: share, options: options, validation: validation, group: ranks.group, checkEvery: syncCheckSteps,
                onEvent: isLeader ? progress.handle : { _ in })
        } else {
            result = try trainer.fit(training, options: options, validation: validation, shouldStop: { interrupt?.isSet ?? false }, onEvent: progress.handle)
        }
        progress.finish()
        let seconds = (ContinuousClock.now - started).inSeconds
        interrupt?.disarm()
        guard isLeader else { return }
        let samplesPerSecond = Double(trainingRows * result.epochs.count) / max(seconds, 1e-9)
        if let ranks {
            print(
                cFormat(
                    "%ld ranks: %.3f s training, %.3f s of it (%.1f%%) in MPI_Allreduce of %ld bytes per step, %.0f samples/s",
                    ranks.size, seconds, result.allreduceSeconds, 100 * result.allreduceSeconds / max(seconds, 1e-9),
                    result.allreduceBytesPerStep, samplesPerSecond))
        } else {
            print(cFormat("%.3f s training, %.0f samples/s", seconds, samplesPerSecond))
        }

        // The written model's validation metric: its epoch's report, or (interrupted in the first
        // epoch) the trainer's current weights, which are then the ones written.
        var final = result.epochs.first { $0.epoch == result.bestEpoch }?.validation
        if final == nil, let validation { final = try trainer.evaluate(validation) }
        var metadata = trainingMetadata(
            result: result, validation: final, seconds: seconds, rows: trainingRows, dataHash: dataHash, targetsHash: targetsHash)
        if let ranks { metadata["training.ranks"] = String(ranks.size) }
        let graph = result.model.graph(name: model ?? "mlp", metadata: metadata)
        let bytes = try ONNXModel.encode(graph)
        if result.interrupted {
            let which = validation == nil || result.bestEpoch == 0 ? "the model after its last step" : "the model of epoch \(result.bestEpoch), the best validated so far"
            print("interrupted after \(result.losses.count) steps (\(result.epochs.count) whole epochs); writing \(which)")
        }
        if let deployment {
            let fields = Dictionary(uniqueKeysWithValues: metadata.map { (String($0.key.dropFirst("training.".count)), $0.value) })
            var json = JSONWriter(indent: 2)
            json.value(.object(fields.sorted { $0.key < $1.key }.map { (key: $0.key, value: .string($0.value)) }))
            let (version, path) = try deployment.deploy(graph, modelBytes: bytes, files: ["training.json": json.bytes + [0x0A]])
            print("deployed \(deployment.model) version \(version): \(path)")
        } else if let output {
            try Data(bytes).write(to: URL(fileURLWithPath: output), options: .atomic)
            print("wrote \(output)")
        }
        if result.interrupted { throw ExitCode(130) }
    }

    private static func validationCount(_ rows: Int, split: Double) throws(TrainingError) -> Int {
        let count = Int(Double(rows) * split)
        if split > 0, count == 0 || count == rows {
            throw TrainingError("--validation-split \(split) of \(rows) rows leaves \(count) for validation; need at least one row on each side")
        }
        return count
    }

    private func initialModel() throws -> MLP {
        var sizes: [Int]?
        if let layers {
            let parts = layers.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingBlanks()) }
            guard parts.count >= 2, parts.allSatisfy({ ($0 ?? 0) > 0 }) else {
                throw TrainingError("--layers must list at least two positive widths, e.g. 10,20,10; got '\(layers)'")
            }
            sizes = parts.map { $0! }
        }
        let chosen = activation.flatMap(Activation.init(rawValue:))
        guard let initFrom else {
            return try MLP(layerSizes: sizes!, activation: chosen ?? .relu, seed: seed)
        }
        let model = try MLP(graph: ONNXModel.load(path: initFrom), source: initFrom)
        if let sizes, sizes != model.layerSizes {
            throw TrainingError("--layers \(sizes.map(String.init).joined(separator: ",")) does not match \(initFrom), which has \(model.layerSizes.map(String.init).joined(separator: ","))")
        }
        if let chosen, chosen != model.activation {
            throw TrainingError("--activation \(chosen.rawValue) does not match \(initFrom), which uses \(model.activation.rawValue)")
        }
        return model
    }

    private func optimizerConfiguration() throws -> OptimizerConfiguration {
        var configuration = OptimizerConfiguration(kind: OptimizerConfiguration.Kind(rawValue: optimizer)!, learningRate: lr)
        configuration.momentum = momentum
        configuration.nesterov = nesterov
        configuration.weightDecay = weightDecay
        configuration.epsilon = eps
        let parts = betas.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingBlanks()) }
        guard parts.count == 2, let beta1 = parts[0], let beta2 = parts[1] else {
            throw TrainingError("--betas takes two numbers, e.g. 0.9,0.999; got '\(betas)'")
        }
        (configuration.beta1, configuration.beta2) = (beta1, beta2)
        return configuration
    }

    /// Stored in the ONNX file's metadata_props and in training.json beside a deployed version;
    /// the server reports the `training.*` keys as ModelConfig parameters.
    /// Now as ISO 8601 / RFC 3339 in UTC to the second ("2026-12-01T19:00:18Z").
    static func rfc3339Now() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        return cFormat("%04ld-%02ld-%02ldT%02ld:%02ld:%02ldZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                       Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }

    private func trainingMetadata(
        result: FitResult, validation: Trainer.Evaluation?, seconds: Double, rows: Int, dataHash: String, targetsHash: String?
    ) -> [String: String] {
        var metadata: [String: String] = [
            "training.data": data,
            "training.data_sha256": dataHash,
            "training.rows": String(rows),
            "training.layers": result.model.layerSizes.map(String.init).joined(separator: ","),
            "training.activation": result.model.activation.rawValue,
            "training.loss": loss,
            "training.optimizer": optimizer,
            "training.lr": String(lr),
            "training.epochs": String(epochs),
            "training.batch_size": String(batchSize),
            "training.shuffle": String(shuffle),
            "training.seed": String(seed),
            "training.steps": String(result.losses.count),
            "training.completed_epochs": String(result.epochs.count),
            "training.seconds": cFormat("%.3f", seconds),
            "training.interrupted": String(result.interrupted),
            "training.trained_at": Self.rfc3339Now(),
        ]
        if let targets {
            metadata["training.targets"] = targets
            metadata["training.targets_sha256"] = targetsHash
        }
        if let targetColumns { metadata["training.target_columns"] = targetColumns }
        if optimizer == "sgd" {
            metadata["training.momentum"] = String(momentum)
            metadata["training.nesterov"] = String(nesterov)
        } else {
            metadata["training.betas"] = betas
            metadata["training.eps"] = String(eps)
        }
        if weightDecay != 0 { metadata["training.weight_decay"] = String(weightDecay) }
        if let initFrom { metadata["training.init_from"] = initFrom }
        if let last = result.epochs.last { metadata["training.final_loss"] = String(last.trainingLoss) }
        if let validation {
            if result.bestEpoch > 0 { metadata["training.best_epoch"] = String(result.bestEpoch) }
            metadata["training.validation_split"] = String(validationSplit)
            metadata["training.validation_loss"] = String(validation.loss)
            if let accuracy = validation.accuracy { metadata["training.validation_accuracy"] = String(accuracy) }
        }
        return metadata
    }

    /// Streamed, so that a large data file is not held in memory for it.
    private func sha256(of path: String) throws -> String {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw TrainingError("\(path): cannot read the file") }
        defer { close(descriptor) }
        var hasher = SHA256()
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw TrainingError("\(path): cannot read the file") }
            if count == 0 { break }
            chunk.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[..<count])) }
        }
        return hasher.finalize().map { cFormat("%02x", $0) }.joined()
    }
}

private func MLPDescription(_ model: MLP) -> String {
    "MLP \(model.layerSizes.map(String.init).joined(separator: "-")) (\(model.activation.rawValue), \(model.parameters.count) parameters)"
}

/// SIGINT during training: the first asks training to stop after the current step (the model so
/// far is still written); a second quits at once.
private final class InterruptFlag {
    private final class Count: Sendable {
        let value = Atomic<Int>(0)
    }

    private let count = Count()
    private let source: any DispatchSourceSignal

    init() {
        signal(SIGINT, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler { [count] in
            if count.value.wrappingAdd(1, ordering: .relaxed).newValue >= 2 {
                Terminal.stderr("\ninterrupted twice: quitting without writing the model\n")
                exit(130)
            }
            Terminal.stderr("\nstopping after this step (Ctrl-C again to quit without writing)\n")
        }
        source.resume()
    }

    var isSet: Bool { count.value.load(ordering: .relaxed) > 0 }

    /// Writing the model is quick; from here a Ctrl-C ends the process the usual way.
    func disarm() {
        source.cancel()
        signal(SIGINT, SIG_DFL)
    }
}

/// A progress bar on a terminal (stderr), redrawn at most ten times a second, and one line per
/// epoch on stdout: training loss and the validation metric.
private final class ProgressPrinter {
    let epochs: Int
    let loss: Loss
    let isTerminal = isatty(STDERR_FILENO) == 1
    private var lastDraw = ContinuousClock.now - .seconds(1)
    private var drawn = false

    init(epochs: Int, loss: Loss) {
        self.epochs = epochs
        self.loss = loss
    }

    func handle(_ event: TrainingEvent) {
        switch event {
        case .step(let epoch, let step, let steps, let value):
            guard isTerminal, ContinuousClock.now - lastDraw >= .milliseconds(100) else { return }
            lastDraw = .now
            let done = Double((epoch - 1) * steps + step) / Double(epochs * steps)
            let width = 30, filled = Int(done * Double(width))
            let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
            Terminal.stderr("\r[\(bar)] " + cFormat("%3.0f%% epoch %ld/%ld step %ld/%ld loss %.6f ", done * 100, epoch, epochs, step, steps, value))
            drawn = true
        case .epoch(let report):
            clear()
            var line = cFormat("epoch %ld/%ld  loss %.6f", report.epoch, epochs, report.trainingLoss)
            if let validation = report.validation {
                line += cFormat("  val_loss %.6f", validation.loss)
                if let accuracy = validation.accuracy { line += cFormat("  val_accuracy %.4f", accuracy) }
            }
            line += cFormat("  (%.3f s)", report.seconds)
            print(line)
            fflush(nil)
        }
    }

    func finish() { clear() }

    private func clear() {
        guard drawn else { return }
        Terminal.stderr("\r\u{1B}[2K")
        drawn = false
    }
}
