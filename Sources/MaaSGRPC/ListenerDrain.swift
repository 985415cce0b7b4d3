import Glibc
import Logging
import NIOCore

/// Closes a listening socket without resetting the connections in its accept queue.
///
/// Closing a listener resets every connection the kernel has completed but the server has not
/// accepted yet. Their clients count as connected and have sent their first request already, so
/// each reset fails one request. A balancer that streams request bodies cannot send those again:
/// nginx's `grpc_pass` logged `recv() failed (104: Connection reset by peer)` for 1 or 2 calls in
/// about one SIGTERM in ten, all on connections made in the last few milliseconds before the
/// close (seen with tcpdump).
///
/// So the listener first gets a socket filter that drops SYNs. A client connecting now
/// retransmits its SYN after a second, finds the port closed and tries elsewhere, without having
/// sent anything. Handshakes already under way still complete (their last ACK has no SYN flag).
/// The server keeps accepting until the queue is empty, as `TCP_INFO` reports it, and only then
/// closes the listener. The connections accepted meanwhile are served and drained like the others.
enum ListenerDrain {
    /// How long to wait for the queue to empty before closing anyway.
    static let limit = TimeAmount.milliseconds(500)

    static func close(_ channel: any Channel, logger: Logger) {
        guard let options = channel as? any SocketOptionProvider else {
            channel.close(promise: nil)
            return
        }
        let loop = channel.eventLoop
        options.unsafeSetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_ATTACH_FILTER), value: DropSYN.program)
            .flatMap { waitForEmptyQueue(options, on: loop, until: loop.now + limit) }
            .whenComplete { result in
                if case .failure(let error) = result {
                    logger.debug("closing the listener without emptying its queue", metadata: ["error": "\(error)"])
                }
                channel.close(promise: nil)
            }
    }

    private static func waitForEmptyQueue(
        _ options: any SocketOptionProvider, on loop: any EventLoop, until deadline: NIODeadline
    ) -> EventLoopFuture<Void> {
        options.unsafeGetSocketOption(level: SocketOptionLevel(IPPROTO_TCP), name: SocketOptionName(TCP_INFO)).flatMap { (info: tcp_info) in
            // On a listener, tcpi_unacked is the accept queue's length.
            guard info.tcpi_unacked > 0, loop.now < deadline else { return loop.makeSucceededVoidFuture() }
            return loop.scheduleTask(in: .milliseconds(1)) {}.futureResult.flatMap {
                waitForEmptyQueue(options, on: loop, until: deadline)
            }
        }
    }
}

/// A classic BPF program that drops TCP segments with SYN set and keeps the rest, as
/// `struct sock_fprog`, which Glibc does not export (<linux/filter.h>). A TCP socket's filter
/// sees the segment from its TCP header on, so byte 13 holds the flags.
private struct DropSYN: @unchecked Sendable {
    /// `struct sock_filter`: code, jt, jf, k.
    struct Instruction {
        var code: UInt16
        var jumpTrue: UInt8
        var jumpFalse: UInt8
        var constant: UInt32
    }

    /// `struct sock_fprog`: the length, then the pointer (at offset 8 on 64-bit Linux).
    var length: UInt16
    var instructions: UnsafeMutablePointer<Instruction>

    /// Allocated once and never freed: the kernel copies the program at attach time.
    static let program: DropSYN = {
        precondition(MemoryLayout<Instruction>.size == 8 && MemoryLayout<DropSYN>.offset(of: \.instructions) == MemoryLayout<Int>.size)
        let code: [Instruction] = [
            Instruction(code: 0x30, jumpTrue: 0, jumpFalse: 0, constant: 13),  // ldb [13]: the flags
            Instruction(code: 0x45, jumpTrue: 0, jumpFalse: 1, constant: 0x02),  // jset #SYN
            Instruction(code: 0x06, jumpTrue: 0, jumpFalse: 0, constant: 0),  // ret #0: drop
            Instruction(code: 0x06, jumpTrue: 0, jumpFalse: 0, constant: 0xFFFF_FFFF),  // ret #-1: keep
        ]
        let instructions = UnsafeMutablePointer<Instruction>.allocate(capacity: code.count)
        instructions.initialize(from: code, count: code.count)
        return DropSYN(length: UInt16(code.count), instructions: instructions)
    }()
}
