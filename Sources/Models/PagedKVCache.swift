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
    /// With int8, each query attends to its `int8RecentTokens` most recent keys in float32 (a
    /// second, sliding-window copy of the cache, as KIVI keeps a full-precision residual) and to
    /// older keys in int8. 0 keeps every key in int8 only.
    public var int8RecentTokens: Int
    /// Most sequences and tokens in one step: size the pool of recent float32 blocks.
    public var maxSequences: Int
    public var maxStepTokens: Int

    public init(memoryBytes: Int = 512 << 20, blockSize: Int = 16, dtype: KVCacheDType = .fp32, prefixCaching: Bool = true,
                int8RecentTokens: Int = 64, maxSequences: Int = 64, maxStepTokens: Int = 512) {
        self.memoryBytes = memoryBytes
        self.blockSize = blockSize
        self.dtype = dtype
        self.prefixCaching = prefixCaching
        self.int8RecentTokens = int8RecentTokens
        self.maxSequences = maxSequences
        self.maxStepTokens = maxStepTokens
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
    /// int8 with recent keys in float32: per layer, the float32 storage of the most recent
    /// `recentTokens` keys, in the manager's group `recentGroup` (a sliding window of that size).
    public let recentLayers: [PagedKVLayer]
    public let recentGroup: Int?
    public let recentTokens: Int

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
        // int8's float32 copy of recent keys: enough blocks for every sequence's window plus a step.
        let recent = options.dtype == .int8 ? max(0, options.int8RecentTokens) : 0
        var recentBlocks = 0, mainBytes = options.memoryBytes
        if recent > 0 {
            recentBlocks = Self.recentBlockCount(options)
            let recentBytes = recentBlocks * options.blockSize * config.layerCount * Self.bytesPerTokenPerLayer(config: config, dtype: .fp32)
            guard recentBytes < options.memoryBytes else {
                throw CacheConfigurationError("KV cache memory of \(options.memoryBytes) bytes cannot hold the float32 copy of the \(recent) most recent tokens of \(options.maxSequences) sequences (\(recentBytes) bytes); raise the memory or lower the recent-token window")
            }
            mainBytes -= recentBytes
        }
        let slidingLayers = (0 ..< config.layerCount).filter { config.isSliding(layer: $0) }
        let fullLayers = (0 ..< config.layerCount).filter { !config.isSliding(layer: $0) }
        var specs: [CacheGroupSpec] = []
        for (layers, window) in [(fullLayers, Int?.none), (slidingLayers, config.slidingWindow)] where !layers.isEmpty {
            let bytesPerBlock = perTokenPerLayer * options.blockSize * layers.count
            let share = mainBytes / config.layerCount * layers.count + mainBytes % config.layerCount * layers.count / config.layerCount
            let blockCount = share / bytesPerBlock
            guard blockCount >= 1 else {
                throw CacheConfigurationError("KV cache memory of \(options.memoryBytes) bytes holds no block: one block of \(options.blockSize) tokens over \(config.layerCount) layers needs \(perTokenPerLayer * options.blockSize * config.layerCount) bytes")
            }
            specs.append(CacheGroupSpec(layers: layers, slidingWindow: window, blockCount: blockCount))
        }
        var recentGroupIndex: Int?
        if recent > 0 {
            // A shadow group: its blocks hold float32 copies of every layer's recent keys, so it
            // claims no layer of its own (each layer belongs to its int8 group).
            specs.append(CacheGroupSpec(layers: [], slidingWindow: recent, blockCount: recentBlocks))
            recentGroupIndex = specs.count - 1
            recentLayers = (0 ..< config.layerCount).map { _ in
                PagedKVLayer(blocks: recentBlocks, blockSize: options.blockSize, kvHeads: layout.kvHeads,
                             headDim: layout.headDim, dtype: .fp32, valuesAreKeys: layout.valuesAreKeys)
            }
        } else {
            recentLayers = []
        }
        recentGroup = recentGroupIndex
        recentTokens = recent
        do {
            manager = try KVCacheManager(groups: specs, blockSize: options.blockSize, enablePrefixCaching: options.prefixCaching)
        } catch {
            throw CacheConfigurationError("\(error)")
        }
        var groupOfLayer = Array(repeating: 0, count: config.layerCount)
        var blocksOfLayer = Array(repeating: 0, count: config.layerCount)
        for (g, spec) in specs.enumerated() where g != recentGroupIndex {
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

    /// Layer `index`'s storage and its part of the step: the attention call(s) of one layer.
    public func layerView(_ index: Int, batches: [RaggedBatch]) -> LayerCacheView {
        LayerCacheView(
            storage: layers[index], batch: batches[groupOfLayer[index]],
            recent: recentGroup.map { (recentLayers[index], batches[$0], recentTokens) })
    }

    /// The memory budget that holds exactly one sequence of `tokens` tokens with `options`
    /// (block size, dtype, and with int8 the float32 copy of recent keys for
    /// `options.maxSequences` sequences and steps of `options.maxStepTokens`).
    public static func memoryToHold(tokens: Int, config: ModelConfig, options: KVCacheOptions) -> Int {
        let blocks = (tokens + options.blockSize - 1) / options.blockSize
        var bytes = blocks * options.blockSize * config.layerCount * bytesPerTokenPerLayer(config: config, dtype: options.dtype)
        if options.dtype == .int8, options.int8RecentTokens > 0 {
            bytes += recentBlockCount(options) * options.blockSize * config.layerCount * bytesPerTokenPerLayer(config: config, dtype: .fp32)
        }
        return bytes + config.layerCount  // rounding slack of the per-group split
    }

    /// Blocks of the float32 recent-key copy: each sequence's window plus the blocks one step adds.
    static func recentBlockCount(_ options: KVCacheOptions) -> Int {
        // A window of R keys spans at most ceil(R / blockSize) + 1 blocks; a prefill chunk's extra
        // keys are covered by the step term.
        let perSequence = (options.int8RecentTokens + options.blockSize - 1) / options.blockSize + 1
        return max(1, options.maxSequences) * perSequence + (max(1, options.maxStepTokens) + options.blockSize - 1) / options.blockSize
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
    public var storageBytes: Int { (layers + recentLayers).reduce(0) { $0 + $1.bytes } }
}

/// A KV cache that cannot be built as asked.
public struct CacheConfigurationError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// One layer's paged K/V for one step: its storage and ragged batch, and with int8 the float32
/// copy of the most recent keys.
public struct LayerCacheView {
    public let storage: PagedKVLayer
    public let batch: RaggedBatch
    public let recent: (storage: PagedKVLayer, batch: RaggedBatch, tokens: Int)?

    /// Writes the step's K/V and attends (`RaggedPagedAttention.forward`); with a recent-key copy,
    /// keys older than the window come from the int8 storage and the window's from float32, and the
    /// two softmaxes are merged into one (sinks join the recent part's denominator only).
    /// `scratch` provides `[T, qHeads, headDim]` plus `4 * T * qHeads` floats.
    public func attend(
        q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
        tokens: Int, qHeads: Int, options: AttentionOptions, scratch: UnsafeMutablePointer<Float>, pool: WorkerPool
    ) throws {
        guard let recent else {
            try RaggedPagedAttention.forward(q: q, newKeys: keys, newValues: values, out: out, batch: batch, layer: storage,
                                             qHeads: qHeads, options: options, pool: pool)
            return
        }
        let vectors = tokens * qHeads
        let recentOut = scratch, recentStatistics = scratch + vectors * storage.headDim
        let olderStatistics = recentStatistics + 2 * vectors
        var recentOptions = options
        recentOptions.slidingWindow = min(options.slidingWindow ?? recent.tokens, recent.tokens)
        try RaggedPagedAttention.forward(q: q, newKeys: keys, newValues: values, out: recentOut, batch: recent.batch,
                                         layer: recent.storage, qHeads: qHeads, options: recentOptions,
                                         statistics: recentStatistics, pool: pool)
        var olderOptions = options
        olderOptions.sinks = nil
        olderOptions.excludeRecentKeys = recent.tokens
        try RaggedPagedAttention.forward(q: q, newKeys: keys, newValues: values, out: out, batch: batch, layer: storage,
                                         qHeads: qHeads, options: olderOptions, statistics: olderStatistics, pool: pool)
        RaggedPagedAttention.merge(out, statistics: olderStatistics, with: recentOut, otherStatistics: recentStatistics,
                                   vectors: vectors, headDim: storage.headDim)
    }
}
