import Cache
import Foundation
import Models
import Tokenizers

extension Duration {
    /// The duration in seconds.
    public var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) * 1e-18
    }
}

/// What one request asks for beyond its prompt.
public struct GenerationParameters: Sendable {
    public var sampling: SamplingParameters
    public var maxTokens: Int
    /// Extra token ids that end the request (the tokenizer's stop tokens always do, unless `ignoreEOS`).
    public var stopTokenIds: Set<Int>
    public var ignoreEOS: Bool
    /// Texts that end the request; they are matched across token boundaries and never emitted.
    public var stopStrings: [String]
    /// Higher runs first; equal priorities are served first come, first served.
    public var priority: Int
    /// Independent choices for the same prompt. They share the prompt's KV blocks: choices after
    /// the first start once the first has computed the prompt, and reuse its full blocks from the
    /// prefix cache. Choice `i` samples with seed `seed + i`.
    public var n: Int

    public init(sampling: SamplingParameters = .greedy, maxTokens: Int = 128, stopTokenIds: Set<Int> = [], ignoreEOS: Bool = false, stopStrings: [String] = [], priority: Int = 0, n: Int = 1) {
        self.n = n
        self.sampling = sampling
        self.maxTokens = maxTokens
        self.stopTokenIds = stopTokenIds
        self.ignoreEOS = ignoreEOS
        self.stopStrings = stopStrings
        self.priority = priority
    }
}

/// One streamed piece of a request's output.
public struct GenerationOutput: Sendable {
    /// Which of the request's `n` choices this piece belongs to.
    public var index: Int
    /// New text since the previous output of this choice (never a broken UTF-8 character).
    public var textDelta: String
    /// New token ids since the previous output.
    public var tokenIds: [Int]
    /// With `logprobs` set: per new token, its log-probability and the most likely alternatives.
    public var logprobs: [SampledToken]
    /// Set on the last output of this choice.
    public var finishReason: FinishReason?
}

/// Engine-wide options.
public struct EngineOptions: Sendable {
    public var cache: KVCacheOptions
    public var scheduler: SchedulerOptions

    public init(cache: KVCacheOptions = KVCacheOptions(), scheduler: SchedulerOptions = SchedulerOptions()) {
        self.cache = cache
        self.scheduler = scheduler
    }
}

/// Counters of the engine, read at any time.
public struct EngineMetrics: Sendable {
    public var running = 0
    public var waiting = 0
    /// Fraction of KV blocks in use by live sequences.
    public var kvCacheUsage = 0.0
    /// Prompt tokens served from the prefix cache, over prompt tokens looked up.
    public var prefixCacheHitRate = 0.0
    public var preemptions = 0
    public var promptTokens = 0
    public var generatedTokens = 0
    public var steps = 0
    public var finishedRequests = 0
    /// Tokens pushed through the model (prefill and decode), and prompt tokens whose K/V came
    /// from the prefix cache instead.
    public var computedTokens = 0
    public var prefixCachedTokens = 0
    /// Seconds from submission to each choice's first token.
    public var timeToFirstToken = LatencySummary()
    /// Seconds between consecutive tokens of a choice.
    public var interTokenLatency = LatencySummary()
    /// Seconds the engine thread spent in steps (for tokens/s).
    public var busySeconds = 0.0
    /// Generated tokens per second of engine work.
    public var generationTokensPerSecond: Double { busySeconds > 0 ? Double(generatedTokens) / busySeconds : 0 }
}

/// Count, total and extremes of a latency, plus the raw recent values for percentiles.
public struct LatencySummary: Sendable {
    public private(set) var count = 0
    public private(set) var total = 0.0
    public private(set) var maximum = 0.0
    /// The most recent values (at most `window`), for percentiles.
    public private(set) var recent: [Double] = []
    static let window = 4096

    public var mean: Double { count > 0 ? total / Double(count) : 0 }

    mutating func record(_ seconds: Double) {
        count += 1
        total += seconds
        maximum = max(maximum, seconds)
        if recent.count == Self.window { recent.removeFirst(Self.window / 2) }
        recent.append(seconds)
    }

    /// The `p`-th percentile (0...100) of the recent values.
    public func percentile(_ p: Double) -> Double {
        guard !recent.isEmpty else { return 0 }
        let sorted = recent.sorted()
        let rank = Int((p / 100 * Double(sorted.count - 1)).rounded())
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }
}

/// Errors a request can end with.
public enum EngineError: Error, CustomStringConvertible, Equatable {
    case requestNeverFits(tokens: Int, capacity: Int)
    case invalidRequest(String)
    case stopped

    public var description: String {
        switch self {
        case .requestNeverFits(let tokens, let capacity):
            "the request needs up to \(tokens) tokens of KV cache, more than the pool's \(capacity); raise --kv-cache-memory or lower max_tokens"
        case .invalidRequest(let why): "invalid request: \(why)"
        case .stopped: "the engine stopped"
        }
    }
}

/// The continuous-batching engine: requests from any task are queued, a dedicated thread runs
/// scheduler steps (one ragged model step each) while there is work, and every request streams its
/// tokens back through an `AsyncThrowingStream`. Dropping or cancelling a stream aborts its request;
/// its blocks are freed at the next step.
public final class InferenceEngine: @unchecked Sendable {
    public let loaded: LoadedModel
    public let options: EngineOptions
    private let runner: ModelRunner
    private let scheduler: Scheduler
    private let lock = NSCondition()
    private var incoming: [(ScheduledSequence, RequestState)] = []
    private var aborted: Set<SequenceID> = []
    private var states: [SequenceID: RequestState] = [:]
    private var nextID = 0
    private var stopping = false
    private var metricsSnapshot = EngineMetrics()
    private var thread: Thread?

    /// Per-choice output state, touched only by the engine thread after submission.
    final class RequestState {
        let parameters: GenerationParameters
        /// Choice index within its request.
        let index: Int
        let submitted: ContinuousClock.Instant
        var lastToken: ContinuousClock.Instant?
        /// Choices waiting for this one's prompt to be computed (n > 1), then admitted.
        var followers: [ScheduledSequence] = []
        /// Streams still open for the request: the stream finishes when the last choice ends.
        let openChoices: OpenChoices
        var sampler: Sampler
        /// Prompt and output tokens, for the repetition/presence/frequency penalties.
        var history: TokenHistory
        var stopMatcher: StopStringMatcher
        var decoder: StreamingDecoder?
        let continuation: AsyncThrowingStream<GenerationOutput, Error>.Continuation
        init(parameters: GenerationParameters, index: Int, openChoices: OpenChoices, prompt: [Int], decoder: StreamingDecoder?, continuation: AsyncThrowingStream<GenerationOutput, Error>.Continuation) {
            self.parameters = parameters
            self.index = index
            self.openChoices = openChoices
            submitted = ContinuousClock.now
            var sampling = parameters.sampling
            if index > 0 { sampling.seed = sampling.seed.map { $0 &+ UInt64(index) } }
            sampler = Sampler(sampling)
            history = TokenHistory(prompt: prompt)
            stopMatcher = StopStringMatcher(parameters.stopStrings)
            self.decoder = decoder
            self.continuation = continuation
        }
    }

    /// How many choices of one request are still running.
    final class OpenChoices {
        var count: Int
        init(_ count: Int) { self.count = count }
    }

    public init(model loaded: LoadedModel, options: EngineOptions = EngineOptions()) throws {
        self.loaded = loaded
        self.options = options
        var cacheOptions = options.cache
        cacheOptions.maxSequences = options.scheduler.maxNumSeqs
        cacheOptions.maxStepTokens = options.scheduler.maxNumBatchedTokens
        runner = ModelRunner(model: loaded.model, cache: try PagedKVCache(config: loaded.config, options: cacheOptions))
        scheduler = Scheduler(runner: runner, options: options.scheduler)
        let thread = Thread { [weak self] in self?.loop() }
        thread.name = "pagoda-engine"
        self.thread = thread
        thread.start()
    }

    deinit { shutdown() }

    /// Stops the engine thread; requests still running end with `EngineError.stopped`.
    public func shutdown() {
        lock.lock()
        stopping = true
        lock.signal()
        lock.unlock()
    }

    /// The tokenizer's ids for a text prompt.
    public func encode(_ prompt: String) throws -> [Int] {
        guard let tokenizer = loaded.tokenizer else { throw EngineError.invalidRequest("the model has no tokenizer; pass token ids") }
        return tokenizer.encode(prompt, addSpecialTokens: true)
    }

    /// Streams the continuation of a text prompt.
    public func generate(prompt: String, parameters: GenerationParameters = GenerationParameters()) -> AsyncThrowingStream<GenerationOutput, Error> {
        do {
            return generate(promptIds: try encode(prompt), parameters: parameters)
        } catch {
            return AsyncThrowingStream { $0.finish(throwing: error) }
        }
    }

    /// Streams the continuation of a tokenized prompt.
    public func generate(promptIds: [Int], parameters: GenerationParameters = GenerationParameters()) -> AsyncThrowingStream<GenerationOutput, Error> {
        AsyncThrowingStream { continuation in
            do {
                try submit(promptIds: promptIds, parameters: parameters, continuation: continuation)
            } catch {
                continuation.finish(throwing: error)
            }
        }
    }

    private func submit(promptIds: [Int], parameters: GenerationParameters, continuation: AsyncThrowingStream<GenerationOutput, Error>.Continuation) throws {
        let config = loaded.config
        guard !promptIds.isEmpty else { throw GenerationError.emptyPrompt }
        guard parameters.maxTokens >= 1 else { throw EngineError.invalidRequest("max_tokens must be at least 1") }
        try parameters.sampling.validate(vocabularySize: config.vocabSize)
        if let bad = promptIds.first(where: { $0 < 0 || $0 >= config.vocabSize }) {
            throw EngineError.invalidRequest("token id \(bad) is outside the vocabulary (0..<\(config.vocabSize))")
        }
        let total = promptIds.count + parameters.maxTokens
        guard promptIds.count < config.contextLength else {
            throw GenerationError.promptTooLong(tokens: promptIds.count, context: config.contextLength)
        }
        let needed = min(total, config.contextLength)
        guard runner.cache.tokenCapacity >= needed else {
            throw EngineError.requestNeverFits(tokens: needed, capacity: runner.cache.tokenCapacity)
        }
        guard parameters.n >= 1, parameters.n <= 128 else { throw EngineError.invalidRequest("n must be between 1 and 128, got \(parameters.n)") }
        lock.lock()
        defer { lock.unlock() }
        guard !stopping else { throw EngineError.stopped }
        let open = OpenChoices(parameters.n)
        var ids: [SequenceID] = []
        var choices: [(ScheduledSequence, RequestState)] = []
        for index in 0 ..< parameters.n {
            let id = SequenceID(nextID)
            nextID += 1
            ids.append(id)
            let sequence = ScheduledSequence(id: id, prompt: promptIds, priority: parameters.priority, arrival: id.rawValue)
            choices.append((sequence, RequestState(
                parameters: parameters, index: index, openChoices: open, prompt: promptIds,
                decoder: loaded.tokenizer?.makeStreamingDecoder(), continuation: continuation)))
        }
        // Later choices wait for the first one's prompt, then share its blocks through the prefix cache.
        choices[0].1.followers = choices.dropFirst().map(\.0)
        let choiceIDs = ids
        continuation.onTermination = { [weak self] reason in
            if case .cancelled = reason { for id in choiceIDs { self?.abort(id) } }
        }
        incoming.append(contentsOf: choices)
        lock.signal()
    }

    private func abort(_ id: SequenceID) {
        lock.lock()
        aborted.insert(id)
        lock.signal()
        lock.unlock()
    }

    /// A snapshot of the engine's counters.
    public var metrics: EngineMetrics {
        lock.lock()
        defer { lock.unlock() }
        return metricsSnapshot
    }

    // MARK: The engine thread

    private var sequences: [SequenceID: ScheduledSequence] = [:]

    private func loop() {
        while true {
            lock.lock()
            while incoming.isEmpty && aborted.isEmpty && !scheduler.hasWork && !stopping { lock.wait() }
            if stopping {
                lock.unlock()
                failAll(EngineError.stopped)
                return
            }
            let arrivals = incoming
            incoming.removeAll()
            let cancelled = aborted
            aborted.removeAll()
            lock.unlock()

            for (sequence, state) in arrivals {
                states[sequence.id] = state
                sequences[sequence.id] = sequence
                if state.index == 0 {
                    scheduler.add(sequence)
                    metricsSnapshotUpdate { $0.promptTokens += sequence.promptCount }
                }
            }
            for id in cancelled {
                if let sequence = sequences[id] { end(sequence, reason: .abort, error: nil) }
            }
            do {
                let started = ContinuousClock.now
                let worked = try step()
                let elapsed = (ContinuousClock.now - started).seconds
                metricsSnapshotUpdate { if worked { $0.busySeconds += elapsed } }
            } catch {
                // A step that fails (which validated inputs should never cause) fails every request
                // in it rather than leaving them hanging.
                failAll(error)
            }
        }
    }

    /// Runs one scheduler step; returns whether the model ran.
    private func step() throws -> Bool {
        guard scheduler.hasWork else { return false }
        let plan = try scheduler.schedule()
        guard !plan.items.isEmpty else { return false }
        var logits = try runner.stepLogits(plan.items.map { ($0.sequence.id, $0.count, $0.wantsLogits ? .last : .none) })
        var produced = 0
        for (index, item) in plan.items.enumerated() where item.wantsLogits {
            let sequence = item.sequence
            guard let state = states[sequence.id] else { continue }
            // The sampler works on the row in place (penalties, temperature): each row is sampled once.
            let rows = logits.rows(of: index)
            let sampled = logits.values.withUnsafeMutableBufferPointer {
                state.sampler.sample(UnsafeMutableBufferPointer(rebasing: $0[rows]), history: state.history)
            }
            let token = sampled.id
            state.history.append(token)
            // The prompt is computed: waiting choices of the same request can now share it.
            for follower in state.followers { scheduler.add(follower) }
            state.followers.removeAll()
            let now = ContinuousClock.now
            let latency = (now - (state.lastToken ?? state.submitted)).seconds
            let isFirst = state.lastToken == nil
            state.lastToken = now
            metricsSnapshotUpdate { m in
                if isFirst { m.timeToFirstToken.record(latency) } else { m.interTokenLatency.record(latency) }
            }
            sequence.tokens.append(token)
            try runner.append(sequence.id, token: token)
            produced += 1
            let isStop = !state.parameters.ignoreEOS && ((loaded.tokenizer?.stopTokenIds.contains(token) ?? false) || state.parameters.stopTokenIds.contains(token))
            let (text, stoppedByString) = isStop ? ("", false) : state.stopMatcher.push(state.decoder?.push(token) ?? "")
            state.continuation.yield(GenerationOutput(
                index: state.index, textDelta: text, tokenIds: [token],
                logprobs: state.parameters.sampling.logprobs == nil ? [] : [sampled], finishReason: nil))
            if isStop || stoppedByString {
                end(sequence, reason: .stop, error: nil)
            } else if sequence.generated >= state.parameters.maxTokens || sequence.tokens.count >= loaded.config.contextLength {
                end(sequence, reason: .length, error: nil)
            }
        }
        metricsSnapshotUpdate { m in
            m.generatedTokens += produced
            m.steps += 1
        }
        return true
    }

    private func end(_ sequence: ScheduledSequence, reason: FinishReason, error: Error?) {
        try? scheduler.finish(sequence)
        sequences[sequence.id] = nil
        // Counters are current before the caller hears the request is over.
        metricsSnapshotUpdate { _ in }
        guard let state = states.removeValue(forKey: sequence.id) else { return }
        // Choices still waiting on this one's prompt start now (or end with it on error/abort).
        for follower in state.followers {
            if error == nil && reason != .abort { scheduler.add(follower) } else { end(follower, reason: reason, error: error) }
        }
        state.followers.removeAll()
        state.openChoices.count -= 1
        metricsSnapshotUpdate { $0.finishedRequests += 1 }
        if let error {
            state.continuation.finish(throwing: error)
        } else {
            // Text held back by the decoder or the stop matcher is released unless a stop string ended it.
            let (decoded, stopped) = state.stopMatcher.push(state.decoder?.finish() ?? "")
            let tail = stopped || state.stopMatcher.stopped ? decoded : decoded + state.stopMatcher.finish()
            state.continuation.yield(GenerationOutput(index: state.index, textDelta: tail, tokenIds: [], logprobs: [], finishReason: reason))
            if state.openChoices.count == 0 { state.continuation.finish() }
        }
    }

    private func failAll(_ error: Error) {
        for sequence in Array(sequences.values) { end(sequence, reason: .abort, error: error) }
        lock.lock()
        let pending = incoming
        incoming.removeAll()
        lock.unlock()
        for (_, state) in pending { state.continuation.finish(throwing: error) }
    }

    private func metricsSnapshotUpdate(_ change: (inout EngineMetrics) -> Void) {
        let manager = runner.cache.manager
        lock.lock()
        change(&metricsSnapshot)
        metricsSnapshot.running = scheduler.running.count
        metricsSnapshot.waiting = scheduler.waiting.count
        metricsSnapshot.kvCacheUsage = manager.usage
        metricsSnapshot.prefixCacheHitRate = manager.prefixCacheHitRate
        metricsSnapshot.preemptions = scheduler.preemptions
        metricsSnapshot.computedTokens = runner.computedTokens
        metricsSnapshot.prefixCachedTokens = runner.prefixCachedTokens
        lock.unlock()
    }
}
