#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Kernels

/// A small, fast, seedable random number generator (xoshiro256**), so a seed gives the same
/// sample on every platform and run.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        // SplitMix64 spreads the seed over the state.
        var spread = SplitMix64(state: seed)
        state = (spread.next(), spread.next(), spread.next(), spread.next())
    }

    public mutating func next() -> UInt64 {
        let result = ((state.1 &* 5) << 7 | (state.1 &* 5) >> 57) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = (state.3 << 45) | (state.3 >> 19)
        return result
    }

    /// A uniform float in [0, 1).
    public mutating func nextUnit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }
}

/// How the next token is chosen from logits.
public struct SamplingParameters: Sendable, Equatable {
    /// 0 means greedy (argmax).
    public var temperature: Float
    /// Keep only the `topK` most likely tokens (0: all).
    public var topK: Int
    /// Keep the smallest set of tokens whose probability reaches `topP` (1: all).
    public var topP: Float
    /// Seed of the request's random generator (nil: random).
    public var seed: UInt64?

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, seed: UInt64? = nil) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
    }

    public static let greedy = SamplingParameters()
}

/// Picks tokens from logits. Greedy is an argmax; sampling keeps candidates with a partial
/// selection (never a full-vocabulary sort).
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    private var generator: SeededGenerator

    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        generator = SeededGenerator(seed: parameters.seed ?? UInt64.random(in: .min ... .max))
    }

    /// Index of the largest value (first one on ties).
    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        var bestValue = -Float.infinity
        for i in 0 ..< logits.count where logits[i] > bestValue {
            bestValue = logits[i]
            best = i
        }
        return best
    }

    /// Chooses the next token from one row of logits.
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int {
        if parameters.temperature <= 0 || logits.count <= 1 { return Self.argmax(logits) }
        let inverseTemperature = 1 / parameters.temperature
        let maxLogit = logits[Self.argmax(logits)]
        // Candidates: every token, or the top-k found with a bounded heap-free partial selection.
        var candidates: [(id: Int, weight: Double)]
        if parameters.topK > 0 && parameters.topK < logits.count {
            candidates = Self.topK(logits, parameters.topK).map { ($0, 0) }
        } else {
            candidates = (0 ..< logits.count).map { ($0, 0) }
        }
        var total = 0.0
        for i in candidates.indices {
            let w = exp(Double((logits[candidates[i].id] - maxLogit) * inverseTemperature))
            candidates[i].weight = w
            total += w
        }
        if parameters.topP < 1 {
            candidates.sort { $0.weight > $1.weight }
            var kept = 0.0
            var cut = candidates.count
            for (i, c) in candidates.enumerated() {
                kept += c.weight
                if kept >= Double(parameters.topP) * total {
                    cut = i + 1
                    break
                }
            }
            candidates.removeSubrange(cut...)
            total = kept
        }
        var r = generator.nextUnit() * total
        for c in candidates {
            r -= c.weight
            if r < 0 { return c.id }
        }
        return candidates.last?.id ?? Self.argmax(logits)
    }

    /// The ids of the `k` largest logits (unordered), by keeping a small sorted buffer.
    static func topK(_ logits: UnsafeBufferPointer<Float>, _ k: Int) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(k + 1)
        var threshold = -Float.infinity
        for i in 0 ..< logits.count {
            let v = logits[i]
            if ids.count < k || v > threshold {
                let position = ids.firstIndex { logits[$0] < v } ?? ids.count
                ids.insert(i, at: position)
                if ids.count > k { ids.removeLast() }
                threshold = logits[ids[ids.count - 1]]
            }
        }
        return ids
    }
}
