import Formats
import Kernels
import Testing

/// Random weight rows of `type` whose float16 scale fields hold moderate values (random bytes
/// elsewhere), so that every quant and scale bit pattern is exercised without infinities.
func randomWeightBytes(_ type: GGMLType, rows: Int, cols: Int, rng: inout SeededGenerator) -> [UInt8] {
    let rowBytes = type.byteCount(elements: cols) ?? 0
    var bytes = (0 ..< rows * rowBytes).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
    func half(_ value: Float, at offset: Int) {
        let bits = Float16(value).bitPattern
        bytes[offset] = UInt8(bits & 0xFF)
        bytes[offset + 1] = UInt8(bits >> 8)
    }
    let scaleOffsets: [Int]
    switch type {
    case .f32:
        for i in stride(from: 0, to: bytes.count, by: 4) {
            withUnsafeBytes(of: rng.symmetric(1)) { bytes.replaceSubrange(i ..< i + 4, with: $0) }
        }
        return bytes
    case .f16:
        for i in stride(from: 0, to: bytes.count, by: 2) { half(rng.symmetric(1), at: i) }
        return bytes
    case .bf16:
        for i in stride(from: 0, to: bytes.count, by: 2) {
            let bits = rng.symmetric(1).bitPattern >> 16
            bytes[i] = UInt8(bits & 0xFF)
            bytes[i + 1] = UInt8(bits >> 8)
        }
        return bytes
    case .q4_0, .q5_0, .q8_0: scaleOffsets = [0]
    case .q4_1, .q5_1, .q4_K, .q5_K: scaleOffsets = [0, 2]
    case .q6_K: scaleOffsets = [208]
    case .q2_K: scaleOffsets = [80, 82]
    case .q3_K: scaleOffsets = [108]
    case .mxfp4:
        // E8M0 exponent byte: half scales 2^-12 ... 2^-4 (weights up to 12 * 2^-4).
        for block in stride(from: 0, to: bytes.count, by: 17) { bytes[block] = UInt8.random(in: 116 ... 124, using: &rng) }
        return bytes
    default: return bytes
    }
    let blockBytes = type.bytesPerBlock
    for block in stride(from: 0, to: bytes.count, by: blockBytes) {
        for offset in scaleOffsets { half(rng.symmetric(0.05), at: block + offset) }
    }
    return bytes
}

/// Keeps a copy of test bytes alive for a `TensorData` that points into it.
final class TensorBytes {
    let buffer: UnsafeMutableRawBufferPointer
    init(_ bytes: [UInt8]) {
        buffer = .allocate(byteCount: max(bytes.count, 1), alignment: 64)
        buffer.copyBytes(from: bytes)
    }
    deinit { buffer.deallocate() }
}

/// A matrix made from `bytes` as from a file's tensor (`[rows, cols]` of `type`), for `activations`.
func tensorMatrix(_ bytes: [UInt8], type: GGMLType, rows: Int, cols: Int, activations: ActivationPrecision) throws -> WeightMatrix {
    let storage = TensorBytes(bytes)
    let tensor = TensorData(name: "w", type: type, shape: [rows, cols], bytes: UnsafeRawBufferPointer(rebasing: storage.buffer[0 ..< bytes.count]),
                            path: "test", owner: storage)
    return try WeightMatrix(tensor, activations: activations)
}

/// `weight` times the rows `tokens` of `input` (`[_, weight.cols]`), on a pool of `threads`.
func multiplied(_ input: [Float], tokens range: Range<Int>, by weight: WeightMatrix, threads: Int) -> [Float] {
    var output = [Float](repeating: .nan, count: range.count * weight.rows)
    input.withUnsafeBufferPointer { x in
        output.withUnsafeMutableBufferPointer { y in
            MatMul.multiply(x.baseAddress! + range.lowerBound * weight.cols, tokens: range.count, by: weight,
                            into: y.baseAddress!, pool: WorkerPool(threads: threads))
        }
    }
    return output
}

/// Every row of `weight` dequantized, `[rows, cols]`.
func dequantizedRows(of weight: WeightMatrix) -> [Float] {
    var values = [Float](repeating: .nan, count: weight.rows * weight.cols)
    values.withUnsafeMutableBufferPointer { out in
        for r in 0 ..< weight.rows { weight.dequantizeRow(r, into: out.baseAddress! + r * weight.cols) }
    }
    return values
}

/// Expects `weight`'s products with each of the `tokens` rows of `input` to be bitwise the same
/// computed alone, inside the whole batch or a part of it, and with one thread or two.
func expectBatchAndThreadInvariant(_ weight: WeightMatrix, input: [Float], tokens: Int) {
    let rows = weight.rows
    let batched = multiplied(input, tokens: 0 ..< tokens, by: weight, threads: 2)
    #expect(multiplied(input, tokens: 0 ..< tokens, by: weight, threads: 1).map(\.bitPattern) == batched.map(\.bitPattern))
    for t in [0, 5, 8, tokens - 1] {
        let alone = multiplied(input, tokens: t ..< t + 1, by: weight, threads: 1)
        #expect(alone.map(\.bitPattern) == Array(batched[t * rows ..< (t + 1) * rows]).map(\.bitPattern), "\(weight.type) token \(t)")
    }
    let middle = multiplied(input, tokens: 3 ..< 10, by: weight, threads: 2)
    #expect(middle.map(\.bitPattern) == Array(batched[3 * rows ..< 10 * rows]).map(\.bitPattern), "\(weight.type) tokens 3..<10")
}

@Suite struct MatMulTests {
    static let types: [GGMLType] = [.f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .mxfp4]

    /// Every kernel path (8- and 4-token tiles, 4-row and single-row decode) against a float64
    /// product of the dequantized weights, with rows that are not a multiple of four.
    @Test(arguments: types)
    func matchesDequantizedProduct(_ type: GGMLType) throws {
        var rng = SeededGenerator(seed: UInt64(type.rawValue) + 7)
        let rows = 37, cols = 512, tokens = 15
        let weight = try WeightMatrix(name: "w", type: type, rows: rows, cols: cols,
                                      bytes: randomWeightBytes(type, rows: rows, cols: cols, rng: &rng))
        let input = (0 ..< tokens * cols).map { _ in rng.symmetric(2) }
        let dequantized = dequantizedRows(of: weight)
        let pool = WorkerPool(threads: 2)
        var output = [Float](repeating: .nan, count: tokens * rows)
        input.withUnsafeBufferPointer { x in
            output.withUnsafeMutableBufferPointer { y in
                MatMul.multiply(x.baseAddress!, tokens: tokens, by: weight, into: y.baseAddress!, pool: pool)
            }
        }
        var worst = 0.0
        for t in 0 ..< tokens {
            for r in 0 ..< rows {
                var exact = 0.0, magnitude = 0.0
                for c in 0 ..< cols {
                    let p = Double(input[t * cols + c]) * Double(dequantized[r * cols + c])
                    exact += p
                    magnitude += abs(p)
                }
                worst = max(worst, abs(Double(output[t * rows + r]) - exact) / max(magnitude, 1e-30))
            }
        }
        #expect(worst < 2e-6, "\(type): worst error relative to sum |w x| is \(worst)")
    }

    /// Q5_0 is stored packed (rows of a multiple of 96 elements) or as Q8_0 blocks, Q4_0 and Q4_1
    /// in nibble planes (rows of a multiple of 64 elements) or as they are, Q4_K and Q6_K in their
    /// wide layouts: every weight is still the file's, bit for bit.
    @Test(arguments: zip([GGMLType.q5_0, .q5_0, .q4_0, .q4_1, .q4_1, .q4_K, .q6_K], [576, 512, 576, 576, 544, 512, 512]))
    func rewrittenLayoutsKeepTheSameWeights(_ type: GGMLType, cols: Int) throws {
        var rng = SeededGenerator(seed: 55 + UInt64(type.rawValue) + UInt64(cols))
        let rows = 9
        let bytes = randomWeightBytes(type, rows: rows, cols: cols, rng: &rng)
        let weight = try WeightMatrix(name: "w", type: type, rows: rows, cols: cols, bytes: bytes)
        if type == .q5_0 {
            #expect(weight.type == (cols % 96 == 0 ? .q5_0 : .q8_0))
        } else if type == .q4_0 || type == .q4_1 {
            #expect(weight.type == type && weight.nibblePlanes == (cols % 64 == 0))
        } else {
            #expect(weight.type == type && weight.widened)
        }
        var expected = [Float](repeating: 0, count: rows * cols)
        bytes.withUnsafeBytes { source in
            expected.withUnsafeMutableBufferPointer { out in
                _ = Dequantize.row(type, from: source.baseAddress!, to: out.baseAddress!, count: rows * cols)
            }
        }
        #expect(dequantizedRows(of: weight).map(\.bitPattern) == expected.map(\.bitPattern))
    }

    /// Packed Q5_0 (`Q5_0PackedChunks`) gives the same products, bit for bit, as Q8_0 blocks of the
    /// same values (`q - 16`, the same scales) with float32 activations, in every token tile (12, 8,
    /// 4 and single tokens) and in rows outside the interleaved tiles; with int8 activations, the
    /// same as the file's blocks packed for the int8 kernel directly.
    @Test func packedQ5_0MatchesQ8_0() throws {
        var rng = SeededGenerator(seed: 5096)
        let rows = 37, cols = 576, tokens = 29
        let bytes = randomWeightBytes(.q5_0, rows: rows, cols: cols, rng: &rng)
        var q8 = [UInt8]()
        for block in stride(from: 0, to: bytes.count, by: 22) {
            q8 += bytes[block ..< block + 2]
            let qh = UInt32(bytes[block + 2]) | UInt32(bytes[block + 3]) << 8 | UInt32(bytes[block + 4]) << 16 | UInt32(bytes[block + 5]) << 24
            for j in 0 ..< 32 {
                let nibble = j < 16 ? bytes[block + 6 + j] & 0x0F : bytes[block + 6 + j - 16] >> 4
                q8.append(UInt8(bitPattern: Int8(Int(nibble) | Int((qh >> UInt32(j)) & 1) << 4) - 16))
            }
        }
        let packed = try WeightMatrix(name: "w", type: .q5_0, rows: rows, cols: cols, bytes: bytes)
        let reference = try WeightMatrix(name: "w", type: .q8_0, rows: rows, cols: cols, bytes: q8)
        #expect(packed.type == .q5_0 && reference.type == .q8_0)
        let input = (0 ..< tokens * cols).map { _ in rng.symmetric(2) }
        for threads in [1, 2] {
            #expect(multiplied(input, tokens: 0 ..< tokens, by: packed, threads: threads).map(\.bitPattern)
                    == multiplied(input, tokens: 0 ..< tokens, by: reference, threads: threads).map(\.bitPattern))
        }
        let packedInt8 = packed.using(activations: .int8)
        let referenceInt8 = try tensorMatrix(bytes, type: .q5_0, rows: rows, cols: cols, activations: .int8)
        #expect(packedInt8.int8Activations && referenceInt8.int8Activations && referenceInt8.type == .q5_0)
        #expect(packedInt8.using(activations: .int8).int8Activations)
        #expect(multiplied(input, tokens: 0 ..< tokens, by: packedInt8, threads: 2).map(\.bitPattern)
                == multiplied(input, tokens: 0 ..< tokens, by: referenceInt8, threads: 2).map(\.bitPattern))
        expectBatchAndThreadInvariant(packed, input: input, tokens: 13)
    }

    /// Q4_0 and Q4_1 give the products, bit for bit, of float32 weights holding the values the
    /// kernels multiply with (`(q - 8) * d`; `q * d + m` with one rounding), in nibble planes
    /// (576 columns) and in the file's layout (544), in every token tile (12, 8, 4 and single
    /// tokens) and in rows outside the interleaved tiles.
    @Test(arguments: [GGMLType.q4_0, .q4_1])
    func fourBitLayoutsMatchTheirFloatWeights(_ type: GGMLType) throws {
        for cols in [576, 544] {
            var rng = SeededGenerator(seed: 6400 + UInt64(type.rawValue) + UInt64(cols))
            let rows = 37, tokens = 29
            let bytes = randomWeightBytes(type, rows: rows, cols: cols, rng: &rng)
            let weight = try WeightMatrix(name: "w", type: type, rows: rows, cols: cols, bytes: bytes)
            #expect(weight.nibblePlanes == (cols % 64 == 0))
            func half(_ offset: Int) -> Float { Float(Float16(bitPattern: UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8)) }
            var values = [Float]()
            for block in stride(from: 0, to: bytes.count, by: type.bytesPerBlock) {
                let d = half(block), qs = block + (type == .q4_1 ? 4 : 2)
                for j in 0 ..< 32 {
                    let q = Float(j < 16 ? bytes[qs + j] & 0x0F : bytes[qs + j - 16] >> 4)
                    values.append(type == .q4_1 ? half(block + 2).addingProduct(q, d) : (q - 8) * d)
                }
            }
            let reference = try WeightMatrix(name: "w", rows: rows, cols: cols, floats: values)
            let input = (0 ..< tokens * cols).map { _ in rng.symmetric(2) }
            for threads in [1, 2] {
                #expect(multiplied(input, tokens: 0 ..< tokens, by: weight, threads: threads).map(\.bitPattern)
                        == multiplied(input, tokens: 0 ..< tokens, by: reference, threads: threads).map(\.bitPattern), "\(type), \(cols) columns")
            }
            expectBatchAndThreadInvariant(weight, input: input, tokens: 13)
        }
    }

    /// A token's outputs are bitwise the same alone, inside any batch, and with any thread count.
    @Test(arguments: types)
    func batchAndThreadInvariant(_ type: GGMLType) throws {
        var rng = SeededGenerator(seed: UInt64(type.rawValue) + 99)
        let rows = 44, cols = 256, tokens = 13
        let weight = try WeightMatrix(name: "w", type: type, rows: rows, cols: cols,
                                      bytes: randomWeightBytes(type, rows: rows, cols: cols, rng: &rng))
        let input = (0 ..< tokens * cols).map { _ in rng.symmetric(1) }
        expectBatchAndThreadInvariant(weight, input: input, tokens: tokens)
    }
}

/// `--activations int8`: each kernel against a float64 product of the dequantized weights with
/// the activations as the kernel sees them (quantized per 32 values: scale max |x| / 127, round to
/// nearest even), so the integer arithmetic itself is checked tightly; then against the exact
/// product, with the error that 8-bit activations are expected to bring.
@Suite struct Int8ActivationTests {
    static let types: [GGMLType] = [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q6_K]

    /// SmolLM2's 576 columns, or 512 for the K-quants (rows of 256-element blocks).
    static func columns(_ type: GGMLType) -> Int { type.blockSize == 256 ? 512 : 576 }

    /// The activations after 8-bit quantization, as floats.
    static func quantized(_ x: [Float], cols: Int) -> [Float] {
        var out = x
        for start in stride(from: 0, to: x.count, by: 32) {
            let block = x[start ..< start + 32]
            let amax = block.map(abs).max() ?? 0
            let scale = amax / 127, inverse: Float = amax != 0 ? 127 / amax : 0
            for i in start ..< start + 32 { out[i] = (x[i] * inverse).rounded(.toNearestOrEven) * scale }
        }
        return out
    }

    @Test(arguments: types)
    func matchesQuantizedActivationProduct(_ type: GGMLType) throws {
        var rng = SeededGenerator(seed: UInt64(type.rawValue) + 31)
        // Four packed groups of eight rows and a tail of five.
        let rows = 37, cols = Self.columns(type), tokens = 11
        let plain = try WeightMatrix(name: "w", type: type, rows: rows, cols: cols,
                                     bytes: randomWeightBytes(type, rows: rows, cols: cols, rng: &rng))
        let weight = plain.using(activations: .int8)
        #expect(weight.int8Activations)
        let input = (0 ..< tokens * cols).map { _ in rng.symmetric(2) }
        let seen = Self.quantized(input, cols: cols)
        // The packed groups hold the same weights: rows read back from them match the stored ones.
        let dequantized = dequantizedRows(of: weight)
        #expect(dequantized.map(\.bitPattern) == dequantizedRows(of: plain).map(\.bitPattern), "\(type): packed rows differ")
        var output = [Float](repeating: .nan, count: tokens * rows)
        input.withUnsafeBufferPointer { x in
            output.withUnsafeMutableBufferPointer { y in
                MatMul.multiply(x.baseAddress!, tokens: tokens, by: weight, into: y.baseAddress!, pool: WorkerPool(threads: 2))
            }
        }
        var worstKernel = 0.0, worstExact = 0.0
        for t in 0 ..< tokens {
            for r in 0 ..< rows {
                var kernel = 0.0, exact = 0.0, magnitude = 0.0
                for c in 0 ..< cols {
                    let w = Double(dequantized[r * cols + c])
                    kernel += Double(seen[t * cols + c]) * w
                    exact += Double(input[t * cols + c]) * w
                    magnitude += abs(Double(input[t * cols + c]) * w)
                }
                let got = Double(output[t * rows + r])
                worstKernel = max(worstKernel, abs(got - kernel) / max(magnitude, 1e-30))
                worstExact = max(worstExact, abs(got - exact) / max(magnitude, 1e-30))
            }
        }
        #expect(worstKernel < 2e-6, "\(type): worst error against the quantized-activation product \(worstKernel)")
        // Rounding each activation to 1/254 of its block's range: a few 1e-3 of sum |w x| at most.
        #expect(worstExact < 1e-2, "\(type): worst error against the exact product \(worstExact)")
        #expect(worstExact > 1e-6, "\(type): int8 activations should not be exact")
    }

    /// A token's outputs are bitwise the same alone, inside any batch, and with any thread count.
    @Test(arguments: types)
    func batchAndThreadInvariant(_ type: GGMLType) throws {
        var rng = SeededGenerator(seed: UInt64(type.rawValue) + 77)
        let rows = 44, cols = type.blockSize == 256 ? 512 : 320, tokens = 13
        let weight = try WeightMatrix(name: "w", type: type, rows: rows, cols: cols,
                                      bytes: randomWeightBytes(type, rows: rows, cols: cols, rng: &rng)).using(activations: .int8)
        let input = (0 ..< tokens * cols).map { _ in rng.symmetric(1) }
        expectBatchAndThreadInvariant(weight, input: input, tokens: tokens)
    }

    @Test func typesWithoutAnInt8KernelKeepFloatActivations() throws {
        for type: GGMLType in [.f32, .f16, .q2_K, .q3_K, .q5_K] {
            var rng = SeededGenerator(seed: 5)
            let weight = try WeightMatrix(name: "w", type: type, rows: 4, cols: 256,
                                          bytes: randomWeightBytes(type, rows: 4, cols: 256, rng: &rng)).using(activations: .int8)
            #expect(!weight.int8Activations, "\(type)")
        }
    }
}
