/// Conversion of GGML/GGUF weight data to float32, bit for bit equal to ggml's `dequantize_row_*`.
///
/// Every quantized type stores a row as consecutive blocks of `GGMLType.blockSize` elements in
/// `GGMLType.bytesPerBlock` bytes. Blocks are packed without padding, so 18-, 22- or 110-byte blocks
/// sit at arbitrary addresses: all multi-byte fields are read with `loadUnaligned`, little-endian
/// (the byte order of GGUF and of every platform Pagoda runs on).
///
/// Scale fields (`d`, `m`, `dmin`) are IEEE float16 and are widened to float32 exactly (MXFP4's `e` is
/// a power-of-two exponent byte, E8M0). All arithmetic is float32 in ggml's order: a product and a
/// sum are rounded separately (`q * d + m`, never a fused multiply-add; Swift emits no `contract`
/// flag, so LLVM does not fuse them).
public enum Dequantize {
    /// Converts `count` elements of `type` that start at `source` into float32 at `destination`.
    ///
    /// This is the per-row step of matmuls over quantized weights, so it does no allocation and picks
    /// the block decoder once per call. `source` needs no alignment. `destination` must have room
    /// for `count` floats and `source` must hold `count / type.blockSize` whole blocks.
    ///
    /// - Returns: `false`, with nothing written, when `type` is not a supported weight type
    ///   (`GGMLType.isSupportedWeightType`) or `count` is negative or not a multiple of
    ///   `type.blockSize`. Loaders validate tensor types up front, so hot paths may ignore the result.
    @discardableResult
    public static func row(
        _ type: GGMLType, from source: UnsafeRawPointer, to destination: UnsafeMutablePointer<Float>, count: Int
    ) -> Bool {
        guard type.isSupportedWeightType, count >= 0, count % type.blockSize == 0 else { return false }
        switch type {
        case .f32:
            UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: count &* 4)
        case .f16:
            for i in 0..<count {
                destination[i] = half(source.loadUnaligned(fromByteOffset: 2 &* i, as: UInt16.self))
            }
        case .bf16:
            for i in 0..<count {
                destination[i] = bfloat(source.loadUnaligned(fromByteOffset: 2 &* i, as: UInt16.self))
            }
        case .q4_0: chunks(Q4_0Chunks.self, count, source, destination)
        case .q4_1: chunks(Q4_1Chunks.self, count, source, destination)
        case .q5_0: chunks(Q5_0Chunks.self, count, source, destination)
        case .q5_1: chunks(Q5_1Chunks.self, count, source, destination)
        case .q8_0: chunks(Q8_0Chunks.self, count, source, destination)
        case .mxfp4: chunks(MXFP4Chunks.self, count, source, destination)
        case .q2_K: blocks(count / 256, 84, source, destination, 256, q2_K)
        case .q3_K: blocks(count / 256, 110, source, destination, 256, q3_K)
        case .q4_K: chunks(Q4_KChunks.self, count, source, destination)
        case .q5_K: chunks(Q5_KChunks.self, count, source, destination)
        case .q6_K: chunks(Q6_KChunks.self, count, source, destination)
        default:
            return false
        }
        return true
    }

    /// IEEE 754 binary16 bits to Float, exactly: subnormals become normal floats, ±0, ±inf kept,
    /// NaNs keep their sign and payload (shifted into the wider significand).
    ///
    /// Written with integer operations and selects instead of `Float(Float16(bitPattern:))`, which on
    /// x86-64 without F16C becomes a library call per element; this form vectorizes over F16 rows and
    /// never feeds a float32 subnormal into arithmetic.
    @inlinable @inline(__always)
    public static func half(_ bits: UInt16) -> Float {
        // Exponent and significand moved to float32's positions: half exponent e lands as e in the
        // float32 exponent field, so rebiasing (15 -> 127) adds 112 << 23.
        let magnitude = UInt32(bits & 0x7FFF) &<< 13
        let exponent = magnitude & 0x0F80_0000
        let normal = Float(bitPattern: magnitude &+ 0x3800_0000)
        // Subnormal m * 2^-24: give it exponent 2^-14 (bias 113), then subtract the implicit 2^-14.
        // Both operands are normal and the difference is exact.
        let subnormal = Float(bitPattern: magnitude &+ 0x3880_0000) - Float(bitPattern: 0x3880_0000)
        let special = Float(bitPattern: magnitude | 0x7F80_0000)  // inf, NaN (payload kept)
        let value = exponent == 0 ? subnormal : (exponent == 0x0F80_0000 ? special : normal)
        return Float(bitPattern: value.bitPattern | (UInt32(bits & 0x8000) &<< 16))
    }

    /// bfloat16 bits to Float, exactly: bfloat16 is the upper half of a float32.
    @inlinable @inline(__always)
    public static func bfloat(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) &<< 16)
    }
}

// MARK: - Block loop and field access

/// A decoder of one block at `block` into `blockSize` floats at `y`.
private typealias BlockDecoder = (_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) -> Void

/// Runs `decode` over `count` consecutive blocks. Inlined into each `case` of `Dequantize.row`, so
/// every decoder gets its own specialized loop.
@inline(__always)
private func blocks(
    _ count: Int, _ bytesPerBlock: Int, _ source: UnsafeRawPointer, _ destination: UnsafeMutablePointer<Float>,
    _ blockSize: Int, _ decode: BlockDecoder
) {
    for b in 0..<count {
        decode(source + b &* bytesPerBlock, destination + b &* blockSize)
    }
}

extension Dequantize {
    /// `count` elements (a multiple of `D.blockElements`) of decoder `D`'s blocks at `source`, as
    /// float32 rounded as ggml rounds them (for layouts written at load time, e.g. `Q4_KWideChunks`).
    public static func row<D: WeightChunkDecoder>(_: D.Type, from source: UnsafeRawPointer, to destination: UnsafeMutablePointer<Float>, count: Int) {
        chunks(D.self, count, source, destination)
    }
}

/// Runs a chunk decoder over the `count / D.blockElements` blocks at `source`, storing each chunk.
@inline(__always)
private func chunks<D: WeightChunkDecoder>(
    _: D.Type, _ count: Int, _ source: UnsafeRawPointer, _ destination: UnsafeMutablePointer<Float>
) {
    for b in 0..<count / D.blockElements {
        let block = source + b &* D.blockBytes
        for c in 0..<D.chunksPerBlock {
            let w = D.chunk(block, c).weights(D.self)
            let element: Int = b &* D.blockElements &+ 32 &* c
            let out = UnsafeMutableRawPointer(destination + element)
            out.storeBytes(of: w.low, as: SIMD16<Float>.self)
            out.storeBytes(of: w.high, toByteOffset: 64, as: SIMD16<Float>.self)
        }
    }
}

@inline(__always)
private func byte(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
    p.load(fromByteOffset: offset, as: UInt8.self)
}

/// A float16 field at `offset`, widened to Float.
@inline(__always)
private func f16(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    Dequantize.half(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}

// MARK: - 256-element super-blocks (K-quants)
//
// A super-block is split into sub-blocks of 16 (Q2_K, Q3_K, Q6_K) or 32 (Q4_K, Q5_K) elements, each
// with its own small integer scale (and min) that is multiplied by the f16 super-block scale.
// The 2-bit planes of Q2_K/Q3_K and Q6_K's `qh` are laid out per 128 elements: in half n (0, 1),
// byte l of the 32-byte group holds, at bit shift 2j, element 128n + 32j + l.

/// Q2_K, 84 bytes: `scales: [16] u8` (low nibble scale, high nibble min per 16 elements),
/// `qs: [64] u8` (2-bit quants), `d: f16`, `dmin: f16`. x = d * scale * q - dmin * min.
@inline(__always)
private func q2_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let scales = x
    let d = f16(x, 80)
    let dmin = f16(x, 82)
    for n in 0..<2 {
        let qs = x + 16 + 32 &* n
        for j in 0..<4 {
            let shift = UInt8(2 &* j)
            let out = y + 128 &* n + 32 &* j
            // Elements 0..<16 and 16..<32 of the group have separate scales and mins.
            let sc0 = byte(scales, 8 &* n + 2 &* j), sc1 = byte(scales, 8 &* n + 2 &* j + 1)
            let dl0 = d * Float(sc0 & 0x0F), ml0 = dmin * Float(sc0 &>> 4)
            let dl1 = d * Float(sc1 & 0x0F), ml1 = dmin * Float(sc1 &>> 4)
            for l in 0..<16 {
                out[l] = dl0 * Float((byte(qs, l) &>> shift) & 3) - ml0
                out[l + 16] = dl1 * Float((byte(qs, l + 16) &>> shift) & 3) - ml1
            }
        }
    }
}

/// Q3_K, 110 bytes: `hmask: [32] u8` (third bit of each quant), `qs: [64] u8` (low 2 bits),
/// `scales: [12] u8` (sixteen 6-bit scales stored as scale + 32, see `q3KScales`), `d: f16`.
/// x = d * (scale - 32) * (low2 - (high bit set ? 0 : 4)).
/// Bit 4n + j of `hmask[l]` belongs to element 128n + 32j + l.
@inline(__always)
private func q3_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let hmask = x
    let d = f16(x, 108)
    let scales = q3KScales(x + 96)
    for n in 0..<2 {
        let qs = x + 32 + 32 &* n
        for j in 0..<4 {
            let shift = UInt8(2 &* j)
            let bit = UInt8(1) &<< UInt8(4 &* n + j)
            let out = y + 128 &* n + 32 &* j
            let dl0 = d * Float(Int32(scales[8 &* n + 2 &* j]) &- 32)
            let dl1 = d * Float(Int32(scales[8 &* n + 2 &* j + 1]) &- 32)
            for l in 0..<16 {
                out[l] = dl0 * Float(q3Value(byte(qs, l), shift, byte(hmask, l), bit))
                out[l + 16] = dl1 * Float(q3Value(byte(qs, l + 16), shift, byte(hmask, l + 16), bit))
            }
        }
    }
}

/// A Q3_K quant in -4...3: two low bits of `q` at `shift`, minus 4 when the `hmask` bit is clear.
@inline(__always)
private func q3Value(_ q: UInt8, _ shift: UInt8, _ hmask: UInt8, _ bit: UInt8) -> Int32 {
    Int32((q &>> shift) & 3) &- (hmask & bit != 0 ? 0 : 4)
}

/// Unpacks Q3_K's sixteen 6-bit scales (unsigned, offset by 32) from 12 bytes.
/// Bytes 0-7 hold the low nibbles: byte k has scale k in its low nibble and scale k + 8 in its high
/// nibble. Bytes 8-11 hold the top two bits: byte 8 + k has, at bit shift 2i, scale 4i + k.
@inline(__always)
private func q3KScales(_ p: UnsafeRawPointer) -> SIMD16<UInt8> {
    var s = SIMD16<UInt8>()
    for k in 0..<8 {
        let b = byte(p, k)
        s[k] = b & 0x0F
        s[k + 8] = b &>> 4
    }
    for k in 0..<4 {
        let h = byte(p, 8 + k)
        for i in 0..<4 {
            s[4 &* i + k] |= ((h &>> UInt8(2 &* i)) & 3) &<< 4
        }
    }
    return s
}
