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

    /// Sizes the pools for `config` from `options.memoryBytes`; throws when not even one block fits.
    /// Full-attention layers form one cache group; sliding-window layers another, whose blocks are
    /// given back once they leave every query's window. The budget is split between the groups in
    /// proportion to their layers.
    public init(config: ModelConfig, options: KVCacheOptions) throws {
        guard options.blockSize > 0, options.blockSize <= 1024 else {
            throw CacheConfigurationError("block size must be between 1 and 1024 tokens, got \(options.blockSize)")
        }
        let layout = config.cacheLayout
        let perTokenPerLayer = Self.bytesPerTokenPerLayer(config: config, dtype: options.dtype)
        let slidingLayers = (0 ..< config.layerCount).filter { config.isSliding(layer: $0) }
        let fullLayers = (0 ..< config.layerCount).filter { !config.isSliding(layer: $0) }
        var specs: [CacheGroupSpec] = []
        for (layers, window) in [(fullLayers, Int?.none), (slidingLayers, config.slidingWindow)] where !layers.isEmpty {
            let bytesPerBlock = perTokenPerLayer * options.blockSize * layers.count
            let share = options.memoryBytes / config.layerCount * layers.count + options.memoryBytes % config.layerCount * layers.count / config.layerCount
            let blockCount = share / bytesPerBlock
            guard blockCount >= 1 else {
                throw CacheConfigurationError("KV cache memory of \(options.memoryBytes) bytes holds no block: one block of \(options.blockSize) tokens over \(config.layerCount) layers needs \(perTokenPerLayer * options.blockSize * config.layerCount) bytes")
            }
            specs.append(CacheGroupSpec(layers: layers, slidingWindow: window, blockCount: blockCount))
        }
        do {
            manager = try KVCacheManager(groups: specs, blockSize: options.blockSize, enablePrefixCaching: options.prefixCaching)
        } catch {
            throw CacheConfigurationError("\(error)")
        }
        var groupOfLayer = Array(repeating: 0, count: config.layerCount)
        var blocksOfLayer = Array(repeating: 0, count: config.layerCount)
        for (g, spec) in specs.enumerated() {
            for layer in spec.layers {
                groupOfLayer[layer] = g
                blocksOfLayer[layer] = spec.blockCount
            }
        }
        layers = (0 ..< config.layerCount).map {
            PagedKVLayer(blocks: blocksOfLayer[$0], blockSize: options.blockSize, kvHeads: layout.kvHeads,
                         headDim: layout.headDim, dtype: options.dtype, valuesAreKeys: layout.valuesAreKeys)
        }
        self.groupOfLayer = groupOfLayer
        self.options = options
    }

    /// Bytes one token takes in one layer's storage (K and V, or MLA's single latent vector).
    public static func bytesPerTokenPerLayer(config: ModelConfig, dtype: KVCacheDType) -> Int {
        let layout = config.cacheLayout
        return PagedKVLayer.bytesPerToken(kvHeads: layout.kvHeads, headDim: layout.headDim, dtype: dtype, valuesAreKeys: layout.valuesAreKeys)
    }

    /// Tokens the pool can hold for one sequence.
    /// Sliding-window groups do not limit it (they keep only the window's blocks).
    public var tokenCapacity: Int {
        let full = manager.groups.filter { $0.spec.slidingWindow == nil }
        return full.map { $0.pool.blockCount * options.blockSize }.min() ?? Int.max / 2
    }

    /// Bytes of K/V storage held.
    public var storageBytes: Int { layers.reduce(0) { $0 + $1.bytes } }
}

/// A KV cache that cannot be built as asked.
public struct CacheConfigurationError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
