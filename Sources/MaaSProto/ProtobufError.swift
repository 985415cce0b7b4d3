/// A message that protobuf-c could not decode.
public struct ProtobufDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The fully qualified message name, e.g. `grpc.health.v1.HealthCheckRequest`.
    public var messageName: String
    public var byteCount: Int

    public var description: String {
        "could not decode \(messageName) from \(byteCount) bytes: malformed protobuf"
    }
}
