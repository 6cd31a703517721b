import ArgumentParser
import Cache
import Engine
import Foundation
import Kernels
import Models

/// `pagoda bench [--model PATH] -p 128,512 -n 128 -t 1,2 -r 5 [--json]`: prompt processing and
/// generation speed with the meaning of llama-bench's tests, so the two can be compared line by line.
///
/// - `ppN`: one engine step that computes an N-token prompt from an empty cache; tokens/s = N / time.
/// - `tgN`: N single-token steps from an empty cache (no sampling: the next token is fixed);
///   tokens/s = N / time.
/// - `tgN@dD xS` (with `--depth D` or `--sequences S` other than 0 and 1): S sequences, each first
///   given a D-token prompt (not timed), then N steps that each decode one token of every sequence,
///   as a serving engine's decode steps do; tokens/s = S * N / time.
/// Each test runs once to warm up, then `-r` times; the mean and standard deviation of the per-run
/// tokens/s are reported, as llama-bench does.
struct BenchModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Prompt processing (ppN) and generation (tgN) tokens/s, peak RSS and decode GB/s.")

    @Option(help: "A .gguf file or a Hugging Face model folder (default: SmolLM2-135M-Instruct Q4_1, fetched on first use).")
    var model: String?

    @Option(name: .customShort("p"), help: "Comma-separated prompt lengths (0 for none).")
    var prompts: String = "512"

    @Option(name: .customShort("n"), help: "Comma-separated numbers of generated tokens (0 for none).")
    var generated: String = "128"

    @Option(help: "Comma-separated numbers of sequences decoded together in each tgN step.")
    var sequences: String = "1"

    @Option(name: [.customShort("d"), .long], help: "Prompt tokens each sequence of a tgN test holds before its timed steps (computed untimed).")
    var depth: Int = 0

    @Option(name: .customShort("t"), help: "Comma-separated worker thread counts (default: one per core).")
    var threads: String?

    @Option(name: .customShort("r"), help: "Timed repetitions of each test.")
    var repetitions: Int = 5

    @OptionGroup var cacheOptions: CacheOptions
    @OptionGroup var activationOptions: ActivationOptions

    @Flag(help: "Print JSON: {\"results\": [{\"test\", \"threads\", \"tokens_per_s\", \"stddev\"}], \"peak_rss_bytes\"}.")
    var json = false

    func validate() throws {
        guard repetitions >= 1 else { throw ValidationError("-r must be at least 1, got \(repetitions)") }
        guard depth >= 0 else { throw ValidationError("-d must be at least 0, got \(depth)") }
    }

    func run() throws {
        let promptLengths = try BenchAttention.parseList(prompts, "-p", allowZero: true).filter { $0 > 0 }
        let generatedCounts = try BenchAttention.parseList(generated, "-n", allowZero: true).filter { $0 > 0 }
        let sequenceCounts = try BenchAttention.parseList(sequences, "--sequences")
        let threadCounts = try threads.map { try BenchAttention.parseList($0, "-t") } ?? [WorkerPool.availableCores]
        let path = try model ?? DefaultModelPath.resolve()

        var results: [Measurement] = []
        var bandwidths: [Int: Double] = [:]
        var streamedBytes = 0
        if !json { print("model: \(path)") }
        for threadCount in threadCounts {
            let pool = WorkerPool(threads: threadCount)
            let loaded = try ModelLoader.load(path: path, pool: pool, activations: activationOptions.precision)
            streamedBytes = loaded.model.streamedWeightBytes
            let needed = max(promptLengths.max() ?? 1, depth + (generatedCounts.max() ?? 0))
            let mostSequences = sequenceCounts.max() ?? 1
            // As llama-bench sizes its context to the test, the default cache holds the longest test.
            var cacheSettings = cacheOptions.resolved()
            cacheSettings.maxSequences = mostSequences
            cacheSettings.maxStepTokens = max(needed, mostSequences)
            if cacheOptions.kvCacheMemory == nil {
                let tokens = mostSequences * (needed + 2 * cacheOptions.blockSize)
                cacheSettings.memoryBytes = PagedKVCache.memoryToHold(tokens: tokens, config: loaded.config, options: cacheSettings)
            }
            cacheSettings.prefixCaching = false  // every repetition computes its whole prompt
            let cache = try PagedKVCache(config: loaded.config, options: cacheSettings)
            guard cache.tokenCapacity >= needed * mostSequences else {
                throw ValidationError("the KV cache holds \(cache.tokenCapacity) tokens but a test needs \(needed * mostSequences); raise --kv-cache-memory")
            }
            let runner = ModelRunner(model: loaded.model, cache: cache)
            let vocab = loaded.config.vocabSize
            for length in promptLengths {
                let m = try measure(test: "pp\(length)", threads: threadCount, tokens: length) {
                    try Self.prefill(runner, tokens: Self.tokens(length, vocab: vocab, seed: 1))
                }
                results.append(m)
                if !json { print(m.line) }
            }
            for count in generatedCounts {
                for sequenceCount in sequenceCounts {
                    var name = "tg\(count)"
                    if depth > 0 { name += "@d\(depth)" }
                    if sequenceCount > 1 { name += " x\(sequenceCount)" }
                    var m = try measure(test: name, threads: threadCount, tokens: count * sequenceCount) {
                        try Self.generate(runner, steps: count, sequences: sequenceCount, depth: depth, vocab: vocab)
                    }
                    if sequenceCount == 1 { m.weightsGBPerSecond = Double(streamedBytes) * m.tokensPerSecond / 1e9 }
                    results.append(m)
                    if !json { print(m.line) }
                }
            }
        }
        // Read before the bandwidth probe, whose 512 MiB buffer is not the model's.
        let peak = Self.peakResidentBytes()
        for threadCount in threadCounts {
            bandwidths[threadCount] = AttentionBenchmark.measuredReadBandwidth(bytes: 512 << 20, pool: WorkerPool(threads: threadCount))
        }
        if json {
            let rows = results.map { m -> String in
                var fields = "\"test\": \"\(m.test)\", \"threads\": \(m.threads), \"tokens_per_s\": \(m.tokensPerSecond), \"stddev\": \(m.stddev)"
                if let gb = m.weightsGBPerSecond {
                    fields += ", \"weights_gb_per_s\": \(gb), \"read_bandwidth_gb_per_s\": \(bandwidths[m.threads] ?? 0)"
                }
                return "{\(fields)}"
            }
            print("{\"results\": [\(rows.joined(separator: ", "))], \"peak_rss_bytes\": \(peak), \"weight_bytes_per_token\": \(streamedBytes)}")
        } else {
            print(String(format: "peak RSS %.1f MiB; weights streamed per generated token %.1f MB", Double(peak) / 1048576, Double(streamedBytes) / 1e6))
            for (threads, gb) in bandwidths.sorted(by: { $0.key < $1.key }) {
                print(String(format: "machine read bandwidth with %d thread(s): %.1f GB/s", threads, gb))
            }
        }
    }

    /// One test's statistics over its timed repetitions.
    struct Measurement {
        var test: String
        var threads: Int
        var tokensPerSecond: Double
        var stddev: Double
        var weightsGBPerSecond: Double?

        var line: String {
            var s = String(format: "%-8@ threads %2d  %9.1f ± %6.1f tok/s", test as NSString, threads, tokensPerSecond, stddev)
            if let gb = weightsGBPerSecond { s += String(format: "  (weights %.1f GB/s)", gb) }
            return s
        }
    }

    /// Runs `body` once to warm up and then `repetitions` times; `body` returns the time of its
    /// measured part.
    func measure(test: String, threads: Int, tokens: Int, _ body: () throws -> Duration) throws -> Measurement {
        _ = try body()
        var rates: [Double] = []
        for _ in 0 ..< repetitions {
            rates.append(Double(tokens) / (try body()).seconds)
        }
        let mean = rates.reduce(0, +) / Double(rates.count)
        let variance = rates.count > 1 ? rates.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(rates.count - 1) : 0
        return Measurement(test: test, threads: threads, tokensPerSecond: mean, stddev: variance.squareRoot())
    }

    /// Fixed pseudo-random token ids (llama-bench also feeds arbitrary ids).
    static func tokens(_ count: Int, vocab: Int, seed: UInt64) -> [Int] {
        var generator = SplitMix64(state: seed)
        return (0 ..< count).map { _ in Int(generator.next() % UInt64(vocab)) }
    }

    /// The one sequence a prompt test runs at a time (freed before the next run admits it again).
    static let benchSequence = SequenceID(1)

    /// Computes a whole prompt in one step over an empty cache (prefix caching is off); returns
    /// the step's time.
    static func prefill(_ runner: ModelRunner, tokens: [Int]) throws -> Duration {
        let id = benchSequence
        try runner.admit(id, prompt: tokens)
        defer { try? runner.free(id) }
        let clock = ContinuousClock()
        let start = clock.now
        _ = try runner.step([(id: id, count: tokens.count, logits: .last)])
        return clock.now - start
    }

    /// `steps` steps that each decode one token of `sequences` sequences, after an untimed
    /// `depth`-token prompt per sequence (from an empty cache when `depth` is 0); returns the time
    /// of the steps alone.
    static func generate(_ runner: ModelRunner, steps: Int, sequences: Int, depth: Int, vocab: Int) throws -> Duration {
        let ids = (0 ..< sequences).map { SequenceID(100 + $0) }
        let streams = ids.indices.map { tokens(depth + steps, vocab: vocab, seed: 2 + UInt64($0)) }
        defer { for id in ids { try? runner.free(id) } }
        for (id, stream) in zip(ids, streams) {
            try runner.admit(id, prompt: Array(stream[0 ..< max(depth, 1)]))
        }
        if depth > 0 {
            // One prefill step per sequence, then each is given its next fixed token to decode.
            for id in ids { _ = try runner.step([(id: id, count: depth, logits: .none)]) }
            for (id, stream) in zip(ids, streams) { try runner.append(id, token: stream[depth]) }
        }
        let decodes = ids.map { (id: $0, count: 1, logits: LogitsRequest.last) }
        let clock = ContinuousClock()
        let start = clock.now
        for step in 0 ..< steps {
            _ = try runner.step(decodes)
            if step + 1 < steps {
                for (id, stream) in zip(ids, streams) { try runner.append(id, token: stream[depth + 1 + step]) }
            }
        }
        return clock.now - start
    }

    /// The process's peak resident set size (Linux reports kilobytes, macOS bytes).
    static func peakResidentBytes() -> Int {
        var usage = rusage()
        #if os(Linux)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        #else
        getrusage(RUSAGE_SELF, &usage)
        #endif
        #if os(Linux)
        return usage.ru_maxrss * 1024
        #else
        return usage.ru_maxrss
        #endif
    }
}
