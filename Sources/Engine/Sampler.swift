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

/// How the next token is chosen from logits (vLLM / OpenAI semantics).
public struct SamplingParameters: Sendable, Equatable {
    /// 0 means greedy (argmax).
    public var temperature: Float
    /// Keep only the `topK` most likely tokens (0: all).
    public var topK: Int
    /// Keep the smallest set of tokens whose probability reaches `topP` (1: all).
    public var topP: Float
    /// Drop tokens whose probability is below `minP` times the top token's (0: none).
    public var minP: Float
    /// Logits of tokens seen in the prompt or output are divided by this when positive and
    /// multiplied by it when negative (1: off), as in vLLM and Hugging Face.
    public var repetitionPenalty: Float
    /// Subtracted once from the logit of every token already in the output (OpenAI).
    public var presencePenalty: Float
    /// Subtracted from a token's logit once per time it is already in the output (OpenAI).
    public var frequencyPenalty: Float
    /// Added to the logits of the given token ids; `-.infinity` forbids a token. Ids outside the
    /// vocabulary are ignored when sampling (`validate(vocabularySize:)` rejects them).
    public var logitBias: [Int: Float]
    /// Report the chosen token's log-probability and the `logprobs` most likely tokens'
    /// (nil: none). See `Sampler.sample(_:history:)` for which logits they are taken from.
    public var logprobs: Int?
    /// Seed of the request's random generator (nil: random).
    public var seed: UInt64?

    /// The most `logprobs` a request may ask for (as OpenAI).
    public static let maxLogprobs = 20

    public init(
        temperature: Float = 0, topK: Int = 0, topP: Float = 1, minP: Float = 0,
        repetitionPenalty: Float = 1, presencePenalty: Float = 0, frequencyPenalty: Float = 0,
        logitBias: [Int: Float] = [:], logprobs: Int? = nil, seed: UInt64? = nil
    ) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.logitBias = logitBias
        self.logprobs = logprobs
        self.seed = seed
    }

    public static let greedy = SamplingParameters()

    /// Throws `SamplingParametersError` for the first out-of-range value. With a
    /// `vocabularySize`, logit-bias ids must also lie in `0 ..< vocabularySize`.
    public func validate(vocabularySize: Int? = nil) throws {
        func check(_ ok: Bool, _ parameter: String, _ message: @autoclosure () -> String) throws {
            if !ok { throw SamplingParametersError(parameter: parameter, message: message()) }
        }
        try check(temperature.isFinite && temperature >= 0, "temperature",
                  "must be a finite value >= 0 (0 is greedy), got \(temperature)")
        try check(topK >= 0, "topK", "must be >= 0 (0 keeps every token), got \(topK)")
        try check(topP > 0 && topP <= 1, "topP", "must be in (0, 1], got \(topP)")
        try check(minP >= 0 && minP <= 1, "minP", "must be in [0, 1], got \(minP)")
        try check(repetitionPenalty.isFinite && repetitionPenalty > 0, "repetitionPenalty",
                  "must be a finite value > 0 (1 is off), got \(repetitionPenalty)")
        try check(presencePenalty >= -2 && presencePenalty <= 2, "presencePenalty",
                  "must be in [-2, 2], got \(presencePenalty)")
        try check(frequencyPenalty >= -2 && frequencyPenalty <= 2, "frequencyPenalty",
                  "must be in [-2, 2], got \(frequencyPenalty)")
        for (id, bias) in logitBias.sorted(by: { $0.key < $1.key }) {
            let inVocabulary = vocabularySize.map { id < $0 } ?? true
            try check(id >= 0 && inVocabulary, "logitBias",
                      "token id \(id) is outside the vocabulary"
                          + (vocabularySize.map { " (0 ..< \($0))" } ?? ""))
            try check(!bias.isNaN && bias != .infinity, "logitBias",
                      "bias of token \(id) must be a number below +infinity, got \(bias)")
        }
        if let logprobs {
            try check(logprobs >= 0 && logprobs <= Self.maxLogprobs, "logprobs",
                      "must be in 0 ... \(Self.maxLogprobs), got \(logprobs)")
        }
    }
}

/// A sampling parameter out of its range.
public struct SamplingParametersError: Error, Equatable, CustomStringConvertible {
    /// The field's name, e.g. "topP".
    public let parameter: String
    public let message: String

    public var description: String { "invalid sampling parameter \(parameter): \(message)" }
}

/// The tokens a request has seen, kept up to date one token at a time (O(1) per token) for the
/// repetition, presence and frequency penalties.
public struct TokenHistory: Sendable {
    /// Distinct tokens of the prompt and the output, in first-seen order.
    public private(set) var seenTokens: [Int] = []
    /// Distinct tokens of the output, in first-seen order.
    public private(set) var outputTokens: [Int] = []
    /// Number of tokens appended (the output length).
    public private(set) var outputLength = 0
    private var seen: Set<Int> = []
    private var counts: [Int: Int] = [:]

    public init() {}

    public init(prompt: some Sequence<Int>) {
        for token in prompt { see(token) }
    }

    /// Records one generated token.
    public mutating func append(_ token: Int) {
        see(token)
        outputLength += 1
        counts[token, default: 0] += 1
        if counts[token] == 1 { outputTokens.append(token) }
    }

    /// How many times `token` is in the output.
    public func outputCount(of token: Int) -> Int { counts[token] ?? 0 }

    private mutating func see(_ token: Int) {
        if seen.insert(token).inserted { seenTokens.append(token) }
    }
}

/// One sampled token, with log-probabilities when the request asked for them.
public struct SampledToken: Sendable {
    public var id: Int
    /// Log-probability of `id` (nil unless `logprobs` was set).
    public var logprob: Float?
    /// The `logprobs` most likely tokens, most likely first (ties: lower id first).
    public var topLogprobs: [(id: Int, logprob: Float)]

    public init(id: Int, logprob: Float? = nil, topLogprobs: [(id: Int, logprob: Float)] = []) {
        self.id = id
        self.logprob = logprob
        self.topLogprobs = topLogprobs
    }
}

/// Picks tokens from logits. Greedy is an argmax that never touches the random generator.
/// Sampling never sorts the vocabulary: top-k is a bounded-heap selection, top-p a histogram
/// of probability mass that leaves only one bucket to sort, min-p a threshold. Each request
/// owns its generator, so a seed gives the same tokens whatever else runs.
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    private var generator: SeededGenerator

    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        generator = SeededGenerator(seed: parameters.seed ?? UInt64.random(in: .min ... .max))
    }

    /// Index of the largest value (first one on ties; 0 when every value is -inf or NaN).
    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int {
        guard let base = logits.baseAddress else { return 0 }
        return SamplingMath.argmax(base, count: logits.count)
    }

    /// Chooses the next token from one row of logits (copies them; no penalties apply, as the
    /// history is empty).
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int {
        var scratch = Array(logits)
        return scratch.withUnsafeMutableBufferPointer { sample($0, history: TokenHistory()).id }
    }

    /// Chooses the next token. In order: logit bias, repetition / presence / frequency
    /// penalties, greedy argmax if the temperature is 0, else temperature, top-k, top-p, min-p
    /// and a draw from the request's generator. `logits` is scratch: on return it holds the
    /// processed logits (after bias and penalties). Log-probabilities are the log-softmax of
    /// those processed logits, before temperature and truncation (vLLM's default), so they do
    /// not depend on temperature, top-k, top-p or min-p. Ids in `history` or `logitBias`
    /// outside the vocabulary are ignored.
    public mutating func sample(_ logits: UnsafeMutableBufferPointer<Float>, history: TokenHistory) -> SampledToken {
        processLogits(logits, history: history)
        let processed = UnsafeBufferPointer(logits)
        let best = Self.argmax(processed)
        let id = parameters.temperature > 0 ? draw(processed, best: best) : best
        guard let count = parameters.logprobs else { return SampledToken(id: id) }
        return Self.withLogprobs(id, processed, best: best, top: count)
    }

    /// Applies the logit bias, then the repetition, presence and frequency penalties, in place.
    public func processLogits(_ logits: UnsafeMutableBufferPointer<Float>, history: TokenHistory) {
        let vocabulary = 0 ..< logits.count
        for (id, bias) in parameters.logitBias where vocabulary.contains(id) {
            logits[id] += bias
        }
        let repetition = parameters.repetitionPenalty
        if repetition != 1 {
            for id in history.seenTokens where vocabulary.contains(id) {
                logits[id] = logits[id] > 0 ? logits[id] / repetition : logits[id] * repetition
            }
        }
        let (presence, frequency) = (parameters.presencePenalty, parameters.frequencyPenalty)
        if presence != 0 || frequency != 0 {
            for id in history.outputTokens where vocabulary.contains(id) {
                logits[id] -= frequency * Float(history.outputCount(of: id)) + presence
            }
        }
    }

    /// A token drawn after temperature, top-k, top-p and min-p. Always takes exactly one number
    /// from the generator, so the random stream does not depend on the logits.
    private mutating func draw(_ logits: UnsafeBufferPointer<Float>, best: Int) -> Int {
        let unit = generator.nextUnit()
        let maxLogit = logits[best]
        guard maxLogit.isFinite else { return best }
        let inverseTemperature = 1 / parameters.temperature
        // Unnormalized probability (the top token weighs 1; NaN gives 0), as every path computes it.
        func weight(_ logit: Float) -> Double {
            var value = logit
            return Double(SamplingMath.weights16(&value, count: 1, maxLogit: maxLogit, inverseTemperature: inverseTemperature)[0])
        }
        let vocabulary = logits.count
        let minWeight = Double(parameters.minP)
        var candidates: [(id: Int, weight: Double)]
        if parameters.topK > 0 && parameters.topK < vocabulary {
            candidates = Self.largest(logits, parameters.topK).map { (id: $0, weight: weight(logits[$0])) }
            if parameters.topP < 1 {
                let target = Double(parameters.topP) * candidates.reduce(0) { $0 + $1.weight }
                var cumulative = 0.0
                for (i, candidate) in candidates.enumerated() {
                    cumulative += candidate.weight
                    if cumulative >= target {
                        candidates.removeSubrange((i + 1)...)
                        break
                    }
                }
            }
        } else if parameters.topP < 1 {
            candidates = nucleus(logits, maxLogit: maxLogit, inverseTemperature: inverseTemperature)
        } else {
            return drawWhole(logits, unit: unit, maxLogit: maxLogit, inverseTemperature: inverseTemperature, best: best)
        }
        candidates.removeAll { $0.weight < minWeight }
        let total = candidates.reduce(0) { $0 + $1.weight }
        let position = Self.pick(count: candidates.count, target: unit * total) { candidates[$0].weight }
        return position.map { candidates[$0].id } ?? best
    }

    /// A draw from the whole vocabulary, at most a min-p filter: two passes over the weights,
    /// sixteen at a time (`SamplingMath`), no candidate list. The first sums them per group of
    /// sixteen; the second walks the same group sums until `unit` of the total is passed, then the
    /// group's tokens one by one. On rounding, the last token with a positive weight.
    private func drawWhole(_ logits: UnsafeBufferPointer<Float>, unit: Double, maxLogit: Float,
                           inverseTemperature: Float, best: Int) -> Int {
        guard let base = logits.baseAddress else { return best }
        let vocabulary = logits.count
        let minimum = parameters.minP
        func group(_ start: Int) -> SIMD16<Float> {
            SamplingMath.weights16(base + start, count: min(16, vocabulary - start), maxLogit: maxLogit,
                                   inverseTemperature: inverseTemperature, minimum: minimum)
        }
        var total = 0.0
        for start in stride(from: 0, to: vocabulary, by: 16) { total += Double(SamplingMath.sum16(group(start))) }
        var remaining = unit * total
        var lastPositiveGroup: Int?
        for start in stride(from: 0, to: vocabulary, by: 16) {
            let weights = group(start)
            let sum = Double(SamplingMath.sum16(weights))
            guard sum > 0 else { continue }
            lastPositiveGroup = start
            if remaining - sum >= 0 {
                remaining -= sum
                continue
            }
            for lane in 0 ..< min(16, vocabulary - start) where weights[lane] > 0 {
                remaining -= Double(weights[lane])
                if remaining < 0 { return start + lane }
            }
        }
        guard let start = lastPositiveGroup else { return best }
        let weights = group(start)
        return (0 ..< min(16, vocabulary - start)).last { weights[$0] > 0 }.map { start + $0 } ?? best
    }

    /// Buckets per unit of -log probability (relative to the top token) in the top-p histogram,
    /// and their count; the last bucket also holds everything less likely (below e^-63 of the top
    /// token).
    static let bucketsPerUnit: Float = 8
    static let bucketCount = 512

    /// The top-p nucleus of the whole vocabulary in linear time, without a full sort: one pass
    /// sums the probability mass per bucket of -log probability, which finds the bucket where
    /// the nucleus ends; only that bucket's tokens are sorted (by weight, then id) to find the
    /// exact cut. Tokens are ranked as a full descending sort would rank them.
    private func nucleus(
        _ logits: UnsafeBufferPointer<Float>, maxLogit: Float, inverseTemperature: Float
    ) -> [(id: Int, weight: Double)] {
        guard let base = logits.baseAddress else { return [] }
        func bucket(_ logit: Float) -> Int {
            // -log of the token's unnormalized probability (0 for the top token), in buckets.
            let position = (maxLogit - logit) * inverseTemperature * Self.bucketsPerUnit
            return position < Float(Self.bucketCount - 1) ? Int(position) : Self.bucketCount - 1
        }
        // Each token's weight, computed sixteen at a time the same way in both passes.
        func forEachWeight(_ body: (Int, Double) -> Void) {
            for start in stride(from: 0, to: logits.count, by: 16) {
                let count = min(16, logits.count - start)
                let weights = SamplingMath.weights16(base + start, count: count, maxLogit: maxLogit, inverseTemperature: inverseTemperature)
                for lane in 0 ..< count { body(start + lane, Double(weights[lane])) }
            }
        }
        var mass = [Double](repeating: 0, count: Self.bucketCount)
        var total = 0.0
        forEachWeight { i, w in
            total += w
            mass[bucket(logits[i])] += w
        }
        let target = Double(parameters.topP) * total
        var cumulative = 0.0
        var boundary = Self.bucketCount - 1
        for b in 0 ..< Self.bucketCount {
            if cumulative + mass[b] >= target {
                boundary = b
                break
            }
            cumulative += mass[b]
        }
        var inside: [(id: Int, weight: Double)] = []
        var edge: [(id: Int, weight: Double)] = []
        forEachWeight { i, w in
            let b = bucket(logits[i])
            if b < boundary {
                inside.append((i, w))
            } else if b == boundary {
                edge.append((i, w))
            }
        }
        edge.sort { $0.weight > $1.weight || ($0.weight == $1.weight && $0.id < $1.id) }
        for candidate in edge {
            inside.append(candidate)
            cumulative += candidate.weight
            if cumulative >= target { break }
        }
        return inside
    }

    /// The first position where the running sum of `weight` passes `target`; on rounding, the
    /// last position with a positive weight (nil if none).
    private static func pick(count: Int, target: Double, weight: (Int) -> Double) -> Int? {
        var remaining = target
        var lastPositive: Int?
        for i in 0 ..< count {
            let w = weight(i)
            guard w > 0 else { continue }
            remaining -= w
            if remaining < 0 { return i }
            lastPositive = i
        }
        return lastPositive
    }

    /// `id` with its log-probability and the `top` most likely tokens', from a log-softmax of
    /// `logits` (whose largest value is at `best`).
    private static func withLogprobs(_ id: Int, _ logits: UnsafeBufferPointer<Float>, best: Int, top: Int) -> SampledToken {
        let maxLogit = logits[best]
        // The normalizer sixteen exponentials at a time (`SamplingMath`, NaN logits weigh 0),
        // summed per group in Double.
        var sum = 0.0
        if maxLogit.isFinite, let base = logits.baseAddress {
            for start in stride(from: 0, to: logits.count, by: 16) {
                let weights = SamplingMath.weights16(base + start, count: min(16, logits.count - start), maxLogit: maxLogit, inverseTemperature: 1)
                sum += Double(SamplingMath.sum16(weights))
            }
        }
        let logNormalizer = Double(maxLogit) + log(sum)
        func logprob(_ i: Int) -> Float { Float(Double(logits[i]) - logNormalizer) }
        let topLogprobs = top > 0 ? largest(logits, top).map { (id: $0, logprob: logprob($0)) } : []
        return SampledToken(id: id, logprob: logprob(id), topLogprobs: topLogprobs)
    }

    /// The ids of the `k` largest values, largest first (ties: lower id first; NaN skipped),
    /// by a bounded min-heap: O(n log k), a full sort only when `k` covers everything.
    static func largest(_ values: UnsafeBufferPointer<Float>, _ k: Int) -> [Int] {
        // Heap order: smaller value, or equal value and larger id, is nearer the root.
        func below(_ a: Int, _ b: Int) -> Bool {
            values[a] < values[b] || (values[a] == values[b] && a > b)
        }
        func rankedFirst(_ a: Int, _ b: Int) -> Bool { below(b, a) }
        guard k > 0 else { return [] }
        if k >= values.count {
            return (0 ..< values.count).filter { !values[$0].isNaN }.sorted(by: rankedFirst)
        }
        var heap: [Int] = []
        heap.reserveCapacity(k)
        for i in 0 ..< values.count where !values[i].isNaN {
            if heap.count < k {
                heap.append(i)
                var child = heap.count - 1
                while child > 0 {
                    let parent = (child - 1) / 2
                    guard below(heap[child], heap[parent]) else { break }
                    heap.swapAt(child, parent)
                    child = parent
                }
            } else if values[i] > values[heap[0]] {
                heap[0] = i
                var parent = 0
                while true {
                    let left = 2 * parent + 1
                    guard left < k else { break }
                    let right = left + 1
                    let child = right < k && below(heap[right], heap[left]) ? right : left
                    guard below(heap[child], heap[parent]) else { break }
                    heap.swapAt(child, parent)
                    parent = child
                }
            }
        }
        return heap.sorted(by: rankedFirst)
    }
}
