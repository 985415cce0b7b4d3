public import CoreMetrics
import Glibc
import Synchronization

/// The process's own metrics under the names Prometheus client libraries use
/// (`process_resident_memory_bytes`, `process_cpu_seconds_total`, ...), and the server's open
/// connections. Read from `/proc` and `getrusage` when scraped, not kept up per request.
public final class ProcessMetrics: Sendable {
    public enum Name {
        public static let residentMemory = "process_resident_memory_bytes"
        public static let virtualMemory = "process_virtual_memory_bytes"
        public static let cpuSeconds = "process_cpu_seconds_total"
        public static let openFileDescriptors = "process_open_fds"
        public static let openConnections = "maas_open_connections"
    }

    public static let help: [String: String] = [
        Name.residentMemory: "Resident memory size in bytes",
        Name.virtualMemory: "Virtual memory size in bytes",
        Name.cpuSeconds: "Total user and system CPU time spent in seconds",
        Name.openFileDescriptors: "Number of open file descriptors",
        Name.openConnections: "Open client connections by protocol (http2: gRPC and h2c REST; http1; undecided: first bytes not yet read)",
    ]

    /// Open connections: HTTP/2, HTTP/1.1, undecided.
    public typealias Connections = (http2: Int, http1: Int, undecided: Int)

    private let resident: Gauge
    private let virtual: Gauge
    private let cpu: FloatingPointCounter
    private let fds: Gauge
    private let http2: Gauge
    private let http1: Gauge
    private let undecided: Gauge
    /// CPU seconds already added to the counter, and where the connection counts come from.
    private let state = Mutex<(cpu: Double, connections: (@Sendable () -> Connections)?)>((0, nil))

    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        resident = Gauge(label: Name.residentMemory, factory: factory)
        virtual = Gauge(label: Name.virtualMemory, factory: factory)
        cpu = FloatingPointCounter(label: Name.cpuSeconds, factory: factory)
        fds = Gauge(label: Name.openFileDescriptors, factory: factory)
        func connections(_ kind: String) -> Gauge {
            Gauge(label: Name.openConnections, dimensions: [("protocol", kind)], factory: factory)
        }
        http2 = connections("http2")
        http1 = connections("http1")
        undecided = connections("undecided")
    }

    /// Where ``sample()`` reads the open connections (the server's listener, once it exists).
    public func countConnections(with source: @escaping @Sendable () -> Connections) {
        state.withLock { $0.connections = source }
    }

    /// Brings every gauge up to date; the scrape calls it before rendering.
    public func sample() {
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        if let statm = Self.read("/proc/self/statm") {
            // size resident shared text lib data dt, in pages
            let fields = statm.split(separator: " ")
            if fields.count >= 2, let size = Double(fields[0]), let rss = Double(fields[1]) {
                virtual.record(size * page)
                resident.record(rss * page)
            }
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1_000_000 }
        let total = seconds(usage.ru_utime) + seconds(usage.ru_stime)
        let (added, source) = state.withLock { state -> (Double, (@Sendable () -> Connections)?) in
            let delta = max(0, total - state.cpu)
            state.cpu += delta
            return (delta, state.connections)
        }
        if added > 0 { cpu.increment(by: added) }
        fds.record(Double(Self.countEntries("/proc/self/fd")))
        if let counts = source?() {
            http2.record(Double(counts.http2))
            http1.record(Double(counts.http1))
            undecided.record(Double(counts.undecided))
        }
    }

    private static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }

    /// Entries of a directory, without `.` and `..` (and the descriptor reading it, for /proc/self/fd).
    private static func countEntries(_ path: String) -> Int {
        guard let directory = opendir(path) else { return 0 }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let dot = withUnsafeBytes(of: entry.pointee.d_name) { $0[0] == UInt8(ascii: ".") }
            if !dot { count += 1 }
        }
        // opendir's own descriptor is one of them.
        return max(0, count - 1)
    }
}
