internal import CMaaSProto

/// `grpc.health.v1.HealthCheckRequest`.
public struct HealthCheckRequest: Sendable, Hashable {
    public var service: String

    public init(service: String = "") {
        self.service = service
    }
}

/// `grpc.health.v1.HealthCheckResponse`.
public struct HealthCheckResponse: Sendable, Hashable {
    /// `grpc.health.v1.HealthCheckResponse.ServingStatus`, with its wire values.
    public enum ServingStatus: Int32, Sendable, Hashable, CustomStringConvertible {
        case unknown = 0
        case serving = 1
        case notServing = 2
        case serviceUnknown = 3

        public var description: String {
            switch self {
            case .unknown: "UNKNOWN"
            case .serving: "SERVING"
            case .notServing: "NOT_SERVING"
            case .serviceUnknown: "SERVICE_UNKNOWN"
            }
        }
    }

    public var status: ServingStatus

    public init(status: ServingStatus) {
        self.status = status
    }
}

extension HealthCheckRequest {
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(ProtobufDecodingError) {
        guard let message = grpc__health__v1__health_check_request__unpack(nil, bytes.count, bytes.cBytes) else {
            throw ProtobufDecodingError(messageName: "grpc.health.v1.HealthCheckRequest", byteCount: bytes.count)
        }
        defer { grpc__health__v1__health_check_request__free_unpacked(message, nil) }
        self.init(service: String(cString: message.pointee.service))
    }

    public func serializedBytes() -> [UInt8] {
        var message = Grpc__Health__V1__HealthCheckRequest()
        grpc__health__v1__health_check_request__init(&message)
        return service.withCString { service in
            message.service = UnsafeMutablePointer(mutating: service)
            let size = grpc__health__v1__health_check_request__get_packed_size(&message)
            return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                count = grpc__health__v1__health_check_request__pack(&message, buffer.baseAddress)
            }
        }
    }
}

extension HealthCheckResponse {
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(ProtobufDecodingError) {
        guard let message = grpc__health__v1__health_check_response__unpack(nil, bytes.count, bytes.cBytes) else {
            throw ProtobufDecodingError(messageName: "grpc.health.v1.HealthCheckResponse", byteCount: bytes.count)
        }
        defer { grpc__health__v1__health_check_response__free_unpacked(message, nil) }
        // A status this version does not know reads as UNKNOWN, as proto3 enums do.
        self.init(status: ServingStatus(rawValue: Int32(message.pointee.status.rawValue)) ?? .unknown)
    }

    public func serializedBytes() -> [UInt8] {
        var message = Grpc__Health__V1__HealthCheckResponse()
        grpc__health__v1__health_check_response__init(&message)
        message.status = Grpc__Health__V1__HealthCheckResponse__ServingStatus(rawValue: UInt32(bitPattern: status.rawValue))
        let size = grpc__health__v1__health_check_response__get_packed_size(&message)
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            count = grpc__health__v1__health_check_response__pack(&message, buffer.baseAddress)
        }
    }
}

extension UnsafeRawBufferPointer {
    /// protobuf-c wants a non-null pointer even for zero bytes.
    var cBytes: UnsafePointer<UInt8> {
        if let base = baseAddress { return base.assumingMemoryBound(to: UInt8.self) }
        return UnsafePointer(Self.emptyByte)
    }

    nonisolated(unsafe) private static let emptyByte = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
}
