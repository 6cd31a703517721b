import ArgumentParser
import Foundation
import Kernels

/// `pagoda bench`: performance measurements.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks.",
        subcommands: [BenchAttention.self])
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

    @Flag(help: "Print JSON.")
    var json = false

    func parseList(_ text: String, _ name: String) throws -> [Int] {
        try text.split(separator: ",").map {
            guard let v = Int($0.trimmingCharacters(in: .whitespaces)), v > 0 else {
                throw ValidationError("\(name): '\($0)' is not a positive integer")
            }
            return v
        }
    }

    func run() throws {
        let contextList = try parseList(contexts, "--contexts"), batchList = try parseList(batches, "--batches")
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
                        blockSize: blockSize, dtype: dtype, pool: pool, repetitions: repetitions)
                    if json {
                        rows.append("{\"dtype\": \"\(dtype.rawValue)\", \"context\": \(context), \"batch\": \(batch), \"seconds_per_step\": \(r.secondsPerStep), \"kv_bytes_per_step\": \(r.kvBytesPerStep), \"gb_per_s\": \(r.gigabytesPerSecond)}")
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
