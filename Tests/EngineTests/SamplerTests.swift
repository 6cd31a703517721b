import Foundation
import Testing
import Engine

/// Samples once from a copy of `logits` (the sampler overwrites its input).
private func sampleOnce(
    _ sampler: inout Sampler, _ logits: [Float], history: TokenHistory = TokenHistory()
) -> (token: SampledToken, processed: [Float]) {
    var scratch = logits
    let token = scratch.withUnsafeMutableBufferPointer { sampler.sample($0, history: history) }
    return (token, scratch)
}

/// Softmax of `logits` at `temperature`, in Double.
private func softmax(_ logits: [Float], temperature: Float = 1) -> [Double] {
    let m = Double(logits.max() ?? 0)
    let w = logits.map { exp((Double($0) - m) / Double(temperature)) }
    let total = w.reduce(0, +)
    return w.map { $0 / total }
}

/// Empirical frequencies of `draws` samples.
private func frequencies(_ parameters: SamplingParameters, _ logits: [Float], draws: Int = 20_000) -> [Double] {
    var sampler = Sampler(parameters)
    var counts = [Int](repeating: 0, count: logits.count)
    for _ in 0 ..< draws { counts[sampleOnce(&sampler, logits).token.id] += 1 }
    return counts.map { Double($0) / Double(draws) }
}

/// `probabilities` kept only at `kept` ids, renormalized.
private func renormalized(_ probabilities: [Double], keeping kept: Set<Int>) -> [Double] {
    let masked = probabilities.indices.map { kept.contains($0) ? probabilities[$0] : 0 }
    let total = masked.reduce(0, +)
    return masked.map { $0 / total }
}

private func expectClose(_ observed: [Double], _ expected: [Double], tolerance: Double = 0.015) {
    #expect(observed.count == expected.count)
    for (o, e) in zip(observed, expected) {
        #expect(abs(o - e) <= tolerance, "observed \(observed) expected \(expected)")
        if e == 0 { #expect(o == 0, "a truncated token was drawn: \(observed)") }
    }
}

/// Five tokens with probabilities about 0.48, 0.26, 0.14, 0.08, 0.04 at temperature 1.
private let fiveTokens: [Float] = [2.0, 1.4, 0.8, 0.2, -0.5]

@Suite struct SamplerTests {
    @Test func greedyIsArgmax() {
        let logits: [Float] = [0.5, 3, -1, 3, 2]
        var sampler = Sampler(.greedy)
        #expect(sampleOnce(&sampler, logits).token.id == 1)
        #expect(logits.withUnsafeBufferPointer { sampler.sample($0) } == 1)
        #expect(logits.withUnsafeBufferPointer { Sampler.argmax($0) } == 1)
    }

    /// The vectorized argmax against a scalar scan (first strictly larger value wins) over lengths
    /// around the 16- and 64-lane steps, with ties, NaN, infinities and signed zeros, and rows
    /// with no finite value.
    @Test func argmaxMatchesAScalarScan() {
        func scalar(_ x: [Float]) -> Int {
            var best = 0, bestValue = -Float.infinity
            for i in x.indices where x[i] > bestValue {
                bestValue = x[i]
                best = i
            }
            return best
        }
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 33
        }
        let specials: [Float] = [.nan, -.infinity, .infinity, 0, -0.0, 3, 3]
        for count in [0, 1, 2, 15, 16, 17, 63, 64, 65, 100, 127, 128, 129, 1003, 49152] {
            for trial in 0 ..< 6 {
                // Few distinct values, so ties are common; some rows all -inf / NaN.
                var x = (0 ..< count).map { _ in Float(Int(next() % 7)) - 3 }
                for _ in 0 ..< min(count, 5) { x[Int(next() % UInt64(count))] = specials[Int(next() % UInt64(specials.count))] }
                if trial == 4 { x = x.map { _ in next() % 2 == 0 ? -.infinity : .nan } }
                if trial == 5 && count > 0 { x = [Float](repeating: -.infinity, count: count); x[count - 1] = -1 }
                let vector = x.withUnsafeBufferPointer { Sampler.argmax($0) }
                #expect(vector == scalar(x), "count \(count), trial \(trial)")
            }
        }
    }

    @Test func topKOneIsGreedy() {
        var sampler = Sampler(SamplingParameters(temperature: 1.5, topK: 1, seed: 7))
        for _ in 0 ..< 200 { #expect(sampleOnce(&sampler, fiveTokens).token.id == 0) }
    }

    @Test func seededSamplingIsReproducibleAndSeedsDiffer() {
        let logits = (0 ..< 1000).map { Float(sin(Double($0) * 0.37)) * 3 }
        func run(_ seed: UInt64, _ extra: SamplingParameters = SamplingParameters()) -> [Int] {
            var parameters = extra
            parameters.temperature = 0.9
            parameters.seed = seed
            var sampler = Sampler(parameters)
            return (0 ..< 64).map { _ in sampleOnce(&sampler, logits).token.id }
        }
        #expect(run(42) == run(42))
        #expect(run(42) != run(43))
        let truncated = SamplingParameters(topK: 50, topP: 0.8, minP: 0.05)
        #expect(run(5, truncated) == run(5, truncated))
    }

    @Test func temperatureOneMatchesSoftmax() {
        expectClose(frequencies(SamplingParameters(temperature: 1, seed: 1), fiveTokens), softmax(fiveTokens))
    }

    /// The whole-vocabulary draw walks its weights sixteen at a time: a 1003-token vocabulary
    /// (a partial last group) with its likely tokens at group edges and in the last group is
    /// drawn as its softmax, and -inf and NaN logits never are.
    @Test func wholeVocabularyDrawMatchesSoftmax() {
        var logits = [Float](repeating: -6, count: 1003)
        for (id, logit) in [(0, 1.5), (15, 1.0), (16, 0.5), (500, 1.2), (1000, 0.8), (1002, 1.1)] as [(Int, Float)] { logits[id] = logit }
        logits[7] = -.infinity
        logits[1001] = .nan
        let observed = frequencies(SamplingParameters(temperature: 1, seed: 11), logits)
        var finite = logits
        finite[7] = -1000
        finite[1001] = -1000
        let expected = softmax(finite)
        for id in [0, 15, 16, 500, 1000, 1002] {
            #expect(abs(observed[id] - expected[id]) <= 0.015, "token \(id): \(observed[id]) against \(expected[id])")
        }
        #expect(observed[7] == 0 && observed[1001] == 0)
        let rest = observed.indices.filter { ![0, 15, 16, 500, 1000, 1002].contains($0) }
        let restExpected = rest.reduce(0) { $0 + expected[$1] }, restObserved = rest.reduce(0) { $0 + observed[$1] }
        #expect(abs(restObserved - restExpected) <= 0.015, "the other tokens: \(restObserved) against \(restExpected)")
    }

    /// At a subnormal temperature (1 / t = inf) every weight is 0 or NaN, and every path falls
    /// back to the top token.
    @Test func subnormalTemperatureFallsBackToTheTopToken() {
        let logits = (0 ..< 100).map { Float(sin(Double($0) * 0.37)) * 3 }
        let top = logits.withUnsafeBufferPointer { Sampler.argmax($0) }
        for parameters in [SamplingParameters(temperature: 1e-45, seed: 1), SamplingParameters(temperature: 1e-45, topK: 5, seed: 1),
                           SamplingParameters(temperature: 1e-45, topP: 0.5, seed: 1)] {
            var sampler = Sampler(parameters)
            #expect(sampleOnce(&sampler, logits).token.id == top)
        }
    }

    @Test func temperatureScalesLogits() {
        let parameters = SamplingParameters(temperature: 2, seed: 2)
        expectClose(frequencies(parameters, fiveTokens), softmax(fiveTokens, temperature: 2))
    }

    @Test func topKTruncates() {
        let parameters = SamplingParameters(temperature: 1, topK: 3, seed: 3)
        expectClose(frequencies(parameters, fiveTokens), renormalized(softmax(fiveTokens), keeping: [0, 1, 2]))
    }

    @Test func topPTruncates() {
        // 0.48 + 0.26 = 0.74 < 0.8 <= 0.88: the nucleus is tokens 0, 1, 2.
        let parameters = SamplingParameters(temperature: 1, topP: 0.8, seed: 4)
        expectClose(frequencies(parameters, fiveTokens), renormalized(softmax(fiveTokens), keeping: [0, 1, 2]))
    }

    @Test func topPWithManyTiedTokens() {
        // A flat 4096-token vocabulary: a 0.9 nucleus of ~3700 tokens, mostly tied.
        var logits = [Float](repeating: 0, count: 4096)
        logits[4000] = 1
        var sampler = Sampler(SamplingParameters(temperature: 1, topP: 0.9, seed: 9))
        var drawn = Set<Int>()
        for _ in 0 ..< 5000 { drawn.insert(sampleOnce(&sampler, logits).token.id) }
        #expect(drawn.count > 1000)
        // Ties rank by id: the nucleus is token 4000 and ids 0 ..< ~3686 (0.9 of 4095 + e).
        #expect(drawn.filter { $0 != 4000 }.allSatisfy { $0 < 3700 })
    }

    @Test func topPNucleusMatchesAFullSort() {
        // 50k spread-out logits: the nucleus crosses many histogram buckets.
        var generator = SeededGenerator(seed: 12)
        let logits = (0 ..< 50_000).map { _ in Float(generator.nextUnit() * 12) }
        let temperature: Float = 1.3
        let probabilities = softmax(logits, temperature: temperature)
        let ranked = probabilities.indices.sorted { probabilities[$0] > probabilities[$1] }
        var cumulative = 0.0
        var nucleus = Set<Int>()
        for id in ranked where cumulative < 0.7 {
            cumulative += probabilities[id]
            nucleus.insert(id)
        }
        var sampler = Sampler(SamplingParameters(temperature: temperature, topP: 0.7, seed: 12))
        var drawn = Set<Int>()
        for _ in 0 ..< 3000 { drawn.insert(sampleOnce(&sampler, logits).token.id) }
        #expect(drawn.isSubset(of: nucleus))
        #expect(drawn.count > nucleus.count / 4)
    }

    @Test func minPTruncates() {
        // Relative to the top token: 0.26 / 0.48 = 0.55, 0.14 / 0.48 = 0.30, 0.08 / 0.48 = 0.16.
        let parameters = SamplingParameters(temperature: 1, minP: 0.2, seed: 5)
        expectClose(frequencies(parameters, fiveTokens), renormalized(softmax(fiveTokens), keeping: [0, 1, 2]))
    }

    @Test func topKTopPAndMinPCombine() {
        // Top-k 4 renormalizes to about 0.50, 0.27, 0.15, 0.08; top-p 0.9 keeps three of them;
        // min-p 0.4 then drops token 2 (0.15 / 0.50 = 0.30).
        let parameters = SamplingParameters(temperature: 1, topK: 4, topP: 0.9, minP: 0.4, seed: 6)
        expectClose(frequencies(parameters, fiveTokens), renormalized(softmax(fiveTokens), keeping: [0, 1]))
    }

    @Test func repetitionPenaltyDividesPositiveAndMultipliesNegativeLogits() {
        var history = TokenHistory(prompt: [0, 0, 1])
        history.append(2)
        var sampler = Sampler(SamplingParameters(repetitionPenalty: 2))
        let processed = sampleOnce(&sampler, [4, -3, 1, 5, -1], history: history).processed
        #expect(processed == [2, -6, 0.5, 5, -1])
    }

    @Test func presenceAndFrequencyPenaltiesCountOnlyTheOutput() {
        var history = TokenHistory(prompt: [3])
        for token in [0, 1, 0, 0] { history.append(token) }
        #expect(history.outputCount(of: 0) == 3)
        #expect(history.outputLength == 4)
        var sampler = Sampler(SamplingParameters(presencePenalty: 0.5, frequencyPenalty: 0.25))
        let processed = sampleOnce(&sampler, [1, 1, 1, 1], history: history).processed
        // Token 0: 1 - (0.25 * 3 + 0.5); token 1: 1 - (0.25 + 0.5); token 3 is only in the prompt.
        #expect(processed == [-0.25, 0.25, 1, 1])
    }

    @Test func penaltiesApplyAfterLogitBias() {
        var history = TokenHistory()
        history.append(0)
        let parameters = SamplingParameters(
            repetitionPenalty: 2, presencePenalty: 1, frequencyPenalty: 0, logitBias: [0: 2, 99: 5, -1: 5])
        var sampler = Sampler(parameters)
        // (1 + 2) / 2 - 1; out-of-vocabulary biases are ignored.
        #expect(sampleOnce(&sampler, [1, 0], history: history).processed == [0.5, 0])
    }

    @Test func logitBiasForcesAndForbidsTokens() {
        var forced = Sampler(SamplingParameters(temperature: 1, logitBias: [4: 100], seed: 1))
        var forbidden = Sampler(SamplingParameters(temperature: 1, logitBias: [0: -.infinity, 1: -.infinity], seed: 1))
        var greedyForbidden = Sampler(SamplingParameters(logitBias: [0: -.infinity]))
        for _ in 0 ..< 500 {
            #expect(sampleOnce(&forced, fiveTokens).token.id == 4)
            #expect(sampleOnce(&forbidden, fiveTokens).token.id >= 2)
        }
        #expect(sampleOnce(&greedyForbidden, fiveTokens).token.id == 1)
    }

    @Test func logprobsAreLogSoftmaxOfProcessedLogits() {
        let logits: [Float] = [1, 3, 0.5, 3, -2, 2]
        var sampler = Sampler(SamplingParameters(temperature: 0.7, logitBias: [5: 1.5], logprobs: 3, seed: 8))
        let (token, processed) = sampleOnce(&sampler, logits)
        let expected = softmax(processed).map { Float(log($0)) }
        #expect(processed[5] == 3.5)
        #expect(token.logprob.map { abs($0 - expected[token.id]) < 1e-5 } == true)
        #expect(token.topLogprobs.map(\.id) == [5, 1, 3])
        for entry in token.topLogprobs { #expect(abs(entry.logprob - expected[entry.id]) < 1e-5) }
        #expect(zip(token.topLogprobs, token.topLogprobs.dropFirst()).allSatisfy { $0.logprob >= $1.logprob })
        // Over the whole vocabulary the probabilities sum to 1.
        var everything = Sampler(SamplingParameters(logprobs: logits.count))
        let all = sampleOnce(&everything, logits).token.topLogprobs
        #expect(all.count == logits.count)
        #expect(abs(all.reduce(0) { $0 + exp(Double($1.logprob)) } - 1) < 1e-5)
    }

    @Test func logprobsZeroGivesOnlyTheChosenToken() {
        var sampler = Sampler(SamplingParameters(logprobs: 0))
        let token = sampleOnce(&sampler, fiveTokens).token
        #expect(token.id == 0)
        #expect(token.topLogprobs.isEmpty)
        #expect(token.logprob.map { abs(Double($0) - log(softmax(fiveTokens)[0])) < 1e-5 } == true)
        var plain = Sampler(.greedy)
        #expect(sampleOnce(&plain, fiveTokens).token.logprob == nil)
    }

    @Test func validateAcceptsDefaultsAndRejectsBadValues() throws {
        try SamplingParameters.greedy.validate()
        try SamplingParameters(temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05, repetitionPenalty: 1.1,
                               presencePenalty: -2, frequencyPenalty: 2, logitBias: [3: -.infinity],
                               logprobs: 20, seed: 1).validate(vocabularySize: 10)
        let bad: [(SamplingParameters, String)] = [
            (SamplingParameters(temperature: -0.1), "temperature"),
            (SamplingParameters(temperature: .nan), "temperature"),
            (SamplingParameters(topK: -1), "topK"),
            (SamplingParameters(topP: 0), "topP"),
            (SamplingParameters(topP: 1.01), "topP"),
            (SamplingParameters(minP: -0.1), "minP"),
            (SamplingParameters(minP: 1.5), "minP"),
            (SamplingParameters(repetitionPenalty: 0), "repetitionPenalty"),
            (SamplingParameters(presencePenalty: 2.5), "presencePenalty"),
            (SamplingParameters(frequencyPenalty: -3), "frequencyPenalty"),
            (SamplingParameters(logitBias: [-1: 1]), "logitBias"),
            (SamplingParameters(logitBias: [0: .infinity]), "logitBias"),
            (SamplingParameters(logprobs: 21), "logprobs"),
            (SamplingParameters(logprobs: -1), "logprobs"),
        ]
        for (parameters, field) in bad {
            #expect(throws: SamplingParametersError.self) { try parameters.validate() }
            do {
                try parameters.validate()
            } catch let error as SamplingParametersError {
                #expect(error.parameter == field)
                #expect(error.description.contains(field))
            }
        }
        #expect(throws: SamplingParametersError.self) {
            try SamplingParameters(logitBias: [10: 1]).validate(vocabularySize: 10)
        }
    }

    @Test func greedyNeverTouchesTheGenerator() {
        // Interleaving greedy steps must not change a seeded request's draws.
        var plain = Sampler(SamplingParameters(temperature: 1, seed: 11))
        let expected = (0 ..< 32).map { _ in sampleOnce(&plain, fiveTokens).token.id }
        var mixed = Sampler(SamplingParameters(temperature: 1, seed: 11))
        var greedy = Sampler(.greedy)
        var observed: [Int] = []
        for _ in 0 ..< 32 {
            _ = sampleOnce(&greedy, fiveTokens)
            observed.append(sampleOnce(&mixed, fiveTokens).token.id)
        }
        #expect(observed == expected)
    }
}
