import Foundation
import Kernels

/// One pool for every kernel test: the machine has few cores, and `run` serializes callers anyway.
let testPool = WorkerPool(threads: 2)

/// Deterministic generator, so every property case replays exactly.
typealias SeededGenerator = SplitMix64

extension SplitMix64 {
    init(seed: UInt64) { self.init(state: seed &* 0x9E37_79B9_7F4A_7C15 &+ 0x1234_5678) }
    /// Uniform in `-scale ... scale`.
    mutating func symmetric(_ scale: Float) -> Float { Float.random(in: -scale ... scale, using: &self) }
}

/// Shapes of one test layer.
struct AttentionShape: CustomStringConvertible {
    var qHeads: Int, kvHeads: Int, headDim: Int, blockSize: Int, dtype: KVCacheDType
    var description: String { "q\(qHeads)/kv\(kvHeads) d\(headDim) bs\(blockSize) \(dtype)" }
}

/// Sequences with known full Q/K/V, a paged layer with shuffled physical blocks, and `step`, which
/// runs one ragged batch and returns each part's output rows. `reference` recomputes any row naively.
final class AttentionHarness {
    struct Sequence {
        /// `[length, qHeads, headDim]`, `[length, kvHeads, headDim]` x2: every token the sequence will have.
        var q: [Float], k: [Float], v: [Float]
        var length: Int
        /// Physical block of each logical block (grown as tokens are written).
        var table: [Int32] = []
        /// Tokens already written to the cache.
        var written = 0
    }

    let shape: AttentionShape
    let layer: PagedKVLayer
    var sequences: [Sequence] = []
    var freeBlocks: [Int32]
    var rng: SeededGenerator

    init(shape: AttentionShape, capacityTokens: Int, seed: UInt64) {
        self.shape = shape
        rng = SeededGenerator(seed: seed)
        let blocks = capacityTokens / shape.blockSize + 64
        layer = PagedKVLayer(blocks: blocks, blockSize: shape.blockSize, kvHeads: shape.kvHeads, headDim: shape.headDim, dtype: shape.dtype)
        freeBlocks = (0 ..< Int32(blocks)).shuffled(using: &rng)
    }

    /// Adds a sequence of `length` random tokens (q scaled by `qScale` to make softmax peaky) and returns its index.
    @discardableResult
    func addSequence(length: Int, qScale: Float = 2) -> Int {
        let qCount = length * shape.qHeads * shape.headDim, kvCount = length * shape.kvHeads * shape.headDim
        let q = (0 ..< qCount).map { _ in rng.symmetric(qScale) }
        let k = (0 ..< kvCount).map { _ in rng.symmetric(1) }
        let v = (0 ..< kvCount).map { _ in rng.symmetric(1) }
        sequences.append(Sequence(q: q, k: k, v: v, length: length))
        return sequences.count - 1
    }

    /// Adds a copy of sequence `other`'s tokens as a new, empty-cache sequence.
    func addCopy(of other: Int) -> Int {
        var copy = sequences[other]
        copy.table = []
        copy.written = 0
        sequences.append(copy)
        return sequences.count - 1
    }

    /// Runs one forward over `parts` (sequence, new token count) and returns each part's output
    /// `[count, qHeads, headDim]`. Blocks wholly outside every window are passed as -1 when `freeOutsideWindow`.
    func step(_ parts: [(seq: Int, count: Int)], options: AttentionOptions, pool: WorkerPool = testPool,
              freeOutsideWindow: Bool = true, extraTableColumns: Int = 0) throws -> [[Float]] {
        let bs = shape.blockSize, qStride = shape.qHeads * shape.headDim, kvStride = shape.kvHeads * shape.headDim
        var cu = [0], seqLens: [Int] = [], q: [Float] = [], k: [Float] = [], v: [Float] = []
        for (s, count) in parts {
            let start = sequences[s].written, end = start + count
            while sequences[s].table.count * bs < end { sequences[s].table.append(freeBlocks.removeLast()) }
            q += sequences[s].q[start * qStride ..< end * qStride]
            k += sequences[s].k[start * kvStride ..< end * kvStride]
            v += sequences[s].v[start * kvStride ..< end * kvStride]
            cu.append(cu.last! + count)
            seqLens.append(end)
        }
        let width = parts.map { sequences[$0.seq].table.count }.max()! + extraTableColumns
        var tables = [Int32](repeating: -7, count: parts.count * width)
        for (i, (s, count)) in parts.enumerated() {
            let table = sequences[s].table
            let firstNew = sequences[s].written
            for b in 0 ..< table.count {
                var id = table[b]
                if freeOutsideWindow, let w = options.slidingWindow, count > 0, (b + 1) * bs - 1 < firstNew - w + 1 { id = -1 }
                tables[i * width + b] = id
            }
        }
        let batch = RaggedBatch(cuQueryLens: cu, seqLens: seqLens, blockTables: tables, maxBlocksPerSequence: width)
        var out = [Float](repeating: .nan, count: q.count)
        try q.withUnsafeBufferPointer { qp in
            try k.withUnsafeBufferPointer { kp in
                try v.withUnsafeBufferPointer { vp in
                    try out.withUnsafeMutableBufferPointer { op in
                        try RaggedPagedAttention.forward(
                            q: qp.baseAddress!, newKeys: kp.baseAddress!, newValues: vp.baseAddress!, out: op.baseAddress!,
                            batch: batch, layer: layer, qHeads: shape.qHeads, options: options, pool: pool)
                    }
                }
            }
        }
        var results: [[Float]] = []
        for (i, (s, _)) in parts.enumerated() {
            sequences[s].written = seqLens[i]
            results.append(Array(out[cu[i] * qStride ..< cu[i + 1] * qStride]))
        }
        return results
    }

    /// K and V of sequence `s` as the cache holds them (dequantized), `[written, kvHeads, headDim]`.
    func cachedKV(_ s: Int) -> (k: [Float], v: [Float]) {
        let d = shape.headDim, bs = shape.blockSize
        var k = [Float](repeating: 0, count: sequences[s].written * shape.kvHeads * d), v = k
        k.withUnsafeMutableBufferPointer { kp in
            v.withUnsafeMutableBufferPointer { vp in
                for pos in 0 ..< sequences[s].written {
                    let block = Int(sequences[s].table[pos / bs])
                    for h in 0 ..< shape.kvHeads {
                        let offset = (pos * shape.kvHeads + h) * d
                        layer.readKey(block: block, slot: pos % bs, head: h, into: kp.baseAddress! + offset)
                        layer.readValue(block: block, slot: pos % bs, head: h, into: vp.baseAddress! + offset)
                    }
                }
            }
        }
        return (k, v)
    }

    /// Naive float64 attention of sequence `s`'s query at `position` (all heads), `[qHeads, headDim]`:
    /// every score, soft cap, mask, softmax with optional sink, weighted sum.
    func reference(_ s: Int, position: Int, options: AttentionOptions, k: [Float], v: [Float]) -> [Double] {
        let d = shape.headDim, group = shape.qHeads / shape.kvHeads
        let seq = sequences[s]
        var out = [Double](repeating: 0, count: shape.qHeads * d)
        for h in 0 ..< shape.qHeads {
            let g = h / group
            var scores: [Double] = []
            var positions: [Int] = []
            for j in 0 ... position {
                if let w = options.slidingWindow, j <= position - w { continue }
                var dot = 0.0
                for i in 0 ..< d {
                    dot += Double(seq.q[(position * shape.qHeads + h) * d + i]) * Double(k[(j * shape.kvHeads + g) * d + i])
                }
                var score = dot * Double(options.scale)
                if let cap = options.logitSoftCap { score = Double(cap) * tanh(score / Double(cap)) }
                scores.append(score)
                positions.append(j)
            }
            var maxScore = scores.max()!
            let sink = options.sinks.map { Double($0[h]) }
            if let sink { maxScore = max(maxScore, sink) }
            let weights = scores.map { exp($0 - maxScore) }
            let denominator = weights.reduce(0, +) + (sink.map { exp($0 - maxScore) } ?? 0)
            for (w, j) in zip(weights, positions) {
                for i in 0 ..< d { out[h * d + i] += w / denominator * Double(v[(j * shape.kvHeads + g) * d + i]) }
            }
        }
        return out
    }
}
