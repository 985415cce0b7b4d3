public import NIOCore

// Stands in for GRPCServerConnection+AccessLog.swift's `hasTLS` in the http harness's cut of
// MaaSGRPC (scripts/instrumented.sh): the real one looks for NIOSSL's handler, and the harness
// speaks cleartext.
extension ChannelPipeline.SynchronousOperations {
    public var hasTLS: Bool { false }
}
