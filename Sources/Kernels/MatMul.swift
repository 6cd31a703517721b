import Formats
import Int8Dot
import LaneShuffles
import Synchronization

/// The precision of the activations a matrix product reads.
public enum ActivationPrecision: String, Sendable, CaseIterable {
    /// Exact: float32 activations against the (decoded) weights. The default.
    case fp32
    /// Lossy and faster: activations quantized to 8 bits per 32 values (one float scale each, as
    /// llama.cpp's Q8_0/Q8_1) and multiplied with the weights' integers. Weight types without an
    /// int8 kernel keep float32 activations.
    case int8
}

/// Dense products of float32 activations with weight matrices of any stored type.
///
/// Quantized weights are never expanded in memory: each 32-weight chunk is decoded into registers
/// (`WeightChunkDecoder.fusedChunk`: one fused multiply-add per 16 weights, or for 4- and 5-bit
/// values on AVX-512 one table lookup) and multiplied there. A decoded
/// chunk is reused for up to eight tokens (register blocking), so a prefill step decodes the
/// weights once per tile of tokens and a decode step streams them exactly once.
///
/// Every kernel computes a given (row, token) dot product in the same order — one float32
/// accumulator vector, fused multiply-adds chunk after chunk, then the same horizontal sum — so a
/// token's result is bitwise the same whichever kernel and batch it runs in.
public enum MatMul {
    /// Bytes ahead of the decode kernel's weight stream that it prefetches (`PAGODA_PREFETCH_BYTES`).
    static let prefetchDistance = Int(PAGODA_PREFETCH_BYTES)

    /// Weight rows each thread's range is aligned to: the decode kernel takes four rows at once.
    static let rowTile = 4
    /// Rows per packed group of the int8 kernels (`Int8Dot`, as compiled: 16 with AVX-512 VNNI, else 8).
    public static let int8GroupRows = pagoda_i8_group_rows()
    /// Rows whose weights stay cache-resident while every token tile of a step passes over them.
    static let rowChunk = 32
    /// Bytes of packed input a token tile's span may take, so it stays in L1 (32 KiB here) while the
    /// chunk's rows pass over it. On the AVX2 EPYC, the former 12-token tiles of Q8_0 weights 1536
    /// columns wide: 17 GMAC/s per core in one span (72 KiB), 23 in three (24 KiB each); 576 columns
    /// (27 KiB) gained nothing from splitting.
    static let spanInputBytes = 28 * 1024

    /// `output[t, r] = sum_c input[t, c] * weight[r, c]` for `tokens` rows of input
    /// (`input: [tokens, weight.cols]`, `output: [tokens, outputStride]`, written at column offset 0).
    /// Weight rows are split between the pool's threads.
    public static func multiply(
        _ input: UnsafePointer<Float>, tokens: Int,
        by weight: WeightMatrix,
        into output: UnsafeMutablePointer<Float>, outputStride: Int? = nil,
        pool: WorkerPool
    ) {
        run(ProductList(Product(input: input, tokens: tokens, weight: weight, output: output, stride: outputStride ?? weight.rows)), pool: pool)
    }

    /// Two or three products of the same input in one parallel region (Q, K and V, or gate and
    /// up), so a decode step pays one fork/join instead of one per matrix. Each output is
    /// `[tokens, weight.rows]`; all weights must have `cols` equal to the input's width.
    public static func multiply(
        _ input: UnsafePointer<Float>, tokens: Int,
        fused first: (weight: WeightMatrix, output: UnsafeMutablePointer<Float>),
        _ second: (weight: WeightMatrix, output: UnsafeMutablePointer<Float>),
        _ third: (weight: WeightMatrix, output: UnsafeMutablePointer<Float>)? = nil,
        pool: WorkerPool
    ) {
        func product(_ p: (weight: WeightMatrix, output: UnsafeMutablePointer<Float>)) -> Product {
            Product(input: input, tokens: tokens, weight: p.weight, output: p.output, stride: p.weight.rows)
        }
        run(ProductList(product(first), product(second), third.map(product)), pool: pool)
    }

    /// Splits the tiles of all products between the threads. Float products of more than
    /// `packedTokenLimit` tokens run as several regions of at most that many tokens each (results
    /// are bitwise the same: a token's sums never depend on its batch).
    private static func run(_ products: ProductList, pool: WorkerPool) {
        let tokens = products.first.tokens
        if tokens > packedTokenLimit && !products.first.weight.int8Activations {
            var start = 0
            while start < tokens {
                let end = min(tokens, start + packedTokenLimit)
                runRegion(products.tokens(start ..< end), pool: pool)
                start = end
            }
            return
        }
        runRegion(products, pool: pool)
    }

    /// Most tokens of one float region: each thread packs the region's whole input into its
    /// scratch (`Product.packedInput`), `tokens x cols` floats. At 512 tokens that raised peak RSS
    /// by 8-9 MiB for SmolLM2 (3.1 MB per thread for its 1536-column matrices); at 128 it is a
    /// quarter of that, and each 32-row chunk of weights is read four times per 512 tokens instead
    /// of once, from L2 or L3.
    static let packedTokenLimit = 128

    private static func runRegion(_ products: ProductList, pool: WorkerPool) {
        if products.first.tokens < claimedSplitTokens || pool.threadCount == 1 {
            // Static contiguous ranges: each thread streams its own part of the weights (ranges
            // taken dynamically from a shared counter measured 15-20% slower for decode).
            pool.parallelFor(products.totalTiles, ProductJob(products: products, pool: pool))
            return
        }
        // Compute-bound batches: threads claim chunks of rows from a counter, so a thread slowed
        // by other load on its core (a shared 2-core VM) does less instead of keeping the others
        // waiting at the barrier: statically split, one thread waited 4-7% of a pp32 profile.
        let next = Atomic<Int>(0)
        withUnsafePointer(to: next) { next in
            pool.run(ClaimedProductJob(products: products, pool: pool, next: next))
        }
    }

    /// Tokens from which a product's rows are claimed in chunks rather than split statically.
    static let claimedSplitTokens = 4

    /// Whether `type` has an integer kernel for 8-bit activations.
    static func hasInt8Kernel(_ type: GGMLType) -> Bool {
        switch type {
        // Q4_K and Q6_K are packed from their 32-element wide blocks (WeightMatrix).
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q6_K: true
        default: false
        }
    }

    /// Whether `type` has a register decoder for rows of `cols` elements (else rows are
    /// dequantized into scratch).
    static func hasRegisterDecoder(_ type: GGMLType, cols: Int) -> Bool {
        switch type {
        case .f32, .f16, .bf16: cols % 32 == 0
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K, .mxfp4: true  // Q5_0: packed or as Q8_0
        default: false
        }
    }

    /// The sum of a vector's lanes as a fixed tree (Swift's `sum()` adds lane by lane).
    @inline(__always)
    static func horizontalSum(_ v: SIMD16<Float>) -> Float {
        var s8 = SIMD8<Float>()
        for i in 0..<8 { s8[i] = v[i] + v[i &+ 8] }
        return horizontalSum(s8)
    }

    @inline(__always)
    static func horizontalSum(_ s8: SIMD8<Float>) -> Float {
        var s4 = SIMD4<Float>()
        for i in 0..<4 { s4[i] = s8[i] + s8[i &+ 4] }
        return (s4[0] + s4[2]) + (s4[1] + s4[3])
    }

    /// Whether the prefill kernels take two rows at a time (2 x 8 tiles of 16-lane accumulators
    /// fill 32 vector registers: AVX-512). With 16 registers (AVX2) or NEON's 32 of 128 bits they
    /// would spill, so there the accumulators are 8 lanes wide and the tile is one row x 8 tokens.
    #if PAGODA_AVX512
    static let twoRowTiles = true
    #else
    static let twoRowTiles = false
    #endif
}

/// The tiles `range` of the concatenated products, on one thread.
private struct ProductJob: RangeJob {
    let products: ProductList
    let pool: WorkerPool

    func run(range: Range<Int>, thread: Int) {
        var prepared = PreparedInput()
        products.work(tiles: range, thread: thread, pool: pool, prepared: &prepared)
    }
}

/// Chunks of tiles claimed in order from `next` until none are left, on every thread.
private struct ClaimedProductJob: ParallelJob {
    let products: ProductList
    let pool: WorkerPool
    let next: UnsafePointer<Atomic<Int>>

    func run(thread: Int) {
        let total = products.totalTiles, chunk = products.claimTiles
        var prepared = PreparedInput()
        while true {
            let lower = next.pointee.wrappingAdd(chunk, ordering: .relaxed).oldValue
            if lower >= total { return }
            products.work(tiles: lower ..< min(total, lower + chunk), thread: thread, pool: pool, prepared: &prepared)
        }
    }
}

/// One to three products of one parallel region, held inline (no heap allocation per call).
private struct ProductList {
    let first: Product
    let second: Product?
    let third: Product?
    let count: Int

    init(_ first: Product, _ second: Product? = nil, _ third: Product? = nil) {
        self.first = first
        self.second = second
        self.third = third
        count = third != nil ? 3 : second != nil ? 2 : 1
    }

    subscript(index: Int) -> Product {
        switch index {
        case 1: second.unsafelyUnwrapped
        case 2: third.unsafelyUnwrapped
        default: first
        }
    }

    var totalTiles: Int { first.tiles + (second?.tiles ?? 0) + (third?.tiles ?? 0) }

    /// The same products for input tokens `range` only.
    func tokens(_ range: Range<Int>) -> ProductList {
        ProductList(first.tokens(range), second?.tokens(range), third?.tokens(range))
    }

    /// Tiles per claim of `ClaimedProductJob`: one chunk of float rows (`MatMul.rowChunk`, whose
    /// weights stay in cache while every token tile passes), or int8 groups (16 rows): two for
    /// finer balance, or a 64th of the region where that is more. The output head's 3072 groups
    /// in claims of two paid an atomic claim on a line both cores write every ~2.6 us at 32
    /// tokens: claimed in 64ths it ran 239-242 -> 259-263 GMAC/s (`bench matmul --tensors
    /// token_embd.weight --tokens 32`, alternating; BENCHMARKS.md, 2026-12-03 afternoon).
    var claimTiles: Int { first.weight.int8Activations ? max(2, totalTiles / 64) : MatMul.rowChunk / MatMul.rowTile }

    /// Computes the tiles `range` of the concatenated products on `thread`. Products of one region
    /// share their input: a thread prepares it once (`prepared`, kept across calls) for all its
    /// claims and products: quantized for those that want int8 activations, packed in token tiles
    /// for the float kernels (each thread its own copy: no barrier needed, and the input is small
    /// beside the weights).
    func work(tiles range: Range<Int>, thread: Int, pool: WorkerPool, prepared: inout PreparedInput) {
        var start = 0
        for index in 0 ..< count {
            let product = self[index]
            let count = product.tiles
            let lower = max(range.lowerBound - start, 0), upper = min(range.upperBound - start, count)
            if lower < upper {
                if product.weight.int8Activations {
                    if prepared.quantized == nil { prepared.quantized = product.quantizedInput(thread: thread, pool: pool) }
                } else if prepared.floats == nil {
                    prepared.floats = product.packedInput(thread: thread, pool: pool)
                }
                product.work(tiles: lower ..< upper, thread: thread, pool: pool, prepared: prepared)
            }
            start += count
        }
    }
}

/// A thread's copy of a region's input, made at its first claim and used by all its claims: the
/// int8 blocks (`Product.quantizedInput`) and the float scratch holding the span carry and the
/// packed token tiles (`Product.packedInput`). Packed per claim of 32 rows instead, the input
/// tiles were copied again for every claim: ~8% of a Q4_K_M pp512 profile on Zen 4.
private struct PreparedInput {
    var quantized: UnsafeRawPointer?
    var floats: UnsafeMutablePointer<Float>?
}

/// The columns one call of a token-tile kernel walks (`blocks`, in weight blocks), and where the
/// accumulators of the chunk's rows wait between spans (`MatMul.spanInputBytes`).
private struct ColumnSpan {
    /// Accumulators per row in the carry: the widest token tile.
    static let tileTokens = 8
    static var slotBytes: Int { tileTokens * MemoryLayout<Product.Accumulator>.stride }

    let blocks: Range<Int>
    /// The accumulators continue from the carry (not the first span).
    let resumes: Bool
    /// The last span: the sums go to the output.
    let finishes: Bool
    /// `[MatMul.rowChunk, tileTokens]` accumulators, 64-byte aligned.
    let carry: UnsafeMutableRawPointer
    /// The chunk's first row (slot 0).
    let firstRow: Int

    /// Floats of carry: `[MatMul.rowChunk, tileTokens]` accumulators.
    static var carryFloats: Int { MatMul.rowChunk * slotBytes / MemoryLayout<Float>.stride }

    @inline(__always)
    func slot(_ row: Int) -> UnsafeMutableRawPointer { carry + (row &- firstRow) &* ColumnSpan.slotBytes }

    /// Leaves token `index`'s accumulator for `row` in the carry for the next span.
    @inline(__always)
    func keep(_ acc: Product.Accumulator, row: Int, index: Int) {
        slot(row).storeBytes(of: acc, toByteOffset: index &* MemoryLayout<Product.Accumulator>.stride, as: Product.Accumulator.self)
    }

    /// `keep` of four accumulators, tokens `first ..< first + 4`.
    @inline(__always)
    func keep(_ a0: Product.Accumulator, _ a1: Product.Accumulator, _ a2: Product.Accumulator, _ a3: Product.Accumulator,
              row: Int, from first: Int) {
        keep(a0, row: row, index: first)
        keep(a1, row: row, index: first &+ 1)
        keep(a2, row: row, index: first &+ 2)
        keep(a3, row: row, index: first &+ 3)
    }

    /// Token `index`'s accumulator for `row` at the start of the span.
    @inline(__always)
    func initial(row: Int, _ index: Int) -> Product.Accumulator {
        resumes ? slot(row).load(fromByteOffset: index &* MemoryLayout<Product.Accumulator>.stride, as: Product.Accumulator.self) : Product.Accumulator()
    }
}

/// One matrix product's operands; the kernels below are its methods.
private struct Product {
    /// `[tokens, cols]`
    let input: UnsafePointer<Float>
    let tokens: Int
    let weight: WeightMatrix
    /// `[tokens, stride]`
    let output: UnsafeMutablePointer<Float>
    let stride: Int

    init(input: UnsafePointer<Float>, tokens: Int, weight: WeightMatrix, output: UnsafeMutablePointer<Float>, stride: Int) {
        self.input = input
        self.tokens = tokens
        self.weight = weight
        self.output = output
        self.stride = stride
    }

    /// The product for input tokens `range` only (their rows of input and output).
    func tokens(_ range: Range<Int>) -> Product {
        Product(input: input + range.lowerBound * weight.cols, tokens: range.count, weight: weight,
                output: output + range.lowerBound * stride, stride: stride)
    }

    /// Rows per tile: four, or a packed group (8 or 16 rows) for int8 activations.
    var tileRows: Int { weight.int8Activations ? MatMul.int8GroupRows : MatMul.rowTile }

    /// Tiles of `tileRows` rows.
    var tiles: Int { (weight.rows + tileRows - 1) / tileRows }

    /// The input quantized to 8 bits (`pagoda_i8_quantize`'s layout), in the thread's byte scratch.
    func quantizedInput(thread: Int, pool: WorkerPool) -> UnsafeRawPointer {
        let cols = weight.cols
        let buffer = pool.byteScratch(thread: thread, count: tokens * pagoda_i8_row_bytes(cols))
        pagoda_i8_quantize(input, cols, tokens, cols, buffer.assumingMemoryBound(to: UInt8.self))
        return UnsafeRawPointer(buffer)
    }

    /// Tokens the float kernels take in 8- and 4-token tiles (the rest one at a time, unpacked).
    var packedTokens: Int { tokens / 8 * 8 + (tokens % 8 >= 4 ? 4 : 0) }

    /// The thread's float scratch for this input, `[carry | packed tiles | one row]`: the span
    /// carry (`ColumnSpan.carryFloats`), every token tile of `work` packed (`pack`; the tile of
    /// token t at `t * cols` floats), then room for one row of `workDequantized`.
    func packedInput(thread: Int, pool: WorkerPool) -> UnsafeMutablePointer<Float> {
        let cols = weight.cols
        let scratch = pool.scratch(thread: thread, count: ColumnSpan.carryFloats + (packedTokens + 1) * cols)
        let tiles = scratch + ColumnSpan.carryFloats
        var t = 0
        while t + 8 <= tokens {
            pack(token: t, count: 8, into: tiles + t * cols)
            t += 8
        }
        if t + 4 <= tokens { pack(token: t, count: 4, into: tiles + t * cols) }
        return scratch
    }

    /// Computes the rows of tiles `tiles` (four rows each) for every token.
    func work(tiles: Range<Int>, thread: Int, pool: WorkerPool, prepared: PreparedInput) {
        if weight.int8Activations, let quantized = prepared.quantized {
            workInt8(groups: tiles, quantized: quantized.assumingMemoryBound(to: UInt8.self))
            return
        }
        let rows = tiles.lowerBound * MatMul.rowTile ..< min(weight.rows, tiles.upperBound * MatMul.rowTile)
        let scratch = prepared.floats ?? packedInput(thread: thread, pool: pool)
        let carry = UnsafeMutableRawPointer(scratch), tile = scratch + ColumnSpan.carryFloats
        switch weight.type {
        case .f32 where weight.cols % 32 == 0: work(F32Chunks.self, rows: rows, carry: carry, tiles: tile)
        case .f16 where weight.cols % 32 == 0: work(F16Chunks.self, rows: rows, carry: carry, tiles: tile)
        case .bf16 where weight.cols % 32 == 0: work(BF16Chunks.self, rows: rows, carry: carry, tiles: tile)
        case .q4_0 where weight.nibblePlanes: work(Q4_0PlanesChunks.self, rows: rows, carry: carry, tiles: tile)
        case .q4_0: work(Q4_0Chunks.self, rows: rows, carry: carry, tiles: tile)
        case .q4_1 where weight.nibblePlanes: work(Q4_1PlanesChunks.self, rows: rows, carry: carry, tiles: tile)
        case .q4_1: work(Q4_1Chunks.self, rows: rows, carry: carry, tiles: tile)
        case .q5_0: work(Q5_0PackedChunks.self, rows: rows, carry: carry, tiles: tile)  // stored packed (WeightMatrix)
        case .q5_1: work(Q5_1Chunks.self, rows: rows, carry: carry, tiles: tile)
        case .q8_0: work(Q8_0Chunks.self, rows: rows, carry: carry, tiles: tile)
        case .mxfp4: work(MXFP4Chunks.self, rows: rows, carry: carry, tiles: tile)
        case .q4_K: work(Q4_KWideChunks.self, rows: rows, carry: carry, tiles: tile)  // stored wide (WeightMatrix)
        case .q5_K: work(Q5_KChunks.self, rows: rows, carry: carry, tiles: tile)
        case .q6_K: work(Q6_KWideChunks.self, rows: rows, carry: carry, tiles: tile)  // stored wide (WeightMatrix)
        default: workDequantized(rows: rows, scratch: tile + packedTokens * weight.cols)
        }
    }

    /// Walks, per chunk of rows, tiles of eight, four and then single tokens (`tiles`: the input
    /// as `packedInput` packed it, the tile of token t at `t * cols` floats). A token tile walks the
    /// columns in spans (`MatMul.spanInputBytes`), every row of the chunk finishing one span before
    /// the next begins, so the tile's inputs for the span stay in L1; the accumulators wait in
    /// `carry` between spans, exactly as they were, so the sums are the same bit for bit as in one
    /// pass. (Twelve-token tiles, once faster on AVX2, spilled with the nibble-plane and wide
    /// decoders: pp512 on the AVX2 EPYC with 8-token tiles instead, best of four alternating runs:
    /// Q4_1 273 -> 296 tok/s, Q8_0 340 -> 362, Q4_K_M 358 -> 408; BENCHMARKS.md, 2026-12-02.)
    private func work<D: WeightChunkDecoder>(_: D.Type, rows: Range<Int>, carry: UnsafeMutableRawPointer, tiles: UnsafeMutablePointer<Float>) {
        let blocks = weight.cols / D.blockElements
        /// Runs `body` for each span of the columns of a `tileTokens`-token tile, in order: as few
        /// spans as fit `spanInputBytes`, of equal numbers of blocks.
        @inline(__always)
        func forEachSpan(firstRow: Int, tileTokens: Int, _ body: (ColumnSpan) -> Void) {
            let spanColumns = max(D.blockElements, MatMul.spanInputBytes / (tileTokens * MemoryLayout<Float>.stride))
            let spans = (weight.cols + spanColumns - 1) / spanColumns
            let spanBlocks = (blocks + spans - 1) / spans
            var start = 0
            repeat {
                let end = min(blocks, start + spanBlocks)
                body(ColumnSpan(blocks: start ..< end, resumes: start > 0, finishes: end == blocks, carry: carry, firstRow: firstRow))
                start = end
            } while start < blocks
        }
        var first = rows.lowerBound
        while first < rows.upperBound {
            let last = min(rows.upperBound, first + MatMul.rowChunk)
            var t = 0
            while t + 8 <= tokens {
                let tile = tiles + t * weight.cols
                forEachSpan(firstRow: first, tileTokens: 8) { span in
                    var row = first
                    if MatMul.twoRowTiles {
                        while row + 2 <= last {
                            rows2Tokens8(D.self, row: row, tile: tile, token: t, span: span)
                            row += 2
                        }
                    }
                    while row < last {
                        tokens8(D.self, row: row, tile: tile, token: t, span: span)
                        row += 1
                    }
                }
                t += 8
            }
            if t + 4 <= tokens {
                let tile = tiles + t * weight.cols
                forEachSpan(firstRow: first, tileTokens: 4) { span in
                    for row in first ..< last { tokens4(D.self, row: row, tile: tile, token: t, span: span) }
                }
                t += 4
            }
            while t < tokens {
                var row = first
                while row + 4 <= last {
                    rows4(D.self, row: row, token: t)
                    row += 4
                }
                while row < last {
                    rows1(D.self, row: row, token: t)
                    row += 1
                }
                t += 1
            }
            first = last
        }
    }

    /// One (row, token) dot product in progress: one vector register of lanes (see `twoRowTiles`).
    #if PAGODA_AVX512
    typealias Accumulator = SIMD16<Float>
    #else
    typealias Accumulator = SIMD8<Float>
    #endif

    /// `acc += w · x[0..<32]`, vector after vector (`vector(w, 0)` first).
    @inline(__always)
    func accumulate(_ acc: inout Accumulator, _ w: (low: SIMD16<Float>, high: SIMD16<Float>), _ x: UnsafePointer<Float>) {
        for v in 0 ..< Product.vectorsPerChunk {
            acc = acc.addingProduct(Product.vector(w, v), Product.load(x + v &* Accumulator.scalarCount))
        }
    }

    /// `acc += w · x[0..<32]` and `other += u · x[0..<32]`, the two chains interleaved vector by
    /// vector (each in `accumulate`'s order, so the sums are bitwise the same).
    @inline(__always)
    func accumulate(_ acc: inout Accumulator, _ w: (low: SIMD16<Float>, high: SIMD16<Float>),
                    _ other: inout Accumulator, _ u: (low: SIMD16<Float>, high: SIMD16<Float>), _ x: UnsafePointer<Float>) {
        for v in 0 ..< Product.vectorsPerChunk {
            let input = Product.load(x + v &* Accumulator.scalarCount)
            acc = acc.addingProduct(Product.vector(w, v), input)
            other = other.addingProduct(Product.vector(u, v), input)
        }
    }

    /// Runs `body` for the chunks `0 ..< D.chunksPerBlock` of a block, written out for blocks of
    /// up to three chunks so that each call's chunk index is a constant: LLVM kept a 2-chunk loop
    /// rolled, and the nibble-plane decoders then shifted by a register, which cost a quarter of
    /// the Q4_1 decode kernel's speed in a C model of it.
    @inline(__always)
    func forEachChunk<D: WeightChunkDecoder>(_: D.Type, _ body: (Int) -> Void) {
        switch D.chunksPerBlock {
        case 1: body(0)
        case 2: body(0); body(1)
        case 3: body(0); body(1); body(2)
        default: for c in 0 ..< D.chunksPerBlock { body(c) }
        }
    }

    /// Accumulator-wide vectors in a 32-weight chunk.
    static var vectorsPerChunk: Int { 32 / Accumulator.scalarCount }

    /// Vector `v` (`< vectorsPerChunk`) of a decoded chunk.
    @inline(__always)
    static func vector(_ w: (low: SIMD16<Float>, high: SIMD16<Float>), _ v: Int) -> Accumulator {
        #if PAGODA_AVX512
        v == 0 ? w.low : w.high
        #else
        switch v {
        case 0: w.low.lowHalf
        case 1: w.low.highHalf
        case 2: w.high.lowHalf
        default: w.high.highHalf
        }
        #endif
    }

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> Accumulator {
        UnsafeRawPointer(p).loadUnaligned(as: Accumulator.self)
    }

    /// Copies tokens `token..<token + count` of the input into `tile` as
    /// `[cols / lanes, count, lanes]`: a kernel's loads for one chunk then walk one short run of
    /// memory (one pointer and constant offsets) instead of `count` rows `cols` apart.
    func pack(token: Int, count: Int, into tile: UnsafeMutablePointer<Float>) {
        let lanes = Accumulator.scalarCount, cols = weight.cols
        for j in 0 ..< count {
            let source = input + (token + j) * cols
            for g in 0 ..< cols / lanes {
                UnsafeMutableRawPointer(tile + (g * count + j) * lanes).storeBytes(of: Product.load(source + g * lanes), as: Accumulator.self)
            }
        }
    }

    @inline(__always)
    func store(_ acc: Accumulator, row: Int, token: Int) {
        output[token &* stride &+ row] = MatMul.horizontalSum(acc)
    }

    // MARK: Transposing reductions
    //
    // A tile ends with one sum per accumulator. Summed one at a time (`MatMul.horizontalSum`) that
    // took a fifth of a prefill kernel's time on AVX-512 (scalar adds and lane extracts). These
    // sum several accumulators together, halving all of them at each step with two shuffles and
    // one add, and follow `horizontalSum`'s tree (lanes i and i + width/2 added, width 16 or 8,
    // then 4, then 2): every sum is bitwise the one `horizontalSum` gives.

    /// `x`'s and then `y`'s accumulators (each `width` lanes side by side) halved: lane i of a new
    /// accumulator is lane i plus lane i + width/2 of the old one (`LaneShuffles.h`). `width` is a
    /// constant at every call.
    @inline(__always)
    static func foldHalves(_ x: Accumulator, _ y: Accumulator, width: Int) -> Accumulator {
        #if PAGODA_AVX512
        switch width {
        case 16: pagoda_fold16_width16(x, y)
        case 8: pagoda_fold16_width8(x, y)
        case 4: pagoda_fold16_width4(x, y)
        default: pagoda_fold16_width2(x, y)
        }
        #else
        switch width {
        case 8: pagoda_fold8_width8(x, y)
        case 4: pagoda_fold8_width4(x, y)
        default: pagoda_fold8_width2(x, y)
        }
        #endif
    }

    /// Lane i: `MatMul.horizontalSum(a_i)`, for four accumulators.
    @inline(__always)
    static func sums(_ a0: Accumulator, _ a1: Accumulator, _ a2: Accumulator, _ a3: Accumulator) -> SIMD4<Float> {
        let lanes = Accumulator.scalarCount
        var b = foldHalves(foldHalves(a0, a1, width: lanes), foldHalves(a2, a3, width: lanes), width: lanes / 2)
        // Folded with itself until each sum is one lane: the first four lanes, then copies.
        var width = lanes / 4
        while width > 1 {
            b = foldHalves(b, b, width: width)
            width /= 2
        }
        return SIMD4(b[0], b[1], b[2], b[3])
    }

    /// Lane i: `MatMul.horizontalSum(a_i)`, for eight accumulators.
    @inline(__always)
    static func sums(_ a0: Accumulator, _ a1: Accumulator, _ a2: Accumulator, _ a3: Accumulator,
                     _ a4: Accumulator, _ a5: Accumulator, _ a6: Accumulator, _ a7: Accumulator) -> SIMD8<Float> {
        let lanes = Accumulator.scalarCount
        let b0 = foldHalves(a0, a1, width: lanes), b1 = foldHalves(a2, a3, width: lanes)
        let b2 = foldHalves(a4, a5, width: lanes), b3 = foldHalves(a6, a7, width: lanes)
        var c = foldHalves(foldHalves(b0, b1, width: lanes / 2), foldHalves(b2, b3, width: lanes / 2), width: lanes / 4)
        if lanes == 16 { c = foldHalves(c, c, width: 2) }
        return SIMD8(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7])
    }

    /// Ends a tile of one row and eight tokens: the sums go to the output after the span that
    /// finishes the row, else the accumulators wait in the span's carry.
    @inline(__always)
    func finish(_ a0: Accumulator, _ a1: Accumulator, _ a2: Accumulator, _ a3: Accumulator,
                _ a4: Accumulator, _ a5: Accumulator, _ a6: Accumulator, _ a7: Accumulator,
                _ span: ColumnSpan, row: Int, token: Int) {
        guard span.finishes else {
            span.keep(a0, a1, a2, a3, row: row, from: 0)
            span.keep(a4, a5, a6, a7, row: row, from: 4)
            return
        }
        let s = Self.sums(a0, a1, a2, a3, a4, a5, a6, a7)
        for t in 0 ..< 8 { output[(token &+ t) &* stride &+ row] = s[t] }
    }

    /// Ends a tile of one row and four tokens, as the eight-token `finish`.
    @inline(__always)
    func finish(_ a0: Accumulator, _ a1: Accumulator, _ a2: Accumulator, _ a3: Accumulator,
                _ span: ColumnSpan, row: Int, token: Int) {
        guard span.finishes else {
            span.keep(a0, a1, a2, a3, row: row, from: 0)
            return
        }
        let s = Self.sums(a0, a1, a2, a3)
        for t in 0 ..< 4 { output[(token &+ t) &* stride &+ row] = s[t] }
    }

    /// Ends token `token + index`'s accumulator for `row` in a span: its sum goes to the output
    /// after the last span, else the accumulator waits in the span's carry.
    @inline(__always)
    func finish(_ acc: Accumulator, _ span: ColumnSpan, row: Int, token: Int, _ index: Int) {
        if span.finishes {
            store(acc, row: row, token: token &+ index)
        } else {
            span.keep(acc, row: row, index: index)
        }
    }

    /// Rows `row` and `row + 1` against the packed tile's 8 tokens: each input vector loaded once
    /// serves both rows, halving the input traffic that bounds the prefill tile.
    @inline(__always)
    func rows2Tokens8<D: WeightChunkDecoder>(_: D.Type, row: Int, tile: UnsafePointer<Float>, token: Int, span: ColumnSpan) {
        let v0 = weight.rowStart(row), vStride = weight.blockStride(row)
        let u0 = weight.rowStart(row &+ 1), uStride = weight.blockStride(row &+ 1)
        let lanes = Accumulator.scalarCount
        var a0 = span.initial(row: row, 0), a1 = span.initial(row: row, 1), a2 = span.initial(row: row, 2), a3 = span.initial(row: row, 3), a4 = span.initial(row: row, 4), a5 = span.initial(row: row, 5), a6 = span.initial(row: row, 6), a7 = span.initial(row: row, 7)
        var b0 = span.initial(row: row &+ 1, 0), b1 = span.initial(row: row &+ 1, 1), b2 = span.initial(row: row &+ 1, 2), b3 = span.initial(row: row &+ 1, 3), b4 = span.initial(row: row &+ 1, 4), b5 = span.initial(row: row &+ 1, 5), b6 = span.initial(row: row &+ 1, 6), b7 = span.initial(row: row &+ 1, 7)
        for b in span.blocks {
            let blockV = v0 + b &* vStride, blockU = u0 + b &* uStride
            forEachChunk(D.self) { c in
                let chunkV = D.fusedTileChunk(blockV, c), chunkU = D.fusedTileChunk(blockU, c)
                let x = tile + (b &* D.chunksPerBlock &+ c) &* (32 &* 8)
                for v in 0 ..< Product.vectorsPerChunk {
                    let wv = Product.vector(chunkV, v), wu = Product.vector(chunkU, v), xv = x + v &* (8 &* lanes)
                    do {
                        let input = Product.load(xv + 0 &* lanes)
                        a0 = a0.addingProduct(wv, input)
                        b0 = b0.addingProduct(wu, input)
                    }
                    do {
                        let input = Product.load(xv + 1 &* lanes)
                        a1 = a1.addingProduct(wv, input)
                        b1 = b1.addingProduct(wu, input)
                    }
                    do {
                        let input = Product.load(xv + 2 &* lanes)
                        a2 = a2.addingProduct(wv, input)
                        b2 = b2.addingProduct(wu, input)
                    }
                    do {
                        let input = Product.load(xv + 3 &* lanes)
                        a3 = a3.addingProduct(wv, input)
                        b3 = b3.addingProduct(wu, input)
                    }
                    do {
                        let input = Product.load(xv + 4 &* lanes)
                        a4 = a4.addingProduct(wv, input)
                        b4 = b4.addingProduct(wu, input)
                    }
                    do {
                        let input = Product.load(xv + 5 &* lanes)
                        a5 = a5.addingProduct(wv, input)
                        b5 = b5.addingProduct(wu, input)
                    }
                    do {
                        let input = Product.load(xv + 6 &* lanes)
                        a6 = a6.addingProduct(wv, input)
                        b6 = b6.addingProduct(wu, input)
                    }
                    do {
                        let input = Product.load(xv + 7 &* lanes)
                        a7 = a7.addingProduct(wv, input)
                        b7 = b7.addingProduct(wu, input)
                    }
                }
            }
        }
        finish(a0, a1, a2, a3, a4, a5, a6, a7, span, row: row, token: token)
        finish(b0, b1, b2, b3, b4, b5, b6, b7, span, row: row &+ 1, token: token)
    }

    /// One row against the packed tile's 8 tokens: each chunk is decoded once for eight tokens.
    @inline(__always)
    func tokens8<D: WeightChunkDecoder>(_: D.Type, row: Int, tile: UnsafePointer<Float>, token: Int, span: ColumnSpan) {
        let w = weight.rowStart(row), blockStride = weight.blockStride(row)
        let lanes = Accumulator.scalarCount
        var a0 = span.initial(row: row, 0), a1 = span.initial(row: row, 1), a2 = span.initial(row: row, 2), a3 = span.initial(row: row, 3), a4 = span.initial(row: row, 4), a5 = span.initial(row: row, 5)
        var a6 = span.initial(row: row, 6), a7 = span.initial(row: row, 7)
        for b in span.blocks {
            let block = w + b &* blockStride
            forEachChunk(D.self) { c in
                let chunk = D.fusedTileChunk(block, c)
                let x = tile + (b &* D.chunksPerBlock &+ c) &* (32 &* 8)
                for v in 0 ..< Product.vectorsPerChunk {
                    let wv = Product.vector(chunk, v), xv = x + v &* (8 &* lanes)
                    a0 = a0.addingProduct(wv, Product.load(xv + 0 &* lanes))
                    a1 = a1.addingProduct(wv, Product.load(xv + 1 &* lanes))
                    a2 = a2.addingProduct(wv, Product.load(xv + 2 &* lanes))
                    a3 = a3.addingProduct(wv, Product.load(xv + 3 &* lanes))
                    a4 = a4.addingProduct(wv, Product.load(xv + 4 &* lanes))
                    a5 = a5.addingProduct(wv, Product.load(xv + 5 &* lanes))
                    a6 = a6.addingProduct(wv, Product.load(xv + 6 &* lanes))
                    a7 = a7.addingProduct(wv, Product.load(xv + 7 &* lanes))
                }
            }
        }
        finish(a0, a1, a2, a3, a4, a5, a6, a7, span, row: row, token: token)
    }

    /// One row against the packed tile's 4 tokens: each chunk is decoded once for four tokens.
    @inline(__always)
    func tokens4<D: WeightChunkDecoder>(_: D.Type, row: Int, tile: UnsafePointer<Float>, token: Int, span: ColumnSpan) {
        let w = weight.rowStart(row), blockStride = weight.blockStride(row)
        let lanes = Accumulator.scalarCount
        var a0 = span.initial(row: row, 0), a1 = span.initial(row: row, 1), a2 = span.initial(row: row, 2), a3 = span.initial(row: row, 3)
        for b in span.blocks {
            let block = w + b &* blockStride
            forEachChunk(D.self) { c in
                let chunk = D.fusedTileChunk(block, c)
                let x = tile + (b &* D.chunksPerBlock &+ c) &* (32 &* 4)
                for v in 0 ..< Product.vectorsPerChunk {
                    let wv = Product.vector(chunk, v), xv = x + v &* (4 &* lanes)
                    a0 = a0.addingProduct(wv, Product.load(xv + 0 &* lanes))
                    a1 = a1.addingProduct(wv, Product.load(xv + 1 &* lanes))
                    a2 = a2.addingProduct(wv, Product.load(xv + 2 &* lanes))
                    a3 = a3.addingProduct(wv, Product.load(xv + 3 &* lanes))
                }
            }
        }
        finish(a0, a1, a2, a3, span, row: row, token: token)
    }

    /// Rows `row..<row + 4` against one token: four independent accumulation chains.
    @inline(__always)
    func rows4<D: WeightChunkDecoder>(_: D.Type, row: Int, token: Int) {
        let cols = weight.cols
        // Inside a tile the four rows' blocks sit side by side: one sequential stream.
        let w0 = weight.rowStart(row), blockStride = weight.blockStride(row)
        let next = weight.tileRows == 1 ? weight.rowBytes : D.blockBytes
        let w1 = w0 + next, w2 = w1 + next, w3 = w2 + next
        let x0 = input + token &* cols
        var a0 = Accumulator(), a1 = Accumulator(), a2 = Accumulator(), a3 = Accumulator()
        for b in 0 ..< cols / D.blockElements {
            let offset = b &* blockStride
            // This block step's bytes (the tile's four rows), `prefetchDistance` ahead in the stream.
            for line in Swift.stride(from: 0, to: 4 &* D.blockBytes, by: 64) {
                pagoda_prefetch(w0 + (offset &+ MatMul.prefetchDistance &+ line))
            }
            forEachChunk(D.self) { c in
                let x = x0 + (b &* D.chunksPerBlock &+ c) &* 32
                // Two rows at a time, their chains interleaved vector by vector: each input
                // vector serves both, and the out-of-order core always has an independent
                // multiply-add at hand (BENCHMARKS.md, 2026-12-01 — nibble planes).
                accumulate(&a0, D.fusedChunk(w0 + offset, c), &a1, D.fusedChunk(w1 + offset, c), x)
                accumulate(&a2, D.fusedChunk(w2 + offset, c), &a3, D.fusedChunk(w3 + offset, c), x)
            }
        }
        UnsafeMutableRawPointer(output + (token &* stride &+ row)).storeBytes(of: Self.sums(a0, a1, a2, a3), as: SIMD4<Float>.self)
    }

    /// One row against one token (the rows left over when a range is not a multiple of four).
    @inline(__always)
    func rows1<D: WeightChunkDecoder>(_: D.Type, row: Int, token: Int) {
        let cols = weight.cols
        let w = weight.rowStart(row), blockStride = weight.blockStride(row)
        let x0 = input + token &* cols
        var a = Accumulator()
        for b in 0 ..< cols / D.blockElements {
            let block = w + b &* blockStride
            forEachChunk(D.self) { c in
                let index: Int = b &* D.chunksPerBlock &+ c
                accumulate(&a, D.fusedChunk(block, c), x0 + index &* 32)
            }
        }
        store(a, row: row, token: token)
    }

    /// Integer products with the 8-bit input: packed groups of 8 or 16 rows against up to four
    /// tokens per call, the weights of `rowChunk` rows (four or two groups) staying in cache while
    /// every token tile passes over them.
    private func workInt8(groups: Range<Int>, quantized: UnsafePointer<UInt8>) {
        let rowBytes = pagoda_i8_row_bytes(weight.cols), blocks = weight.cols / weight.blockElements
        let type = Int32(weight.type.rawValue), groupRows = MatMul.int8GroupRows
        var first = groups.lowerBound
        while first < groups.upperBound {
            let last = min(groups.upperBound, first + MatMul.rowChunk / groupRows)
            var t = 0
            while t < tokens {
                let count = min(4, tokens - t)
                for group in first ..< last {
                    let row = group * groupRows
                    pagoda_i8_gemm(type, weight.int8Group(group), blocks, quantized + t * rowBytes, rowBytes, count,
                                   output + t * stride + row, stride, min(groupRows, weight.rows - row))
                }
                t += count
            }
            first = last
        }
    }

    /// Types without a register decoder (Q2_K, Q3_K; float rows whose length is not a multiple
    /// of 32): each row is expanded into the thread's scratch once and dotted with every token.
    private func workDequantized(rows: Range<Int>, scratch decoded: UnsafeMutablePointer<Float>) {
        let cols = weight.cols
        for row in rows {
            weight.dequantizeRow(row, into: decoded)
            for t in 0 ..< tokens {
                output[t &* stride &+ row] = Vector.dot(input + t &* cols, decoded, cols)
            }
        }
    }
}
