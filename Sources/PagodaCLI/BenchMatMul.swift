import ArgumentParser
import Foundation
import Formats
import Kernels

/// `pagoda bench matmul`: one weight matrix of a GGUF file times a batch of random activations,
/// timed alone. The best of many repetitions is reported beside the median, so a kernel change can
/// be measured on a machine whose other load moves whole-model figures by tens of percent.
struct BenchMatMul: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "matmul",
        abstract: "Matrix-product throughput for weights of a GGUF file (best and median of many runs).")

    @OptionGroup var options: ModelOptions

    @Option(help: "Comma-separated tensor names (default: layer 0's attn_q, ffn_gate and ffn_down); with --rotate one `*` per name matches any part, e.g. blk.*.ffn_up.weight.")
    var tensors: String = "blk.0.attn_q.weight,blk.0.ffn_gate.weight,blk.0.ffn_down.weight"

    @Option(help: "Comma-separated token counts (rows of input).")
    var tokens: String = "1,512"

    @Option(name: .shortAndLong, help: "Timed products per measurement.")
    var repetitions: Int = 30

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "Time one pass over all the tensors per repetition (weights leave the cache between uses, as in a model) instead of each tensor alone.")
    var rotate = false

    func run() throws {
        let tokenList = try BenchAttention.parseList(tokens, "--tokens")
        guard repetitions > 0 else { throw ValidationError("--repetitions must be positive") }
        if rotate && json { throw ValidationError("--rotate prints one line per token count; it has no --json output") }
        let path = try options.resolvedPath()
        let file = try GGUFFile(path: path)
        let pool = WorkerPool(threads: options.threads ?? WorkerPool.availableCores)
        if rotate { return try runRotating(file: file, path: path, pool: pool, tokenList: tokenList) }
        var rows: [String] = []
        if !json { print("tensor                      type    rows  cols  tokens   best ms  median ms  GMAC/s (best)") }
        for name in tensors.split(separator: ",").map(String.init) {
            let weight = try matrix(name, in: file, path: path)
            for count in tokenList {
                let input = Self.randomInput(count * weight.cols), output = UnsafeMutablePointer<Float>.allocate(capacity: count * weight.rows)
                defer { input.deallocate(); output.deallocate() }
                let (best, median) = timed { MatMul.multiply(input, tokens: count, by: weight, into: output, pool: pool) }
                let gmacs = Double(count * weight.rows * weight.cols) / best / 1e9
                if json {
                    rows.append("{\"tensor\": \"\(name)\", \"type\": \"\(weight.type)\", \"rows\": \(weight.rows), \"cols\": \(weight.cols), \"tokens\": \(count), \"best_s\": \(best), \"median_s\": \(median), \"gmac_per_s\": \(gmacs)}")
                } else {
                    print(String(format: "%-26@ %6@ %6d %5d %7d %9.3f %10.3f %9.1f", name, "\(weight.type)", weight.rows, weight.cols,
                                 count, best * 1000, median * 1000, gmacs))
                }
            }
        }
        if json { print("{\"threads\": \(pool.threadCount), \"results\": [\(rows.joined(separator: ", "))]}") }
    }

    /// `--rotate`: every tensor once per repetition, in order; one line per token count.
    private func runRotating(file: GGUFFile, path: String, pool: WorkerPool, tokenList: [Int]) throws {
        var names: [String] = []
        for name in tensors.split(separator: ",").map(String.init) {
            if name.contains("*") {
                let parts = name.split(separator: "*", omittingEmptySubsequences: false).map(String.init)
                names += file.tensors.map(\.name).filter { $0.hasPrefix(parts[0]) && $0.hasSuffix(parts.last ?? "") }
            } else {
                names.append(name)
            }
        }
        let weights = try names.map { try matrix($0, in: file, path: path) }
        let maxCols = weights.map(\.cols).max() ?? 0, maxRows = weights.map(\.rows).max() ?? 0
        for count in tokenList {
            let input = Self.randomInput(count * maxCols), output = UnsafeMutablePointer<Float>.allocate(capacity: count * maxRows)
            defer { input.deallocate(); output.deallocate() }
            let (best, median) = timed {
                for weight in weights { MatMul.multiply(input, tokens: count, by: weight, into: output, pool: pool) }
            }
            let macs = Double(count * weights.reduce(0) { $0 + $1.rows * $1.cols })
            print(String(format: "%d tensors, %d tokens: best %.3f ms (%.1f GMAC/s), median %.3f ms (%.1f GMAC/s)", weights.count, count,
                         best * 1000, macs / best / 1e9, median * 1000, macs / median / 1e9))
        }
    }

    /// Tensor `name` of `file` as a weight matrix for the chosen activations.
    private func matrix(_ name: String, in file: GGUFFile, path: String) throws -> WeightMatrix {
        guard let tensor = file.tensor(named: name) else { throw ValidationError("\(path) has no tensor '\(name)'") }
        return try WeightMatrix(tensor, activations: options.activationOptions.precision)
    }

    /// `count` floats uniform in [-1, 1), the same every run (the caller deallocates them).
    private static func randomInput(_ count: Int) -> UnsafeMutablePointer<Float> {
        let input = UnsafeMutablePointer<Float>.allocate(capacity: count)
        var random = SplitMix64(state: 1)
        for i in 0 ..< count { input[i] = Float.random(in: -1 ..< 1, using: &random) }
        return input
    }

    /// Best and median seconds of `repetitions` runs of `body`, after one untimed warm-up run.
    private func timed(_ body: () -> Void) -> (best: Double, median: Double) {
        body()
        var seconds: [Double] = []
        for _ in 0 ..< repetitions {
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            seconds.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        seconds.sort()
        return (seconds[0], seconds[seconds.count / 2])
    }
}
