extension Duration {
    /// The duration in seconds, for printing rates and timings.
    public var inSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
