#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Storage dtype of the paged KV cache.
/// Bytes per element: fp32 4, f16 2, bf16 2, int8 1 (plus one float32 scale per token and kv head).
public enum KVCacheDType: String, Sendable, CaseIterable {
    case fp32, f16, bf16, int8

    /// Bytes of one stored element (scales of int8 not included).
    public var bytesPerElement: Int {
        switch self {
        case .fp32: return 4
        case .f16, .bf16: return 2
        case .int8: return 1
        }
    }

    /// Whether each (token, kv head) vector carries a float32 scale.
    public var hasScales: Bool { self == .int8 }
}

/// One layer's K and V pools, each laid out `[blocks, blockSize, kvHeads, headDim]` in `dtype`.
/// For int8, each (block, slot, kvHead) vector of K and of V has one float32 scale (symmetric absmax:
/// `scale = max|x| / 127`, `q = round(x / scale)`), kept in separate `[blocks, blockSize, kvHeads]` arrays.
/// Pages are zeroed at allocation; the attention kernel reads only slots it has been told are written.
///
/// int8 with a power-of-two `headDim` stores each K and V head vector rotated by the orthonormal
/// Walsh-Hadamard matrix H (`rotatesForInt8`). Rotation spreads the few large channels of K over all
/// elements, so one absmax scale per vector loses far less; attention stays exact in rotated space
/// because `(Hq)·(Hk) = q·k` and `H(Σ p Hv) = Σ p v` (the kernel rotates q in and the output back).
///
/// With `valuesAreKeys` the layer stores one pool and attention reads each value as the key vector
/// itself: DeepSeek's latent cache (MLA), where key = `[latent, ropeKey]` and the value is the latent,
/// so a token costs `headDim` elements, not two vectors.
public final class PagedKVLayer: @unchecked Sendable {
    public let blocks: Int
    public let blockSize: Int
    public let kvHeads: Int
    public let headDim: Int
    public let dtype: KVCacheDType
    /// Values are read from the key pool (one pool; MLA latent cache).
    public let valuesAreKeys: Bool

    /// K and V pools: `[blocks, blockSize, kvHeads, headDim]` elements of `dtype`.
    let keys: UnsafeMutableRawPointer
    let values: UnsafeMutableRawPointer
    /// int8 only: `[blocks, blockSize, kvHeads]` scales for K and V (a 1-element dummy otherwise).
    let keyScales: UnsafeMutablePointer<Float>
    let valueScales: UnsafeMutablePointer<Float>
    /// Owns the four buffers above.
    private let storage: [ZeroedPages]
    /// Bytes of one of the two pools.
    let poolBytes: Int
    /// int8 vectors are stored Hadamard-rotated (power-of-two head dimensions only).
    public let rotatesForInt8: Bool
    /// Number of scales in one of the two scale arrays (0 unless int8).
    let scaleCount: Int

    /// Allocates zeroed pools for `blocks` blocks of `blockSize` tokens.
    public init(blocks: Int, blockSize: Int, kvHeads: Int, headDim: Int, dtype: KVCacheDType, valuesAreKeys: Bool = false) {
        self.blocks = max(0, blocks)
        self.blockSize = max(1, blockSize)
        self.kvHeads = max(1, kvHeads)
        self.headDim = max(1, headDim)
        self.dtype = dtype
        self.valuesAreKeys = valuesAreKeys
        let vectors = self.blocks * self.blockSize * self.kvHeads
        poolBytes = vectors * self.headDim * dtype.bytesPerElement
        scaleCount = dtype.hasScales ? vectors : 0
        rotatesForInt8 = dtype == .int8 && Hadamard.applies(to: self.headDim)
        // Zeroed pages from the kernel: a large pool costs memory only as blocks get written.
        let pools = valuesAreKeys ? 1 : 2
        let poolSize = poolBytes, scaleSize = scaleCount * 4
        storage = (0 ..< pools).map { _ in ZeroedPages(byteCount: poolSize) }
            + (0 ..< pools).map { _ in ZeroedPages(byteCount: scaleSize) }
        keys = storage[0].pointer
        values = storage[pools - 1].pointer
        keyScales = storage[pools].pointer.assumingMemoryBound(to: Float.self)
        valueScales = storage[2 * pools - 1].pointer.assumingMemoryBound(to: Float.self)
    }

    /// Total bytes held: K (+ V) pools and their scales.
    public var bytes: Int { (valuesAreKeys ? 1 : 2) * (poolBytes + scaleCount * MemoryLayout<Float>.size) }

    /// Bytes one token occupies in one layer (K + V + scales, or K alone when values are keys);
    /// sizes the pool from a memory budget.
    public static func bytesPerToken(kvHeads: Int, headDim: Int, dtype: KVCacheDType, valuesAreKeys: Bool = false) -> Int {
        let scales = dtype.hasScales ? kvHeads * MemoryLayout<Float>.size : 0
        return (valuesAreKeys ? 1 : 2) * (kvHeads * headDim * dtype.bytesPerElement + scales)
    }

    /// Index of the `(block, slot, head)` vector in `[blocks, blockSize, kvHeads]`.
    @inline(__always)
    func vectorIndex(block: Int, slot: Int, head: Int) -> Int {
        (block * blockSize + slot) * kvHeads + head
    }

    /// Whether `(block, slot)` (and `head`, when given) addresses storage of this layer.
    func contains(block: Int, slot: Int, head: Int = 0) -> Bool {
        block >= 0 && block < blocks && slot >= 0 && slot < blockSize && head >= 0 && head < kvHeads
    }

    /// Stores one token for every kv head: `key, value: [kvHeads, headDim]`, converting (and for int8
    /// quantizing) to `dtype`; `value` is ignored when values are keys. Out-of-range addresses are ignored.
    public func write(key: UnsafePointer<Float>, value: UnsafePointer<Float>, block: Int, slot: Int) {
        guard contains(block: block, slot: slot) else { return }
        switch dtype {
        case .fp32: store(FP32Element.self, key: key, value: value, block: block, slot: slot)
        case .f16: store(F16Element.self, key: key, value: value, block: block, slot: slot)
        case .bf16: store(BF16Element.self, key: key, value: value, block: block, slot: slot)
        case .int8: store(Int8Element.self, key: key, value: value, block: block, slot: slot)
        }
    }

    private func store<E: KVElement>(_: E.Type, key: UnsafePointer<Float>, value: UnsafePointer<Float>, block: Int, slot: Int) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * headDim) { buffer in
            let rotatedKey = buffer.baseAddress.unsafelyUnwrapped, rotatedValue = rotatedKey + headDim
            for head in 0 ..< kvHeads {
                let index = vectorIndex(block: block, slot: slot, head: head)
                let offset = index * headDim * E.size
                var k = key + head * headDim, v = value + head * headDim
                if rotatesForInt8 {
                    rotatedKey.update(from: k, count: headDim)
                    rotatedValue.update(from: v, count: headDim)
                    Hadamard.rotate(rotatedKey, headDim)
                    Hadamard.rotate(rotatedValue, headDim)
                    k = UnsafePointer(rotatedKey)
                    v = UnsafePointer(rotatedValue)
                }
                let kScale = E.encode(k, headDim, into: keys + offset)
                if E.isScaled { keyScales[index] = kScale }
                if !valuesAreKeys {
                    let vScale = E.encode(v, headDim, into: values + offset)
                    if E.isScaled { valueScales[index] = vScale }
                }
            }
        }
    }

    /// Dequantized K of `(block, slot, head)` into `output: [headDim]` (zeros if out of range).
    public func readKey(block: Int, slot: Int, head: Int, into output: UnsafeMutablePointer<Float>) {
        read(keys, keyScales, block: block, slot: slot, head: head, into: output)
    }

    /// Dequantized V of `(block, slot, head)` into `output: [headDim]` (zeros if out of range).
    public func readValue(block: Int, slot: Int, head: Int, into output: UnsafeMutablePointer<Float>) {
        read(values, valueScales, block: block, slot: slot, head: head, into: output)
    }

    private func read(_ pool: UnsafeMutableRawPointer, _ scales: UnsafeMutablePointer<Float>,
                      block: Int, slot: Int, head: Int, into output: UnsafeMutablePointer<Float>) {
        guard contains(block: block, slot: slot, head: head) else {
            output.update(repeating: 0, count: headDim)
            return
        }
        let index = vectorIndex(block: block, slot: slot, head: head)
        let base = UnsafeRawPointer(pool + index * headDim * dtype.bytesPerElement)
        let scale = dtype.hasScales ? scales[index] : 1
        for i in 0 ..< headDim {
            let x: Float
            switch dtype {
            case .fp32: x = FP32Element.load1(base, i)
            case .f16: x = F16Element.load1(base, i)
            case .bf16: x = BF16Element.load1(base, i)
            case .int8: x = Int8Element.load1(base, i)
            }
            output[i] = x * scale
        }
        if rotatesForInt8 { Hadamard.rotate(output, headDim) }
    }

    /// Copies every slot of block `from` (K, V and scales) onto block `to`; for copy-on-write of
    /// shared prefix blocks. Out-of-range or equal ids are ignored.
    public func copyBlock(from source: Int, to destination: Int) {
        guard source != destination, source >= 0, source < blocks, destination >= 0, destination < blocks else { return }
        let vectors = blockSize * kvHeads
        let bytesPerBlock = vectors * headDim * dtype.bytesPerElement
        (keys + destination * bytesPerBlock).copyMemory(from: keys + source * bytesPerBlock, byteCount: bytesPerBlock)
        (values + destination * bytesPerBlock).copyMemory(from: values + source * bytesPerBlock, byteCount: bytesPerBlock)
        if dtype.hasScales {
            (keyScales + destination * vectors).update(from: keyScales + source * vectors, count: vectors)
            (valueScales + destination * vectors).update(from: valueScales + source * vectors, count: vectors)
        }
    }
}

// MARK: - Element codecs

/// How one storage dtype converts to and from float32; the attention inner loop is generic over it,
/// so each dtype gets its own specialized copy of the same loop.
protocol KVElement {
    /// Bytes per element.
    static var size: Int { get }
    /// Whether vectors carry a per-(token, head) scale that multiplies the decoded elements.
    static var isScaled: Bool { get }
    /// Elements `i ..< i + 16` of `base` as float32 (unscaled).
    static func load16(_ base: UnsafeRawPointer, _ i: Int) -> SIMD16<Float>
    /// Elements `i ..< i + 8` of `base` as float32 (unscaled).
    static func load8(_ base: UnsafeRawPointer, _ i: Int) -> SIMD8<Float>
    /// Element `i` of `base` as float32 (unscaled).
    static func load1(_ base: UnsafeRawPointer, _ i: Int) -> Float
    /// Encodes `n` floats into `destination`; returns the vector's scale (1 for unscaled types).
    static func encode(_ source: UnsafePointer<Float>, _ n: Int, into destination: UnsafeMutableRawPointer) -> Float
}

enum FP32Element: KVElement {
    static var size: Int { 4 }
    static var isScaled: Bool { false }
    @inline(__always) static func load16(_ base: UnsafeRawPointer, _ i: Int) -> SIMD16<Float> {
        (base + 4 * i).loadUnaligned(as: SIMD16<Float>.self)
    }
    @inline(__always) static func load8(_ base: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
        (base + 4 * i).loadUnaligned(as: SIMD8<Float>.self)
    }
    @inline(__always) static func load1(_ base: UnsafeRawPointer, _ i: Int) -> Float {
        (base + 4 * i).loadUnaligned(as: Float.self)
    }
    static func encode(_ source: UnsafePointer<Float>, _ n: Int, into destination: UnsafeMutableRawPointer) -> Float {
        destination.copyMemory(from: source, byteCount: 4 * n)
        return 1
    }
}

enum F16Element: KVElement {
    static var size: Int { 2 }
    static var isScaled: Bool { false }
    @inline(__always) static func load16(_ base: UnsafeRawPointer, _ i: Int) -> SIMD16<Float> {
        // Written lane by lane: LLVM folds it to one vcvtph2ps, while the generic SIMD conversion
        // initializer stays an out-of-line call in the hot loop.
        let x = (base + 2 * i).loadUnaligned(as: SIMD16<Float16>.self)
        return SIMD16<Float>(Float(x[0]), Float(x[1]), Float(x[2]), Float(x[3]), Float(x[4]), Float(x[5]), Float(x[6]), Float(x[7]),
                             Float(x[8]), Float(x[9]), Float(x[10]), Float(x[11]), Float(x[12]), Float(x[13]), Float(x[14]), Float(x[15]))
    }
    @inline(__always) static func load8(_ base: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
        let x = (base + 2 * i).loadUnaligned(as: SIMD8<Float16>.self)
        return SIMD8<Float>(Float(x[0]), Float(x[1]), Float(x[2]), Float(x[3]), Float(x[4]), Float(x[5]), Float(x[6]), Float(x[7]))
    }
    @inline(__always) static func load1(_ base: UnsafeRawPointer, _ i: Int) -> Float {
        Float((base + 2 * i).loadUnaligned(as: Float16.self))
    }
    static func encode(_ source: UnsafePointer<Float>, _ n: Int, into destination: UnsafeMutableRawPointer) -> Float {
        for i in 0 ..< n { (destination + 2 * i).storeBytes(of: Float16(source[i]), as: Float16.self) }
        return 1
    }
}

enum BF16Element: KVElement {
    static var size: Int { 2 }
    static var isScaled: Bool { false }
    @inline(__always) static func load16(_ base: UnsafeRawPointer, _ i: Int) -> SIMD16<Float> {
        // Lane by lane so LLVM emits one vpmovzxwd (see F16Element.load16).
        let x = (base + 2 * i).loadUnaligned(as: SIMD16<UInt16>.self)
        let wide = SIMD16<UInt32>(UInt32(x[0]), UInt32(x[1]), UInt32(x[2]), UInt32(x[3]), UInt32(x[4]), UInt32(x[5]), UInt32(x[6]), UInt32(x[7]),
                                  UInt32(x[8]), UInt32(x[9]), UInt32(x[10]), UInt32(x[11]), UInt32(x[12]), UInt32(x[13]), UInt32(x[14]), UInt32(x[15]))
        return unsafeBitCast(wide &<< 16, to: SIMD16<Float>.self)
    }
    @inline(__always) static func load8(_ base: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
        let x = (base + 2 * i).loadUnaligned(as: SIMD8<UInt16>.self)
        let wide = SIMD8<UInt32>(UInt32(x[0]), UInt32(x[1]), UInt32(x[2]), UInt32(x[3]), UInt32(x[4]), UInt32(x[5]), UInt32(x[6]), UInt32(x[7]))
        return unsafeBitCast(wide &<< 16, to: SIMD8<Float>.self)
    }
    @inline(__always) static func load1(_ base: UnsafeRawPointer, _ i: Int) -> Float {
        Float(bitPattern: UInt32((base + 2 * i).loadUnaligned(as: UInt16.self)) << 16)
    }
    static func encode(_ source: UnsafePointer<Float>, _ n: Int, into destination: UnsafeMutableRawPointer) -> Float {
        for i in 0 ..< n {
            let x = source[i]
            let bits = x.bitPattern
            let rounded: UInt16
            if x.isNaN {
                rounded = UInt16(truncatingIfNeeded: bits >> 16) | 0x0040  // keep it a (quiet) NaN
            } else {
                // Round to nearest, ties to even.
                rounded = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
            }
            (destination + 2 * i).storeBytes(of: rounded, as: UInt16.self)
        }
        return 1
    }
}

enum Int8Element: KVElement {
    static var size: Int { 1 }
    static var isScaled: Bool { true }
    @inline(__always) static func load16(_ base: UnsafeRawPointer, _ i: Int) -> SIMD16<Float> {
        // Lane by lane so LLVM emits vpmovsxbd + vcvtdq2ps (see F16Element.load16).
        let x = (base + i).loadUnaligned(as: SIMD16<Int8>.self)
        return SIMD16<Float>(Float(x[0]), Float(x[1]), Float(x[2]), Float(x[3]), Float(x[4]), Float(x[5]), Float(x[6]), Float(x[7]),
                             Float(x[8]), Float(x[9]), Float(x[10]), Float(x[11]), Float(x[12]), Float(x[13]), Float(x[14]), Float(x[15]))
    }
    @inline(__always) static func load8(_ base: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
        let x = (base + i).loadUnaligned(as: SIMD8<Int8>.self)
        return SIMD8<Float>(Float(x[0]), Float(x[1]), Float(x[2]), Float(x[3]), Float(x[4]), Float(x[5]), Float(x[6]), Float(x[7]))
    }
    @inline(__always) static func load1(_ base: UnsafeRawPointer, _ i: Int) -> Float {
        Float((base + i).loadUnaligned(as: Int8.self))
    }
    /// Symmetric absmax quantization: `scale = max|x| / 127`, `q = round(x / scale)` in -127...127.
    static func encode(_ source: UnsafePointer<Float>, _ n: Int, into destination: UnsafeMutableRawPointer) -> Float {
        var absMax: Float = 0
        for i in 0 ..< n where source[i].magnitude > absMax { absMax = source[i].magnitude }
        guard absMax > 0, absMax.isFinite else {
            destination.initializeMemory(as: Int8.self, repeating: 0, count: n)
            return 0
        }
        let scale = absMax / 127
        let inverse = 1 / scale
        for i in 0 ..< n {
            let q = (source[i] * inverse).rounded(.toNearestOrEven)
            (destination + i).storeBytes(of: Int8(max(-127, min(127, q))), as: Int8.self)
        }
        return scale
    }
}

/// The orthonormal Walsh-Hadamard transform `H / sqrt(n)` on power-of-two lengths; it is its own
/// inverse, so the same call rotates into and out of the int8 cache's storage basis.
public enum Hadamard {
    /// Whether `n` is a power of two of at least 2 (the lengths the fast transform handles).
    public static func applies(to n: Int) -> Bool { n >= 2 && n & (n - 1) == 0 }

    /// Rotates `x[0..<n]` in place (`n` a power of two).
    public static func rotate(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        var half = 1
        while half < n {
            var start = 0
            while start < n {
                for i in start ..< start + half {
                    let a = x[i], b = x[i + half]
                    x[i] = a + b
                    x[i + half] = a - b
                }
                start += 2 * half
            }
            half *= 2
        }
        let norm = 1 / Float(n).squareRoot()
        for i in 0 ..< n { x[i] *= norm }
    }
}

/// `byteCount` zero bytes, page-aligned, mapped lazily by the kernel so that untouched parts take
/// no memory (a heap buffer, zeroed explicitly, if mapping fails).
final class ZeroedPages {
    let pointer: UnsafeMutableRawPointer
    private let mappedBytes: Int?

    init(byteCount: Int) {
        let size = max(byteCount, 1)
        if let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED {
            pointer = p
            mappedBytes = size
        } else {
            pointer = .allocate(byteCount: size, alignment: 4096)
            pointer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
            mappedBytes = nil
        }
    }

    deinit {
        if let mappedBytes { munmap(pointer, mappedBytes) } else { pointer.deallocate() }
    }
}
