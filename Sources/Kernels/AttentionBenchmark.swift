#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Measurements behind `pagoda bench attention`: decode attention throughput over a paged KV layer,
/// and the machine's plain parallel read bandwidth to compare it with (decode is memory-bound).
public enum AttentionBenchmark {
    /// Times decode steps of `batch` sequences, each with `context` tokens (its new token included),
    /// over one layer of the given shape and `dtype` (blocks shuffled, as after real allocation).
    /// With `cold`, a 64 MiB read before every timed step pushes the layer out of the caches first.
    /// Returns the median seconds per step, the K/V bytes one step must read
    /// (`batch * context * bytesPerToken`), and the resulting GB/s. Zeros if the shape is invalid.
    public static func decodeThroughput(
        context: Int, batch: Int, qHeads: Int, kvHeads: Int, headDim: Int, blockSize: Int,
        dtype: KVCacheDType, pool: WorkerPool, repetitions: Int, cold: Bool = false
    ) -> (secondsPerStep: Double, kvBytesPerStep: Int, gigabytesPerSecond: Double) {
        guard context > 0, batch > 0, kvHeads > 0, qHeads % kvHeads == 0, headDim > 0, blockSize > 0 else { return (0, 0, 0) }
        let blocksPerSequence = (context + blockSize - 1) / blockSize
        let layer = PagedKVLayer(blocks: batch * blocksPerSequence, blockSize: blockSize, kvHeads: kvHeads, headDim: headDim, dtype: dtype)
        var random = SplitMix64(state: 0x5EED)
        var ids = (0 ..< Int32(batch * blocksPerSequence)).map { $0 }
        for i in stride(from: ids.count - 1, to: 0, by: -1) { ids.swapAt(i, random.next(below: i + 1)) }

        // Fill every cached token with random K/V.
        let tokenFloats = kvHeads * headDim
        var key = [Float](repeating: 0, count: tokenFloats), value = key
        for s in 0 ..< batch {
            for pos in 0 ..< context - 1 {
                for i in 0 ..< tokenFloats {
                    key[i] = random.symmetric()
                    value[i] = random.symmetric()
                }
                layer.write(key: key, value: value, block: Int(ids[s * blocksPerSequence + pos / blockSize]), slot: pos % blockSize)
            }
        }
        let batchDescription = RaggedBatch(
            cuQueryLens: Array(0 ... batch), seqLens: Array(repeating: context, count: batch),
            blockTables: ids, maxBlocksPerSequence: blocksPerSequence)
        let q = (0 ..< batch * qHeads * headDim).map { _ in random.symmetric() }
        let newKV = (0 ..< batch * tokenFloats).map { _ in random.symmetric() }
        var out = [Float](repeating: 0, count: batch * qHeads * headDim)
        let options = AttentionOptions(scale: 1 / Float(headDim).squareRoot())

        let evictionFloats = cold ? (64 << 20) / 4 : 0
        let eviction = UnsafeMutablePointer<Float>.allocate(capacity: max(1, evictionFloats))
        defer { eviction.deallocate() }
        eviction.initialize(repeating: 1, count: max(1, evictionFloats))
        var times: [Double] = []
        for rep in 0 ..< max(1, repetitions) + 1 {
            if cold { _ = sum(eviction, count: evictionFloats, pool: pool) }
            let start = now()
            do {
                try RaggedPagedAttention.forward(q: q, newKeys: newKV, newValues: newKV, out: &out, batch: batchDescription,
                                                 layer: layer, qHeads: qHeads, options: options, pool: pool)
            } catch {
                return (0, 0, 0)
            }
            if rep > 0 { times.append(now() - start) }  // the first step warms caches and scratch
        }
        times.sort()
        let seconds = times[times.count / 2]
        let bytes = batch * context * PagedKVLayer.bytesPerToken(kvHeads: kvHeads, headDim: headDim, dtype: dtype)
        return (seconds, bytes, Double(bytes) / seconds / 1e9)
    }

    /// GB/s of a plain parallel float32 sum over a `bytes`-byte buffer (best of a few passes): the
    /// read bandwidth the decode kernel can hope to reach.
    public static func measuredReadBandwidth(bytes: Int, pool: WorkerPool) -> Double {
        let count = max(bytes / 4 / 64 * 64, 64)
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 1, count: count)
        var best = Double.infinity
        var sink: Float = 0
        for _ in 0 ..< 5 {
            let start = now()
            sink += sum(buffer, count: count, pool: pool)
            best = min(best, now() - start)
        }
        if sink == -1 { print(sink) }  // keeps the sums alive
        return Double(count * 4) / best / 1e9
    }

    /// A plain parallel sum of `count` floats (a multiple of 64): each thread reads its share once.
    static func sum(_ buffer: UnsafePointer<Float>, count: Int, pool: WorkerPool) -> Float {
        let partials = UnsafeMutablePointer<Float>.allocate(capacity: pool.threadCount)
        defer { partials.deallocate() }
        partials.initialize(repeating: 0, count: pool.threadCount)
        pool.parallelFor(count / 64) { range, thread in
            var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
            var p = buffer + range.lowerBound * 64
            for _ in range {
                a0 += Vector.load16(p)
                a1 += Vector.load16(p + 16)
                a2 += Vector.load16(p + 32)
                a3 += Vector.load16(p + 48)
                p += 64
            }
            partials[thread] += (a0 + a1 + a2 + a3).sum()
        }
        var total: Float = 0
        for t in 0 ..< pool.threadCount { total += partials[t] }
        return total
    }

    static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }
}

extension SplitMix64 {
    /// Uniform in -1 ... 1.
    mutating func symmetric() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
}
