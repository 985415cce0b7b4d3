@testable import MaaSGRPC
import NIOCore
import NIOEmbedded
import Testing

/// The bookkeeping behind the listener's drain: it must close only once every channel it
/// accepted is active (or gone), or NIO's ServerBootstrap resets the late ones.
@Suite("Accepted channels")
struct AcceptedChannelsTests {
    @Test("an accepted channel counts as setting up until it is active, then its handler leaves")
    func activeSettles() throws {
        let accepted = AcceptedChannels()
        let listener = EmbeddedChannel(handler: accepted.listenerHandler())
        let child = EmbeddedChannel()
        try child.pipeline.syncOperations.addHandler(accepted.childHandler())
        #expect(accepted.allActive)

        try listener.writeInbound(child as any Channel)
        #expect(!accepted.allActive)
        // NIO's AcceptHandler, next in the listener's pipeline, still sees the channel.
        #expect(try listener.readInbound(as: (any Channel).self) === child)

        try child.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        #expect(accepted.allActive)
        #expect(throws: ChannelPipelineError.notFound) {
            try child.pipeline.syncOperations.context(handlerType: AcceptedChannels.ChildHandler.self)
        }
        _ = try child.finish()
        _ = try listener.finish()
    }

    @Test("an accepted channel closed before it was active (set up failed, listener closed) settles too")
    func closedSettles() throws {
        let accepted = AcceptedChannels()
        let listener = EmbeddedChannel(handler: accepted.listenerHandler())
        let first = EmbeddedChannel(), second = EmbeddedChannel()
        try listener.writeInbound(first as any Channel)
        try listener.writeInbound(second as any Channel)
        // An embedded channel runs its close callbacks when its loop runs.
        try first.close().wait()
        first.embeddedEventLoop.run()
        #expect(!accepted.allActive)
        try second.close().wait()
        second.embeddedEventLoop.run()
        #expect(accepted.allActive)
        _ = try listener.finish(acceptAlreadyClosed: true)
    }
}
