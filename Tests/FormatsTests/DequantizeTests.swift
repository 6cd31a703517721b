import Foundation
import Formats
import Testing

// Hand-built blocks check each layout detail against values worked out by hand from ggml's
// block definitions; fixture tests check random blocks bit for bit against gguf-py's reference
// dequantization (Tests/Fixtures/dequant, made by generate.py there).

/// Little-endian float16 bits of a few exact values used below.
private enum H {
    static let one: UInt16 = 0x3C00
    static let minusOne: UInt16 = 0xBC00
    static let half: UInt16 = 0x3800
    static let quarter: UInt16 = 0x3400
    static let minusTwo: UInt16 = 0xC000
}

/// A block under construction: zero bytes with fields written at byte offsets.
private struct Block {
    var bytes: [UInt8]
    init(_ size: Int) { bytes = [UInt8](repeating: 0, count: size) }
    mutating func f16(_ bits: UInt16, at offset: Int) {
        bytes[offset] = UInt8(bits & 0xFF)
        bytes[offset + 1] = UInt8(bits >> 8)
    }
    mutating func set(_ values: [UInt8], at offset: Int) {
        bytes.replaceSubrange(offset..<offset + values.count, with: values)
    }
}

/// SplitMix64, for reproducible random blocks.
private struct TestRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Dequantizes `bytes` as `count` elements of `type`, reading from an odd address so that the
/// decoders' unaligned loads are exercised.
private func decode(_ type: GGMLType, _ bytes: [UInt8], count: Int) -> [Float] {
    let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes.count + 1, alignment: 64)
    defer { raw.deallocate() }
    bytes.withUnsafeBytes { (raw + 1).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
    var out = [Float](repeating: .nan, count: count)
    let ok = out.withUnsafeMutableBufferPointer {
        Dequantize.row(type, from: UnsafeRawPointer(raw + 1), to: $0.baseAddress!, count: count)
    }
    #expect(ok)
    return out
}

/// Expects `actual` to equal `expected` bit for bit, reporting the first few differing indices.
private func expectBits(_ actual: [Float], _ expected: [Float], _ what: String) {
    #expect(actual.count == expected.count, "\(what): count")
    let bad = zip(actual, expected).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
    #expect(bad.isEmpty, "\(what): \(bad.count) differ, first \(bad.prefix(4).map { "[\($0.offset)] \($0.element.0) vs \($0.element.1)" })")
}

@Suite struct DequantizeTests {
    // MARK: 32-element blocks

    /// Byte j of qs: low nibble is element j, high nibble element j + 16.
    private static let nibbles: [UInt8] = (0..<16).map { UInt8($0) | UInt8(15 - $0) << 4 }

    @Test func q4_0HandBlock() {
        var b = Block(18)
        b.f16(H.half, at: 0)
        b.set(Self.nibbles, at: 2)
        let expected: [Float] = [-4, -3.5, -3, -2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5,
                                 3.5, 3, 2.5, 2, 1.5, 1, 0.5, 0, -0.5, -1, -1.5, -2, -2.5, -3, -3.5, -4]
        expectBits(decode(.q4_0, b.bytes, count: 32), expected, "Q4_0")
    }

    @Test func q4_1HandBlock() {
        var b = Block(20)
        b.f16(H.quarter, at: 0)
        b.f16(H.minusOne, at: 2)
        b.set(Self.nibbles, at: 4)
        let expected: [Float] = [-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.25, 2.5, 2.75,
                                 2.75, 2.5, 2.25, 2, 1.75, 1.5, 1.25, 1, 0.75, 0.5, 0.25, 0, -0.25, -0.5, -0.75, -1]
        expectBits(decode(.q4_1, b.bytes, count: 32), expected, "Q4_1")
    }

    @Test func q5_0HandBlock() {
        // qh = 0x00010002: bit 1 -> fifth bit of element 1, bit 16 -> element 16.
        var b = Block(22)
        b.f16(H.one, at: 0)
        b.set([0x02, 0x00, 0x01, 0x00], at: 2)
        b.set(Self.nibbles, at: 6)
        let expected: [Float] = [-16, 1, -14, -13, -12, -11, -10, -9, -8, -7, -6, -5, -4, -3, -2, -1,
                                 15, -2, -3, -4, -5, -6, -7, -8, -9, -10, -11, -12, -13, -14, -15, -16]
        expectBits(decode(.q5_0, b.bytes, count: 32), expected, "Q5_0")
    }

    @Test func q5_1HandBlock() {
        // qh = 0x80000001: bit 0 -> element 0, bit 31 -> element 31.
        var b = Block(24)
        b.f16(H.half, at: 0)
        b.f16(H.one, at: 2)
        b.set([0x01, 0x00, 0x00, 0x80], at: 4)
        b.set(Self.nibbles, at: 8)
        let expected: [Float] = [9, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5, 8, 8.5,
                                 8.5, 8, 7.5, 7, 6.5, 6, 5.5, 5, 4.5, 4, 3.5, 3, 2.5, 2, 1.5, 9]
        expectBits(decode(.q5_1, b.bytes, count: 32), expected, "Q5_1")
    }

    @Test func q8_0HandBlock() {
        // qs[j] = 8j - 128 as int8, except qs[31] = 127; d = -2. 0 * -2 is -0, as in ggml.
        var b = Block(34)
        b.f16(H.minusTwo, at: 0)
        b.set((0..<32).map { UInt8(truncatingIfNeeded: 8 * $0 - 128) }, at: 2)
        b.bytes[33] = 127
        let expected: [Float] = [256, 240, 224, 208, 192, 176, 160, 144, 128, 112, 96, 80, 64, 48, 32, 16,
                                 -0.0, -16, -32, -48, -64, -80, -96, -112, -128, -144, -160, -176, -192, -208, -224, -254]
        expectBits(decode(.q8_0, b.bytes, count: 32), expected, "Q8_0")
    }

    @Test func mxfp4HandBlock() {
        // e = 128: half scale 2^0, so each code decodes to its doubled E2M1 value (ggml's kvalues_mxfp4).
        // Code 8 is +0 (kvalues_mxfp4[8] is the integer 0).
        var b = Block(17)
        b.bytes[0] = 128
        b.set(Self.nibbles, at: 1)
        let expected: [Float] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12,
                                 -12, -8, -6, -4, -3, -2, -1, 0, 12, 8, 6, 4, 3, 2, 1, 0]
        expectBits(decode(.mxfp4, b.bytes, count: 32), expected, "MXFP4")
        // e = 125: every value times 2^-3.
        b.bytes[0] = 125
        expectBits(decode(.mxfp4, b.bytes, count: 32), expected.map { $0 / 8 }, "MXFP4 e = 125")
    }

    /// Random MXFP4 blocks (every code in both nibbles of every block; exponents at the subnormal
    /// and overflowing ends and in between) against a scalar decoder written from ggml's
    /// definition: element j is `kvalues_mxfp4[low nibble of qs[j]]`, element j + 16 the high
    /// nibble's value, each times 2^(e - 128) (`GGML_E8M0_TO_FP32_HALF`).
    @Test func mxfp4MatchesScalarReference() {
        let kvalues: [Int8] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]
        func reference(_ block: ArraySlice<UInt8>) -> [Float] {
            let e = block[block.startIndex], qs = Array(block.dropFirst())
            let scale = Float(sign: .plus, exponent: Int(e) - 128, significand: 1)
            return (0..<32).map { i in
                let code = i < 16 ? qs[i] & 0x0F : qs[i - 16] >> 4
                return Float(kvalues[Int(code)]) * scale
            }
        }
        var rng = TestRandom(seed: 39)
        let exponents: [UInt8] = [0, 1, 2, 3, 64, 100, 120, 126, 127, 128, 129, 135, 160, 200, 253, 254, 255]
        var raw: [UInt8] = []
        for e in exponents {
            let low = Array(0..<UInt8(16)).shuffled(using: &rng), high = Array(0..<UInt8(16)).shuffled(using: &rng)
            raw += [e] + zip(low, high).map { $0 | $1 << 4 }
        }
        let expected = stride(from: 0, to: raw.count, by: 17).flatMap { reference(raw[$0..<$0 + 17]) }
        #expect(expected.contains(.infinity) && expected.contains { $0 != 0 && $0.isSubnormal })
        expectBits(decode(.mxfp4, raw, count: 32 * exponents.count), expected, "MXFP4 row")
        for b in exponents.indices {
            expectBits(decode(.mxfp4, Array(raw[17 * b..<17 * b + 17]), count: 32), Array(expected[32 * b..<32 * b + 32]),
                       "MXFP4 block e = \(exponents[b])")
        }
    }

    // MARK: K-quants: default value per sub-block plus probes at layout-sensitive positions

    @Test func q2_KHandBlock() {
        // scales[k]: scale k % 8 + 1 (low nibble), min k (high nibble); d = 1, dmin = 0.25.
        var b = Block(84)
        b.set((0..<16).map { UInt8($0) << 4 | UInt8($0 % 8 + 1) }, at: 0)
        b.bytes[16 + 0] = 0b11_10_01_00  // elements 0, 32, 64, 96 get q = 0, 1, 2, 3
        b.bytes[16 + 17] = 0b00_00_00_11  // second 16 bytes of the group: element 17 gets q = 3
        b.bytes[16 + 32 + 17] = 0b11_00_00_00  // second half, shift 6: element 128 + 96 + 17 = 241
        b.f16(H.one, at: 80)
        b.f16(H.quarter, at: 82)
        var expected = (0..<256).map { 0 - 0.25 * Float($0 / 16) }  // q = 0: 0 - dmin * min (+0 for min 0)
        expected[0] = 0  // sc 1, min 0, q 0
        expected[32] = 2.5  // sub-block 2: 3 * 1 - 0.5
        expected[64] = 9  // sub-block 4: 5 * 2 - 1
        expected[96] = 19.5  // sub-block 6: 7 * 3 - 1.5
        expected[17] = 5.75  // sub-block 1: 2 * 3 - 0.25
        expected[241] = 20.25  // sub-block 15: 8 * 3 - 3.75
        expectBits(decode(.q2_K, b.bytes, count: 256), expected, "Q2_K")
    }

    @Test func q3_KHandBlock() {
        // Stored 6-bit scales 33 + k, i.e. effective scale k + 1 for sub-block k, packed by hand:
        // bytes 0-7 low nibbles (k, k + 8), bytes 8-11 top bits (byte 8 + m, shift 2i: scale 4i + m).
        var b = Block(110)
        b.set([UInt8](repeating: 0xFF, count: 32), at: 0)  // hmask: high bit set everywhere ...
        b.bytes[5] = 0xFE  // ... except bit 0 of hmask[5]: element 5
        b.bytes[20] = 0xDF  // ... and bit 5 (= 4n + j, n 1, j 1) of hmask[20]: element 128 + 32 + 20 = 180
        b.bytes[32 + 0] = 0b11_10_01_00  // elements 0, 32, 64, 96: low bits 0, 1, 2, 3
        b.bytes[32 + 32 + 20] = 0b00_00_11_00  // second half, shift 2: element 180 low bits 3
        b.set([0x91, 0xA2, 0xB3, 0xC4, 0xD5, 0xE6, 0xF7, 0x08, 0xAA, 0xAA, 0xAA, 0xEA], at: 96)
        b.f16(H.half, at: 108)
        var expected = [Float](repeating: 0, count: 256)
        expected[32] = 1.5  // 0.5 * 3 * 1
        expected[64] = 5  // 0.5 * 5 * 2
        expected[96] = 10.5  // 0.5 * 7 * 3
        expected[5] = -2  // 0.5 * 1 * (0 - 4)
        expected[180] = -6  // sub-block 11: 0.5 * 12 * (3 - 4)
        expectBits(decode(.q3_K, b.bytes, count: 256), expected, "Q3_K")
    }

    /// Q4_K/Q5_K scales packed by hand: scales (1, 2, 3, 4, 37, 38, 59, 63), mins (0, 1, 2, 3, 20, 33, 48, 5).
    /// Bytes 0-3: scale j | top bits of scale j + 4; 4-7: min j | top bits of min j + 4;
    /// 8-11: low nibble scale j + 4, high nibble min j + 4.
    private static let kScales: [UInt8] = [0x81, 0x82, 0xC3, 0xC4, 0x40, 0x81, 0xC2, 0x03, 0x45, 0x16, 0x0B, 0x5F]
    /// -dmin * min for each 32-element sub-block, with dmin = 0.5.
    private static let kMinOffsets: [Float] = [0, -0.5, -1, -1.5, -10, -16.5, -24, -2.5]

    @Test func q4_KHandBlock() {
        var b = Block(144)
        b.f16(H.one, at: 0)
        b.f16(H.half, at: 2)
        b.set(Self.kScales, at: 4)
        b.bytes[16 + 0] = 0xF1  // element 0: 1 (low nibble), element 32: 15 (high nibble)
        b.bytes[16 + 96 + 31] = 0x2F  // element 192 + 31 = 223: 15, element 255: 2
        var expected = (0..<256).map { Self.kMinOffsets[$0 / 32] }
        expected[0] = 1  // 1 * 1 - 0
        expected[32] = 29.5  // 2 * 15 - 0.5
        expected[223] = 861  // 59 * 15 - 24
        expected[255] = 123.5  // 63 * 2 - 2.5
        expectBits(decode(.q4_K, b.bytes, count: 256), expected, "Q4_K")
    }

    @Test func q5_KHandBlock() {
        var b = Block(176)
        b.f16(H.one, at: 0)
        b.f16(H.half, at: 2)
        b.set(Self.kScales, at: 4)
        b.bytes[16 + 3] = 0b0000_0110  // qh[3]: bit 1 -> element 32 + 3, bit 2 -> element 64 + 3
        b.bytes[16 + 31] = 0b1000_0000  // qh[31]: bit 7 -> element 192 + 32 + 31 = 255
        b.bytes[48 + 0] = 0xF1
        b.bytes[48 + 96 + 31] = 0x2F
        var expected = (0..<256).map { Self.kMinOffsets[$0 / 32] }
        expected[0] = 1  // 1 * 1 - 0
        expected[32] = 29.5  // 2 * 15 - 0.5
        expected[35] = 31.5  // 2 * 16 - 0.5
        expected[67] = 47  // 3 * 16 - 1
        expected[223] = 861  // 59 * 15 - 24
        expected[255] = 1131.5  // 63 * (2 + 16) - 2.5
        expectBits(decode(.q5_K, b.bytes, count: 256), expected, "Q5_K")
    }

    @Test func q6_KHandBlock() {
        // scales: +(k + 1) for even k, -(k + 1) for odd k; d = 0.25. All-zero quants give q = -32.
        let scales = (0..<16).map { $0 % 2 == 0 ? $0 + 1 : -($0 + 1) }
        var b = Block(210)
        b.bytes[0] = 0x21  // ql[0]: element 0 low 4 bits 1, element 64 low 4 bits 2
        b.bytes[128 + 0] = 0b11_10_01_00  // qh[0]: high bits of elements 0, 32, 64, 96 = 0, 1, 2, 3
        b.bytes[64 + 32 + 17] = 0xF0  // second half ql[32 + 17]: element 128 + 96 + 17 = 241 low bits 15
        b.bytes[128 + 32 + 17] = 0b11_00_00_00  // second half qh[17]: element 241 high bits 3
        b.set(scales.map { UInt8(bitPattern: Int8($0)) }, at: 192)
        b.f16(H.quarter, at: 208)
        var expected = (0..<256).map { Float(-8) * Float(scales[$0 / 16]) }  // 0.25 * scale * -32
        expected[0] = -7.75  // 0.25 * 1 * (1 - 32)
        expected[32] = -12  // 0.25 * 3 * (16 - 32)
        expected[64] = 2.5  // 0.25 * 5 * (34 - 32)
        expected[96] = 28  // 0.25 * 7 * (48 - 32)
        expected[241] = -124  // 0.25 * -16 * (63 - 32)
        expectBits(decode(.q6_K, b.bytes, count: 256), expected, "Q6_K")
    }

    // MARK: Plain types

    @Test func halfSpecials() {
        let cases: [(UInt16, Float)] = [
            (0x0000, 0), (0x3C00, 1), (0xC000, -2), (0x3555, 0.333251953125),
            (0x0001, 0x1p-24), (0x8001, -0x1p-24), (0x03FF, 1023 * 0x1p-24), (0x0400, 0x1p-14),
            (0x7BFF, 65504), (0xFBFF, -65504), (0x7C00, .infinity), (0xFC00, -.infinity),
        ]
        for (bits, value) in cases {
            #expect(Dequantize.half(bits).bitPattern == value.bitPattern, "half(0x\(String(bits, radix: 16)))")
        }
        #expect(Dequantize.half(0x8000).bitPattern == 0x8000_0000)  // -0
        #expect(Dequantize.half(0x7E00).bitPattern == 0x7FC0_0000)  // quiet NaN
        #expect(Dequantize.half(0xFD01).bitPattern == 0xFFA0_2000)  // signaling NaN, payload kept
    }

    #if !(os(macOS) && arch(x86_64))
    /// Every binary16 bit pattern against the toolchain's own Float16 -> Float conversion.
    @Test func halfMatchesFloat16Exhaustively() {
        var mismatches = 0
        for bits in 0...UInt16.max {
            let f = Float(Float16(bitPattern: bits))
            let ours = Dequantize.half(bits)
            // NaNs: compare as NaN with the same sign only, the toolchain may quiet a signaling NaN.
            let same = f.isNaN ? (ours.isNaN && ours.sign == f.sign) : ours.bitPattern == f.bitPattern
            if !same { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }
    #endif

    @Test func bfloatValues() {
        #expect(Dequantize.bfloat(0x3F80) == 1)
        #expect(Dequantize.bfloat(0xC000) == -2)
        #expect(Dequantize.bfloat(0x8000).bitPattern == 0x8000_0000)
        #expect(Dequantize.bfloat(0x7F80) == .infinity)
        #expect(Dequantize.bfloat(0x0001).bitPattern == 0x0001_0000)  // subnormal
        #expect(Dequantize.bfloat(0x3EAB) == 0.333984375)
    }

    @Test func plainRows() {
        // F16 row: 1, -0, 2^-24, -inf, 65504.
        let f16: [UInt8] = [0x00, 0x3C, 0x00, 0x80, 0x01, 0x00, 0x00, 0xFC, 0xFF, 0x7B]
        expectBits(decode(.f16, f16, count: 5), [1, -0.0, 0x1p-24, -.infinity, 65504], "F16 row")
        // BF16 row: 1, -2, 0.333984375.
        let bf16: [UInt8] = [0x80, 0x3F, 0x00, 0xC0, 0xAB, 0x3E]
        expectBits(decode(.bf16, bf16, count: 3), [1, -2, 0.333984375], "BF16 row")
        // F32 row: copied as is, NaN payload included.
        let values: [Float] = [1.5, -0.0, .infinity, Float(bitPattern: 0x7FC0_1234), 0x1p-149]
        let f32 = values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
        expectBits(decode(.f32, f32, count: 5), values, "F32 row")
    }

    // MARK: Agreement with gguf-py

    private static let fixtures = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/dequant")

    @Test(arguments: [GGMLType.f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .mxfp4])
    func matchesGGUFPy(_ type: GGMLType) throws {
        let name = type.description.lowercased()
        let raw = [UInt8](try Data(contentsOf: Self.fixtures.appendingPathComponent("\(name).bin")))
        let expectedBytes = try Data(contentsOf: Self.fixtures.appendingPathComponent("\(name).f32"))
        let expected = stride(from: 0, to: expectedBytes.count, by: 4).map { i in
            Float(bitPattern: expectedBytes[i..<i + 4].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        }
        #expect(raw.count % type.bytesPerBlock == 0)
        let count = raw.count / type.bytesPerBlock * type.blockSize
        #expect(count == expected.count && count > 0)
        // Whole buffer in one call ...
        expectBits(decode(type, raw, count: count), expected, "\(type) row")
        // ... and block by block, from a fresh odd address each time.
        var pieces: [Float] = []
        for b in 0..<count / type.blockSize {
            let block = Array(raw[b * type.bytesPerBlock..<(b + 1) * type.bytesPerBlock])
            pieces += decode(type, block, count: type.blockSize)
        }
        expectBits(pieces, expected, "\(type) per block")
    }

    // MARK: Hugging Face MXFP4 layout

    /// One Hugging Face MXFP4 group whose element i has code i for i < 16 and 31 - i after: byte b
    /// holds element 2b in its low nibble and 2b + 1 in its high nibble.
    private static let huggingFaceCounting: [UInt8] = [0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE,
                                                       0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01]

    @Test func huggingFaceMXFP4ToGGML() throws {
        // A 2 x 64 matrix, two groups per row. Row 0: the counting group at scale byte 128 (x 2),
        // then all codes 7 (+6) at 120 (x 2^-7). Row 1: bytes 0xF9 (even elements code 9 = -0.5,
        // odd elements code 15 = -6) at 127 (x 1), then all zero codes at scale byte 0.
        let blocks = Self.huggingFaceCounting + [UInt8](repeating: 0x77, count: 16)
            + [UInt8](repeating: 0xF9, count: 16) + [UInt8](repeating: 0, count: 16)
        let scales: [UInt8] = [128, 120, 127, 0]
        let ggml = try MXFP4.ggmlBlocks(fromHuggingFaceBlocks: blocks, scales: scales, rows: 2, cols: 64)
        #expect(ggml.count == 4 * 17)
        // ggml byte j pairs element j (low nibble) with element j + 16 (high): codes j and 15 - j.
        #expect(Array(ggml[0..<17]) == [128] + Self.nibbles)
        #expect(Array(ggml[17..<34]) == [120] + [UInt8](repeating: 0x77, count: 16))
        #expect(Array(ggml[34..<51]) == [127] + (0..<16).map { $0 % 2 == 0 ? 0x99 : 0xFF })
        #expect(Array(ggml[51..<68]) == [UInt8](repeating: 0, count: 17))
        // Values as transformers computes them: FP4[code] * 2^(scale - 127).
        let fp4: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6]
        let counting = (0..<32).map { fp4[$0 < 16 ? $0 : 31 - $0] * 2 }
        let expected = counting + [Float](repeating: 6.0 / 128, count: 32)
            + (0..<32).map { $0 % 2 == 0 ? -0.5 : -6 } + [Float](repeating: 0, count: 32)
        expectBits(decode(.mxfp4, ggml, count: 128), expected, "converted Hugging Face MXFP4")
    }

    @Test func huggingFaceMXFP4Refusals() {
        let blocks = [UInt8](repeating: 0, count: 32), scales = [UInt8](repeating: 127, count: 2)
        #expect(throws: FormatError.self) { try MXFP4.ggmlBlocks(fromHuggingFaceBlocks: blocks, scales: scales, rows: 2, cols: 48) }
        #expect(throws: FormatError.self) { try MXFP4.ggmlBlocks(fromHuggingFaceBlocks: blocks, scales: scales, rows: 1, cols: 32) }
        #expect(throws: FormatError.self) { try MXFP4.ggmlBlocks(fromHuggingFaceBlocks: blocks, scales: [127], rows: 2, cols: 32) }
        #expect(throws: FormatError.self) { try MXFP4.ggmlBlocks(fromHuggingFaceBlocks: blocks, scales: scales, rows: -2, cols: 32) }
        #expect(throws: FormatError.self) { try MXFP4.ggmlBlocks(fromHuggingFaceBlocks: blocks, scales: scales, rows: Int.max, cols: 64) }
        #expect((try? MXFP4.ggmlBlocks(fromHuggingFaceBlocks: blocks, scales: scales, rows: 2, cols: 32))?.count == 34)
        #expect((try? MXFP4.ggmlBlocks(fromHuggingFaceBlocks: [], scales: [], rows: 0, cols: 32)) == [])
    }

    // MARK: Refusals

    @Test func unsupportedTypesAndBadCountsWriteNothing() {
        let source = [UInt8](repeating: 0x11, count: 4096)
        var out = [Float](repeating: 42, count: 1024)
        source.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dst in
                for type in GGMLType.allCases where !type.isSupportedWeightType {
                    #expect(!Dequantize.row(type, from: src.baseAddress!, to: dst.baseAddress!, count: 256), "\(type)")
                }
                #expect(!Dequantize.row(.q4_0, from: src.baseAddress!, to: dst.baseAddress!, count: 33))
                #expect(!Dequantize.row(.q6_K, from: src.baseAddress!, to: dst.baseAddress!, count: 128))
                #expect(!Dequantize.row(.f16, from: src.baseAddress!, to: dst.baseAddress!, count: -1))
                #expect(Dequantize.row(.q4_0, from: src.baseAddress!, to: dst.baseAddress!, count: 0))
            }
        }
        #expect(out.allSatisfy { $0 == 42 })
    }
}
