import HalfConversion
import LaneShuffles

/// Block decoders that read stored weights 32 elements (one "chunk") at a time into float32
/// registers, in factored form: `weight = q * scale + offset`, with `q` the small integers of the
/// block (or the float weights themselves), `scale` per chunk or per 16-element half, and `offset`
/// per chunk. Matrix kernels multiply through them without a dequantized copy, expanding each
/// chunk with one fused multiply-add per 16 weights (`fusedWeights`), or, for 4- and 5-bit values
/// on AVX-512, by looking each weight up in the 16 or 32 its block can hold (`fusedChunk`, the
/// same values bit for bit); `Dequantize.row` stores
/// `weights`, which is bit for bit ggml's `dequantize_row_*` (product and sum rounded separately).
///
/// Each decoder is written as per-lane loops over `SIMD16` values, which LLVM turns into vector
/// code (zero/sign extension, int-to-float conversion); Swift's generic SIMD conversion
/// initializers are avoided because they stay out-of-line calls.
public protocol WeightChunkDecoder {
    /// Elements per stored block: 32, or 256 for the K-quants.
    static var blockElements: Int { get }
    /// Bytes per stored block.
    static var blockBytes: Int { get }
    /// How `WeightChunk.scaleLow`/`scaleHigh` apply.
    static var scaling: ChunkScaling { get }
    /// Whether `WeightChunk.offset` can be non-zero.
    static var hasOffset: Bool { get }
    /// Chunk `chunk` (`< blockElements / 32`), weights `[32 * chunk, 32 * chunk + 32)`, of the block at `block`.
    static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk
    /// `chunk(block, c).fusedWeights(Self.self)`, bitwise, by whatever path is fastest for the
    /// layout (a table lookup for 4- and 5-bit values on AVX-512).
    static func fusedChunk(_ block: UnsafeRawPointer, _ chunk: Int) -> (low: SIMD16<Float>, high: SIMD16<Float>)
    /// `fusedChunk` for kernels that reuse each decoded chunk for several tokens, where a decoder
    /// may prefer a path with fewer shuffles (they compete with the multiply-adds for ports).
    static func fusedTileChunk(_ block: UnsafeRawPointer, _ chunk: Int) -> (low: SIMD16<Float>, high: SIMD16<Float>)
}

/// Where a chunk's scale applies.
public enum ChunkScaling {
    /// `low`/`high` are the weights (float types).
    case none
    /// One scale (`scaleLow`) for all 32 weights.
    case whole
    /// `scaleLow` for elements 0..<16, `scaleHigh` for 16..<32 (Q6_K).
    case halves
}

extension WeightChunkDecoder {
    /// Chunks in one stored block.
    @inlinable @inline(__always)
    public static var chunksPerBlock: Int { blockElements / 32 }
    @inlinable @inline(__always)
    public static var hasOffset: Bool { false }
    @inlinable @inline(__always)
    public static func fusedChunk(_ block: UnsafeRawPointer, _ chunk: Int) -> (low: SIMD16<Float>, high: SIMD16<Float>) {
        Self.chunk(block, chunk).fusedWeights(Self.self)
    }
    @inlinable @inline(__always)
    public static func fusedTileChunk(_ block: UnsafeRawPointer, _ chunk: Int) -> (low: SIMD16<Float>, high: SIMD16<Float>) {
        fusedChunk(block, chunk)
    }
}

/// 32 consecutive weights in factored form: `low` holds q of elements 0..<16, `high` of 16..<32.
@frozen
public struct WeightChunk {
    public var low: SIMD16<Float>
    public var high: SIMD16<Float>
    public var scaleLow: Float
    public var scaleHigh: Float
    public var offset: Float

    /// Float weights (scaling `.none`).
    @inlinable @inline(__always)
    public init(_ low: SIMD16<Float>, _ high: SIMD16<Float>) {
        self.init(low, high, scale: 1)
    }

    @inlinable @inline(__always)
    public init(_ low: SIMD16<Float>, _ high: SIMD16<Float>, scale: Float, offset: Float = 0) {
        self.init(low, high, scaleLow: scale, scaleHigh: scale, offset: offset)
    }

    @inlinable @inline(__always)
    public init(_ low: SIMD16<Float>, _ high: SIMD16<Float>, scaleLow: Float, scaleHigh: Float, offset: Float = 0) {
        self.low = low
        self.high = high
        self.scaleLow = scaleLow
        self.scaleHigh = scaleHigh
        self.offset = offset
    }

    /// The 32 weights as float32 with one rounding (`q * scale + offset` fused): what the matmul
    /// kernels multiply with. At most one unit in the last place from `weights`.
    @inlinable @inline(__always)
    public func fusedWeights<D: WeightChunkDecoder>(_: D.Type) -> (low: SIMD16<Float>, high: SIMD16<Float>) {
        switch D.scaling {
        case .none: return (low, high)
        case .whole, .halves:
            if D.hasOffset {
                let o = SIMD16<Float>(repeating: offset)
                return (o.addingProduct(low, SIMD16(repeating: scaleLow)), o.addingProduct(high, SIMD16(repeating: scaleHigh)))
            }
            return (low * scaleLow, high * scaleHigh)
        }
    }

    /// The 32 weights as float32, rounded as ggml rounds them: `q * scale`, then `+ offset`.
    @inlinable @inline(__always)
    public func weights<D: WeightChunkDecoder>(_: D.Type) -> (low: SIMD16<Float>, high: SIMD16<Float>) {
        switch D.scaling {
        case .none: return (low, high)
        case .whole, .halves:
            let l = low * scaleLow, h = high * scaleHigh
            return D.hasOffset ? (l + offset, h + offset) : (l, h)
        }
    }
}

// MARK: - Lane helpers

/// Sixteen bytes at `offset`.
@inlinable @inline(__always)
func bytes16(_ p: UnsafeRawPointer, _ offset: Int) -> SIMD16<UInt8> {
    p.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt8>.self)
}

/// A little-endian float16 field at `offset`, widened to Float (exactly, either way).
@inlinable @inline(__always)
func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    halfToFloat(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}

/// The little-endian float16 fields at `offset` and `offset + 2` (a block's scale and offset),
/// widened to Float (exactly) with one load and one conversion where the hardware has it.
@inlinable @inline(__always)
func halfPair(_ p: UnsafeRawPointer, _ offset: Int) -> (Float, Float) {
    #if PAGODA_PORTABLE || !arch(x86_64)
    (half(p, offset), half(p, offset &+ 2))
    #else
    let pair = pagoda_half_pair_to_float(p + offset)
    return (pair[0], pair[1])
    #endif
}

/// float16 bits to Float: the hardware conversion (F16C, arm64) unless the build is portable,
/// where x86-64 may lack F16C and `Float(Float16)` would be a library call. On x86-64 it goes
/// through `pagoda_half_to_float`, which does not wait on an unrelated vector register.
@inlinable @inline(__always)
func halfToFloat(_ bits: UInt16) -> Float {
    #if PAGODA_PORTABLE && arch(x86_64)
    Dequantize.half(bits)
    #elseif arch(x86_64)
    pagoda_half_to_float(bits)
    #else
    Float(Float16(bitPattern: bits))
    #endif
}

/// `Float(Int32(q[i]) - bias)` per lane (exact: every value is a small integer).
@inlinable @inline(__always)
func lanes(_ q: SIMD16<UInt8>, minus bias: Int32 = 0) -> SIMD16<Float> {
    var r = SIMD16<Float>()
    for i in 0..<16 { r[i] = Float(Int32(q[i]) &- bias) }
    return r
}

/// `Float(q[i])` of the sixteen signed bytes at `offset` (Q8_0-like values).
@inlinable @inline(__always)
func signedByteLanes(_ p: UnsafeRawPointer, _ offset: Int) -> SIMD16<Float> {
    let q = p.loadUnaligned(fromByteOffset: offset, as: SIMD16<Int8>.self)
    var r = SIMD16<Float>()
    for i in 0..<16 { r[i] = Float(q[i]) }
    return r
}

/// The sixteen bytes at `offset` zero-extended to 32-bit lanes. Loading this way lets LLVM widen
/// straight from memory (`vpmovzxbd`); nibbles are then split in the wide lanes, which takes
/// fewer instructions than splitting bytes and widening each half from a register.
@inlinable @inline(__always)
func wideBytes(_ p: UnsafeRawPointer, _ offset: Int) -> SIMD16<UInt32> {
    let q = bytes16(p, offset)
    var wide = SIMD16<UInt32>()
    for i in 0..<16 { wide[i] = UInt32(q[i]) }
    return wide
}

/// `Float(nibble - bias)` per lane for the low (`high == false`) or high nibbles of widened bytes.
@inlinable @inline(__always)
func nibbleLanes(_ wide: SIMD16<UInt32>, high: Bool, minus bias: Int32 = 0) -> SIMD16<Float> {
    let bits = high ? wide &>> 4 : wide & 0x0F
    var r = SIMD16<Float>()
    for i in 0..<16 { r[i] = Float(Int32(bitPattern: bits[i]) &- bias) }
    return r
}

/// Sixteen 4-bit values in the low nibbles (`high == false`) or high nibbles of `q`.
@inlinable @inline(__always)
func nibbles(_ q: SIMD16<UInt8>, high: Bool) -> SIMD16<UInt8> {
    high ? q &>> 4 : q & 0x0F
}

/// `Float(Int32(low or high nibbles of q) | fifth bits << 4) - bias` per lane, the fifth bit of
/// lane i being bit `first + i` of `qh` (Q5_0/Q5_1). Computed with whole-vector shifts in 32-bit
/// lanes, which vectorize (a per-lane select or shift by the lane index does not).
@inlinable @inline(__always)
func fiveBitLanes(_ q: SIMD16<UInt32>, high: Bool, _ qh: UInt32, from first: Int, minus bias: Int32 = 0) -> SIMD16<Float> {
    var wide = high ? q &>> 4 : q & 0x0F
    // Bit `first + i` moved to bit 4 + i first, so each lane needs one shift and one mask.
    let aligned = first >= 4 ? qh &>> UInt32(first &- 4) : qh &<< UInt32(4 &- first)
    let shifts = SIMD16<UInt32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    wide |= (SIMD16<UInt32>(repeating: aligned) &>> shifts) & 0x10
    var r = SIMD16<Float>()
    for i in 0..<16 { r[i] = Float(Int32(bitPattern: wide[i]) &- bias) }
    return r
}

/// ggml's `GGML_E8M0_TO_FP32_HALF`: half the E8M0 scale 2^(e - 127), i.e. 2^(e - 128), exactly.
/// e = 0 and 1 give the float32 subnormals 2^-128 and 2^-127; e = 255 gives 2^127 (ggml has no NaN
/// for it either).
@inlinable @inline(__always)
func e8m0Half(_ e: UInt8) -> Float {
    let wide = UInt32(e)
    return Float(bitPattern: wide < 2 ? UInt32(0x0020_0000) &<< wide : (wide &- 1) &<< 23)
}

/// The values of sixteen E2M1 (FP4) codes (one per byte, 0...15), doubled so that they are
/// integers: ggml's `kvalues_mxfp4`, 0, 1, 2, 3, 4, 6, 8, 12 for codes 0...7 and the same negated
/// for 8...15 (code 8 is +0, as in ggml's int8 table). Computed with whole-vector byte arithmetic
/// instead of a per-lane table lookup, which LLVM leaves as sixteen scalar loads: with k = code & 7,
/// the value is k for k < 4 and k + (0, 1, 2, 5)[k - 4] after, the extra being j + 2 * (j == 3) for
/// j = k & 3; bit 3 of the code negates it.
@inlinable @inline(__always)
func fp4Lanes(_ q: SIMD16<UInt8>) -> SIMD16<Float> {
    let k = q & 7, j = k & 3
    let upper = 0 &- (k &>> 2)  // all ones for k >= 4
    let extra = (j &+ (((j &>> 1) & j) &<< 1)) & upper
    let magnitude = k &+ extra
    let negative = 0 &- (q &>> 3)  // all ones for codes 8...15
    let value = (magnitude ^ negative) &- negative
    var r = SIMD16<Float>()
    for i in 0..<16 { r[i] = Float(Int8(bitPattern: value[i])) }
    return r
}

// MARK: - Float types

/// F32 weights, 32 elements per "block".
public enum F32Chunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .none }
    @inlinable public static var blockElements: Int { 32 }
    @inlinable public static var blockBytes: Int { 128 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        WeightChunk(block.loadUnaligned(as: SIMD16<Float>.self), block.loadUnaligned(fromByteOffset: 64, as: SIMD16<Float>.self))
    }
}

/// F16 weights, converted exactly.
public enum F16Chunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .none }
    @inlinable public static var blockElements: Int { 32 }
    @inlinable public static var blockBytes: Int { 64 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let a = block.loadUnaligned(as: SIMD16<UInt16>.self), b = block.loadUnaligned(fromByteOffset: 32, as: SIMD16<UInt16>.self)
        var low = SIMD16<Float>(), high = SIMD16<Float>()
        for i in 0..<16 {
            low[i] = halfToFloat(a[i])
            high[i] = halfToFloat(b[i])
        }
        return WeightChunk(low, high)
    }
}

/// BF16 weights: the upper halves of float32s.
public enum BF16Chunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .none }
    @inlinable public static var blockElements: Int { 32 }
    @inlinable public static var blockBytes: Int { 64 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let a = block.loadUnaligned(as: SIMD16<UInt16>.self), b = block.loadUnaligned(fromByteOffset: 32, as: SIMD16<UInt16>.self)
        var low = SIMD16<Float>(), high = SIMD16<Float>()
        for i in 0..<16 {
            low[i] = Dequantize.bfloat(a[i])
            high[i] = Dequantize.bfloat(b[i])
        }
        return WeightChunk(low, high)
    }
}

// MARK: - 32-element blocks
//
// In the 4- and 5-bit types, byte j of `qs` holds element j in its low nibble and element j + 16
// in its high nibble. In Q5_*, bit j of the little-endian 32-bit `qh` is the fifth bit of element j.

/// Q4_0, 18 bytes: `d: f16`, `qs: [16] u8`. x = (nibble - 8) * d.
public enum Q4_0Chunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .whole }
    @inlinable public static var blockElements: Int { 32 }
    @inlinable public static var blockBytes: Int { 18 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let d = half(block, 0)
        let q = wideBytes(block, 2)
        return WeightChunk(nibbleLanes(q, high: false, minus: 8), nibbleLanes(q, high: true, minus: 8), scale: d)
    }
}

/// Q4_1, 20 bytes: `d: f16`, `m: f16`, `qs: [16] u8`. x = nibble * d + m.
public enum Q4_1Chunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .whole }
    @inlinable public static var hasOffset: Bool { true }
    @inlinable public static var blockElements: Int { 32 }
    @inlinable public static var blockBytes: Int { 20 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let (d, m) = halfPair(block, 0)
        let q = wideBytes(block, 4)
        return WeightChunk(nibbleLanes(q, high: false), nibbleLanes(q, high: true), scale: d, offset: m)
    }
}

/// Q5_0, 22 bytes: `d: f16`, `qh: u32`, `qs: [16] u8`. x = ((nibble | fifth bit << 4) - 16) * d.
public enum Q5_0Chunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .whole }
    @inlinable public static var blockElements: Int { 32 }
    @inlinable public static var blockBytes: Int { 22 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let d = half(block, 0)
        let qh = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
        let q = wideBytes(block, 6)
        return WeightChunk(
            fiveBitLanes(q, high: false, qh, from: 0, minus: 16),
            fiveBitLanes(q, high: true, qh, from: 16, minus: 16), scale: d)
    }
}

/// Q5_1, 24 bytes: `d: f16`, `m: f16`, `qh: u32`, `qs: [16] u8`. x = (nibble | fifth bit << 4) * d + m.
public enum Q5_1Chunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .whole }
    @inlinable public static var hasOffset: Bool { true }
    @inlinable public static var blockElements: Int { 32 }
    @inlinable public static var blockBytes: Int { 24 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let (d, m) = halfPair(block, 0)
        let qh = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        let q = wideBytes(block, 8)
        return WeightChunk(
            fiveBitLanes(q, high: false, qh, from: 0),
            fiveBitLanes(q, high: true, qh, from: 16), scale: d, offset: m)
    }
}

/// Q8_0, 34 bytes: `d: f16`, `qs: [32] i8`. x = q * d.
public enum Q8_0Chunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .whole }
    @inlinable public static var blockElements: Int { 32 }
    @inlinable public static var blockBytes: Int { 34 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        WeightChunk(signedByteLanes(block, 2), signedByteLanes(block, 18), scale: half(block, 0))
    }
}

/// MXFP4 (OCP microscaling FP4; GPT-OSS experts), 17 bytes: `e: u8` (E8M0 exponent), `qs: [16] u8`
/// (E2M1 codes, element j in the low nibble of byte j, element j + 16 in the high nibble).
/// x = kvalues_mxfp4[code] * 2^(e - 128) (`fp4Lanes`, `e8m0Half`): ggml's doubled E2M1 values
/// times half the block scale. Every product is exact (a 2-bit significand times a power of two),
/// so `weights` and `fusedWeights` agree bit for bit; large exponents overflow to infinity, as in ggml.
public enum MXFP4Chunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .whole }
    @inlinable public static var blockElements: Int { 32 }
    @inlinable public static var blockBytes: Int { 17 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let d = e8m0Half(block.load(as: UInt8.self))
        let q = bytes16(block, 1)
        return WeightChunk(fp4Lanes(q & 0x0F), fp4Lanes(q &>> 4), scale: d)
    }
}

// MARK: - 256-element super-blocks (K-quants)

/// Scale and min (both 6-bit) of sub-block `j` (0..<8) in the 12-byte packed scales of Q4_K/Q5_K
/// (ggml's `get_scale_min_k4`). For j < 4: scale = q[j] & 63, min = q[j + 4] & 63. For j >= 4 the low
/// 4 bits come from q[j + 4] (scale: low nibble, min: high nibble) and the top 2 bits from the top
/// bits of q[j - 4] (scale) and q[j] (min).
@inlinable @inline(__always)
func kScaleMin(_ j: Int, _ q: UnsafeRawPointer) -> (scale: UInt8, min: UInt8) {
    func byte(_ i: Int) -> UInt8 { q.load(fromByteOffset: i, as: UInt8.self) }
    if j < 4 {
        return (byte(j) & 63, byte(j + 4) & 63)
    }
    let low = byte(j + 4)
    return ((low & 0x0F) | ((byte(j - 4) &>> 6) &<< 4), (low &>> 4) | ((byte(j) &>> 6) &<< 4))
}

/// Q4_K, 144 bytes: `d: f16`, `dmin: f16`, `scales: [12] u8` (see `kScaleMin`), `qs: [128] u8`.
/// Per 64 elements, 32 bytes of `qs` hold elements 0..<32 in low nibbles and 32..<64 in high nibbles.
/// x = d * scale * q - dmin * min, with scale/min per 32 elements (one chunk).
public enum Q4_KChunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .whole }
    @inlinable public static var hasOffset: Bool { true }
    @inlinable public static var blockElements: Int { 256 }
    @inlinable public static var blockBytes: Int { 144 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let (sc, mn) = kScaleMin(chunk, block + 4)
        let scale = half(block, 0) * Float(sc), min = half(block, 2) * Float(mn)
        let qs = 16 &+ 32 &* (chunk &>> 1)
        let high = chunk & 1 == 1
        return WeightChunk(
            nibbleLanes(wideBytes(block, qs), high: high),
            nibbleLanes(wideBytes(block, qs &+ 16), high: high), scale: scale, offset: -min)
    }
}

/// Q5_K, 176 bytes: `d: f16`, `dmin: f16`, `scales: [12] u8` (see `kScaleMin`), `qh: [32] u8`,
/// `qs: [128] u8`. Like Q4_K plus a fifth bit: bit c of `qh[l]` for element 32c + l.
public enum Q5_KChunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .whole }
    @inlinable public static var hasOffset: Bool { true }
    @inlinable public static var blockElements: Int { 256 }
    @inlinable public static var blockBytes: Int { 176 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let (sc, mn) = kScaleMin(chunk, block + 4)
        let scale = half(block, 0) * Float(sc), min = half(block, 2) * Float(mn)
        let qs = 48 &+ 32 &* (chunk &>> 1)
        let high = chunk & 1 == 1
        let shift = UInt8(chunk)
        let h0 = ((bytes16(block, 16) &>> shift) & 1) &<< 4, h1 = ((bytes16(block, 32) &>> shift) & 1) &<< 4
        return WeightChunk(
            lanes(nibbles(bytes16(block, qs), high: high) | h0),
            lanes(nibbles(bytes16(block, qs &+ 16), high: high) | h1), scale: scale, offset: -min)
    }
}

/// Q6_K, 210 bytes: `ql: [128] u8` (low 4 bits), `qh: [64] u8` (high 2 bits), `scales: [16] i8`
/// (per 16 elements), `d: f16`. x = d * scale * (q - 32).
/// Chunk c = 4n + k covers elements 128n + 32k ..< +32: its low 4 bits are the low (k < 2) or high
/// (k >= 2) nibbles of `ql[64n + 32(k & 1) ..< +32]`, its high bits sit at shift 2k in
/// `qh[32n ..< 32n + 32]`, and its two 16-element halves use scales `8n + 2k` and `8n + 2k + 1`.
public enum Q6_KChunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .halves }
    @inlinable public static var blockElements: Int { 256 }
    @inlinable public static var blockBytes: Int { 210 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let n = chunk &>> 2, k = chunk & 3
        let d = half(block, 208)
        let scales = 192 &+ 8 &* n &+ 2 &* k
        let d0 = d * Float(block.load(fromByteOffset: scales, as: Int8.self))
        let d1 = d * Float(block.load(fromByteOffset: scales &+ 1, as: Int8.self))
        let ql = 64 &* n &+ 32 &* (k & 1), qh = 128 &+ 32 &* n
        let high = k >= 2
        let shift = UInt8(2 &* k)
        let q0 = nibbles(bytes16(block, ql), high: high) | (((bytes16(block, qh) &>> shift) & 3) &<< 4)
        let q1 = nibbles(bytes16(block, ql &+ 16), high: high) | (((bytes16(block, qh &+ 16) &>> shift) & 3) &<< 4)
        return WeightChunk(lanes(q0, minus: 32), lanes(q1, minus: 32), scaleLow: d0, scaleHigh: d1)
    }
}

// MARK: - Layouts written at load time

/// 64 four-bit values in "nibble planes", 32 bytes: eight little-endian 32-bit words, element
/// `8v + i` (plane v < 8, lane i < 8) in bits `4v ..< 4v + 4` of word i. Eight consecutive
/// elements are one plane of the eight words, so a vector of them takes one whole-vector shift and
/// one mask, where the file's order (element j and j + 16 in one byte) needs the bytes split,
/// widened and converted lane by lane. In a C model of the 4-row decode kernel on the AVX2 EPYC the
/// Q4_1 product went from 8 to 11.6 GMAC/s per core (BENCHMARKS.md, 2026-12-01 — nibble planes).
public enum NibblePlanes {
    /// Bytes of the 64 values.
    @inlinable public static var bytes: Int { 32 }

    /// Chunk `chunk` (< 2), elements `32 chunk ..< +32`, as `Float(value - bias)`: (elements
    /// 0..<16, elements 16..<32) of the chunk.
    @inlinable @inline(__always)
    public static func lanes(_ block: UnsafeRawPointer, chunk: Int, minus bias: Int32 = 0) -> (SIMD16<Float>, SIMD16<Float>) {
        let words = block.loadUnaligned(as: SIMD8<UInt32>.self)
        @inline(__always)
        func plane(_ v: Int) -> SIMD8<Float> {
            let q = (words &>> UInt32(truncatingIfNeeded: 4 &* v)) & 0xF
            var r = SIMD8<Float>()
            for i in 0..<8 { r[i] = Float(Int32(bitPattern: q[i]) &- bias) }
            return r
        }
        let first = 4 &* chunk
        return (SIMD16(lowHalf: plane(first), highHalf: plane(first &+ 1)),
                SIMD16(lowHalf: plane(first &+ 2), highHalf: plane(first &+ 3)))
    }

    /// Chunk `chunk` (< 2) as weights: value q gives `table[q]`, one permute per 16 weights
    /// (`pagoda_lookup16`). `table` holds the 16 weights the chunk's factors give, computed as
    /// `fusedWeights` computes each weight (`pagoda_table16_*`), so the result is bitwise the same.
    @inlinable @inline(__always)
    public static func lookup(_ block: UnsafeRawPointer, chunk: Int, table: SIMD16<Float>) -> (SIMD16<Float>, SIMD16<Float>) {
        let words = block.loadUnaligned(as: SIMD8<UInt32>.self)
        let both = SIMD16(lowHalf: words, highHalf: words)
        // Planes 4c, 4c + 1 (elements 0..<16 of the chunk), then 4c + 2, 4c + 3, in bits 4v and up.
        let first = UInt32(truncatingIfNeeded: 16 &* chunk)
        let lowShifts = SIMD16<UInt32>(lowHalf: SIMD8(repeating: first), highHalf: SIMD8(repeating: first &+ 4))
        return (pagoda_lookup16(table, both &>> lowShifts), pagoda_lookup16(table, both &>> (lowShifts &+ 8)))
    }

    /// Writes two chunks of small integers in 0...15 (`low`/`high` lanes of each, as K-quant
    /// chunks hold them) as the 64 values at `destination`.
    public static func store(_ first: WeightChunk, _ second: WeightChunk, to destination: UnsafeMutableRawPointer) {
        var words = SIMD8<UInt32>()
        for v in 0 ..< 8 {
            let chunk = v < 4 ? first : second, lanes = (v & 3) < 2 ? chunk.low : chunk.high, from = 8 * (v & 1)
            for i in 0 ..< 8 { words[i] |= UInt32(lanes[from + i]) << UInt32(4 * v) }
        }
        destination.storeBytes(of: words, as: SIMD8<UInt32>.self)
    }

    /// Element `j`'s value (j < 64).
    public static func value(_ block: UnsafeRawPointer, _ j: Int) -> UInt8 {
        UInt8((block.loadUnaligned(fromByteOffset: 4 * (j & 7), as: UInt32.self) >> UInt32(4 * (j >> 3))) & 0x0F)
    }

    /// Rewrites `2 * pairs` blocks of a 32-element 4-bit file type at `source` (`factorBytes` of
    /// scale fields, then `qs: [16] u8` in the file's nibble order: Q4_0, Q4_1) as `pairs` blocks
    /// of planes followed by both blocks' scale fields, as they are.
    public static func pack(_ source: UnsafeRawPointer, pairs: Int, factorBytes: Int, into destination: UnsafeMutableRawPointer) {
        let fileBlock = factorBytes + 16, planesBlock = bytes + 2 * factorBytes
        for p in 0 ..< pairs {
            let from = source + 2 * p * fileBlock, to = destination + p * planesBlock
            var words = SIMD8<UInt32>()
            for v in 0 ..< 8 {
                // Plane v: elements 8v ..< 8v + 8 of the pair, the low or high nibbles of 8 bytes.
                let e = (8 * v) & 31
                let qs = (from + (v >> 2) * fileBlock + factorBytes).loadUnaligned(fromByteOffset: e & 15, as: SIMD8<UInt8>.self)
                let values = SIMD8<UInt32>(truncatingIfNeeded: e < 16 ? qs & 0x0F : qs &>> 4)
                words |= values &<< UInt32(4 * v)
            }
            to.storeBytes(of: words, as: SIMD8<UInt32>.self)
            for b in 0 ..< 2 { (to + bytes + b * factorBytes).copyMemory(from: from + b * fileBlock, byteCount: factorBytes) }
        }
    }

    /// The inverse of `pack`: `pairs` blocks of planes at `source` as `2 * pairs` blocks of
    /// `factorBytes` of scale fields and 16 bytes of nibbles (the file's Q4_0 / Q4_1 blocks, or
    /// wide Q4_K's factors and nibbles for the int8 kernel).
    public static func unpack(_ source: UnsafeRawPointer, pairs: Int, factorBytes: Int, into destination: UnsafeMutableRawPointer) {
        let fileBlock = factorBytes + 16, planesBlock = bytes + 2 * factorBytes
        for p in 0 ..< pairs {
            let from = source + p * planesBlock, to = destination + 2 * p * fileBlock
            for b in 0 ..< 2 {
                let block = to + b * fileBlock
                block.copyMemory(from: from + bytes + b * factorBytes, byteCount: factorBytes)
                for e in 0 ..< 16 {
                    let low = value(from, 32 * b + e), high = value(from, 32 * b + 16 + e)
                    block.storeBytes(of: low | high << 4, toByteOffset: factorBytes + e, as: UInt8.self)
                }
            }
        }
    }
}

/// Q4_0 as the matmul kernels keep it where a row is a multiple of 64 elements (`WeightMatrix`):
/// two Q4_0 blocks in 36 bytes, their values in nibble planes (`NibblePlanes`), then their scales
/// `d0, d1: f16`. x = (q - 8) * d with Q4_0's values and scales: every weight is bitwise the same.
public enum Q4_0PlanesChunks: WeightChunkDecoder {
    /// Bytes of one file block's scale fields.
    public static var factorBytes: Int { 2 }
    @inlinable public static var scaling: ChunkScaling { .whole }
    @inlinable public static var blockElements: Int { 64 }
    @inlinable public static var blockBytes: Int { 36 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let d = half(block, NibblePlanes.bytes &+ 2 &* chunk)
        let (low, high) = NibblePlanes.lanes(block, chunk: chunk, minus: 8)
        return WeightChunk(low, high, scale: d)
    }
    #if PAGODA_AVX512
    @inlinable @inline(__always)
    public static func fusedChunk(_ block: UnsafeRawPointer, _ chunk: Int) -> (low: SIMD16<Float>, high: SIMD16<Float>) {
        let d = half(block, NibblePlanes.bytes &+ 2 &* chunk)
        return NibblePlanes.lookup(block, chunk: chunk, table: pagoda_table16_scaled(-8, d))
    }
    #endif
}

/// Q4_1 as the matmul kernels keep it where a row is a multiple of 64 elements (`WeightMatrix`):
/// two Q4_1 blocks in 40 bytes, their values in nibble planes (`NibblePlanes`), then
/// `d0, m0, d1, m1: f16`. x = q * d + m with Q4_1's values and factors: every weight is bitwise
/// the same.
public enum Q4_1PlanesChunks: WeightChunkDecoder {
    /// Bytes of one file block's scale fields.
    public static var factorBytes: Int { 4 }
    @inlinable public static var scaling: ChunkScaling { .whole }
    @inlinable public static var hasOffset: Bool { true }
    @inlinable public static var blockElements: Int { 64 }
    @inlinable public static var blockBytes: Int { 40 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let (d, m) = halfPair(block, NibblePlanes.bytes &+ 4 &* chunk)
        let (low, high) = NibblePlanes.lanes(block, chunk: chunk)
        return WeightChunk(low, high, scale: d, offset: m)
    }
    #if PAGODA_AVX512
    @inlinable @inline(__always)
    public static func fusedChunk(_ block: UnsafeRawPointer, _ chunk: Int) -> (low: SIMD16<Float>, high: SIMD16<Float>) {
        let (d, m) = halfPair(block, NibblePlanes.bytes &+ 4 &* chunk)
        return NibblePlanes.lookup(block, chunk: chunk, table: pagoda_table16_fused(d, m))
    }
    #endif
}

/// Q4_K as the matmul kernels keep it (`WeightMatrix`), 48 bytes per 64 elements (two chunks):
/// their values in nibble planes (`NibblePlanes`), then `scale0, offset0, scale1, offset1: f32`
/// (`d * scale` and `-dmin * min` of each chunk). The same factors and values as `Q4_KChunks`, so
/// every weight is bitwise the same; decoded like Q4_1's planes, without the K-quant's 6-bit scale
/// unpacking and float16 widening per chunk.
public enum Q4_KWideChunks: WeightChunkDecoder {
    /// Bytes of one chunk's factors (scale and offset).
    public static var factorBytes: Int { 8 }
    @inlinable public static var scaling: ChunkScaling { .whole }
    @inlinable public static var hasOffset: Bool { true }
    @inlinable public static var blockElements: Int { 64 }
    @inlinable public static var blockBytes: Int { 48 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let factors = NibblePlanes.bytes &+ 8 &* chunk  // factorBytes apart
        let scale = block.loadUnaligned(fromByteOffset: factors, as: Float.self)
        let offset = block.loadUnaligned(fromByteOffset: factors &+ 4, as: Float.self)
        let (low, high) = NibblePlanes.lanes(block, chunk: chunk)
        return WeightChunk(low, high, scale: scale, offset: offset)
    }
    #if PAGODA_AVX512
    @inlinable @inline(__always)
    public static func fusedChunk(_ block: UnsafeRawPointer, _ chunk: Int) -> (low: SIMD16<Float>, high: SIMD16<Float>) {
        let factors = NibblePlanes.bytes &+ 8 &* chunk
        let scale = block.loadUnaligned(fromByteOffset: factors, as: Float.self)
        let offset = block.loadUnaligned(fromByteOffset: factors &+ 4, as: Float.self)
        return NibblePlanes.lookup(block, chunk: chunk, table: pagoda_table16_fused(scale, offset))
    }
    #endif

    /// Rewrites `blocks` Q4_K blocks at `source` as `4 * blocks` blocks of this layout at `destination`.
    public static func widen(_ source: UnsafeRawPointer, blocks: Int, into destination: UnsafeMutableRawPointer) {
        for b in 0 ..< blocks * 4 {
            let from = source + (b >> 2) * Q4_KChunks.blockBytes, to = destination + b * blockBytes
            let first = Q4_KChunks.chunk(from, 2 * (b & 3)), second = Q4_KChunks.chunk(from, 2 * (b & 3) + 1)
            NibblePlanes.store(first, second, to: to)
            // Each chunk's scale and offset, `factorBytes` apart (no array per block: this runs
            // once per 64 weights at load).
            to.storeBytes(of: first.scaleLow, toByteOffset: NibblePlanes.bytes, as: Float.self)
            to.storeBytes(of: first.offset, toByteOffset: NibblePlanes.bytes + 4, as: Float.self)
            to.storeBytes(of: second.scaleLow, toByteOffset: NibblePlanes.bytes + factorBytes, as: Float.self)
            to.storeBytes(of: second.offset, toByteOffset: NibblePlanes.bytes + factorBytes + 4, as: Float.self)
        }
    }
}

/// Q6_K as the matmul kernels keep it (`WeightMatrix`), 40 bytes per 32 elements:
/// `scaleLow: f32` and `scaleHigh: f32` (`d * scale` of each 16-element half), then `q - 32` as
/// 32 signed bytes. The same factors and values as `Q6_KChunks` (bitwise the same weights), decoded
/// like Q8_0 instead of from 4 + 2 split bits.
public enum Q6_KWideChunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .halves }
    @inlinable public static var blockElements: Int { 32 }
    @inlinable public static var blockBytes: Int { 40 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let d0 = block.loadUnaligned(as: Float.self), d1 = block.loadUnaligned(fromByteOffset: 4, as: Float.self)
        return WeightChunk(signedByteLanes(block, 8), signedByteLanes(block, 24), scaleLow: d0, scaleHigh: d1)
    }

    /// Rewrites `blocks` Q6_K blocks at `source` as `8 * blocks` blocks of this layout at `destination`.
    public static func widen(_ source: UnsafeRawPointer, blocks: Int, into destination: UnsafeMutableRawPointer) {
        for b in 0 ..< blocks * 8 {
            let chunk = Q6_KChunks.chunk(source + (b >> 3) * Q6_KChunks.blockBytes, b & 7)
            let to = destination + b * blockBytes
            to.storeBytes(of: chunk.scaleLow, as: Float.self)
            to.storeBytes(of: chunk.scaleHigh, toByteOffset: 4, as: Float.self)
            chunk.storeSignedBytes(to: to + 8)
        }
    }
}

/// Q5_0 as the matmul kernels keep it when a row is a multiple of 96 elements (`WeightMatrix`):
/// 72 bytes per 96 elements, 6 bits per weight (the file's Q5_0 takes 5.5, as Q8_0 bytes 8.5).
/// Layout: `words: [2][8] u32`, then `d: [3] f16` (the file's scales, one per chunk of 32), then
/// 2 zero bytes. Each 32-bit word holds six 5-bit fields, `q - 16` in two's complement, field f
/// at bits `5f + 2 ..< 5f + 7`. Element `32c + 8k + i` (chunk c, vector k < 4, lane i < 8) is field
/// `c + 3 * (k & 1)` of word i in group `k >> 1`. A vector of eight elements is thus one field of
/// eight words: two whole-vector shifts (left, then arithmetic right) instead of gathering Q5_0's
/// fifth bits lane by lane. The values and scales are Q5_0's, so every weight is bitwise the same.
public enum Q5_0PackedChunks: WeightChunkDecoder {
    @inlinable public static var scaling: ChunkScaling { .whole }
    @inlinable public static var blockElements: Int { 96 }
    @inlinable public static var blockBytes: Int { 72 }
    @inlinable @inline(__always)
    public static func chunk(_ block: UnsafeRawPointer, _ chunk: Int) -> WeightChunk {
        let d = half(block, 64 &+ 2 &* chunk)
        // Fields c (vector 2g) and c + 3 (vector 2g + 1) of group g's eight words, as one
        // 16-lane vector of the words twice: each half's field moves to the top bits by its own
        // shift, then all sixteen sign-extend down together (one variable shift, one arithmetic
        // shift and one conversion per 16 weights; two 8-lane halves took twice the shifts and
        // conversions, and a lane insert, on AVX-512).
        let lowShift = Int32(truncatingIfNeeded: 25 &- 5 &* chunk), highShift = lowShift &- 15
        let shifts = SIMD16<Int32>(lowHalf: SIMD8(repeating: lowShift), highHalf: SIMD8(repeating: highShift))
        @inline(__always)
        func fields(_ offset: Int) -> SIMD16<Float> {
            let words = block.loadUnaligned(fromByteOffset: offset, as: SIMD8<Int32>.self)
            let q = (SIMD16(lowHalf: words, highHalf: words) &<< shifts) &>> 27
            var r = SIMD16<Float>()
            for i in 0..<16 { r[i] = Float(q[i]) }
            return r
        }
        return WeightChunk(fields(0), fields(32), scale: d)
    }
    #if PAGODA_AVX512
    /// Each field's low five bits index a 32-weight table (`pagoda_lookup32`): bits 0...15 stand
    /// for q - 16 = 0...15, 16...31 for -16...-1, so the first half of the table is `0...15 * d`
    /// and the second `-16...-1 * d`, each weight the product `fusedWeights` forms. Faster for one
    /// token (`bench matmul --tokens 1`: 13.5 -> 15.2 GMAC/s), slower in token tiles (42 -> 37),
    /// where `fusedTileChunk` keeps the shifts and conversions.
    @inlinable @inline(__always)
    public static func fusedChunk(_ block: UnsafeRawPointer, _ chunk: Int) -> (low: SIMD16<Float>, high: SIMD16<Float>) {
        let d = half(block, 64 &+ 2 &* chunk)
        let positive = pagoda_table16_scaled(0, d), negative = pagoda_table16_scaled(-16, d)
        // Fields c (lanes 0..<8) and c + 3 (lanes 8..<16) of a group's words, at bits 5f + 2.
        let lowShift = UInt32(truncatingIfNeeded: 5 &* chunk &+ 2)
        let shifts = SIMD16<UInt32>(lowHalf: SIMD8(repeating: lowShift), highHalf: SIMD8(repeating: lowShift &+ 15))
        @inline(__always)
        func fields(_ offset: Int) -> SIMD16<Float> {
            let words = block.loadUnaligned(fromByteOffset: offset, as: SIMD8<UInt32>.self)
            return pagoda_lookup32(positive, negative, SIMD16(lowHalf: words, highHalf: words) &>> shifts)
        }
        return (fields(0), fields(32))
    }

    @inlinable @inline(__always)
    public static func fusedTileChunk(_ block: UnsafeRawPointer, _ chunk: Int) -> (low: SIMD16<Float>, high: SIMD16<Float>) {
        Self.chunk(block, chunk).fusedWeights(Self.self)
    }
    #endif

    /// Rewrites `3 * blocks` Q5_0 blocks at `source` as `blocks` blocks of this layout at `destination`.
    public static func pack(_ source: UnsafeRawPointer, blocks: Int, into destination: UnsafeMutableRawPointer) {
        for b in 0 ..< blocks {
            let to = destination + b * blockBytes
            to.initializeMemory(as: UInt8.self, repeating: 0, count: blockBytes)
            for c in 0 ..< 3 {
                let from = source + (3 * b + c) * Q5_0Chunks.blockBytes
                (to + 64 + 2 * c).copyMemory(from: from, byteCount: 2)
                let chunk = Q5_0Chunks.chunk(from, 0)  // q - 16
                for e in 0 ..< 32 {
                    let value = UInt32(bitPattern: Int32(e < 16 ? chunk.low[e] : chunk.high[e - 16])) & 0x1F
                    let (word, shift) = position(32 * c + e)
                    to.storeBytes(of: to.loadUnaligned(fromByteOffset: word, as: UInt32.self) | value << shift, toByteOffset: word, as: UInt32.self)
                }
            }
        }
    }

    /// Element `j`'s `q - 16` (j < 96) in the block at `block`.
    public static func value(_ block: UnsafeRawPointer, _ j: Int) -> Int32 {
        let (word, shift) = position(j)
        return (block.loadUnaligned(fromByteOffset: word, as: Int32.self) &<< (27 - Int32(shift))) &>> 27
    }

    /// Where element `j` (< 96) of a block sits: the byte offset of its word and its field's shift.
    static func position(_ j: Int) -> (word: Int, shift: UInt32) {
        let c = j / 32, e = j % 32, k = e / 8
        return (32 * (k >> 1) + 4 * (e % 8), UInt32(2 + 5 * (c + 3 * (k & 1))))
    }
}

extension WeightChunk {
    /// Writes `low` then `high` (small integers in -128...127) as 32 signed bytes: the values part
    /// of a Q8_0-like block, for layouts rewritten at load (`Q6_KWideChunks`, Q5_0 stored as Q8_0).
    public func storeSignedBytes(to destination: UnsafeMutableRawPointer) {
        for j in 0 ..< 16 {
            destination.storeBytes(of: Int8(low[j]), toByteOffset: j, as: Int8.self)
            destination.storeBytes(of: Int8(high[j]), toByteOffset: 16 + j, as: Int8.self)
        }
    }
}
