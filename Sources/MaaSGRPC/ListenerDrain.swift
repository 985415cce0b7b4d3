import Glibc
import Logging
import NIOConcurrencyHelpers
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
/// The server keeps accepting until the queue is empty, as `TCP_INFO` reports it, and every
/// connection it accepted is set up (``AcceptedChannels``), and only then closes the listener.
/// The connections accepted meanwhile are served and drained like the others.
enum ListenerDrain {
    /// How long to wait for the queue to empty before closing anyway.
    static let limit = TimeAmount.milliseconds(500)

    static func close(_ channel: any Channel, accepted: AcceptedChannels, logger: Logger) {
        guard let options = channel as? any SocketOptionProvider else {
            channel.close(promise: nil)
            return
        }
        let loop = channel.eventLoop
        options.unsafeSetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_ATTACH_FILTER), value: DropSYN.program)
            .flatMap { waitForEmptyQueue(options, accepted, on: loop, until: loop.now + limit) }
            .whenComplete { result in
                if case .failure(let error) = result {
                    logger.debug("closing the listener without emptying its queue", metadata: ["error": "\(error)"])
                }
                channel.close(promise: nil)
            }
    }

    /// Runs on the listener's loop, where accepts happen too: none comes between the last check
    /// and the close, which follows in the same turn of the loop.
    private static func waitForEmptyQueue(
        _ options: any SocketOptionProvider, _ accepted: AcceptedChannels, on loop: any EventLoop, until deadline: NIODeadline
    ) -> EventLoopFuture<Void> {
        options.unsafeGetSocketOption(level: SocketOptionLevel(IPPROTO_TCP), name: SocketOptionName(TCP_INFO)).flatMap { (info: tcp_info) in
            // On a listener, tcpi_unacked is the accept queue's length.
            guard info.tcpi_unacked > 0 || !accepted.allActive, loop.now < deadline else { return loop.makeSucceededVoidFuture() }
            return loop.scheduleTask(in: .milliseconds(1)) {}.futureResult.flatMap {
                waitForEmptyQueue(options, accepted, on: loop, until: deadline)
            }
        }
    }
}

/// The connections a listener has accepted whose channels are not active yet.
///
/// NIO's `ServerBootstrap` sets an accepted channel up on the channel's own event loop, then
/// returns to the listener's loop, and closes the new channel if the listener has closed
/// meanwhile: a reset, with the client's first request unread. nginx logged `recv() failed (104:
/// Connection reset by peer)` for those, on connections accepted within a millisecond before the
/// listener closed (traced: accepted, listener closed, RST with the 372 bytes of its request
/// unread). So the listener closes only once each channel it accepted is active or closed.
final class AcceptedChannels: Sendable {
    private let settingUp = NIOLockedValueBox(Set<ObjectIdentifier>())

    var allActive: Bool { settingUp.withLockedValue { $0.isEmpty } }

    /// The listener's first handler: it sees each accepted channel before NIO's AcceptHandler.
    func listenerHandler() -> some ChannelInboundHandler { ListenerHandler(accepted: self) }

    /// The accepted channel's first handler: it reports the channel active and leaves.
    func childHandler() -> some ChannelInboundHandler { ChildHandler(accepted: self) }

    private func settled(_ id: ObjectIdentifier) {
        _ = settingUp.withLockedValue { $0.remove(id) }
    }

    private final class ListenerHandler: ChannelInboundHandler, Sendable {
        typealias InboundIn = any Channel
        let accepted: AcceptedChannels
        init(accepted: AcceptedChannels) { self.accepted = accepted }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let child = unwrapInboundIn(data)
            let id = ObjectIdentifier(child)
            _ = accepted.settingUp.withLockedValue { $0.insert(id) }
            // Closed before it was active: set up failed, or the listener closed first.
            child.closeFuture.whenComplete { [accepted] _ in accepted.settled(id) }
            context.fireChannelRead(data)
        }
    }

    final class ChildHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
        typealias InboundIn = NIOAny
        let accepted: AcceptedChannels
        init(accepted: AcceptedChannels) { self.accepted = accepted }

        func channelActive(context: ChannelHandlerContext) {
            accepted.settled(ObjectIdentifier(context.channel))
            context.fireChannelActive()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
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
