/// SplitMix64: a tiny, fast, seedable generator. Benchmarks and property tests use it so their
/// data replays exactly; the engine uses it to spread a request's seed over a larger state.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(state: UInt64) { self.state = state }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in `0 ..< n` (`n > 0`).
    public mutating func next(below n: Int) -> Int { Int(next() % UInt64(n)) }
}
