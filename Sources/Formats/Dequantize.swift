/// Conversion of GGML/GGUF weight data to float32, bit for bit equal to ggml's `dequantize_row_*`.
///
/// Every quantized type stores a row as consecutive blocks of `GGMLType.blockSize` elements in
/// `GGMLType.bytesPerBlock` bytes. Blocks are packed without padding, so 18-, 22- or 110-byte blocks
/// sit at arbitrary addresses: all multi-byte fields are read with `loadUnaligned`, little-endian
/// (the byte order of GGUF and of every platform Pagoda runs on).
///
/// Scale fields (`d`, `m`, `dmin`) are IEEE float16 and are widened to float32 exactly. All arithmetic
/// is float32 in ggml's order: a product and a sum are rounded separately (`q * d + m`, never a fused
/// multiply-add; Swift emits no `contract` flag, so LLVM does not fuse them).
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
        case .q4_0: blocks(count / 32, 18, source, destination, 32, q4_0)
        case .q4_1: blocks(count / 32, 20, source, destination, 32, q4_1)
        case .q5_0: blocks(count / 32, 22, source, destination, 32, q5_0)
        case .q5_1: blocks(count / 32, 24, source, destination, 32, q5_1)
        case .q8_0: blocks(count / 32, 34, source, destination, 32, q8_0)
        case .q2_K: blocks(count / 256, 84, source, destination, 256, q2_K)
        case .q3_K: blocks(count / 256, 110, source, destination, 256, q3_K)
        case .q4_K: blocks(count / 256, 144, source, destination, 256, q4_K)
        case .q5_K: blocks(count / 256, 176, source, destination, 256, q5_K)
        case .q6_K: blocks(count / 256, 210, source, destination, 256, q6_K)
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
    @inline(__always)
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
    @inline(__always)
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

@inline(__always)
private func byte(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
    p.load(fromByteOffset: offset, as: UInt8.self)
}

/// A float16 field at `offset`, widened to Float.
@inline(__always)
private func f16(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    Dequantize.half(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}

// MARK: - 32-element blocks
//
// In the 4- and 5-bit types, byte j of `qs` holds element j in its low nibble and element j + 16
// in its high nibble. In Q5_*, bit j of the little-endian 32-bit `qh` is the fifth bit of element j.

/// Q4_0, 18 bytes: `d: f16`, `qs: [16] u8`. x = (nibble - 8) * d.
@inline(__always)
private func q4_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(x, 0)
    let qs = x + 2
    for j in 0..<16 {
        let q = byte(qs, j)
        y[j] = Float(Int32(q & 0x0F) &- 8) * d
        y[j + 16] = Float(Int32(q &>> 4) &- 8) * d
    }
}

/// Q4_1, 20 bytes: `d: f16`, `m: f16`, `qs: [16] u8`. x = nibble * d + m.
@inline(__always)
private func q4_1(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(x, 0)
    let m = f16(x, 2)
    let qs = x + 4
    for j in 0..<16 {
        let q = byte(qs, j)
        y[j] = Float(q & 0x0F) * d + m
        y[j + 16] = Float(q &>> 4) * d + m
    }
}

/// 16 when bit `i` of `qh` is set, else 0: the fifth bit of element `i` (`qh`) or `i + 16` (`qh >> 16`) in Q5_0/Q5_1.
/// (A mask test rather than a variable shift of `qh`, so the loops vectorize without AVX2.)
@inline(__always)
private func highBit(_ qh: UInt32, _ i: Int) -> UInt8 {
    qh & (1 &<< UInt32(i)) != 0 ? 16 : 0
}

/// Q5_0, 22 bytes: `d: f16`, `qh: u32`, `qs: [16] u8`. x = ((nibble | high bit << 4) - 16) * d.
@inline(__always)
private func q5_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(x, 0)
    let qh = UInt32(littleEndian: x.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
    let qs = x + 6
    for j in 0..<16 {
        let q = byte(qs, j)
        let low = (q & 0x0F) | highBit(qh, j)
        let high = (q &>> 4) | highBit(qh &>> 16, j)
        y[j] = Float(Int32(low) &- 16) * d
        y[j + 16] = Float(Int32(high) &- 16) * d
    }
}

/// Q5_1, 24 bytes: `d: f16`, `m: f16`, `qh: u32`, `qs: [16] u8`. x = (nibble | high bit << 4) * d + m.
@inline(__always)
private func q5_1(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(x, 0)
    let m = f16(x, 2)
    let qh = UInt32(littleEndian: x.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
    let qs = x + 8
    for j in 0..<16 {
        let q = byte(qs, j)
        let low = (q & 0x0F) | highBit(qh, j)
        let high = (q &>> 4) | highBit(qh &>> 16, j)
        y[j] = Float(low) * d + m
        y[j + 16] = Float(high) * d + m
    }
}

/// Q8_0, 34 bytes: `d: f16`, `qs: [32] i8`. x = q * d.
@inline(__always)
private func q8_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(x, 0)
    let qs = x + 2
    for j in 0..<32 {
        y[j] = Float(Int8(bitPattern: byte(qs, j))) * d
    }
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

/// Scale and min (both 6-bit) of sub-block `j` (0..<8) in the 12-byte packed scales of Q4_K/Q5_K
/// (ggml's `get_scale_min_k4`). For j < 4: scale = q[j] & 63, min = q[j + 4] & 63. For j >= 4 the low
/// 4 bits come from q[j + 4] (scale: low nibble, min: high nibble) and the top 2 bits from the top
/// bits of q[j - 4] (scale) and q[j] (min).
@inline(__always)
private func kScaleMin(_ j: Int, _ q: UnsafeRawPointer) -> (scale: UInt8, min: UInt8) {
    if j < 4 {
        return (byte(q, j) & 63, byte(q, j + 4) & 63)
    }
    let low = byte(q, j + 4)
    return ((low & 0x0F) | ((byte(q, j - 4) &>> 6) &<< 4), (low &>> 4) | ((byte(q, j) &>> 6) &<< 4))
}

/// Q4_K, 144 bytes: `d: f16`, `dmin: f16`, `scales: [12] u8` (see `kScaleMin`), `qs: [128] u8`.
/// Per 64 elements, 32 bytes of `qs` hold elements 0..<32 in low nibbles and 32..<64 in high nibbles.
/// x = d * scale * q - dmin * min, with scale/min per 32 elements.
@inline(__always)
private func q4_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(x, 0)
    let dmin = f16(x, 2)
    let scales = x + 4
    for g in 0..<4 {
        let qs = x + 16 + 32 &* g
        let out = y + 64 &* g
        let (sc1, m1) = kScaleMin(2 &* g, scales)
        let (sc2, m2) = kScaleMin(2 &* g + 1, scales)
        let d1 = d * Float(sc1), min1 = dmin * Float(m1)
        let d2 = d * Float(sc2), min2 = dmin * Float(m2)
        for l in 0..<32 {
            let q = byte(qs, l)
            out[l] = d1 * Float(q & 0x0F) - min1
            out[l + 32] = d2 * Float(q &>> 4) - min2
        }
    }
}

/// Q5_K, 176 bytes: `d: f16`, `dmin: f16`, `scales: [12] u8` (see `kScaleMin`), `qh: [32] u8`,
/// `qs: [128] u8`. Like Q4_K plus a fifth bit: bit 2g of `qh[l]` for element 64g + l and bit 2g + 1
/// for element 64g + 32 + l.
@inline(__always)
private func q5_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(x, 0)
    let dmin = f16(x, 2)
    let scales = x + 4
    let qh = x + 16
    for g in 0..<4 {
        let qs = x + 48 + 32 &* g
        let out = y + 64 &* g
        let (sc1, m1) = kScaleMin(2 &* g, scales)
        let (sc2, m2) = kScaleMin(2 &* g + 1, scales)
        let d1 = d * Float(sc1), min1 = dmin * Float(m1)
        let d2 = d * Float(sc2), min2 = dmin * Float(m2)
        let shift = UInt8(2 &* g)
        for l in 0..<32 {
            let q = byte(qs, l)
            let h = byte(qh, l) &>> shift
            out[l] = d1 * Float((q & 0x0F) | ((h & 1) &<< 4)) - min1
            out[l + 32] = d2 * Float((q &>> 4) | ((h & 2) &<< 3)) - min2
        }
    }
}

/// Q6_K, 210 bytes: `ql: [128] u8` (low 4 bits), `qh: [64] u8` (high 2 bits), `scales: [16] i8`
/// (per 16 elements), `d: f16`. x = d * scale * (q - 32).
/// Per 128 elements (half n): `ql[64n + l]` holds element l (low nibble) and l + 64 (high nibble),
/// `ql[64n + 32 + l]` holds l + 32 and l + 96; `qh[32n + l]` holds the high bits of l, l + 32, l + 64,
/// l + 96 at shifts 0, 2, 4, 6 (l < 32, relative to 128n).
@inline(__always)
private func q6_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let d = f16(x, 208)
    for n in 0..<2 {
        let ql = x + 64 &* n
        let qh = x + 128 + 32 &* n
        let sc = x + 192 + 8 &* n
        let out = y + 128 &* n
        for part in 0..<2 {
            // Four 16-element sub-blocks: elements 16 * part + 32 * k + l, k = 0..<4.
            let d0 = d * Float(Int8(bitPattern: byte(sc, part)))
            let d1 = d * Float(Int8(bitPattern: byte(sc, part + 2)))
            let d2 = d * Float(Int8(bitPattern: byte(sc, part + 4)))
            let d3 = d * Float(Int8(bitPattern: byte(sc, part + 6)))
            for l in 16 &* part..<16 &* part + 16 {
                let a = byte(ql, l)
                let b = byte(ql, l + 32)
                let h = byte(qh, l)
                let q0 = Int32((a & 0x0F) | ((h & 0x03) &<< 4)) &- 32
                let q1 = Int32((b & 0x0F) | ((h & 0x0C) &<< 2)) &- 32
                let q2 = Int32((a &>> 4) | (h & 0x30)) &- 32
                let q3 = Int32((b &>> 4) | ((h & 0xC0) &>> 2)) &- 32
                out[l] = d0 * Float(q0)
                out[l + 32] = d1 * Float(q1)
                out[l + 64] = d2 * Float(q2)
                out[l + 96] = d3 * Float(q3)
            }
        }
    }
}
