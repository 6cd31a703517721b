import Foundation
import Kernels
import Testing

@Suite struct AttentionBenchmarkTests {
    /// The benchmark runs on a tiny shape and reports consistent numbers.
    @Test func smoke() {
        let result = AttentionBenchmark.decodeThroughput(context: 100, batch: 2, qHeads: 9, kvHeads: 3, headDim: 64,
                                                         blockSize: 16, dtype: .int8, pool: testPool, repetitions: 3)
        #expect(result.kvBytesPerStep == 2 * 100 * PagedKVLayer.bytesPerToken(kvHeads: 3, headDim: 64, dtype: .int8))
        #expect(result.secondsPerStep > 0 && result.gigabytesPerSecond > 0)
        #expect(AttentionBenchmark.measuredReadBandwidth(bytes: 1 << 20, pool: testPool) > 0)
    }

    /// The full decode table (SmolLM2 shape: 9 q heads, 3 kv heads, headDim 64); opt in with
    /// `PAGODA_BENCH_ATTENTION=1 swift test -c release --filter AttentionBenchmarkTests`.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["PAGODA_BENCH_ATTENTION"] == "1"))
    func decodeTable() {
        let pool = WorkerPool()
        let bandwidth = AttentionBenchmark.measuredReadBandwidth(bytes: 1 << 30, pool: pool)
        print("read bandwidth (\(pool.threadCount) threads): \(String(format: "%.1f", bandwidth)) GB/s")
        let dtypes = (ProcessInfo.processInfo.environment["PAGODA_BENCH_DTYPES"] ?? "fp32,f16,bf16,int8")
            .split(separator: ",").compactMap { KVCacheDType(rawValue: String($0)) }
        for dtype in dtypes {
            for context in [1024, 4096, 16384] {
                for batch in [1, 8, 32] {
                    let r = AttentionBenchmark.decodeThroughput(context: context, batch: batch, qHeads: 9, kvHeads: 3, headDim: 64,
                                                                blockSize: 16, dtype: dtype, pool: pool, repetitions: 7)
                    print(String(format: "%@ ctx %5d batch %2d: %8.3f ms/step  %7.1f MB  %6.1f GB/s  (%.0f%% of bandwidth)",
                                 dtype.rawValue, context, batch, r.secondsPerStep * 1e3, Double(r.kvBytesPerStep) / 1e6,
                                 r.gigabytesPerSecond, 100 * r.gigabytesPerSecond / bandwidth))
                }
            }
        }
    }
}
