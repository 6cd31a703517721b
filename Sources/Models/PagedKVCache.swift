import Foundation
import Cache
import Formats
import Kernels

/// How the paged KV cache is sized and stored.
public struct KVCacheOptions: Sendable, Equatable {
    /// Bytes for K/V storage over all layers (the pool gets as many blocks as fit).
    public var memoryBytes: Int
    /// Tokens per block.
    public var blockSize: Int
    /// Storage type of K and V. fp32 keeps the logits exact; int8 quarters the memory.
    public var dtype: KVCacheDType
    /// Reuse the K/V of full prompt blocks that earlier requests computed.
    public var prefixCaching: Bool

    public init(memoryBytes: Int = 512 << 20, blockSize: Int = 16, dtype: KVCacheDType = .fp32, prefixCaching: Bool = true) {
        self.memoryBytes = memoryBytes
        self.blockSize = blockSize
        self.dtype = dtype
        self.prefixCaching = prefixCaching
    }

    /// Parses a byte count with an optional K/M/G suffix (`512M`, `2G`, `1048576`).
    public static func parseBytes(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        var digits = Substring(trimmed)
        var multiplier = 1
        if let last = digits.last, let unit = units[last] {
            multiplier = unit
            digits = digits.dropLast()
        }
        if digits.hasSuffix("I") || digits.hasSuffix("B") { return nil }
        guard let value = Int(digits), value >= 0 else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : bytes
    }
}

/// The engine's KV cache: the block bookkeeping (`KVCacheManager`: block tables, prefix caching)
/// and each layer's paged K/V storage `[blocks, blockSize, kvHeads, headDim]`, indexed by the
/// manager's block ids. Used from the engine's step thread only.
public final class PagedKVCache: @unchecked Sendable {
    public let manager: KVCacheManager
    /// Storage per model layer.
    public let layers: [PagedKVLayer]
    public let options: KVCacheOptions
    /// The manager's group of each layer.
    public let groupOfLayer: [Int]

    /// Sizes the pool for `config` from `options.memoryBytes`; throws when not even one block fits.
    public init(config: ModelConfig, options: KVCacheOptions) throws {
        guard options.blockSize > 0, options.blockSize <= 1024 else {
            throw CacheConfigurationError("block size must be between 1 and 1024 tokens, got \(options.blockSize)")
        }
        let perTokenPerLayer = PagedKVLayer.bytesPerToken(kvHeads: config.kvHeadCount, headDim: config.headDim, dtype: options.dtype)
        let bytesPerBlock = perTokenPerLayer * options.blockSize * config.layerCount
        let blockCount = options.memoryBytes / bytesPerBlock
        guard blockCount >= 1 else {
            throw CacheConfigurationError("KV cache memory of \(options.memoryBytes) bytes holds no block: one block of \(options.blockSize) tokens over \(config.layerCount) layers needs \(bytesPerBlock) bytes")
        }
        let spec = CacheGroupSpec(layers: Array(0 ..< config.layerCount), blockCount: blockCount)
        do {
            manager = try KVCacheManager(groups: [spec], blockSize: options.blockSize, enablePrefixCaching: options.prefixCaching)
        } catch {
            throw CacheConfigurationError("\(error)")
        }
        layers = (0 ..< config.layerCount).map { _ in
            PagedKVLayer(blocks: blockCount, blockSize: options.blockSize, kvHeads: config.kvHeadCount, headDim: config.headDim, dtype: options.dtype)
        }
        groupOfLayer = Array(repeating: 0, count: config.layerCount)
        self.options = options
    }

    /// Tokens the pool can hold for one sequence.
    public var tokenCapacity: Int { manager.groups.map { $0.pool.blockCount }.min().map { $0 * options.blockSize } ?? 0 }

    /// Bytes of K/V storage held.
    public var storageBytes: Int { layers.reduce(0) { $0 + $1.bytes } }
}

/// A KV cache that cannot be built as asked.
public struct CacheConfigurationError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
