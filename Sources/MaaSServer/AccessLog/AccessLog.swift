public import CoreMetrics
import Dispatch
public import Logging
public import MaaSCore
import Synchronization

// Glibc by name: `close` and `open` are also this class's own methods.
import Glibc

/// Why `--access-log FILE` cannot be used.
public struct AccessLogError: Error, Sendable, CustomStringConvertible {
    public let path: String
    public let reason: String

    public var description: String { "cannot open access log '\(path)' for appending: \(reason)" }
}

/// `--access-log FILE|-`: one JSON line per answered request (``AccessLogLine``), appended to
/// FILE (`-`: standard output).
///
/// The event loops only append a record to a list under a lock; one serial queue formats what
/// has gathered and writes it with one `write(2)`, so a slow disk delays the log, never a
/// request. What waits is bounded (``maxPendingBytes``, estimated per record): past it records
/// are dropped, counted in `maas_access_log_dropped_total`, and a warning is logged at most
/// once per ``warningInterval``.
///
/// ```swift
/// let log = try AccessLog(path: "/var/log/maas/access.log", logger: logger)
/// options.accessLog = log
/// await log.reopen()   // on SIGHUP, after logrotate renamed the file (AccessLogService does it)
/// await log.close()    // at shutdown: writes what is pending
/// ```
public final class AccessLog: AccessRecorder {
    public static let droppedMetricName = "maas_access_log_dropped_total"
    public static let droppedMetricHelp = "Access log lines dropped: the writer fell behind by more than its buffer, or a write failed."
    /// 8 MiB: about 30,000 lines, some seconds of a busy server's traffic.
    public static let defaultMaxPendingBytes = 8 << 20
    public static let warningInterval: Duration = .seconds(10)

    /// The file, or `-` for standard output.
    public let path: String
    public let maxPendingBytes: Int
    private let queue = DispatchQueue(label: "maas.access-log")
    private let state = Mutex(State())
    /// The descriptor written to; read and replaced only on `queue` (the lock is for Sendable).
    private let file: Mutex<Int32>
    private let droppedCounter: Counter
    private let dropped = Atomic<Int>(0)
    /// Uptime in nanoseconds of the last drop warning (0: none yet).
    private let lastWarning = Atomic<UInt64>(0)
    private let logger: Logger

    private struct State {
        var pending: [AccessRecord] = []
        /// Estimated bytes of `pending` plus the batch being written.
        var pendingBytes = 0
        /// A drain is scheduled or running on `queue`: later records join it.
        var draining = false
        var closed = false
    }

    /// Opens `path` for appending (created 0644 if missing); `-` writes to standard output.
    /// - Parameters:
    ///   - factory: where the drop counter goes (the bootstrapped backend by default).
    /// - Throws: ``AccessLogError`` naming the path and the system's reason.
    public init(
        path: String, maxPendingBytes: Int = defaultMaxPendingBytes, logger: Logger,
        factory: any MetricsFactory = MetricsSystem.factory
    ) throws(AccessLogError) {
        self.path = path
        self.maxPendingBytes = maxPendingBytes
        self.logger = logger
        file = Mutex(try Self.open(path))
        droppedCounter = Counter(label: Self.droppedMetricName, dimensions: [], factory: factory)
    }

    deinit {
        let fd = file.withLock { $0 }
        if fd > STDERR_FILENO { _ = Glibc.close(fd) }
    }

    /// Records dropped since start.
    public var droppedCount: Int { dropped.load(ordering: .relaxed) }

    /// Queues one line; never blocks on the file. Called on the event loop that answered.
    public func record(_ record: AccessRecord) {
        var record = record
        record.endedAt = Self.wallClockNanoseconds()
        let cost = AccessLogLine.estimatedBytes(record)
        let schedule: Bool? = state.withLock { state in
            guard !state.closed else { return false }
            guard state.pendingBytes + cost <= maxPendingBytes else { return nil }
            state.pending.append(record)
            state.pendingBytes += cost
            if state.draining { return false }
            state.draining = true
            return true
        }
        switch schedule {
        case nil: drop(1, reason: "the writer is behind")
        case true?: queue.async { self.drain() }
        case false?: break
        }
    }

    /// Opens the path anew (after logrotate renamed the file); lines from now on go to the new
    /// file. If it cannot be opened, the old descriptor stays and the error is returned.
    @discardableResult
    public func reopen() async -> Result<Void, AccessLogError> {
        await withCheckedContinuation { continuation in
            queue.async {
                guard self.path != "-" else { return continuation.resume(returning: .success(())) }
                do throws(AccessLogError) {
                    let fresh = try Self.open(self.path)
                    let old = self.file.withLock { fd in
                        defer { fd = fresh }
                        return fd
                    }
                    if old > STDERR_FILENO { _ = Glibc.close(old) }
                    continuation.resume(returning: .success(()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
    }

    /// Writes what is pending and closes the file; later records are ignored. For shutdown,
    /// once the server has answered its last request.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async {
                self.state.withLock { $0.closed = true }
                self.drain()
                let fd = self.file.withLock { fd in
                    defer { fd = -1 }
                    return fd
                }
                if fd > STDERR_FILENO { _ = Glibc.close(fd) }
                continuation.resume()
            }
        }
    }

    // MARK: Writer (on `queue`)

    private func drain() {
        while true {
            let (batch, bytes) = state.withLock { state -> ([AccessRecord], Int) in
                if state.pending.isEmpty {
                    state.draining = false
                    return ([], 0)
                }
                var taken: [AccessRecord] = []
                swap(&taken, &state.pending)
                return (taken, state.pendingBytes)
            }
            if batch.isEmpty { return }
            var out: [UInt8] = []
            out.reserveCapacity(bytes)
            for record in batch { AccessLogLine.append(record, to: &out) }
            write(out, lines: batch.count)
            // Counted until written, so the bound covers the batch in hand too.
            state.withLock { $0.pendingBytes -= bytes }
        }
    }

    private func write(_ bytes: [UInt8], lines: Int) {
        let fd = file.withLock { $0 }
        let failure: Int32 = bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                offset += written
            }
            return 0
        }
        if failure != 0 { drop(lines, reason: "write failed: \(String(cString: strerror(failure)))") }
    }

    // MARK: Helpers

    private func drop(_ count: Int, reason: @autoclosure () -> String) {
        droppedCounter.increment(by: count)
        let total = dropped.add(count, ordering: .relaxed).newValue
        let now = DispatchTime.now().uptimeNanoseconds
        let last = lastWarning.load(ordering: .relaxed)
        let interval = UInt64(Self.warningInterval.components.seconds) * 1_000_000_000
        guard last == 0 || now &- last >= interval,
            lastWarning.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
        else { return }
        logger.warning(
            "access log lines dropped",
            metadata: ["dropped_total": "\(total)", "reason": "\(reason())", "file": "\(path)"])
    }

    private static func open(_ path: String) throws(AccessLogError) -> Int32 {
        if path == "-" { return STDOUT_FILENO }
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw AccessLogError(path: path, reason: String(cString: strerror(errno))) }
        return fd
    }

    /// CLOCK_REALTIME in nanoseconds since the Unix epoch: a vDSO read, no Foundation.
    static func wallClockNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
}
