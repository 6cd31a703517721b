#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Formats
import Int8Dot

/// A weight matrix `[rows, cols]` (rows = output features, cols = input features) in its stored
/// type (float or GGML-quantized).
///
/// Types the matmul kernels decode in registers are repacked at load time into tiles of
/// `tileRows` rows whose blocks are interleaved (row 0 block 0, row 1 block 0, ..., row 3 block 0,
/// row 0 block 1, ...), so the decode kernel, which takes four rows at once, reads one sequential
/// stream that the hardware prefetcher follows (four separate row streams measured 3x slower for
/// Q8_0 and F16). Rows after the last full tile stay in plain row order. The file's pages are
/// released after the copy, so the repacked weights cost no extra memory. Q5_0 is stored in
/// 96-element blocks of 6-bit fields (`Q5_0PackedChunks`) where its rows allow, else as Q8_0
/// (`q8_0Blocks(fromQ5_0:)`), Q4_0 and Q4_1 in nibble planes where rows are a multiple of 64
/// elements (`nibblePlanes`), Q4_K and Q6_K in wide layouts (`widened`); all lossless. Other types
/// (Q2_K, Q3_K) are read in place from the memory-mapped file.
public struct WeightMatrix: @unchecked Sendable {
    public let name: String
    public let type: GGMLType
    public let rows: Int
    public let cols: Int
    /// Bytes of one row's blocks.
    public let rowBytes: Int
    /// Rows interleaved per tile: 4, or 1 for the plain row-major layout.
    public let tileRows: Int
    /// The unit of interleaving: one stored block (float types: 32 elements).
    let blockElements: Int
    let blockBytes: Int
    private(set) var base: UnsafeRawPointer
    /// Keeps the memory mapping (or the repacked copy) alive.
    private(set) var owner: AnyObject
    /// Whether products with this matrix quantize their input to 8 bits and use integer dot
    /// products (`--activations int8`; only types with an int8 kernel, see `using(activations:)`).
    /// The rows are then stored in `Int8Dot`'s packed groups (of `MatMul.int8GroupRows`) instead (`int8Group`).
    public private(set) var int8Activations = false
    /// Bytes of one packed group of rows (int8 activations only).
    private(set) var int8GroupBytes = 0
    /// Whether the rows are stored in a wide layout (`Q4_KWideChunks` / `Q6_KWideChunks`: float32
    /// factors per 32 elements), which Q4_K and Q6_K always are for float32 activations.
    public var widened: Bool { (type == .q4_K || type == .q6_K) && !int8Activations }
    /// Whether Q4_0 / Q4_1 rows are stored in nibble planes (`Q4_0PlanesChunks` /
    /// `Q4_1PlanesChunks`: pairs of blocks), as they are for float32 activations where rows are a
    /// multiple of 64 elements.
    public private(set) var nibblePlanes = false

    /// Rows that belong to full interleaved tiles.
    @inline(__always)
    var tiledRows: Int { rows / tileRows * tileRows }

    /// Wraps a 2-D tensor (repacking it when its type has a register decoder, or into the int8
    /// kernel's groups for `activations: .int8`, see `using(activations:)`); throws if its type
    /// cannot be computed with or the bytes do not fit.
    public init(_ tensor: TensorData, activations: ActivationPrecision = .fp32) throws {
        guard tensor.type.isSupportedWeightType else {
            throw FormatError(tensor.path, "tensor '\(tensor.name)' has type \(tensor.type), which is not supported for weights")
        }
        guard tensor.shape.count == 2 || (tensor.shape.count > 2 && tensor.shape.dropLast().dropFirst().allSatisfy { $0 == 1 }) else {
            throw FormatError(tensor.path, "tensor '\(tensor.name)' should be a matrix but has shape \(tensor.shape)")
        }
        let rows = tensor.shape.dropLast().reduce(1, *)
        let cols = tensor.shape.last ?? 0
        guard let rowBytes = tensor.type.byteCount(elements: cols), rowBytes * rows == tensor.bytes.count,
              let base = tensor.bytes.baseAddress
        else {
            throw FormatError(tensor.path, "tensor '\(tensor.name)' of type \(tensor.type) and shape \(tensor.shape) has \(tensor.bytes.count) bytes, which does not match")
        }
        self.init(name: tensor.name, type: tensor.type, rows: rows, cols: cols, rowBytes: rowBytes,
                  source: base, owner: tensor.owner, releaseSource: true, activations: activations)
    }

    /// A matrix over a copy of `bytes` (plain row-major rows of `type`-encoded data, e.g. weights
    /// quantized at load time); throws if the byte count does not match the shape.
    public init(name: String, type: GGMLType, rows: Int, cols: Int, bytes: [UInt8]) throws {
        guard type.isSupportedWeightType, let rowBytes = type.byteCount(elements: cols), rows >= 0, rowBytes * rows == bytes.count else {
            throw FormatError(name, "\(bytes.count) bytes cannot hold a \(rows) x \(cols) matrix of \(type)")
        }
        let copy = OwnedBytes(count: bytes.count)
        bytes.withUnsafeBytes { source in
            if let b = source.baseAddress { copy.pointer.copyMemory(from: b, byteCount: bytes.count) }
        }
        self.init(name: name, type: type, rows: rows, cols: cols, rowBytes: rowBytes,
                  source: UnsafeRawPointer(copy.pointer), owner: copy, releaseSource: false)
    }

    /// Stores Q5_0 packed (`Q5_0PackedChunks`; rows of a multiple of 96 elements, float32 activations)
    /// or as Q8_0 (see `q8_0Blocks(fromQ5_0:blocks:)`), Q4_0 / Q4_1 in nibble planes (rows of a
    /// multiple of 64 elements, float32 activations), and Q4_K / Q6_K in their wide layouts
    /// (`Q4_KWideChunks`, `Q6_KWideChunks`), then lays the rows out.
    private init(name: String, type: GGMLType, rows: Int, cols: Int, rowBytes: Int,
                 source: UnsafeRawPointer, owner: AnyObject, releaseSource: Bool, activations: ActivationPrecision = .fp32) {
        switch type {
        case .q5_0 where activations == .fp32 && cols % Q5_0PackedChunks.blockElements == 0:
            // 6 bits per weight instead of Q8_0's 8.5: the SmolLM2 "Q4_K_M" file (mostly Q5_0)
            // takes 23 MiB less (BENCHMARKS.md, 2026-12-01 — Q5_0 packed).
            let blocks = rows * cols / Q5_0PackedChunks.blockElements
            let packed = OwnedBytes(count: blocks * Q5_0PackedChunks.blockBytes)
            Q5_0PackedChunks.pack(source, blocks: blocks, into: packed.pointer)
            if releaseSource { Self.releasePages(source, count: rows * rowBytes) }
            self.init(laying: name, type: type, rows: rows, cols: cols, rowBytes: blocks / rows * Q5_0PackedChunks.blockBytes,
                      source: UnsafeRawPointer(packed.pointer), owner: packed, releaseSource: false, activations: activations,
                      storedBlock: (Q5_0PackedChunks.blockElements, Q5_0PackedChunks.blockBytes))
        case .q4_0 where activations == .fp32 && cols % 64 == 0, .q4_1 where activations == .fp32 && cols % 64 == 0:
            // The same bytes in another order: the Q4_1 decode kernel ran 1.3-1.4x faster
            // (BENCHMARKS.md, 2026-12-01 — nibble planes).
            let factorBytes = type == .q4_0 ? Q4_0PlanesChunks.factorBytes : Q4_1PlanesChunks.factorBytes
            let planesBytes = NibblePlanes.bytes + 2 * factorBytes
            let pairs = rows * cols / 64
            let planes = OwnedBytes(count: pairs * planesBytes)
            NibblePlanes.pack(source, pairs: pairs, factorBytes: factorBytes, into: planes.pointer)
            if releaseSource { Self.releasePages(source, count: rows * rowBytes) }
            self.init(laying: name, type: type, rows: rows, cols: cols, rowBytes: cols / 64 * planesBytes,
                      source: UnsafeRawPointer(planes.pointer), owner: planes, releaseSource: false, activations: activations,
                      storedBlock: (64, planesBytes))
            nibblePlanes = true
        case .q5_0 where activations == .fp32:  // (int8: the file's blocks go to the int8 groups as they are)
            let widened = Self.q8_0Blocks(fromQ5_0: source, blocks: rows * rowBytes / 22)
            if releaseSource { Self.releasePages(source, count: rows * rowBytes) }
            self.init(laying: name, type: .q8_0, rows: rows, cols: cols, rowBytes: rowBytes / 22 * 34,
                      source: UnsafeRawPointer(widened.pointer), owner: widened, releaseSource: false, activations: activations)
        case .q4_K, .q6_K:
            // Wide K-quants (measured in BENCHMARKS.md, 2026-12-01 evening): 24 instead of 18 bytes
            // (Q4_K) and 40 instead of 26.25 (Q6_K) per 32 weights.
            let blocks = rows * rowBytes / type.bytesPerBlock
            let wideBlockBytes = type == .q4_K ? Q4_KWideChunks.blockBytes : Q6_KWideChunks.blockBytes
            let wideBlockElements = type == .q4_K ? Q4_KWideChunks.blockElements : Q6_KWideChunks.blockElements
            let widened = OwnedBytes(count: blocks * 256 / wideBlockElements * wideBlockBytes)
            if type == .q4_K {
                Q4_KWideChunks.widen(source, blocks: blocks, into: widened.pointer)
            } else {
                Q6_KWideChunks.widen(source, blocks: blocks, into: widened.pointer)
            }
            if releaseSource { Self.releasePages(source, count: rows * rowBytes) }
            self.init(laying: name, type: type, rows: rows, cols: cols, rowBytes: cols / wideBlockElements * wideBlockBytes,
                      source: UnsafeRawPointer(widened.pointer), owner: widened, releaseSource: false, activations: .fp32,
                      storedBlock: (wideBlockElements, wideBlockBytes))
            // The int8 kernel's groups are packed from the wide blocks (`using(activations:)`).
            if activations == .int8 { self = using(activations: .int8) }
        default:
            self.init(laying: name, type: type, rows: rows, cols: cols, rowBytes: rowBytes,
                      source: source, owner: owner, releaseSource: releaseSource, activations: activations)
        }
    }

    /// Repacks rows of a type with a register decoder into interleaved tiles, or into int8 groups
    /// straight from the source (so the float layout never exists beside them); keeps others in place.
    private init(laying name: String, type: GGMLType, rows: Int, cols: Int, rowBytes: Int,
                 source: UnsafeRawPointer, owner: AnyObject, releaseSource: Bool, activations: ActivationPrecision,
                 storedBlock: (elements: Int, bytes: Int)? = nil) {
        self.name = name
        self.type = type
        self.rows = rows
        self.cols = cols
        self.rowBytes = rowBytes
        let blockElements = storedBlock?.elements ?? (type.blockSize == 1 ? 32 : type.blockSize)
        let blockBytes = storedBlock?.bytes ?? type.bytesPerBlock * (type.blockSize == 1 ? 32 : 1)
        self.blockElements = blockElements
        self.blockBytes = blockBytes
        if activations == .int8 && MatMul.hasInt8Kernel(type) {
            tileRows = 1
            let (packed, groupBytes) = Self.int8Groups(type, rows: rows, cols: cols, blockElements: blockElements,
                                                       rowStart: { source + $0 * rowBytes }, blockStride: { _ in blockBytes })
            if releaseSource { Self.releasePages(source, count: rows * rowBytes) }
            base = UnsafeRawPointer(packed.pointer)
            self.owner = packed
            int8GroupBytes = groupBytes
            int8Activations = true
            return
        }
        let interleave = MatMul.hasRegisterDecoder(type, cols: cols) && rows >= 4
        guard interleave else {
            tileRows = 1
            base = source
            self.owner = owner
            return
        }
        tileRows = 4
        let total = rows * rowBytes
        let packed = OwnedBytes(count: total)
        let blocksPerRow = rowBytes / blockBytes
        let tiles = rows / 4
        for tile in 0 ..< tiles {
            let from = source + tile * 4 * rowBytes
            let to = packed.pointer + tile * 4 * rowBytes
            for block in 0 ..< blocksPerRow {
                for r in 0 ..< 4 {
                    (to + (block * 4 + r) * blockBytes).copyMemory(from: from + r * rowBytes + block * blockBytes, byteCount: blockBytes)
                }
            }
        }
        let plain = tiles * 4 * rowBytes
        (packed.pointer + plain).copyMemory(from: source + plain, byteCount: total - plain)
        if releaseSource { Self.releasePages(source, count: total) }
        base = UnsafeRawPointer(packed.pointer)
        self.owner = packed
    }

    /// Q5_0 blocks rewritten as Q8_0 blocks of the same values: `(q - 16)` fits a signed byte and
    /// the float16 scale is kept, so every weight (and every product) is unchanged. Q5_0's fifth
    /// bits cost the decode kernels about as much as the rest of the block; as bytes, the
    /// SmolLM2 Q4_K_M file (mostly Q5_0) decodes faster (BENCHMARKS.md, 2026-12-01 — Q5_0 as
    /// bytes) for 34 instead of 22 bytes per 32 weights.
    private static func q8_0Blocks(fromQ5_0 source: UnsafeRawPointer, blocks: Int) -> OwnedBytes {
        let out = OwnedBytes(count: blocks * 34)
        for b in 0 ..< blocks {
            let from = source + b * 22, to = out.pointer + b * 34
            to.copyMemory(from: from, byteCount: 2)  // the float16 scale, as it is
            Q5_0Chunks.chunk(from, 0).storeSignedBytes(to: to + 2)  // q - 16
        }
        return out
    }

    /// Drops the whole pages of a memory-mapped range from this process (they are clean file
    /// pages; nothing reads them again), so repacked weights are not held twice.
    private static func releasePages(_ start: UnsafeRawPointer, count: Int) {
        #if os(Linux)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard page > 0 else { return }
        let first = (Int(bitPattern: start) + page - 1) / page * page
        let end = (Int(bitPattern: start) + count) / page * page
        if end > first, let pointer = UnsafeMutableRawPointer(bitPattern: first) {
            _ = madvise(pointer, end - first, MADV_DONTNEED)
        }
        #endif
    }

    /// This matrix multiplied with activations of `precision`: `.int8` takes effect for the types
    /// with an int8 kernel (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K; Q5_0 stored as Q8_0 bytes
    /// takes Q8_0's); the others keep float32 activations.
    /// Their rows are repacked into groups of 8 or 16 for the integer kernel (the same bytes in another
    /// order, so no memory is added). A matrix already set to int8 stays so.
    public func using(activations precision: ActivationPrecision) -> WeightMatrix {
        if precision == .int8 && type == .q5_0 && !int8Activations { return int8FromPackedQ5_0() }
        if precision == .int8 && (nibblePlanes || (type == .q4_K && !int8Activations)) { return int8FromNibblePlanes() }
        guard precision == .int8, MatMul.hasInt8Kernel(type), !int8Activations else { return self }
        let (packed, groupBytes) = Self.int8Groups(type, rows: rows, cols: cols, blockElements: blockElements,
                                                   rowStart: rowStart, blockStride: blockStride)
        var copy = self
        copy.base = UnsafeRawPointer(packed.pointer)
        copy.owner = packed
        copy.int8GroupBytes = groupBytes
        copy.int8Activations = true
        return copy
    }

    /// Packed Q5_0 (`Q5_0PackedChunks`) for int8 activations: rewritten as the file's row-major
    /// Q5_0 blocks (the same values and scales), from which the int8 kernel's groups are packed.
    private func int8FromPackedQ5_0() -> WeightMatrix {
        let blocksPerRow = cols / 32, fileBlock = Q5_0Chunks.blockBytes
        let file = OwnedBytes(count: rows * blocksPerRow * fileBlock)
        for row in 0 ..< rows {
            let start = rowStart(row), stride = blockStride(row)
            for b in 0 ..< blocksPerRow {
                let block = start + b / 3 * stride, to = file.pointer + (row * blocksPerRow + b) * fileBlock
                to.copyMemory(from: block + 64 + 2 * (b % 3), byteCount: 2)
                var qh: UInt32 = 0
                var qs = SIMD16<UInt8>()
                for e in 0 ..< 32 {
                    let q = UInt32(Q5_0PackedChunks.value(block, 32 * (b % 3) + e) + 16)  // 0...31
                    qh |= (q >> 4) << UInt32(e)
                    qs[e & 15] |= UInt8(q & 0x0F) << (e < 16 ? 0 : 4)
                }
                to.storeBytes(of: qh.littleEndian, toByteOffset: 2, as: UInt32.self)
                to.storeBytes(of: qs, toByteOffset: 6, as: SIMD16<UInt8>.self)
            }
        }
        return WeightMatrix(laying: name, type: .q5_0, rows: rows, cols: cols, rowBytes: blocksPerRow * fileBlock,
                            source: UnsafeRawPointer(file.pointer), owner: file, releaseSource: false, activations: .int8)
    }

    /// Q4_0 / Q4_1 / wide Q4_K in nibble planes for int8 activations: rewritten as row-major
    /// 32-element blocks (the file's for Q4_0 and Q4_1; Q4_K as `scale: f32`, `offset: f32`,
    /// `qs: [16] u8`, `PAGODA_I8_Q4_K`), from which the int8 kernel's groups are packed.
    private func int8FromNibblePlanes() -> WeightMatrix {
        let factorBytes = switch type {
        case .q4_0: Q4_0PlanesChunks.factorBytes
        case .q4_1: Q4_1PlanesChunks.factorBytes
        default: Q4_KWideChunks.factorBytes
        }
        let blockBytes = factorBytes + 16, fileRowBytes = cols / 32 * blockBytes, pairsPerRow = cols / 64
        let file = OwnedBytes(count: rows * fileRowBytes)
        for row in 0 ..< rows {
            let start = rowStart(row), stride = blockStride(row)
            for p in 0 ..< pairsPerRow {
                NibblePlanes.unpack(start + p * stride, pairs: 1, factorBytes: factorBytes,
                                    into: file.pointer + row * fileRowBytes + p * 2 * blockBytes)
            }
        }
        return WeightMatrix(laying: name, type: type, rows: rows, cols: cols, rowBytes: fileRowBytes,
                            source: UnsafeRawPointer(file.pointer), owner: file, releaseSource: false, activations: .int8,
                            storedBlock: (32, blockBytes))
    }

    /// The rows in `Int8Dot`'s packed groups (`pagoda_i8_pack_group`), and a group's bytes;
    /// row r's blocks start at `rowStart(r)`, `blockStride(r)` bytes apart.
    private static func int8Groups(_ type: GGMLType, rows: Int, cols: Int, blockElements: Int,
                                   rowStart: (Int) -> UnsafeRawPointer, blockStride: (Int) -> Int) -> (OwnedBytes, Int) {
        let code = Int32(type.rawValue), blocks = cols / blockElements, groupRows = MatMul.int8GroupRows
        let groupBytes = blocks * pagoda_i8_group_block_bytes(code)
        let groups = (rows + groupRows - 1) / groupRows
        let packed = OwnedBytes(count: groups * groupBytes)
        var starts = [UnsafePointer<UInt8>?](repeating: nil, count: groupRows)
        var strides = [Int](repeating: 0, count: groupRows)
        for group in 0 ..< groups {
            let first = group * groupRows, count = min(groupRows, rows - first)
            for r in 0 ..< count {
                starts[r] = rowStart(first + r).assumingMemoryBound(to: UInt8.self)
                strides[r] = blockStride(first + r)
            }
            _ = pagoda_i8_pack_group(code, starts, strides, count, blocks,
                                     (packed.pointer + group * groupBytes).assumingMemoryBound(to: UInt8.self))
        }
        return (packed, groupBytes)
    }

    /// The packed group `group` (rows `G * group ..< G * group + G`, G = `MatMul.int8GroupRows`) of an int8 matrix.
    @inline(__always)
    func int8Group(_ group: Int) -> UnsafePointer<UInt8> {
        (base + group &* int8GroupBytes).assumingMemoryBound(to: UInt8.self)
    }

    /// Bytes between consecutive blocks of one row, which begins at `rowStart(row)`.
    @inline(__always)
    func blockStride(_ row: Int) -> Int {
        row < tiledRows ? blockBytes &* tileRows : blockBytes
    }

    /// Address of the first block of `row`.
    @inline(__always)
    func rowStart(_ row: Int) -> UnsafeRawPointer {
        if row < tiledRows {
            let tile: Int = row / tileRows
            let offset: Int = tile &* tileRows &* rowBytes &+ (row &- tile &* tileRows) &* blockBytes
            return base + offset
        }
        let offset: Int = row &* rowBytes
        return base + offset
    }

    /// Writes row `row` as `cols` floats to `destination`.
    public func dequantizeRow(_ row: Int, into destination: UnsafeMutablePointer<Float>) {
        if int8Activations {
            let group = MatMul.int8GroupRows
            pagoda_i8_dequantize_row(Int32(type.rawValue), int8Group(row / group), cols / blockElements, row % group, destination)
            return
        }
        if tileRows == 1 {
            decode(from: base + row * rowBytes, to: destination, count: cols)
            return
        }
        let start = rowStart(row), stride = blockStride(row)
        for block in 0 ..< cols / blockElements {
            decode(from: start + block * stride, to: destination + block * blockElements, count: blockElements)
        }
    }

    /// `count` elements of consecutive stored blocks at `source` as float32.
    private func decode(from source: UnsafeRawPointer, to destination: UnsafeMutablePointer<Float>, count: Int) {
        switch type {
        case .q4_K: Dequantize.row(Q4_KWideChunks.self, from: source, to: destination, count: count)
        case .q6_K: Dequantize.row(Q6_KWideChunks.self, from: source, to: destination, count: count)
        case .q5_0: Dequantize.row(Q5_0PackedChunks.self, from: source, to: destination, count: count)
        case .q4_0 where nibblePlanes: Dequantize.row(Q4_0PlanesChunks.self, from: source, to: destination, count: count)
        case .q4_1 where nibblePlanes: Dequantize.row(Q4_1PlanesChunks.self, from: source, to: destination, count: count)
        default: Dequantize.row(type, from: source, to: destination, count: count)
        }
    }
}

extension WeightMatrix {
    /// A float32 matrix from `values: [rows, cols]` (weights derived at load time, e.g. transposed).
    public init(name: String, rows: Int, cols: Int, floats values: [Float]) throws {
        let bytes = values.withUnsafeBytes { Array($0) }
        try self.init(name: name, type: .f32, rows: rows, cols: cols, bytes: bytes)
    }
}

extension TensorData {
    /// Entry `index` of the outermost dimension (one expert of a stacked `[experts, rows, cols]`
    /// tensor), or nil when out of range or not evenly divisible.
    public func slice(_ index: Int) -> TensorData? {
        guard shape.count >= 2, let outer = shape.first, outer > 0, index >= 0, index < outer,
              bytes.count % outer == 0, let base = bytes.baseAddress
        else { return nil }
        let stride = bytes.count / outer
        return TensorData(name: "\(name)[\(index)]", type: type, shape: Array(shape.dropFirst()),
                          bytes: UnsafeRawBufferPointer(start: base + index * stride, count: stride), path: path, owner: owner)
    }

    /// The tensor converted to float32 (for small tensors: norms, biases).
    public func floats() throws -> [Float] {
        guard type.isSupportedWeightType, let base = bytes.baseAddress else {
            throw FormatError(path, "tensor '\(name)' has type \(type), which cannot be read as floats")
        }
        let count = elementCount
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if let out = buffer.baseAddress, count > 0 {
                Dequantize.row(type, from: base, to: out, count: count)
            }
            initialized = count
        }
    }
}

/// A 64-byte aligned buffer, freed with its owner. Large buffers are mapped pages of their own
/// (Linux), so the temporary copies of a load-time rewrite go back to the system when freed
/// instead of staying in the allocator's heap: through the allocator, peak RSS of the Q4_1 file
/// varied between 131 and 145 MiB from run to run.
final class OwnedBytes {
    let pointer: UnsafeMutableRawPointer
    /// Bytes mapped for this buffer, or 0 where it came from the allocator.
    private let mappedBytes: Int

    init(count: Int) {
        #if os(Linux)
        if count >= 1 << 16, let mapped = mmap(nil, count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
           mapped != UnsafeMutableRawPointer(bitPattern: -1) {
            pointer = mapped
            mappedBytes = count
            return
        }
        #endif
        pointer = .allocate(byteCount: max(count, 1), alignment: 64)
        mappedBytes = 0
    }

    deinit {
        #if os(Linux)
        if mappedBytes > 0 {
            munmap(pointer, mappedBytes)
            return
        }
        #endif
        pointer.deallocate()
    }
}
