#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Int8Dot
import LaneShuffles
import Synchronization

/// Why a ragged batch (or its options) cannot be run against a KV layer.
public enum AttentionError: Error, CustomStringConvertible, Equatable, Sendable {
    case badCumulativeQueryLengths(String)
    case queryLongerThanContext(sequence: Int, queryLength: Int, seqLen: Int)
    case blockTableTooShort(sequence: Int, needed: Int, have: Int)
    case blockIdOutOfRange(sequence: Int, logicalBlock: Int, id: Int32, blockCount: Int)
    case badShape(String)
    case badOptions(String)

    public var description: String {
        switch self {
        case .badCumulativeQueryLengths(let why):
            return "invalid cuQueryLens: \(why)"
        case let .queryLongerThanContext(s, q, l):
            return "sequence \(s) has \(q) new query tokens but a context of only \(l)"
        case let .blockTableTooShort(s, needed, have):
            return "sequence \(s) needs \(needed) block table entries but the table has \(have)"
        case let .blockIdOutOfRange(s, b, id, count):
            return "sequence \(s) logical block \(b) maps to block id \(id), outside 0..<\(count)"
        case .badShape(let why):
            return "invalid attention shape: \(why)"
        case .badOptions(let why):
            return "invalid attention options: \(why)"
        }
    }
}

/// Describes one engine step: S sequences, each with some new query tokens (a prefill, a chunk of a
/// prefill continuing earlier chunks, or a single decode token), all in one `[T, heads, headDim]` batch.
public struct RaggedBatch: Sendable {
    /// `[S + 1]`, `cuQueryLens[0] == 0`; sequence `s` owns query rows `cuQueryLens[s] ..< cuQueryLens[s + 1]`.
    public var cuQueryLens: [Int]
    /// `[S]`, context length of `s` including its new tokens; new token `i` of `s` sits at position
    /// `seqLens[s] - queryLength(s) + i`.
    public var seqLens: [Int]
    /// `[S * maxBlocksPerSequence]`, row-major: logical block `b` of `s` -> physical block id. Entries for
    /// blocks wholly outside a sliding window may be -1 (never read).
    public var blockTables: [Int32]
    public var maxBlocksPerSequence: Int

    public init(cuQueryLens: [Int], seqLens: [Int], blockTables: [Int32], maxBlocksPerSequence: Int) {
        self.cuQueryLens = cuQueryLens
        self.seqLens = seqLens
        self.blockTables = blockTables
        self.maxBlocksPerSequence = maxBlocksPerSequence
    }

    /// Number of sequences S.
    public var sequenceCount: Int { seqLens.count }
    /// Number of query rows T.
    public var tokenCount: Int { cuQueryLens.last ?? 0 }
    /// New query tokens of sequence `s`.
    public func queryLength(_ s: Int) -> Int { cuQueryLens[s + 1] - cuQueryLens[s] }

    /// Checks the batch against a KV layer of `blockCount` blocks of `blockSize` tokens: cumulative
    /// lengths start at 0 and never decrease, no sequence has more new tokens than context, every
    /// table is long enough, and every block that will be written or read (with `slidingWindow`,
    /// only those holding keys inside some query's window) has an id in `0 ..< blockCount`.
    public func validate(blockCount: Int, blockSize: Int, slidingWindow: Int? = nil) throws(AttentionError) {
        let count = seqLens.count
        guard cuQueryLens.count == count + 1 else {
            throw .badCumulativeQueryLengths("has \(cuQueryLens.count) entries for \(count) sequences (need S + 1)")
        }
        guard cuQueryLens[0] == 0 else { throw .badCumulativeQueryLengths("starts at \(cuQueryLens[0]), not 0") }
        for s in 0 ..< count where cuQueryLens[s + 1] < cuQueryLens[s] {
            throw .badCumulativeQueryLengths("decreases at sequence \(s) (\(cuQueryLens[s]) -> \(cuQueryLens[s + 1]))")
        }
        guard blockSize > 0 else { throw .badShape("block size \(blockSize)") }
        guard maxBlocksPerSequence >= 0 else { throw .badShape("maxBlocksPerSequence \(maxBlocksPerSequence)") }
        if let w = slidingWindow, w <= 0 { throw .badOptions("sliding window \(w) must be positive") }
        let (tableEntries, overflow) = count.multipliedReportingOverflow(by: maxBlocksPerSequence)
        guard !overflow else { throw .badShape("block table size overflows") }
        for s in 0 ..< count {
            let queryLength = cuQueryLens[s + 1] - cuQueryLens[s]
            let seqLen = seqLens[s]
            guard seqLen >= queryLength else {
                throw .queryLongerThanContext(sequence: s, queryLength: queryLength, seqLen: seqLen)
            }
            let needed = (seqLen + blockSize - 1) / blockSize
            guard needed <= maxBlocksPerSequence else {
                throw .blockTableTooShort(sequence: s, needed: needed, have: maxBlocksPerSequence)
            }
            guard (s + 1) * maxBlocksPerSequence <= blockTables.count else {
                throw .blockTableTooShort(sequence: s, needed: tableEntries, have: blockTables.count)
            }
            guard queryLength > 0 else { continue }
            let firstNew = seqLen - queryLength
            let firstRead = slidingWindow.map { max(0, firstNew - $0 + 1) } ?? 0
            for b in firstRead / blockSize ... (seqLen - 1) / blockSize {
                let id = blockTables[s * maxBlocksPerSequence + b]
                guard id >= 0, Int(id) < blockCount else {
                    throw .blockIdOutOfRange(sequence: s, logicalBlock: b, id: id, blockCount: blockCount)
                }
            }
        }
    }
}

/// Per-call attention options.
public struct AttentionOptions: Sendable {
    /// Multiplies `q . k`; usually `1 / sqrt(headDim)` or `query_pre_attn_scalar^-0.5`.
    public var scale: Float
    /// Query at position `i` sees keys `j` with `i - W < j <= i` (HF semantics: W keys including itself).
    public var slidingWindow: Int?
    /// `s = cap * tanh(s / cap)`, applied after scaling, before masking (Gemma 2).
    public var logitSoftCap: Float?
    /// `[qHeads]` learned per-head logits that join only the softmax denominator (GPT-OSS):
    /// `p_j = exp(s_j - m) / (exp(sink - m) + sum_k exp(s_k - m))`.
    public var sinks: [Float]?
    /// Query at position `i` sees only keys `j <= i - excludeRecentKeys`: the older part of an
    /// attention split between two caches (int8 storage for old keys, float32 for the recent
    /// ones), merged with `RaggedPagedAttention.merge` using each part's `statistics`.
    public var excludeRecentKeys: Int

    public init(scale: Float, slidingWindow: Int? = nil, logitSoftCap: Float? = nil, sinks: [Float]? = nil, excludeRecentKeys: Int = 0) {
        self.scale = scale
        self.slidingWindow = slidingWindow
        self.logitSoftCap = logitSoftCap
        self.sinks = sinks
        self.excludeRecentKeys = excludeRecentKeys
    }
}

/// Causal attention over a paged KV cache for a ragged batch mixing prefills, chunked prefills and
/// decodes (as vLLM / tpu-inference's ragged paged attention), on CPU.
///
/// Batch invariance: the floating-point operations for one (query row, head) depend only on the row's
/// position and its sequence's context. Keys are visited in ascending order in 16-key tiles aligned to
/// absolute positions, grouped in partitions of `partitionKeys` keys aligned the same way; each
/// partition is reduced from a fresh online-softmax state and the partitions are merged in ascending
/// order. Which thread runs a partition, whether partitions run in parallel (few long rows, e.g. a
/// small decode batch) or in sequence, and which other rows share a K/V tile never change a result bit.
public enum RaggedPagedAttention {
    /// Keys per score tile (one SIMD16 of scores), aligned to absolute positions.
    static let keyTile = 16
    /// Keys per partition, aligned to absolute positions: the unit of key-range parallelism.
    static let partitionKeys = 512
    /// Most floats of partial results kept for key-range parallelism (else partitions run in sequence).
    static let partialLimit = 8 << 20

    /// Writes each new token's K/V into its slot (block = `table[s][pos / blockSize]`, slot =
    /// `pos % blockSize`), then computes causal attention for every query row over its sequence's whole
    /// context (earlier chunks and cached prefix included).
    /// Shapes: `q, out: [T, qHeads, headDim]`, `newKeys, newValues: [T, kvHeads, headDim]`, with
    /// `qHeads` a multiple of `layer.kvHeads`. Validates the batch and options first and throws, having
    /// written nothing, if they are inconsistent with each other or with the layer. With `statistics`
    /// (`[T, qHeads, 2]`) each (row, head)'s softmax maximum and denominator are written too, for
    /// `merge`; a row that sees no key gets zeros and denominator 0.
    public static func forward(
        q: UnsafePointer<Float>, newKeys: UnsafePointer<Float>, newValues: UnsafePointer<Float>,
        out: UnsafeMutablePointer<Float>,
        batch: RaggedBatch, layer: PagedKVLayer, qHeads: Int, options: AttentionOptions,
        statistics: UnsafeMutablePointer<Float>? = nil, pool: WorkerPool
    ) throws(AttentionError) {
        guard qHeads > 0, qHeads % layer.kvHeads == 0 else {
            throw .badShape("qHeads \(qHeads) is not a positive multiple of kvHeads \(layer.kvHeads)")
        }
        guard options.scale.isFinite else { throw .badOptions("scale \(options.scale)") }
        if let cap = options.logitSoftCap, !(cap > 0 && cap.isFinite) { throw .badOptions("logit soft cap \(cap)") }
        if let sinks = options.sinks, sinks.count != qHeads {
            throw .badOptions("\(sinks.count) sinks for \(qHeads) query heads")
        }
        guard options.excludeRecentKeys >= 0 else { throw .badOptions("excludeRecentKeys \(options.excludeRecentKeys)") }
        try batch.validate(blockCount: layer.blocks, blockSize: layer.blockSize, slidingWindow: options.slidingWindow)

        writeNewTokens(newKeys: newKeys, newValues: newValues, batch: batch, layer: layer)
        if layer.rotatesForInt8 {
            // The int8 cache holds Hadamard-rotated vectors: attend with rotated queries, rotate back.
            let count = batch.tokenCount * qHeads
            let rotatedQ = UnsafeMutablePointer<Float>.allocate(capacity: max(1, count * layer.headDim))
            defer { rotatedQ.deallocate() }
            rotatedQ.update(from: q, count: count * layer.headDim)
            for v in 0 ..< count { Hadamard.rotate(rotatedQ + v * layer.headDim, layer.headDim) }
            attend(Int8Element.self, q: rotatedQ, out: out, batch: batch, layer: layer, qHeads: qHeads, options: options, statistics: statistics, pool: pool)
            for v in 0 ..< count { Hadamard.rotate(out + v * layer.headDim, layer.headDim) }
            return
        }
        switch layer.dtype {
        case .fp32: attend(FP32Element.self, q: q, out: out, batch: batch, layer: layer, qHeads: qHeads, options: options, statistics: statistics, pool: pool)
        case .f16: attend(F16Element.self, q: q, out: out, batch: batch, layer: layer, qHeads: qHeads, options: options, statistics: statistics, pool: pool)
        case .bf16: attend(BF16Element.self, q: q, out: out, batch: batch, layer: layer, qHeads: qHeads, options: options, statistics: statistics, pool: pool)
        case .int8: attend(Int8Element.self, q: q, out: out, batch: batch, layer: layer, qHeads: qHeads, options: options, statistics: statistics, pool: pool)
        }
    }

    /// Combines two attentions of the same query vectors over disjoint key sets into `out`, as one
    /// softmax over the union: `out` and `other` are `[vectors, headDim]` outputs, each with its
    /// `[vectors, 2]` statistics (maximum, denominator) from `forward`.
    public static func merge(
        _ out: UnsafeMutablePointer<Float>, statistics: UnsafePointer<Float>,
        with other: UnsafePointer<Float>, otherStatistics: UnsafePointer<Float>, vectors: Int, headDim: Int
    ) {
        for v in 0 ..< vectors {
            let m1 = statistics[2 * v], l1 = statistics[2 * v + 1]
            let m2 = otherStatistics[2 * v], l2 = otherStatistics[2 * v + 1]
            let m = max(m1, m2)
            let w1 = l1 > 0 ? l1 * expf(m1 - m) : 0, w2 = l2 > 0 ? l2 * expf(m2 - m) : 0
            let total = w1 + w2
            let a = total > 0 ? w1 / total : 0, b = total > 0 ? w2 / total : 0
            let o = out + v * headDim, p = other + v * headDim
            for d in 0 ..< headDim { o[d] = a * o[d] + b * p[d] }
        }
    }

    /// Stores the new tokens of every sequence at their positions (batch already validated).
    static func writeNewTokens(newKeys: UnsafePointer<Float>, newValues: UnsafePointer<Float>, batch: RaggedBatch, layer: PagedKVLayer) {
        let stride = layer.kvHeads * layer.headDim
        for s in 0 ..< batch.sequenceCount {
            let first = batch.seqLens[s] - batch.queryLength(s)
            for row in batch.cuQueryLens[s] ..< batch.cuQueryLens[s + 1] {
                let pos = first + row - batch.cuQueryLens[s]
                let block = Int(batch.blockTables[s * batch.maxBlocksPerSequence + pos / layer.blockSize])
                layer.write(key: newKeys + row * stride, value: newValues + row * stride, block: block, slot: pos % layer.blockSize)
            }
        }
    }

    /// Runs the attention kernel for storage type `E` over the whole batch.
    static func attend<E: KVElement>(
        _: E.Type, q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
        batch: RaggedBatch, layer: PagedKVLayer, qHeads: Int, options: AttentionOptions,
        statistics: UnsafeMutablePointer<Float>?, pool: WorkerPool
    ) {
        batch.cuQueryLens.withUnsafeBufferPointer { cuQ in
        batch.seqLens.withUnsafeBufferPointer { seqLens in
        batch.blockTables.withUnsafeBufferPointer { tables in
        (options.sinks ?? []).withUnsafeBufferPointer { sinks in
            let kernel = AttentionKernel<E>(
                q: q, out: out, layer: layer, qHeads: qHeads, options: options,
                cuQ: cuQ.baseAddress.unsafelyUnwrapped, seqLens: seqLens.baseAddress.unsafelyUnwrapped,
                tables: tables.baseAddress ?? UnsafePointer(bitPattern: 8).unsafelyUnwrapped,
                maxBlocks: batch.maxBlocksPerSequence, sequences: batch.sequenceCount,
                sinks: options.sinks == nil ? nil : sinks.baseAddress, statistics: statistics)
            kernel.run(pool: pool)
        }
        }
        }
        }
    }
}

/// How many query heads of one kv head one `AttentionKernel.update` computes (1 to
/// `sharedHeads`), as a type: each count gets its own specialization, in which the count is a
/// constant, so the unused heads' registers and branches fold away. (As a plain argument it did
/// not: `update` was compiled once per element type, and with the count known only at run time
/// both inner loops spilled AVX2's 16 ymm registers and compared the count on every key.)
protocol SharedHeadCount { static var n: Int { get } }
enum OneSharedHead: SharedHeadCount { static var n: Int { 1 } }
enum TwoSharedHeads: SharedHeadCount { static var n: Int { 2 } }
enum ThreeSharedHeads: SharedHeadCount { static var n: Int { 3 } }

/// The attention loops for one storage type. A *unit* is (sequence, tile of up to `rowTile` query
/// rows), all heads; it covers key partitions `firstPartition ... lastPartition`. Per (row, head) the
/// state is `stateStride` floats: running max at 0, denominator at 1, accumulator `[headDim]` at 16.
struct AttentionKernel<E: KVElement> {
    let q: UnsafePointer<Float>
    let out: UnsafeMutablePointer<Float>
    /// `[T, qHeads, 2]` softmax maximum and denominator per (row, head), when asked for.
    let statistics: UnsafeMutablePointer<Float>?
    let keys: UnsafeRawPointer
    let values: UnsafeRawPointer
    let keyScales: UnsafePointer<Float>
    let valueScales: UnsafePointer<Float>
    let cuQ: UnsafePointer<Int>
    let seqLens: UnsafePointer<Int>
    let tables: UnsafePointer<Int32>
    let maxBlocks: Int
    let sequences: Int
    let sinks: UnsafePointer<Float>?
    let qHeads: Int, kvHeads: Int, group: Int, headDim: Int, blockSize: Int
    let scale: Float
    /// Sliding window in keys, 0 for none.
    let window: Int
    /// Query at p sees keys up to p - exclude.
    let exclude: Int
    /// Logit soft cap, 0 for none.
    let softCap: Float
    let rowTile: Int
    let stateStride: Int
    /// Bytes of one stored K (or V) vector.
    let vectorBytes: Int

    static var keyTile: Int { RaggedPagedAttention.keyTile }
    static var partitionKeys: Int { RaggedPagedAttention.partitionKeys }
    /// Most query heads of one kv head computed by one `update` (sharing its K/V loads).
    static var sharedHeads: Int { 3 }

    init(q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, layer: PagedKVLayer, qHeads: Int,
         options: AttentionOptions, cuQ: UnsafePointer<Int>, seqLens: UnsafePointer<Int>,
         tables: UnsafePointer<Int32>, maxBlocks: Int, sequences: Int, sinks: UnsafePointer<Float>?,
         statistics: UnsafeMutablePointer<Float>?) {
        self.q = q
        self.out = out
        self.statistics = statistics
        keys = UnsafeRawPointer(layer.keys)
        values = UnsafeRawPointer(layer.values)
        keyScales = UnsafePointer(layer.keyScales)
        valueScales = UnsafePointer(layer.valueScales)
        self.cuQ = cuQ
        self.seqLens = seqLens
        self.tables = tables
        self.maxBlocks = maxBlocks
        self.sequences = sequences
        self.sinks = sinks
        self.qHeads = qHeads
        kvHeads = layer.kvHeads
        group = qHeads / layer.kvHeads
        headDim = layer.headDim
        blockSize = layer.blockSize
        scale = options.scale
        window = options.slidingWindow ?? 0
        exclude = options.excludeRecentKeys
        softCap = options.logitSoftCap ?? 0
        stateStride = 16 + (layer.headDim + 15) / 16 * 16
        // Rows sharing each K/V tile: enough to reuse it, few enough that their states stay in cache.
        rowTile = max(1, min(16, 8192 / (qHeads * stateStride)))
        vectorBytes = layer.headDim * E.size
    }

    // MARK: Positions

    /// Position of the first new token of sequence `s`.
    @inline(__always) func firstPosition(_ s: Int) -> Int { seqLens[s] - (cuQ[s + 1] - cuQ[s]) }
    /// First key position visible from position `p`.
    @inline(__always) func lowestKey(_ p: Int) -> Int { window > 0 ? max(0, p - window + 1) : 0 }
    /// Last key position visible from position `p` (below `lowestKey(p)` when it sees none).
    @inline(__always) func highestKey(_ p: Int) -> Int { p - exclude }

    // MARK: Work units

    /// A position in the ordered list of units, with the running counts needed to address partials.
    struct Cursor {
        var seq = 0, tile = 0
        /// Index of this unit among all units.
        var unit = 0
        /// Index of this unit's first partition among all (unit, partition) items.
        var firstItem = 0
        /// Floats of partials stored before this unit's first partition.
        var partialOffset = 0
    }

    /// Rows `r0 ..< r1` and partitions `k0 ... k1` of the cursor's unit.
    @inline(__always) func describe(_ c: Cursor) -> (r0: Int, r1: Int, k0: Int, k1: Int) {
        let r0 = cuQ[c.seq] + c.tile * rowTile
        let r1 = min(r0 + rowTile, cuQ[c.seq + 1])
        let first = firstPosition(c.seq) - cuQ[c.seq]
        let k0 = lowestKey(first + r0) / Self.partitionKeys
        // A unit whose rows see no key still gets one (empty) partition.
        return (r0, r1, k0, max(k0, highestKey(first + r1 - 1) / Self.partitionKeys))
    }

    /// Skips sequences without query rows; `c.seq == sequences` marks the end.
    @inline(__always) func settle(_ c: inout Cursor) {
        while c.seq < sequences && cuQ[c.seq + 1] == cuQ[c.seq] { c.seq += 1 }
    }

    func start() -> Cursor {
        var c = Cursor()
        settle(&c)
        return c
    }

    /// Moves to the next unit (order: sequence, row tile, kv head).
    @inline(__always) func advance(_ c: inout Cursor) {
        let d = describe(c)
        let partitions = d.k1 - d.k0 + 1
        c.firstItem += partitions
        c.partialOffset += partitions * (d.r1 - d.r0) * qHeads * stateStride
        c.unit += 1
        c.tile += 1
        if cuQ[c.seq] + c.tile * rowTile >= cuQ[c.seq + 1] {
            c.tile = 0
            c.seq += 1
            settle(&c)
        }
    }

    /// Floats of per-thread scratch: running and partial states of one unit.
    var scratchPerThread: Int { 2 * rowTile * qHeads * stateStride }

    /// Computes the whole batch on `pool`, in one parallel region. Threads claim units in order from
    /// a shared counter. With few units (say a small decode batch over long contexts), they first claim
    /// (unit, partition) items, each reduced into its own slot of a partial buffer held in thread 0's
    /// scratch, then, after all items are done, claim units and merge their partitions in order.
    func run(pool: WorkerPool) {
        var end = start()
        while end.seq < sequences { advance(&end) }
        let units = end.unit, partitionItems = end.firstItem
        guard units > 0 else { return }
        // Fewer units than threads: items are (unit, partition, head slice), so that even one
        // decoding sequence over a short context keeps every thread busy; each item fills its
        // heads' states of the partition's slot, which are complete once all items are done. A
        // slice is one kv head's query heads (they share each K/V tile), or one query head when kv
        // heads are too few. (Slicing heads for a few more units measured slower under load.)
        let few = pool.threadCount > 1 && units < 4 * pool.threadCount
        let headsPerSlice = kvHeads >= pool.threadCount ? group : 1
        let headSlices = units < pool.threadCount ? qHeads / headsPerSlice : 1
        let split = few && units < partitionItems * headSlices && end.partialOffset <= RaggedPagedAttention.partialLimit
        let perThread = scratchPerThread
        let partialFloats = split ? end.partialOffset : 0
        let counters = AttentionCounters()
        withUnsafePointer(to: counters) { counters in
            pool.run(AttentionJob(kernel: self, counters: counters, pool: pool, split: split, perThread: perThread,
                                  partialFloats: partialFloats, units: units, headSlices: split ? headSlices : 1,
                                  headsPerSlice: headsPerSlice,
                                  items: partitionItems * (split ? headSlices : 1)))
        }
    }

    @inline(__always) func partitionCount(_ c: Cursor) -> Int {
        let d = describe(c)
        return d.k1 - d.k0 + 1
    }

    // MARK: Per-unit steps

    /// Initial running state of each (row, head) of a unit: the sink logit (weight 1) or empty.
    func begin(seq s: Int, rows r0: Int, _ r1: Int, running: UnsafeMutablePointer<Float>) {
        for i in 0 ..< (r1 - r0) * qHeads {
            let state = running + i * stateStride
            if let sinks {
                state[0] = sinks[i % qHeads]
                state[1] = 1
            } else {
                state[0] = -.infinity
                state[1] = 0
            }
            (state + 16).update(repeating: 0, count: stateStride - 16)
        }
    }

    /// Folds partition `k`'s partial states into the running states of the rows whose keys it holds.
    func merge(seq s: Int, rows r0: Int, _ r1: Int, partition k: Int, partial: UnsafePointer<Float>, into running: UnsafeMutablePointer<Float>) {
        let first = firstPosition(s) - cuQ[s]
        for r in r0 ..< r1 {
            let p = first + r
            guard highestKey(p) >= lowestKey(p), lowestKey(p) / Self.partitionKeys <= k, k <= highestKey(p) / Self.partitionKeys else { continue }
            for h in 0 ..< qHeads {
                let i = (r - r0) * qHeads + h
                let a = running + i * stateStride, b = partial + i * stateStride
                let m = max(a[0], b[0])
                let ca = expf(a[0] - m), cb = expf(b[0] - m)
                a[0] = m
                a[1] = a[1] * ca + b[1] * cb
                let va = SIMD16<Float>(repeating: ca), vb = SIMD16<Float>(repeating: cb)
                var d = 16
                while d < stateStride {
                    Vector.store16(Vector.load16(a + d) * va + Vector.load16(b + d) * vb, a + d)
                    d += 16
                }
            }
        }
    }

    /// Writes `out = accumulator / denominator` for every (row, head) of the unit.
    func finish(rows r0: Int, _ r1: Int, running: UnsafePointer<Float>) {
        for r in r0 ..< r1 {
            for h in 0 ..< qHeads {
                let state = running + ((r - r0) * qHeads + h) * stateStride
                let inverse = state[1] > 0 ? 1 / state[1] : 0
                let o = out + (r * qHeads + h) * headDim
                for d in 0 ..< headDim { o[d] = state[16 + d] * inverse }
                if let statistics {
                    statistics[2 * (r * qHeads + h)] = state[0]
                    statistics[2 * (r * qHeads + h) + 1] = state[1]
                }
            }
        }
    }

    /// Online softmax of the unit's rows over the keys of partition `k` (those each row may see), from
    /// a fresh state, into `partial`. Key tiles are read once and applied to every row and head.
    /// Only the query heads `heads` are computed (all by default); the others' states are untouched.
    @_specialize(exported: false, where E == FP32Element)
    @_specialize(exported: false, where E == F16Element)
    @_specialize(exported: false, where E == BF16Element)
    @_specialize(exported: false, where E == Int8Element)
    func computePartition(seq s: Int, rows r0: Int, _ r1: Int, partition k: Int, heads: Range<Int>? = nil,
                          into partial: UnsafeMutablePointer<Float>) {
        let heads = heads ?? 0 ..< qHeads
        let partStart = k * Self.partitionKeys
        let partLast = partStart + Self.partitionKeys - 1
        let first = firstPosition(s) - cuQ[s]
        let keyLow = max(partStart, lowestKey(first + r0))
        let keyHigh = min(partLast, highestKey(first + r1 - 1))
        for r in 0 ..< r1 - r0 {
            for head in heads {
                let state = partial + (r * qHeads + head) * stateStride
                state[0] = -.infinity
                state[1] = 0
                (state + 16).update(repeating: 0, count: stateStride - 16)
            }
        }
        guard keyLow <= keyHigh else { return }
        let table = tables + s * maxBlocks
        // One stack allocation, carved into `partials: [sharedHeads * keyTile] SIMD8<Float>`,
        // `weights: [sharedHeads * keyTile] Float` and `offsets: [keyTile] Int`. (Left generic,
        // this function's scratch closure looked up generic metadata on every call, ~0.7% of a
        // 32-sequence decode profile; the `@_specialize` attributes above removed that.)
        let partialBytes = Self.sharedHeads * Self.keyTile * MemoryLayout<SIMD8<Float>>.stride
        let weightBytes = Self.sharedHeads * Self.keyTile * MemoryLayout<Float>.stride
        withUnsafeTemporaryAllocation(byteCount: partialBytes + weightBytes + Self.keyTile * MemoryLayout<Int>.stride,
                                      alignment: MemoryLayout<SIMD8<Float>>.alignment) { scratch in
            let base = scratch.baseAddress.unsafelyUnwrapped
            let partials = base.bindMemory(to: SIMD8<Float>.self, capacity: Self.sharedHeads * Self.keyTile)
            let weights = (base + partialBytes).bindMemory(to: Float.self, capacity: Self.sharedHeads * Self.keyTile)
            let offsets = (base + partialBytes + weightBytes).bindMemory(to: Int.self, capacity: Self.keyTile)
            var tileStart = keyLow / Self.keyTile * Self.keyTile
            while tileStart <= keyHigh {
                // Byte offsets of the K/V vectors (of head g) of the tile's keys, and their index.
                let lo = max(tileStart, keyLow), hi = min(tileStart + Self.keyTile - 1, keyHigh)
                for pos in lo ... hi {
                    let block = Int(table[pos / blockSize])
                    offsets[pos - tileStart] = (block * blockSize + pos % blockSize) * kvHeads
                }
                // The next tile's K and V (all kv heads), fetched a few lines per update of this
                // tile: where its keys are consecutive slots of one block, one span of each.
                var fetch = NextTileFetch()
                let nextStart = tileStart + Self.keyTile
                if nextStart <= keyHigh && blockSize % Self.keyTile == 0 {
                    let vector = (Int(table[nextStart / blockSize]) * blockSize + nextStart % blockSize) * kvHeads
                    let count = min(Self.keyTile, keyHigh - nextStart + 1)
                    // Spread over about every update of this tile (one per row, kv head and
                    // `sharedHeads` query heads of it), a few lines per key.
                    let lines = (count * kvHeads * vectorBytes + 63) / 64
                    let groupsInRange = lastGroupOf(heads) - heads.lowerBound / group + 1
                    let updates = (r1 - r0) * groupsInRange * ((min(group, heads.count) + Self.sharedHeads - 1) / Self.sharedHeads)
                    let perKey = min(4, max(1, (lines + updates * Self.keyTile - 1) / (updates * Self.keyTile)))
                    fetch = NextTileFetch(key: keys + vector * vectorBytes, value: values + vector * vectorBytes,
                                          lines: lines, perKey: perKey)
                }
                // The kv heads of the tile's tokens: one contiguous stretch of each block.
                let firstGroup = heads.lowerBound / group, lastGroup = lastGroupOf(heads)
                for g in firstGroup ... lastGroup {
                    let step = g > firstGroup ? 1 : g
                    if step > 0 { for j in lo - tileStart ... hi - tileStart { offsets[j] += step } }
                    for r in r0 ..< r1 {
                        let p = first + r
                        let jLo = max(lo, lowestKey(p)) - tileStart
                        let jHi = min(hi, highestKey(p)) - tileStart
                        if jLo > jHi { continue }
                        // The kv head's query heads, up to `sharedHeads` per update (they share
                        // each K/V load).
                        var h = max(0, heads.lowerBound - g * group)
                        let hEnd = min(group, heads.upperBound - g * group)
                        while h < hEnd {
                            let n = min(Self.sharedHeads, hEnd - h)
                            let qHead = g * group + h
                            let state = partial + ((r - r0) * qHeads + qHead) * stateStride
                            let query = q + (r * qHeads + qHead) * headDim
                            switch n {
                            case 1: update(OneSharedHead.self, state: state, query: query, offsets: offsets, partials: partials, weights: weights, jLo, jHi, fetch: fetch)
                            case 2: update(TwoSharedHeads.self, state: state, query: query, offsets: offsets, partials: partials, weights: weights, jLo, jHi, fetch: fetch)
                            default: update(ThreeSharedHeads.self, state: state, query: query, offsets: offsets, partials: partials, weights: weights, jLo, jHi, fetch: fetch)
                            }
                            fetch.advance(keys: jHi - jLo + 1)
                            h += n
                        }
                    }
                }
                tileStart += Self.keyTile
            }
        }
    }

    /// The kv head of the last query head of `heads`.
    @inline(__always) func lastGroupOf(_ heads: Range<Int>) -> Int { (heads.upperBound - 1) / group }

    /// Keys whose scores one `dotPartials` computes together for `n` heads, and dimensions of V
    /// that one pass of the weighted sum covers: enough independent multiply-add chains to cover
    /// their latency, few enough that accumulators and operands stay in registers. AVX-512 has 32
    /// vector registers and a SIMD16 takes one; AVX2 has 16, a SIMD16 takes two, so there three
    /// heads score two keys at a time (6 chains) and sum V 16 dimensions per pass (six ymm
    /// accumulators); NEON's 32 128-bit registers take the AVX2 choice too.
    @inline(__always) static func scoreKeys(heads n: Int) -> Int {
        #if PAGODA_AVX512
        n == 1 ? 8 : 4
        #else
        n == 1 ? 8 : n == 2 ? 4 : 2
        #endif
    }

    /// See `scoreKeys(heads:)`.
    @inline(__always) static func valueDims(heads n: Int) -> Int {
        #if PAGODA_AVX512
        64
        #else
        n == 1 ? 64 : n == 2 ? 32 : 16
        #endif
    }

    /// One online-softmax step of `H.n` (1 to `sharedHeads`) consecutive query heads of one row, all
    /// of one kv head, over tile keys `jLo ... jHi` (vector indices `offsets[j]`): scores, tile max,
    /// rescale, exp, weighted V sum, V accumulated in ascending j. Head `h` has its state at
    /// `state + h * stateStride` and its query at `query + h * headDim`. Each K and V vector is
    /// loaded (and converted) once for the `n` heads; every head's arithmetic is the same sequence of
    /// operations as when it is computed alone, so results do not depend on `n`, nor on how many
    /// keys or dimensions each inner loop takes at a time.
    /// `partials: [sharedHeads * 16]` and `weights: [sharedHeads * 16]` are per-thread stack scratch.
    /// (Specialized explicitly for every element type and head count: called from inside
    /// `computePartition`'s scratch closures, the optimizer otherwise left it generic, reading every
    /// K/V element through the protocol witness.)
    @inline(__always)
    @_specialize(exported: false, where E == FP32Element, H == OneSharedHead)
    @_specialize(exported: false, where E == FP32Element, H == TwoSharedHeads)
    @_specialize(exported: false, where E == FP32Element, H == ThreeSharedHeads)
    @_specialize(exported: false, where E == F16Element, H == OneSharedHead)
    @_specialize(exported: false, where E == F16Element, H == TwoSharedHeads)
    @_specialize(exported: false, where E == F16Element, H == ThreeSharedHeads)
    @_specialize(exported: false, where E == BF16Element, H == OneSharedHead)
    @_specialize(exported: false, where E == BF16Element, H == TwoSharedHeads)
    @_specialize(exported: false, where E == BF16Element, H == ThreeSharedHeads)
    @_specialize(exported: false, where E == Int8Element, H == OneSharedHead)
    @_specialize(exported: false, where E == Int8Element, H == TwoSharedHeads)
    @_specialize(exported: false, where E == Int8Element, H == ThreeSharedHeads)
    func update<H: SharedHeadCount>(_: H.Type, state: UnsafeMutablePointer<Float>, query: UnsafePointer<Float>, offsets: UnsafePointer<Int>,
                                    partials: UnsafeMutablePointer<SIMD8<Float>>, weights: UnsafeMutablePointer<Float>, _ jLo: Int, _ jHi: Int,
                                    fetch: NextTileFetch) {
        let n = H.n
        // Per-key lane partial sums of q . k (8 lanes: one AVX2 register), several keys (and heads)
        // at a time where the tile allows (independent chains; each key's sum is the one
        // `dotPartial` forms), then one transposing reduction per head gives lane j = score j.
        // (16-lane partials took twice the registers and a reduction as costly as the products.)
        let tile = Self.keyTile
        let wideKeys = Self.scoreKeys(heads: n)
        var j = 0
        while j < tile {
            if j >= jLo && j + wideKeys - 1 <= jHi {
                dotPartials(query, offsets + j, keys: wideKeys, heads: n, into: partials + j)
                prefetchValues(offsets, from: j, to: j + wideKeys - 1)
                j += wideKeys
            } else if wideKeys == 8 && j >= jLo && j + 3 <= jHi {
                dotPartials(query, offsets + j, keys: 4, heads: n, into: partials + j)
                prefetchValues(offsets, from: j, to: j + 3)
                j += 4
            } else {
                for h in 0 ..< n {
                    partials[h * tile + j] = j < jLo || j > jHi ? SIMD8() : dotPartial(query + h * headDim, keys + offsets[j] * vectorBytes)
                }
                j += 1
            }
        }
        let c0 = softmaxStep(state: state, partials: partials, weights: weights, offsets: offsets, jLo, jHi)
        let c1 = n >= 2 ? softmaxStep(state: state + stateStride, partials: partials + tile, weights: weights + tile, offsets: offsets, jLo, jHi) : 1
        let c2 = n >= 3 ? softmaxStep(state: state + 2 * stateStride, partials: partials + 2 * tile, weights: weights + 2 * tile, offsets: offsets, jLo, jHi) : 1
        let acc0 = state + 16, acc1 = state + stateStride + 16, acc2 = state + 2 * stateStride + 16
        // A head's accumulator chunk, times its correction unless that is exactly 1.
        @inline(__always) func resumed(_ p: UnsafeMutablePointer<Float>, _ correction: Float) -> SIMD16<Float> {
            let a = Vector.load16(p)
            return correction != 1 ? a * SIMD16(repeating: correction) : a
        }
        // `width` (16, 32 or 64) dimensions per pass over the keys: up to four independent
        // accumulator vectors per head instead of one chain of dependent multiply-adds (each
        // element still adds its keys in ascending j).
        let width = Self.valueDims(heads: n)
        let two = width >= 32, four = width == 64
        var d = 0
        while d + width <= headDim {
            var a0 = resumed(acc0 + d, c0)
            var a1 = two ? resumed(acc0 + d + 16, c0) : SIMD16()
            var a2 = four ? resumed(acc0 + d + 32, c0) : SIMD16()
            var a3 = four ? resumed(acc0 + d + 48, c0) : SIMD16()
            var b0 = n >= 2 ? resumed(acc1 + d, c1) : SIMD16()
            var b1 = n >= 2 && two ? resumed(acc1 + d + 16, c1) : SIMD16()
            var b2 = n >= 2 && four ? resumed(acc1 + d + 32, c1) : SIMD16()
            var b3 = n >= 2 && four ? resumed(acc1 + d + 48, c1) : SIMD16()
            var e0 = n >= 3 ? resumed(acc2 + d, c2) : SIMD16()
            var e1 = n >= 3 && two ? resumed(acc2 + d + 16, c2) : SIMD16()
            var e2 = n >= 3 && four ? resumed(acc2 + d + 32, c2) : SIMD16()
            var e3 = n >= 3 && four ? resumed(acc2 + d + 48, c2) : SIMD16()
            for j in jLo ... jHi {
                if d == 0 { fetch.request(key: j - jLo) }
                let v = values + offsets[j] * vectorBytes
                let v0 = E.load16(v, d)
                let v1 = two ? E.load16(v, d + 16) : SIMD16()
                let v2 = four ? E.load16(v, d + 32) : SIMD16()
                let v3 = four ? E.load16(v, d + 48) : SIMD16()
                let w0 = SIMD16(repeating: weights[j])
                a0.addProduct(w0, v0)
                if two { a1.addProduct(w0, v1) }
                if four {
                    a2.addProduct(w0, v2)
                    a3.addProduct(w0, v3)
                }
                if n >= 2 {
                    let w1 = SIMD16(repeating: weights[tile + j])
                    b0.addProduct(w1, v0)
                    if two { b1.addProduct(w1, v1) }
                    if four {
                        b2.addProduct(w1, v2)
                        b3.addProduct(w1, v3)
                    }
                }
                if n >= 3 {
                    let w2 = SIMD16(repeating: weights[2 * tile + j])
                    e0.addProduct(w2, v0)
                    if two { e1.addProduct(w2, v1) }
                    if four {
                        e2.addProduct(w2, v2)
                        e3.addProduct(w2, v3)
                    }
                }
            }
            Vector.store16(a0, acc0 + d)
            if two { Vector.store16(a1, acc0 + d + 16) }
            if four {
                Vector.store16(a2, acc0 + d + 32)
                Vector.store16(a3, acc0 + d + 48)
            }
            if n >= 2 {
                Vector.store16(b0, acc1 + d)
                if two { Vector.store16(b1, acc1 + d + 16) }
                if four {
                    Vector.store16(b2, acc1 + d + 32)
                    Vector.store16(b3, acc1 + d + 48)
                }
            }
            if n >= 3 {
                Vector.store16(e0, acc2 + d)
                if two { Vector.store16(e1, acc2 + d + 16) }
                if four {
                    Vector.store16(e2, acc2 + d + 32)
                    Vector.store16(e3, acc2 + d + 48)
                }
            }
            d += width
        }
        // Head dimensions that are not a multiple of the pass width (rare): the rest per head.
        for h in 0 ..< n where d < headDim {
            let acc = state + h * stateStride + 16, w = weights + h * tile
            let correction = h == 0 ? c0 : h == 1 ? c1 : c2
            var e = d
            while e + 16 <= headDim {
                var a = Vector.load16(acc + e)
                if correction != 1 { a *= SIMD16(repeating: correction) }
                for j in jLo ... jHi {
                    if e == 0 && h == 0 { fetch.request(key: j - jLo) }
                    a.addProduct(SIMD16(repeating: w[j]), E.load16(values + offsets[j] * vectorBytes, e))
                }
                Vector.store16(a, acc + e)
                e += 16
            }
            while e < headDim {
                var a = acc[e]
                if correction != 1 { a *= correction }
                for j in jLo ... jHi {
                    a += w[j] * E.load1(values + offsets[j] * vectorBytes, e)
                }
                acc[e] = a
                e += 1
            }
        }
    }

    /// Asks for the V vectors of tile keys `from ... to` into L1 (`pagoda_prefetch`) while their
    /// scores are computed, so the weighted V sum after the softmax finds them there (its first V
    /// loads were the kernel's largest stall; the next-tile fetch brings lines only as far as L2).
    /// K fetched the same way, one group of keys ahead of the score loop, or for the next kv head
    /// during the V sum, measured no better or worse (`bench attention --cold`).
    @inline(__always)
    func prefetchValues(_ offsets: UnsafePointer<Int>, from: Int, to: Int) {
        var k = from
        while k <= to {
            let v = values + offsets[k] * vectorBytes
            var b = 0
            while b < vectorBytes {
                pagoda_prefetch(v + b)
                b += 64
            }
            k += 1
        }
    }

    /// The softmax part of `update` for one head: its scores from the per-key `partials: [16]`,
    /// scaled, capped and masked to `jLo ... jHi`; the running maximum and denominator in `state`
    /// updated; the tile's weights (times V's scales, when stored scaled) in `weights: [16]`.
    /// Returns the factor the head's accumulator must be multiplied by first (exactly 1 when the
    /// maximum stayed).
    @inline(__always)
    func softmaxStep(state: UnsafeMutablePointer<Float>, partials: UnsafeMutablePointer<SIMD8<Float>>, weights: UnsafeMutablePointer<Float>,
                     offsets: UnsafePointer<Int>, _ jLo: Int, _ jHi: Int) -> Float {
        var scores = reduceTransposed(partials)
        if E.isScaled {
            for j in jLo ... jHi { weights[j] = keyScales[offsets[j]] }
            scores *= Vector.load16(weights)
        }
        scores *= scale
        if softCap > 0 {
            Vector.store16(scores, weights)
            for j in jLo ... jHi { weights[j] = softCap * tanhf(weights[j] / softCap) }
            scores = Vector.load16(weights)
        }
        if jLo > 0 || jHi < Self.keyTile - 1 {
            // Float lane indices: masks of float comparisons vectorize, those of Int32 ones do not.
            let lanes = SIMD16<Float>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
            scores.replace(with: -.infinity, where: lanes .< Float(jLo))
            scores.replace(with: -.infinity, where: lanes .> Float(jHi))
        }
        let oldMax = state[0]
        let newMax = max(oldMax, treeMax(scores))
        // The maximum often stays (later tiles of a long context): then the factor is exactly 1,
        // as `expf(0)` gives, without the call.
        let correction = newMax == oldMax ? 1 : expf(oldMax - newMax)
        let p = exp16(scores - SIMD16(repeating: newMax))
        state[0] = newMax
        state[1] = state[1] * correction + treeSum(p)
        Vector.store16(p, weights)
        if E.isScaled {
            for j in jLo ... jHi { weights[j] *= valueScales[offsets[j]] }
        }
        return correction
    }

    /// Lane-wise partial products of `query . key` summed over 8-element chunks (a tail shorter than
    /// 8 is summed in order into lane 0); the lanes still need adding.
    @inline(__always)
    func dotPartial(_ query: UnsafePointer<Float>, _ key: UnsafeRawPointer) -> SIMD8<Float> {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= headDim {
            acc.addProduct(Vector.load8(query + i), E.load8(key, i))
            i += 8
        }
        addTail(&acc, query, key, from: i)
        return acc
    }

    /// `dotPartial` of the `count` keys at vector indices `offsets[0 ..< count]` for `heads`
    /// consecutive query heads (`query + h * headDim`), interleaved: independent multiply-add
    /// chains instead of one key's chain at a time (bitwise the same sums), each key chunk loaded
    /// once for all heads. Head `h`'s partial of key `k` goes to `out[h * 16 + k]`. Supported:
    /// 8 keys for one head, 4 keys for up to three, 2 for up to three (see `scoreKeys(heads:)`);
    /// eight chains cover the multiply-add latency, four left the core waiting on each chain.
    /// Both are constants at every call, so the unused chains fold away. (`@_transparent`: with
    /// `@inline(__always)` it stayed a call taking both as arguments.)
    @_transparent
    func dotPartials(_ query: UnsafePointer<Float>, _ offsets: UnsafePointer<Int>, keys count: Int, heads: Int,
                     into out: UnsafeMutablePointer<SIMD8<Float>>) {
        let four = count >= 4, wide = count == 8, second = heads >= 2, third = heads >= 3
        let tile = Self.keyTile
        let k0 = keys + offsets[0] * vectorBytes, k1 = keys + offsets[1] * vectorBytes
        let k2 = four ? keys + offsets[2] * vectorBytes : k0, k3 = four ? keys + offsets[3] * vectorBytes : k0
        let k4 = wide ? keys + offsets[4] * vectorBytes : k0, k5 = wide ? keys + offsets[5] * vectorBytes : k0
        let k6 = wide ? keys + offsets[6] * vectorBytes : k0, k7 = wide ? keys + offsets[7] * vectorBytes : k0
        let q1 = query + headDim, q2 = query + 2 * headDim
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        var a4 = SIMD8<Float>(), a5 = SIMD8<Float>(), a6 = SIMD8<Float>(), a7 = SIMD8<Float>()
        var b0 = SIMD8<Float>(), b1 = SIMD8<Float>(), b2 = SIMD8<Float>(), b3 = SIMD8<Float>()
        var e0 = SIMD8<Float>(), e1 = SIMD8<Float>(), e2 = SIMD8<Float>(), e3 = SIMD8<Float>()
        var i = 0
        while i + 8 <= headDim {
            let x = Vector.load8(query + i)
            let y0 = E.load8(k0, i), y1 = E.load8(k1, i)
            let y2 = four ? E.load8(k2, i) : SIMD8(), y3 = four ? E.load8(k3, i) : SIMD8()
            a0.addProduct(x, y0)
            a1.addProduct(x, y1)
            if four {
                a2.addProduct(x, y2)
                a3.addProduct(x, y3)
            }
            if wide {
                a4.addProduct(x, E.load8(k4, i))
                a5.addProduct(x, E.load8(k5, i))
                a6.addProduct(x, E.load8(k6, i))
                a7.addProduct(x, E.load8(k7, i))
            }
            if second {
                let x1 = Vector.load8(q1 + i)
                b0.addProduct(x1, y0)
                b1.addProduct(x1, y1)
                if four {
                    b2.addProduct(x1, y2)
                    b3.addProduct(x1, y3)
                }
            }
            if third {
                let x2 = Vector.load8(q2 + i)
                e0.addProduct(x2, y0)
                e1.addProduct(x2, y1)
                if four {
                    e2.addProduct(x2, y2)
                    e3.addProduct(x2, y3)
                }
            }
            i += 8
        }
        out[0] = a0
        out[1] = a1
        if four {
            out[2] = a2
            out[3] = a3
        }
        if wide {
            out[4] = a4
            out[5] = a5
            out[6] = a6
            out[7] = a7
        }
        if second {
            out[tile] = b0
            out[tile + 1] = b1
            if four {
                out[tile + 2] = b2
                out[tile + 3] = b3
            }
        }
        if third {
            out[2 * tile] = e0
            out[2 * tile + 1] = e1
            if four {
                out[2 * tile + 2] = e2
                out[2 * tile + 3] = e3
            }
        }
        for h in 0 ..< heads {
            for k in 0 ..< count { addTail(&out[h * tile + k], query + h * headDim, keys + offsets[k] * vectorBytes, from: i) }
        }
    }

    /// Adds `query . key` over elements `i ..< headDim` (fewer than 8), summed in order, to lane 0.
    @inline(__always)
    func addTail(_ acc: inout SIMD8<Float>, _ query: UnsafePointer<Float>, _ key: UnsafeRawPointer, from start: Int) {
        guard start < headDim else { return }
        var tail: Float = 0
        for i in start ..< headDim { tail += query[i] * E.load1(key, i) }
        acc[0] += tail
    }
}

/// The K and V bytes of the tile after the current one, asked into cache `perKey` lines of each
/// per key of a weighted V sum, spread over the current tile's updates. The tile's keys are one
/// block, placed anywhere in the pool, and the kernel reads it head by head (384-byte strides for
/// SmolLM2 in f16), which the hardware prefetcher followed poorly: decode attention over 32
/// sequences waited on memory at the first K and V loads of every tile. In a C model of that
/// access pattern, fetching the next block this way doubled the read rate (3.9-5.8 to 8.5 GB/s
/// per thread); fetching it in one burst, or the current block first, did not help, and neither
/// did asking for it within the first third of the tile rather than spread over all of it.
/// The lines go to L2, not L1 (`pagoda_prefetch_l2`): with the current tile's 12 KiB (SmolLM2,
/// f16) and the per-thread states in L1 too, fetched into L1 they displaced lines still in use;
/// L2 took 32-sequence decode from 796 / 796 / 744 to 902 / 863 / 867 tok/s in alternating runs.
/// Fetching two tiles ahead gained nothing more into L2; into L1 it made `bench attention --cold`
/// steps 18-43% slower at context 192 and 6-25% at 1024.
struct NextTileFetch {
    private var key: UnsafeRawPointer?
    private var value: UnsafeRawPointer?
    /// Lines of each still to ask for.
    private var remaining: Int
    /// Lines of each asked for per key of an update.
    private let perKey: Int

    init() {
        key = nil
        value = nil
        remaining = 0
        perKey = 0
    }

    init(key: UnsafeRawPointer, value: UnsafeRawPointer, lines: Int, perKey: Int) {
        self.key = key
        self.value = value
        remaining = lines
        self.perKey = perKey
    }

    /// Asks for the lines (of those left) of K and of V that belong to key `k` of the current update.
    @inline(__always)
    func request(key k: Int) {
        guard let key, let value else { return }
        var line = k * perKey
        let end = min(line + perKey, remaining)
        while line < end {
            pagoda_prefetch_l2(key + 64 * line)
            pagoda_prefetch_l2(value + 64 * line)
            line += 1
        }
    }

    /// Moves past the lines an update of `keys` keys asked for.
    mutating func advance(keys: Int) {
        guard remaining > 0, let key, let value else { return }
        let step = min(keys * perKey, remaining)
        self.key = key + 64 * step
        self.value = value + 64 * step
        remaining -= step
    }
}

/// Lane j of the result is the sum of the 8 lanes of `v[j]` (a fixed pairwise tree: adjacent
/// lanes, then adjacent pairs, then the two quads), for `v: [16]`. Three rounds of adjacent-pair
/// adds over 16-lane vectors (`pagoda_fold16_width2`: two permutes and an add each), seven in all,
/// instead of per-half shuffles of 8-lane vectors (about a hundred instructions per head and tile).
@inline(__always)
func reduceTransposed(_ v: UnsafePointer<SIMD8<Float>>) -> SIMD16<Float> {
    let raw = UnsafeRawPointer(v)
    // Keys 2i and 2i + 1 side by side.
    @inline(__always) func keyPair(_ i: Int) -> SIMD16<Float> { raw.loadUnaligned(fromByteOffset: 64 * i, as: SIMD16<Float>.self) }
    // Four lanes per key (keys 4c ..< 4c + 4), then two (8c ..< 8c + 8), then one.
    let quads0 = pagoda_fold16_width2(keyPair(0), keyPair(1)), quads1 = pagoda_fold16_width2(keyPair(2), keyPair(3))
    let quads2 = pagoda_fold16_width2(keyPair(4), keyPair(5)), quads3 = pagoda_fold16_width2(keyPair(6), keyPair(7))
    let pairs0 = pagoda_fold16_width2(quads0, quads1), pairs1 = pagoda_fold16_width2(quads2, quads3)
    return pagoda_fold16_width2(pairs0, pairs1)
}

/// Sum of the lanes of `v` by a fixed pairwise tree.
@inline(__always)
func treeSum(_ v: SIMD16<Float>) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    let c = b.lowHalf + b.highHalf
    return c[0] + c[1]
}

/// The largest lane of `v` as a fixed tree of selects (`a > b ? a : b` per lane), written as
/// whole-vector compares and blends: `SIMD.max()` and `pointwiseMax` stay scalar or out-of-line
/// calls, and so did a per-lane loop of selects. NaN-free inputs only.
@inline(__always)
func treeMax(_ v: SIMD16<Float>) -> Float {
    let a = v.highHalf.replacing(with: v.lowHalf, where: v.lowHalf .> v.highHalf)
    let b = a.highHalf.replacing(with: a.lowHalf, where: a.lowHalf .> a.highHalf)
    let c = b.highHalf.replacing(with: b.lowHalf, where: b.lowHalf .> b.highHalf)
    return c[0] > c[1] ? c[0] : c[1]
}

/// `exp(x)` per lane (Cephes polynomial, ~1 ulp); lanes below -87.3 (masked keys at -inf) give exactly 0.
@_transparent
func exp16(_ x: SIMD16<Float>) -> SIMD16<Float> {
    let tooSmall = x .< -87.3
    let clamped = x.replacing(with: -87.3, where: tooSmall).replacing(with: 88.3, where: x .> 88.3)
    let magic = SIMD16<Float>(repeating: 12582912)  // 1.5 * 2^23: rounds to an integer in the low bits
    let shifted = clamped * 1.44269504088896341 + magic
    let n = shifted - magic
    var r = clamped - n * 0.693359375
    r = r - n * -2.12194440e-4
    var p = SIMD16<Float>(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    p = p * (r * r) + r + 1
    let exponent = (unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
    var y = p * unsafeBitCast(exponent, to: SIMD16<Float>.self)
    y.replace(with: 0, where: tooSmall)
    return y
}

/// The shared counters of one attention parallel region (work claimed in order, partials published).
struct AttentionCounters: ~Copyable {
    let published = Atomic<Int>(0)
    let nextItem = Atomic<Int>(0)
    let doneItems = Atomic<Int>(0)
    let nextUnit = Atomic<Int>(0)
}

/// One thread's part of `AttentionKernel.run`: claims units (or, split, partition items and then
/// units) from the shared counters until none is left.
struct AttentionJob<E: KVElement>: ParallelJob {
    let kernel: AttentionKernel<E>
    let counters: UnsafePointer<AttentionCounters>
    let pool: WorkerPool
    let split: Bool
    let perThread: Int
    let partialFloats: Int
    let units: Int
    /// Items per (unit, partition): 1, or one per slice of `headsPerSlice` query heads.
    let headSlices: Int
    let headsPerSlice: Int
    let items: Int

    func run(thread t: Int) {
        // Scratch is fetched inside the region: the pool's lock keeps other callers out meanwhile.
        let running = pool.scratch(thread: t, count: perThread + (t == 0 ? partialFloats : 0))
        let partial = running + kernel.rowTile * kernel.qHeads * kernel.stateStride
        if split {
            if t == 0 { counters.pointee.published.store(Int(bitPattern: running + perThread), ordering: .releasing) }
            var address = counters.pointee.published.load(ordering: .acquiring)
            while address == 0 { address = counters.pointee.published.load(ordering: .acquiring) }
            let partials = UnsafeMutablePointer<Float>(bitPattern: address).unsafelyUnwrapped
            var c = kernel.start()
            while true {
                let claimed = counters.pointee.nextItem.wrappingAdd(1, ordering: .relaxed).oldValue
                if claimed >= items { break }
                let item = claimed / headSlices, head = claimed % headSlices
                while c.firstItem + kernel.partitionCount(c) <= item { kernel.advance(&c) }
                let d = kernel.describe(c)
                let index = item - c.firstItem
                let slot = partials + c.partialOffset + index * (d.r1 - d.r0) * kernel.qHeads * kernel.stateStride
                kernel.computePartition(seq: c.seq, rows: d.r0, d.r1, partition: d.k0 + index,
                                        heads: headSlices == 1 ? nil : head * headsPerSlice ..< (head + 1) * headsPerSlice, into: slot)
                counters.pointee.doneItems.wrappingAdd(1, ordering: .releasing)
            }
            while counters.pointee.doneItems.load(ordering: .acquiring) < items {}
            c = kernel.start()
            while true {
                let unit = counters.pointee.nextUnit.wrappingAdd(1, ordering: .relaxed).oldValue
                if unit >= units { break }
                while c.unit < unit { kernel.advance(&c) }
                let d = kernel.describe(c)
                let rows = d.r1 - d.r0
                kernel.begin(seq: c.seq, rows: d.r0, d.r1, running: running)
                for k in d.k0 ... d.k1 {
                    let slot = partials + c.partialOffset + (k - d.k0) * rows * kernel.qHeads * kernel.stateStride
                    kernel.merge(seq: c.seq, rows: d.r0, d.r1, partition: k, partial: slot, into: running)
                }
                kernel.finish(rows: d.r0, d.r1, running: running)
            }
        } else {
            var c = kernel.start()
            while true {
                let unit = counters.pointee.nextUnit.wrappingAdd(1, ordering: .relaxed).oldValue
                if unit >= units { break }
                while c.unit < unit { kernel.advance(&c) }
                let d = kernel.describe(c)
                kernel.begin(seq: c.seq, rows: d.r0, d.r1, running: running)
                for k in d.k0 ... d.k1 {
                    kernel.computePartition(seq: c.seq, rows: d.r0, d.r1, partition: k, into: partial)
                    kernel.merge(seq: c.seq, rows: d.r0, d.r1, partition: k, partial: partial, into: running)
                }
                kernel.finish(rows: d.r0, d.r1, running: running)
            }
        }
    }
}
