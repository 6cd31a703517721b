import ArgumentParser
import Foundation
import Engine
import Kernels

/// `pagoda bench`: performance measurements.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks.",
        subcommands: [BenchModel.self, BenchAttention.self, BenchMatMul.self, BenchLoad.self],
        defaultSubcommand: BenchModel.self)
}

/// Decode attention throughput over the paged KV cache, beside the machine's read bandwidth.
struct BenchAttention: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Decode attention throughput (GB/s of K/V read) at several contexts and batch sizes.")

    @Option(help: "Comma-separated context lengths.")
    var contexts: String = "1024,4096,16384"

    @Option(help: "Comma-separated batch sizes (sequences decoding together).")
    var batches: String = "1,8,32"

    @Option(name: .customLong("q-heads"), help: "Query heads (default: SmolLM2's 9).")
    var qHeads: Int = 9

    @Option(name: .customLong("kv-heads"), help: "KV heads (default: SmolLM2's 3).")
    var kvHeads: Int = 3

    @Option(name: .customLong("head-dim"), help: "Head dimension.")
    var headDim: Int = 64

    @Option(name: .customLong("block-size"), help: "Tokens per KV block.")
    var blockSize: Int = 16

    @Option(name: .customLong("kv-cache-dtype"), help: "Comma-separated storage types: fp32, f16, bf16, int8.")
    var dtypes: String = "fp32"

    @Option(help: "Worker threads (default: one per core).")
    var threads: Int?

    @Option(name: .shortAndLong, help: "Timed steps per measurement (the median is reported).")
    var repetitions: Int = 7

    @Flag(help: "Evict the caches before every timed step (a 64 MiB read, not timed), so K/V come from memory as in a model, whose layers' K/V together outgrow the last-level cache.")
    var cold = false

    @Flag(help: "Print JSON.")
    var json = false

    static func parseList(_ text: String, _ name: String, allowZero: Bool = false) throws -> [Int] {
        try text.split(separator: ",").map {
            guard let v = Int($0.trimmingCharacters(in: .whitespaces)), v > 0 || (allowZero && v == 0) else {
                throw ValidationError("\(name): '\($0)' is not a \(allowZero ? "non-negative" : "positive") integer")
            }
            return v
        }
    }

    func run() throws {
        let contextList = try Self.parseList(contexts, "--contexts"), batchList = try Self.parseList(batches, "--batches")
        let dtypeList = try dtypes.split(separator: ",").map { name in
            guard let d = KVCacheDType(rawValue: String(name)) else { throw ValidationError("unknown --kv-cache-dtype '\(name)'") }
            return d
        }
        guard qHeads > 0, kvHeads > 0, qHeads % kvHeads == 0, headDim > 0, blockSize > 0, repetitions > 0 else {
            throw ValidationError("--q-heads must be a positive multiple of --kv-heads; sizes must be positive")
        }
        let pool = WorkerPool(threads: threads ?? WorkerPool.availableCores)
        let bandwidth = AttentionBenchmark.measuredReadBandwidth(bytes: 1 << 30, pool: pool)
        var rows: [String] = []
        if !json {
            print(String(format: "machine read bandwidth: %.1f GB/s (%d threads)", bandwidth, pool.threadCount))
            print("dtype  context  batch   ms/step     GB/s  of bandwidth")
        }
        for dtype in dtypeList {
            for context in contextList {
                for batch in batchList {
                    let r = AttentionBenchmark.decodeThroughput(
                        context: context, batch: batch, qHeads: qHeads, kvHeads: kvHeads, headDim: headDim,
                        blockSize: blockSize, dtype: dtype, pool: pool, repetitions: repetitions, cold: cold)
                    if json {
                        rows.append("{\"dtype\": \"\(dtype.rawValue)\", \"context\": \(context), \"batch\": \(batch), \"cold\": \(cold), \"seconds_per_step\": \(r.secondsPerStep), \"kv_bytes_per_step\": \(r.kvBytesPerStep), \"gb_per_s\": \(r.gigabytesPerSecond)}")
                    } else {
                        print(String(format: "%-5@ %8d %6d %9.3f %8.1f %8.0f%%", dtype.rawValue, context, batch,
                                     r.secondsPerStep * 1000, r.gigabytesPerSecond, 100 * r.gigabytesPerSecond / bandwidth))
                    }
                }
            }
        }
        if json {
            print("{\"read_bandwidth_gb_per_s\": \(bandwidth), \"threads\": \(pool.threadCount), \"results\": [\(rows.joined(separator: ", "))]}")
        }
    }
}

/// Closed-loop load on the engine: `concurrency` clients each send requests back to back.
/// Reports output tokens/s and time-to-first-token percentiles per concurrency level.
struct BenchLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Engine throughput and time to first token under 1, 8 and 32 concurrent requests.")

    @OptionGroup var options: ModelOptions
    @OptionGroup var cacheOptions: CacheOptions
    @OptionGroup var schedulerOptions: SchedulerFlags

    @Option(help: "Comma-separated numbers of concurrent clients.")
    var concurrency: String = "1,8,32"

    @Option(name: .customLong("requests-per-client"), help: "Requests each client sends, one after another.")
    var requestsPerClient: Int = 2

    @Option(name: .customLong("max-tokens"), help: "Tokens generated per request (EOS ignored).")
    var maxTokens: Int = 64

    @Flag(help: "Print JSON.")
    var json = false

    static let prompts = [
        "Write a short story about a lighthouse keeper who finds a message in a bottle.",
        "Explain how a refrigerator works to a ten-year-old.",
        "List five tips for learning a new programming language, with a sentence on each.",
        "Describe the water cycle and why it matters for agriculture.",
        "What are the main differences between a comet and an asteroid?",
        "Summarize the plot of a heist movie you would like to see.",
        "Give a recipe for a simple vegetable soup, step by step.",
        "Why do leaves change color in autumn? Answer in a paragraph.",
    ]

    func run() async throws {
        let levels = try BenchAttention.parseList(concurrency, "--concurrency")
        guard requestsPerClient >= 1, maxTokens >= 1 else { throw ValidationError("--requests-per-client and --max-tokens must be at least 1") }
        let (loaded, _) = try loadWithTokenizer(options)
        let engine = try InferenceEngine(model: loaded, options: EngineOptions(cache: cacheOptions.resolved(), scheduler: schedulerOptions.resolved()))
        defer { engine.shutdown() }
        let parameters = GenerationParameters(maxTokens: maxTokens, ignoreEOS: true)
        var rows: [String] = []
        if !json { print("clients  requests  output tok/s  TTFT p50 ms  p90 ms  p99 ms  ITL mean ms") }
        for clients in levels {
            let clock = ContinuousClock()
            let start = clock.now
            let before = engine.metrics
            let results = try await withThrowingTaskGroup(of: [(ttft: Double, tokens: Int)].self) { group in
                for client in 0 ..< clients {
                    group.addTask {
                        var mine: [(ttft: Double, tokens: Int)] = []
                        for round in 0 ..< requestsPerClient {
                            let prompt = "Request \(client)-\(round). " + Self.prompts[(client + round) % Self.prompts.count]
                            let submitted = ContinuousClock.now
                            var first: Double?
                            var tokens = 0
                            for try await output in engine.generate(prompt: prompt, parameters: parameters) {
                                if first == nil, !output.tokenIds.isEmpty { first = (ContinuousClock.now - submitted).seconds }
                                tokens += output.tokenIds.count
                            }
                            mine.append((first ?? 0, tokens))
                        }
                        return mine
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            let seconds = (clock.now - start).seconds
            let tokens = results.reduce(0) { $0 + $1.tokens }
            let ttfts = results.map(\.ttft).sorted()
            func percentile(_ p: Double) -> Double { ttfts[min(ttfts.count - 1, Int((p / 100 * Double(ttfts.count - 1)).rounded()))] * 1000 }
            let after = engine.metrics.interTokenLatency
            let itlCount = after.count - before.interTokenLatency.count
            let itlMean = itlCount > 0 ? (after.total - before.interTokenLatency.total) / Double(itlCount) * 1000 : 0
            let throughput = Double(tokens) / seconds
            if json {
                rows.append("{\"concurrency\": \(clients), \"requests\": \(results.count), \"output_tokens_per_s\": \(throughput), \"ttft_ms\": {\"p50\": \(percentile(50)), \"p90\": \(percentile(90)), \"p99\": \(percentile(99))}, \"itl_mean_ms\": \(itlMean)}")
            } else {
                print(String(format: "%7d %9d %12.1f %12.1f %7.1f %7.1f %12.2f", clients, results.count, throughput, percentile(50), percentile(90), percentile(99), itlMean))
            }
        }
        if json { print("{\"max_tokens\": \(maxTokens), \"results\": [\(rows.joined(separator: ", "))]}") }
    }
}
