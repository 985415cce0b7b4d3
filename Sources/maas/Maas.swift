import ArgumentParser
import Logging

@main
struct Maas: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "maas",
        abstract: "swift-maas: serve models over gRPC (KServe v2 / Triton API).",
        subcommands: [Serve.self, Run.self, Train.self, HealthCheck.self, Infer.self, Models.self]
    )
}

/// Options every subcommand shares.
struct GlobalOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown log level '\(logLevel)'")
        }
    }

    /// The only place logging is bootstrapped; libraries take a Logger.
    func bootstrapLogging() -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: "maas")
    }
}
