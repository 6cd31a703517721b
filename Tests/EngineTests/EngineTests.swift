import Cache
import Engine
import Formats
import Models
import Testing
import TestSupport

/// The continuous-batching engine on the default model: many concurrent requests give exactly what
/// each would give alone, also when the KV pool is so small that sequences are preempted.
@Suite(.serialized) struct EngineTests {
    static let loaded = Result { try ModelLoader.load(path: DefaultModel.path()) }

    /// 32 requests with different prompts (slices of the fixture prompts) and lengths.
    static func requests() throws -> [(ids: [Int], maxTokens: Int)] {
        let reference = try Fixtures.json("smollm2-135m/reference.json")
        let prompts = try #require(reference["prompts"] as? [[String: Any]]).compactMap { $0["ids"] as? [Int] }
        return (0 ..< 32).map { k in
            let source = prompts[k % prompts.count]
            return (Array(source.prefix(6 + (5 * k) % 60)), 4 + (k * 7) % 13)
        }
    }

    static func collect(_ stream: AsyncThrowingStream<GenerationOutput, Error>) async throws -> (ids: [Int], text: String, finish: FinishReason?) {
        var ids: [Int] = [], text = "", finish: FinishReason?
        for try await output in stream {
            ids += output.tokenIds
            text += output.textDelta
            if let reason = output.finishReason { finish = reason }
        }
        return (ids, text, finish)
    }

    static func runConcurrently(_ engine: InferenceEngine, _ requests: [(ids: [Int], maxTokens: Int)]) async throws -> [[Int]] {
        try await withThrowingTaskGroup(of: (Int, [Int]).self) { group in
            for (index, request) in requests.enumerated() {
                let stream = engine.generate(promptIds: request.ids, parameters: GenerationParameters(maxTokens: request.maxTokens, ignoreEOS: true))
                group.addTask { (index, try await collect(stream).ids) }
            }
            var results = Array(repeating: [Int](), count: requests.count)
            for try await (index, ids) in group { results[index] = ids }
            return results
        }
    }

    @Test func concurrentRequestsMatchSequentialOnesAlsoUnderPreemption() async throws {
        let loaded = try Self.loaded.get()
        let requests = try Self.requests()

        let alone = try InferenceEngine(model: loaded, options: EngineOptions(cache: KVCacheOptions(memoryBytes: 64 << 20, prefixCaching: false)))
        defer { alone.shutdown() }
        var sequential: [[Int]] = []
        for request in requests {
            let stream = alone.generate(promptIds: request.ids, parameters: GenerationParameters(maxTokens: request.maxTokens, ignoreEOS: true))
            sequential.append(try await Self.collect(stream).ids)
        }
        for (request, output) in zip(requests, sequential) { #expect(output.count == request.maxTokens) }

        let batched = try InferenceEngine(model: loaded, options: EngineOptions(cache: KVCacheOptions(memoryBytes: 256 << 20)))
        defer { batched.shutdown() }
        let concurrent = try await Self.runConcurrently(batched, requests)
        #expect(concurrent == sequential)
        #expect(batched.metrics.preemptions == 0)

        // 48 blocks of 16 tokens: far less than the 32 requests need at once.
        let blockBytes = 16 * 30 * 2 * 3 * 64 * 4
        let small = try InferenceEngine(model: loaded, options: EngineOptions(
            cache: KVCacheOptions(memoryBytes: 48 * blockBytes), scheduler: SchedulerOptions(maxNumSeqs: 32, maxNumBatchedTokens: 256)))
        defer { small.shutdown() }
        let preempted = try await Self.runConcurrently(small, requests)
        #expect(preempted == sequential)
        #expect(small.metrics.preemptions > 0, "the small pool must force preemption")
        #expect(small.metrics.kvCacheUsage == 0)
    }

    @Test func cancelledStreamFreesItsBlocksAndBadRequestsFail() async throws {
        let loaded = try Self.loaded.get()
        let engine = try InferenceEngine(model: loaded, options: EngineOptions(cache: KVCacheOptions(memoryBytes: 64 << 20)))
        defer { engine.shutdown() }
        let task = Task {
            var count = 0
            for try await output in engine.generate(prompt: "Tell me a long story about a dragon.", parameters: GenerationParameters(maxTokens: 500, ignoreEOS: true)) {
                count += output.tokenIds.count
                if count >= 3 { break }
            }
            return count
        }
        #expect(try await task.value == 3)
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline, engine.metrics.kvCacheUsage > 0 || engine.metrics.running > 0 {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(engine.metrics.kvCacheUsage == 0)
        #expect(engine.metrics.running == 0)

        let tooLong = Array(repeating: 100, count: 9000)
        await #expect(throws: GenerationError.self) { _ = try await Self.collect(engine.generate(promptIds: tooLong)) }
        let neverFits = try InferenceEngine(model: loaded, options: EngineOptions(cache: KVCacheOptions(memoryBytes: 4 << 20)))
        defer { neverFits.shutdown() }
        await #expect(throws: EngineError.self) {
            _ = try await Self.collect(neverFits.generate(promptIds: Array(repeating: 100, count: 50), parameters: GenerationParameters(maxTokens: 1000)))
        }
    }

    @Test func stopTokenEndsTheRequest() async throws {
        let loaded = try Self.loaded.get()
        let engine = try InferenceEngine(model: loaded, options: EngineOptions(cache: KVCacheOptions(memoryBytes: 64 << 20)))
        defer { engine.shutdown() }
        // The chat fixture's greedy continuation reaches <|im_end|> (id 2) at its `first_eos_step`.
        let reference = try Fixtures.json("smollm2-135m/reference.json")
        let chat = try #require((reference["prompts"] as? [[String: Any]])?.first { $0["name"] as? String == "chat" })
        let ids = try #require(chat["ids"] as? [Int])
        let greedy = try #require(chat["greedy"] as? [String: Any])
        let expected = try #require(greedy["ids"] as? [Int])
        let eos = try #require(greedy["first_eos_step"] as? Int)
        let result = try await Self.collect(engine.generate(promptIds: ids, parameters: GenerationParameters(maxTokens: 32)))
        #expect(result.ids == Array(expected[...eos]))
        #expect(result.finish == .stop)
    }

    @Test func seededSamplingIsReproducibleUnderLoad() async throws {
        let loaded = try Self.loaded.get()
        let engine = try InferenceEngine(model: loaded, options: EngineOptions(cache: KVCacheOptions(memoryBytes: 64 << 20)))
        defer { engine.shutdown() }
        let parameters = GenerationParameters(sampling: SamplingParameters(temperature: 0.9, topP: 0.95, seed: 7), maxTokens: 12, ignoreEOS: true)
        let alone = try await Self.collect(engine.generate(prompt: "Once upon a time", parameters: parameters)).ids
        let underLoad = try await withThrowingTaskGroup(of: (Int, [Int]).self) { group in
            for k in 0 ..< 8 {
                let other = GenerationParameters(sampling: SamplingParameters(temperature: 1, seed: UInt64(100 + k)), maxTokens: 10 + k, ignoreEOS: true)
                let stream = engine.generate(prompt: "Story number \(k):", parameters: other)
                group.addTask { (k, try await Self.collect(stream).ids) }
            }
            let mine = engine.generate(prompt: "Once upon a time", parameters: parameters)
            group.addTask { (-1, try await Self.collect(mine).ids) }
            var result: [Int] = []
            for try await (k, ids) in group where k == -1 { result = ids }
            return result
        }
        #expect(underLoad == alone)
        let otherSeed = GenerationParameters(sampling: SamplingParameters(temperature: 0.9, topP: 0.95, seed: 8), maxTokens: 12, ignoreEOS: true)
        #expect(try await Self.collect(engine.generate(prompt: "Once upon a time", parameters: otherSeed)).ids != alone)
    }

    @Test func stopStringIsCaughtAndNotEmitted() async throws {
        let loaded = try Self.loaded.get()
        let engine = try InferenceEngine(model: loaded, options: EngineOptions(cache: KVCacheOptions(memoryBytes: 64 << 20)))
        defer { engine.shutdown() }
        let plain = try await Self.collect(engine.generate(prompt: "The capital of France is", parameters: GenerationParameters(maxTokens: 12)))
        #expect(plain.text.hasPrefix(" Paris.\n\n"))
        // "s.\n" spans the tokens "Paris", "." and "\n".
        let stopped = try await Self.collect(engine.generate(prompt: "The capital of France is", parameters: GenerationParameters(maxTokens: 12, stopStrings: ["s.\n"])))
        #expect(stopped.text == " Pari")
        #expect(stopped.finish == .stop)
    }
}

/// n > 1 choices and logprobs.
@Suite(.serialized) struct EngineChoicesTests {
    @Test func choicesShareThePromptAndStreamLogprobs() async throws {
        let loaded = try EngineTests.loaded.get()
        let engine = try InferenceEngine(model: loaded, options: EngineOptions(cache: KVCacheOptions(memoryBytes: 64 << 20)))
        defer { engine.shutdown() }
        let prompt = Array((0 ..< 100).map { 200 + $0 * 37 % 30000 })
        let single = try await EngineTests.collect(engine.generate(promptIds: prompt, parameters: GenerationParameters(maxTokens: 4, ignoreEOS: true))).ids

        let before = engine.metrics.computedTokens
        var perChoice: [Int: [Int]] = [:]
        var finished = 0
        var logprobCount = 0
        for try await output in engine.generate(promptIds: prompt, parameters: GenerationParameters(
            sampling: SamplingParameters(logprobs: 3), maxTokens: 4, ignoreEOS: true, n: 3)) {
            perChoice[output.index, default: []] += output.tokenIds
            if output.finishReason != nil { finished += 1 }
            for entry in output.logprobs {
                logprobCount += 1
                #expect(entry.topLogprobs.count == 3)
                #expect((entry.logprob ?? 1) <= 0)
                #expect(entry.topLogprobs.first?.id == entry.id, "greedy picks the most likely token")
            }
        }
        #expect(finished == 3)
        #expect(logprobCount == 12)
        #expect(perChoice[0] == single && perChoice[1] == single && perChoice[2] == single)
        // The 96 full-block prompt tokens are computed once, not three times.
        let computed = engine.metrics.computedTokens - before
        #expect(computed <= 100 + 2 * 4 + 3 * 4, "computed \(computed) tokens")

        var sampled: [Int: [Int]] = [:]
        for try await output in engine.generate(promptIds: prompt, parameters: GenerationParameters(
            sampling: SamplingParameters(temperature: 1.0, seed: 11), maxTokens: 8, ignoreEOS: true, n: 2)) {
            sampled[output.index, default: []] += output.tokenIds
        }
        #expect(sampled[0] != sampled[1], "choices sample with different seeds")
    }

    /// Which of two waiting requests the engine served first, read from the prefix cache rather
    /// than from when consumer tasks happen to run (on a loaded machine a late task can drain its
    /// whole buffered stream before an earlier one runs). The high-priority prompt is a 32-token
    /// prefix `S`, the low-priority one `S` plus 20 tokens. Served first, high leaves both blocks
    /// of `S` cached and low reuses 32 tokens; had low gone first, high (which must compute at
    /// least its last token) could reuse only the first block, 16 tokens.
    @Test func higherPriorityIsServedFirst() async throws {
        let loaded = try EngineTests.loaded.get()
        let engine = try InferenceEngine(model: loaded, options: EngineOptions(
            cache: KVCacheOptions(memoryBytes: 64 << 20, blockSize: 16), scheduler: SchedulerOptions(maxNumSeqs: 1, maxNumBatchedTokens: 64)))
        defer { engine.shutdown() }
        // A blocker holds the only sequence slot until it is cancelled, so both requests are
        // waiting together when the slot frees. Its first token proves it holds the slot; it
        // cannot finish on its own before the cancel (1000 tokens).
        let blocker = engine.generate(prompt: "Count slowly:", parameters: GenerationParameters(maxTokens: 1000, ignoreEOS: true))
        let (started, startedContinuation) = AsyncStream.makeStream(of: Void.self)
        let blockerTask = Task {
            var produced = 0
            do {
                for try await output in blocker {
                    produced += output.tokenIds.count
                    startedContinuation.yield()
                }
            } catch {}
            return produced
        }
        for await _ in started { break }
        let cachedBefore = engine.metrics.prefixCachedTokens
        let shared = (0 ..< 32).map { 1000 + 7 * $0 }
        let low = engine.generate(promptIds: shared + (0 ..< 20).map { 3000 + $0 }, parameters: GenerationParameters(maxTokens: 4, ignoreEOS: true, priority: 0))
        let high = engine.generate(promptIds: shared, parameters: GenerationParameters(maxTokens: 2, ignoreEOS: true, priority: 5))
        blockerTask.cancel()
        _ = try await EngineTests.collect(low)
        _ = try await EngineTests.collect(high)
        #expect(await blockerTask.value < 1000, "the blocker was cancelled while both requests waited")
        let reused = engine.metrics.prefixCachedTokens - cachedBefore
        #expect(reused == 32, "high first lets low reuse 32 tokens; low first lets high reuse 16 (got \(reused))")
    }
}

