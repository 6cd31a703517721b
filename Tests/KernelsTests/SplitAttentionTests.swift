import Kernels
import Testing

/// Attention split between two caches (keys older than R from one, the R most recent from another,
/// as the int8 cache with a float32 window does), merged with `RaggedPagedAttention.merge`, equals
/// one attention over all keys: with and without sliding window and sinks, in prefill chunks and
/// decode steps, across key partitions.
@Suite struct SplitAttentionTests {
    struct Case: CustomStringConvertible {
        var recent: Int, window: Int?, sinks: Bool, chunk: Int
        var description: String { "R\(recent) W\(window.map(String.init) ?? "-") sinks \(sinks) chunk \(chunk)" }
    }

    static let cases = [
        Case(recent: 64, window: nil, sinks: false, chunk: 700),
        Case(recent: 64, window: nil, sinks: true, chunk: 37),
        Case(recent: 16, window: 200, sinks: false, chunk: 100),
        Case(recent: 300, window: 100, sinks: true, chunk: 1),
        Case(recent: 1, window: nil, sinks: false, chunk: 64),
    ]

    @Test(arguments: cases)
    func splitEqualsWhole(_ c: Case) throws {
        let qHeads = 4, kvHeads = 2, d = 32, bs = 16, length = 700
        var rng = SplitMix64(state: 42)
        func random(_ n: Int, _ scale: Float) -> [Float] { (0 ..< n).map { _ in Float.random(in: -scale ... scale, using: &rng) } }
        let q = random(length * qHeads * d, 2), k = random(length * kvHeads * d, 1), v = random(length * kvHeads * d, 1)
        let sinks = c.sinks ? random(qHeads, 2) : nil
        let blocks = length / bs + 2
        let whole = PagedKVLayer(blocks: blocks, blockSize: bs, kvHeads: kvHeads, headDim: d, dtype: .fp32)
        let older = PagedKVLayer(blocks: blocks, blockSize: bs, kvHeads: kvHeads, headDim: d, dtype: .fp32)
        let recent = PagedKVLayer(blocks: blocks, blockSize: bs, kvHeads: kvHeads, headDim: d, dtype: .fp32)
        let table = (0 ..< Int32(blocks)).reversed().map { $0 }
        let options = AttentionOptions(scale: 0.2, slidingWindow: c.window, sinks: sinks)
        var olderOptions = options
        olderOptions.sinks = nil
        olderOptions.excludeRecentKeys = c.recent
        var recentOptions = options
        recentOptions.slidingWindow = min(c.window ?? c.recent, c.recent)

        var done = 0
        var maxError: Float = 0
        while done < length {
            let count = min(c.chunk, length - done)
            let batch = RaggedBatch(cuQueryLens: [0, count], seqLens: [done + count], blockTables: table, maxBlocksPerSequence: blocks)
            let rows = count * qHeads
            var a = [Float](repeating: .nan, count: rows * d), b = a, r = a
            var sa = [Float](repeating: .nan, count: 2 * rows), sr = sa
            try q.withUnsafeBufferPointer { qp in
            try k.withUnsafeBufferPointer { kp in
            try v.withUnsafeBufferPointer { vp in
                let qs = qp.baseAddress! + done * qHeads * d, ks = kp.baseAddress! + done * kvHeads * d, vs = vp.baseAddress! + done * kvHeads * d
                try RaggedPagedAttention.forward(q: qs, newKeys: ks, newValues: vs, out: &a, batch: batch, layer: whole,
                                                 qHeads: qHeads, options: options, pool: testPool)
                try RaggedPagedAttention.forward(q: qs, newKeys: ks, newValues: vs, out: &b, batch: batch, layer: older,
                                                 qHeads: qHeads, options: olderOptions, statistics: &sa, pool: testPool)
                try RaggedPagedAttention.forward(q: qs, newKeys: ks, newValues: vs, out: &r, batch: batch, layer: recent,
                                                 qHeads: qHeads, options: recentOptions, statistics: &sr, pool: testPool)
            }
            }
            }
            RaggedPagedAttention.merge(&b, statistics: sa, with: r, otherStatistics: sr, vectors: rows, headDim: d)
            for i in 0 ..< rows * d { maxError = max(maxError, abs(a[i] - b[i])) }
            #expect(!b.contains { $0.isNaN })
            done += count
        }
        #expect(maxError < 1e-5, "\(c): max error \(maxError)")
    }
}
