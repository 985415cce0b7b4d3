import ArgumentParser
import Dispatch
import FoundationEssentials
import Glibc
import MaaSClient
import MaaSCore
import MaaSProto

struct Infer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Batch inference of large input files through a running server.",
        discussion: """
            The rows (axis 0) of the inputs are split into requests of --batch-size rows, sent
            --concurrency at a time over one connection (gRPC streams, or pipelined HTTP/1.1
            requests with --http), and every output is written as DIR/OUTPUT.npy in row order.

            Input files: .npy (converted to the model's datatype if it differs), .csv (numbers,
            comma-separated, one row per line; a first line that is not all numbers is a header),
            .json (nested arrays, rows outermost). The model's metadata gives the datatypes.

            A failed request is sent once more; if it fails again the run stops, naming the rows
            and the server's message. Outputs are written to hidden partial files and renamed only
            when every row is in: a failure or Ctrl-C leaves DIR as it was.

            Example: maas infer --server 127.0.0.1:8001 --model seed --input input=x.npy --output-dir out/
            """
    )

    @OptionGroup var server: ServerOptions

    @Flag(help: "Use KServe v2 REST over HTTP/1.1 (Triton's binary data extension) instead of gRPC.")
    var http = false

    @Option(help: "The model to run.")
    var model: String

    @Option(help: "The model version; empty lets the server choose.")
    var modelVersion = ""

    @Option(name: .customLong("input"), help: "NAME=FILE (.npy, .csv or .json), once per model input.")
    var inputs: [String] = []

    @Option(help: "Where to write OUTPUT.npy files (created if missing).")
    var outputDir: String

    @Option(help: "Rows per request (capped by the model's max_batch_size).")
    var batchSize = 64

    @Option(help: "Requests in flight at once.")
    var concurrency = 4

    func validate() throws {
        guard !inputs.isEmpty else { throw ValidationError("give at least one --input NAME=FILE") }
        for argument in inputs where !argument.contains("=") {
            throw ValidationError("--input takes NAME=FILE, got '\(argument)'")
        }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
    }

    func run() async throws {
        let connection: ServerConnection
        let prepared: Prepared
        do {
            connection = try await ServerConnection.connect(server, http: http)
            prepared = try await prepare(connection)
        } catch {
            Terminal.error(Self.message(error))
            throw ExitCode(1)
        }
        defer { connection.close() }
        Terminal.stderr("\(model): \(prepared.runner.rows) rows in \(prepared.runner.requestCount) requests of \(prepared.runner.batchSize) rows, \(concurrency) in flight over \(connection.transport)\n")

        // SIGINT (and SIGTERM) cancel the run; the partial files are removed before anything is printed.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let interrupts = [SIGINT, SIGTERM].map { DispatchSource.makeSignalSource(signal: $0, queue: .global()) }
        let directory = outputDir, runner = prepared.runner
        let work = Task { () -> Outcome in
            let files = try OutputFiles(directory: directory)
            let display = ProgressDisplay()
            do {
                let summary = try await runner.run(
                    deliver: { _, response in try files.append(response.outputs) },
                    progress: { display.update($0) })
                display.finish()
                try files.commit()
                return .done(summary, files.written)
            } catch let failure as BatchInference.Failure {
                display.finish()
                files.discard()
                return .failed(failure)
            } catch is CancellationError {
                display.finish()
                files.discard()
                return .interrupted(display.rowsDone, runner.rows)
            } catch {
                display.finish()
                files.discard()
                throw error
            }
        }
        for interrupt in interrupts {
            interrupt.setEventHandler { work.cancel() }
            interrupt.resume()
        }
        defer { for interrupt in interrupts { interrupt.cancel() } }

        let outcome: Outcome
        do {
            outcome = try await work.value
        } catch {
            Terminal.error("\(Self.message(error)); nothing written")
            throw ExitCode(1)
        }
        switch outcome {
        case .done(let summary, let written):
            print(Self.report(summary))
            for file in written {
                print("output: \(file.path) \(file.dataType.kserveName) \(file.shape)")
            }
        case .failed(let failure):
            print(Self.report(failure.summary))
            print("nothing written")
            Terminal.error("\(failure)")
            throw ExitCode(1)
        case .interrupted(let done, let total):
            print("interrupted after \(done) of \(total) rows: nothing written")
            throw ExitCode(130)
        }
    }

    private enum Outcome: Sendable {
        case done(BatchInference.Summary, [(name: String, path: String, dataType: DataType, shape: [Int])])
        case failed(BatchInference.Failure)
        case interrupted(Int, Int)
    }

    private struct Prepared {
        var runner: BatchInference
    }

    /// Reads the model's metadata, the input files and the batch size cap.
    private func prepare(_ connection: ServerConnection) async throws -> Prepared {
        let metadata = try await connection.metadata(model: model, version: modelVersion, timeout: server.duration)
        var tensors: [(name: String, tensor: Tensor)] = []
        for argument in inputs {
            let equals = argument.firstIndex(of: "=")!
            let name = String(argument[..<equals]), path = String(argument[argument.index(after: equals)...])
            guard let input = metadata.inputs.first(where: { $0.name == name }) else {
                throw CLIError("model '\(model)' has no input '\(name)' (its inputs: \(metadata.inputs.map(\.name).joined(separator: ", ")))")
            }
            guard !tensors.contains(where: { $0.name == name }) else { throw CLIError("input '\(name)' is given twice") }
            tensors.append((name, try InputFile.read(path, datatype: input.datatype, shape: input.shape)))
        }
        let missing = metadata.inputs.map(\.name).filter { name in !tensors.contains { $0.name == name } }
        guard missing.isEmpty else {
            throw CLIError("model '\(model)' also needs input\(missing.count > 1 ? "s" : "") \(missing.joined(separator: ", ")): give --input NAME=FILE for each")
        }
        var rowsPerRequest = batchSize
        if let max = await connection.maxBatchSize(model: model, version: modelVersion, timeout: server.duration), max > 0, max < batchSize {
            Terminal.stderr("\(model): max_batch_size is \(max): sending \(max) rows per request\n")
            rowsPerRequest = max
        }
        let (model, version, outputs, timeout) = (model, modelVersion, metadata.outputs.map(\.name), server.duration)
        let runner = try BatchInference(inputs: tensors, batchSize: rowsPerRequest, concurrency: concurrency) { inputs in
            try await connection.infer(model: model, version: version, inputs: inputs, outputs: outputs, timeout: timeout)
        }
        guard runner.rows > 0 else { throw CLIError("the inputs have no rows") }
        return Prepared(runner: runner)
    }

    private static func report(_ summary: BatchInference.Summary) -> String {
        let seconds = summary.elapsed.inSeconds
        func ms(_ value: Duration?) -> String { value.map { cFormat("%.3f ms", $0.inSeconds * 1000) } ?? "-" }
        return """
            rows: \(summary.rows)
            requests: \(summary.requests)
            seconds: \(cFormat("%.3f", seconds))
            rows/s: \(seconds > 0 ? cFormat("%.0f", Double(summary.rows) / seconds) : "-")
            latency p50: \(ms(summary.latency(quantile: 0.5)))
            latency p99: \(ms(summary.latency(quantile: 0.99)))
            retried: \(summary.retried)
            failures: \(summary.failures)
            """
    }

    static func message(_ error: any Error) -> String {
        switch error {
        case let error as InferenceError: error.message
        default: "\(error)"
        }
    }
}

/// A progress bar with rows/s and ETA when stderr is a terminal, a plain line every second
/// otherwise (logs, CI).
final class ProgressDisplay {
    private let terminal = isatty(STDERR_FILENO) != 0
    private var last: ContinuousClock.Instant?
    private var drawn = false
    private(set) var rowsDone = 0

    func update(_ progress: BatchInference.Progress) {
        rowsDone = progress.rowsDone
        let now = ContinuousClock.now
        let interval: Duration = terminal ? .milliseconds(100) : .seconds(1)
        let start = now - progress.elapsed
        guard now - (last ?? start) >= interval || (terminal && progress.rowsDone == progress.totalRows) else { return }
        last = now
        let seconds = progress.elapsed.inSeconds
        let rate = seconds > 0 ? Double(progress.rowsDone) / seconds : 0
        let eta = rate > 0 ? Double(progress.totalRows - progress.rowsDone) / rate : 0
        let fraction = progress.totalRows > 0 ? Double(progress.rowsDone) / Double(progress.totalRows) : 1
        let counts = "\(progress.rowsDone)/\(progress.totalRows) rows, \(cFormat("%.0f", rate)) rows/s, ETA \(Self.clock(eta))"
        if terminal {
            let width = 30, filled = Int(fraction * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            Terminal.stderr("\r\u{1B}[2K[\(bar)] \(cFormat("%3.0f", fraction * 100))% \(counts)")
            drawn = true
        } else {
            Terminal.stderr("progress: \(counts)\n")
        }
    }

    func finish() {
        if drawn { Terminal.stderr("\n") }
        drawn = false
    }

    private static func clock(_ seconds: Double) -> String {
        let total = Int(seconds.rounded(.up))
        return total >= 3600 ? cFormat("%ld:%02ld:%02ld", total / 3600, total / 60 % 60, total % 60) : cFormat("%ld:%02ld", total / 60, total % 60)
    }
}
