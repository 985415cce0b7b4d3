public import NIOCore

extension SocketAddress {
    /// `ip:port` (`[ip]:port` for IPv6), as access logs print a peer; nil for a Unix socket.
    public var hostPort: String? {
        guard let ip = ipAddress, let port else { return nil }
        if case .v6 = self { return "[\(ip)]:\(port)" }
        return "\(ip):\(port)"
    }
}
