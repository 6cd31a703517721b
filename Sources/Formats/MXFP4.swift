/// MXFP4 (OCP microscaling FP4) weights as Hugging Face checkpoints store them, and their conversion
/// to ggml's `block_mxfp4` (`GGMLType.mxfp4`, decoded by `MXFP4Chunks`).
///
/// Both layouts hold, per 32 consecutive weights of a row, one E8M0 exponent byte and sixteen bytes
/// of E2M1 (FP4) codes with the same meaning: code bit 3 is the sign, bits 0-2 index the magnitudes
/// 0, 0.5, 1, 1.5, 2, 3, 4, 6. They differ in where the codes sit and how the scale is applied:
///
/// - Hugging Face (transformers' `convert_moe_packed_tensors`): byte b of a group holds element 2b
///   in its low nibble and element 2b + 1 in its high nibble; x = FP4[code] * 2^(scale - 127).
/// - ggml (`dequantize_row_mxfp4`): byte j holds element j in its low nibble and element j + 16 in
///   its high nibble; x = kvalues_mxfp4[code] * 2^(e - 128), the table being the magnitudes doubled.
///
/// So the exponent byte carries over unchanged and only the nibbles move. (Code 8 is -0 for
/// Hugging Face and +0 in ggml's integer table: no product or sum can tell them apart.)
public enum MXFP4 {
    /// Converts one expert's MXFP4 weight matrix from the Hugging Face layout into ggml `block_mxfp4`
    /// bytes: `rows` rows of `cols / 32` blocks of 17 bytes each, row-major, ready for
    /// `WeightMatrix(name:type: .mxfp4, rows:cols:bytes:)`.
    ///
    /// GPT-OSS checkpoints store each layer's experts as `mlp.experts.<proj>_blocks` (uint8,
    /// `[experts, out, in / 32, 16]`) and `mlp.experts.<proj>_scales` (uint8, `[experts, out, in / 32]`):
    /// per expert that is already an `[out, in]` matrix (rows = output features), so one expert's
    /// slices are `blocks` (`rows * cols / 2` bytes) and `scales` (`rows * cols / 32` bytes).
    /// `gate_up_proj_blocks` is `[experts, 2 * intermediate, hidden / 32, 16]` with the gate and up
    /// rows interleaved (even rows gate, odd rows up, as transformers' `gate_up[..., ::2]` /
    /// `[..., 1::2]` and llama.cpp's converter split them); `down_proj_blocks` is
    /// `[experts, hidden, intermediate / 32, 16]`. The row order is kept as stored.
    /// (transformers transposes the dequantized weights to `[in, out]` afterwards, for its `x @ W`.)
    ///
    /// - Throws: `FormatError` (naming `name`) when `cols` is not a positive multiple of 32, `rows` is
    ///   negative, or the byte counts do not match the shape.
    public static func ggmlBlocks(
        fromHuggingFaceBlocks blocks: UnsafeRawBufferPointer, scales: UnsafeRawBufferPointer,
        rows: Int, cols: Int, name: String = "MXFP4 weight"
    ) throws -> [UInt8] {
        guard rows >= 0, cols > 0, cols % 32 == 0 else {
            throw FormatError(name, "a \(rows) x \(cols) matrix cannot be stored as MXFP4 (columns must be a positive multiple of 32)")
        }
        let (groups, overflow) = rows.multipliedReportingOverflow(by: cols / 32)
        guard !overflow, groups <= Int.max / 17 else {
            throw FormatError(name, "a \(rows) x \(cols) MXFP4 matrix is too large")
        }
        guard blocks.count == groups * 16, scales.count == groups else {
            throw FormatError(name, "\(blocks.count) block bytes and \(scales.count) scale bytes do not hold a \(rows) x \(cols) MXFP4 matrix (needs \(groups * 16) and \(groups))")
        }
        guard groups > 0, let source = blocks.baseAddress, let exponents = scales.baseAddress else { return [] }
        return [UInt8](unsafeUninitializedCapacity: groups * 17) { out, initialized in
            guard let base = out.baseAddress else { return }
            for g in 0 ..< groups {
                let from = source + g &* 16, to = base + g &* 17
                to[0] = exponents.load(fromByteOffset: g, as: UInt8.self)
                // Hugging Face bytes j and 8 + j hold elements 2j, 2j + 1 and 16 + 2j, 17 + 2j;
                // ggml byte 2j pairs elements 2j and 16 + 2j, byte 2j + 1 elements 2j + 1 and 17 + 2j.
                for j in 0 ..< 8 {
                    let a = from.load(fromByteOffset: j, as: UInt8.self)
                    let b = from.load(fromByteOffset: 8 &+ j, as: UInt8.self)
                    to[1 &+ 2 &* j] = (a & 0x0F) | (b &<< 4)
                    to[2 &+ 2 &* j] = (a &>> 4) | (b & 0xF0)
                }
            }
            initialized = groups * 17
        }
    }

    /// `ggmlBlocks(fromHuggingFaceBlocks:scales:rows:cols:name:)` over byte arrays.
    public static func ggmlBlocks(
        fromHuggingFaceBlocks blocks: [UInt8], scales: [UInt8], rows: Int, cols: Int, name: String = "MXFP4 weight"
    ) throws -> [UInt8] {
        try blocks.withUnsafeBytes { b in
            try scales.withUnsafeBytes { s in
                try ggmlBlocks(fromHuggingFaceBlocks: b, scales: s, rows: rows, cols: cols, name: name)
            }
        }
    }
}
