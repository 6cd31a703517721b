import Foundation
import Formats
import Kernels

/// One engine step for the model: the new tokens of every scheduled sequence, flattened
/// sequence by sequence, with their positions and the paged-attention description per KV cache group.
public struct ForwardBatch: Sendable {
    /// `[T]` token ids.
    public var tokens: [Int]
    /// `[T]` absolute position of each token in its sequence.
    public var positions: [Int]
    /// Per KV cache group: `cuQueryLens`, `seqLens` and block tables of the step.
    public var attention: [RaggedBatch]
    /// Rows of `tokens` whose next-token logits are wanted (e.g. each sequence's last token).
    public var logitRows: [Int]

    public init(tokens: [Int], positions: [Int], attention: [RaggedBatch], logitRows: [Int]) {
        self.tokens = tokens
        self.positions = positions
        self.attention = attention
        self.logitRows = logitRows
    }
}

/// A causal language model: token ids in, next-token logits out, K/V kept in the paged cache.
public protocol CausalLanguageModel: AnyObject, Sendable {
    var config: ModelConfig { get }
    /// Runs one step: writes the new tokens' K/V into `cache` and returns logits
    /// `[batch.logitRows.count, vocab]`. Concurrent calls take turns.
    func forward(_ batch: ForwardBatch, cache: PagedKVCache) throws -> [Float]
    /// Bytes of weights one decode step reads (every matrix once, plus one embedding row): what
    /// bounds decoding speed by memory bandwidth.
    var streamedWeightBytes: Int { get }
}

/// A layer's attention: grouped-query attention over per-head K/V, or DeepSeek's latent attention.
enum AttentionBlock {
    case grouped(GroupedQueryAttention)
    case latent(LatentAttention)

    var weights: [WeightMatrix] {
        switch self {
        case .grouped(let a): a.weights
        case .latent(let a): a.weights
        }
    }

    var streamedBytes: Int {
        switch self {
        case .grouped(let a): a.weights.reduce(0) { $0 + $1.rows * $1.rowBytes }
        case .latent(let a): a.streamedBytes
        }
    }
}

/// A layer's feed-forward block: a dense gated MLP or a mixture of experts.
enum FeedForwardBlock {
    case dense(GatedMLP)
    case experts(MixtureOfExperts)

    var streamedBytes: Int {
        switch self {
        case .dense(let m): m.weights.reduce(0) { $0 + $1.rows * $1.rowBytes }
        case .experts(let m): m.streamedBytes
        }
    }

    func forward(_ input: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>, _ ctx: StepContext) {
        switch self {
        case .dense(let m): m.forward(input, tokens: ctx.tokens, into: output, ctx)
        case .experts(let m): m.forward(input, into: output, ctx)
        }
    }
}

/// One decoder layer: pre-norm attention and feed-forward blocks with residuals, and (Gemma) norms
/// on each block's output before it joins the residual stream.
struct DecoderLayer {
    let attentionNorm: [Float]
    let attention: AttentionBlock
    let postAttentionNorm: [Float]?
    let feedForwardNorm: [Float]
    let feedForward: FeedForwardBlock
    let postFeedForwardNorm: [Float]?

    init(_ names: WeightNames, layer i: Int, config c: ModelConfig, rope: Rope) throws {
        let hidden = c.hiddenSize
        attentionNorm = try names.norm("attn_norm.weight", layer: i, count: hidden)
        if let mla = c.mla {
            attention = .latent(try LatentAttention(names, layer: i, config: c, mla: mla, rope: rope))
        } else {
            attention = .grouped(try GroupedQueryAttention(names, layer: i, config: c, rope: rope))
        }
        feedForwardNorm = try names.norm("ffn_norm.weight", layer: i, count: hidden)
        if let moe = c.moe, !moe.denseLayers.contains(i) {
            feedForward = .experts(try MixtureOfExperts(names, layer: i, config: c, moe: moe))
        } else {
            feedForward = .dense(try GatedMLP(names, layer: i, hidden: hidden, intermediate: c.intermediateSize, activation: c.activation))
        }
        if c.sandwichNorms {
            postAttentionNorm = try names.norm("post_attention_norm.weight", layer: i, count: hidden)
            postFeedForwardNorm = try names.norm("post_ffw_norm.weight", layer: i, count: hidden)
        } else {
            postAttentionNorm = nil
            postFeedForwardNorm = nil
        }
    }
}

/// The decoder every family runs on: embeddings (optionally scaled), layers of attention and
/// feed-forward blocks chosen by the config, final norm, output head (optionally soft-capped).
final class DecoderTransformer: CausalLanguageModel, @unchecked Sendable {
    let config: ModelConfig
    let embedding: WeightMatrix
    let layers: [DecoderLayer]
    let outputNorm: [Float]
    let outputHead: WeightMatrix
    let pool: WorkerPool
    let workspace = ForwardWorkspace()
    /// Serializes `forward` calls over the shared workspace.
    private let forwardLock = NSLock()
    /// Keeps the model file(s) mapped while the weights are in use.
    let source: TensorSource

    init(config c: ModelConfig, names: WeightNames, pool: WorkerPool) throws {
        config = c
        source = names.source
        self.pool = pool
        embedding = try names.matrix("token_embd.weight", rows: c.vocabSize, cols: c.hiddenSize)
        let factors = names.scheme == .gguf ? try names.optionalVector("rope_freqs.weight", count: c.rotaryDim / 2) : nil
        let fullRope = c.rope(frequencyFactors: factors), slidingRope = c.slidingLayerRope(frequencyFactors: factors)
        layers = try (0 ..< c.layerCount).map {
            try DecoderLayer(names, layer: $0, config: c, rope: c.isSliding(layer: $0) ? slidingRope : fullRope)
        }
        outputNorm = try names.norm("output_norm.weight", count: c.hiddenSize)
        outputHead = c.tieEmbeddings ? embedding : try names.matrix("output.weight", rows: c.vocabSize, cols: c.hiddenSize)
    }

    public var streamedWeightBytes: Int {
        let perLayer = layers.reduce(0) { $0 + $1.attention.streamedBytes + $1.feedForward.streamedBytes }
        return perLayer + outputHead.rows * outputHead.rowBytes + embedding.rowBytes
    }

    public func forward(_ batch: ForwardBatch, cache: PagedKVCache) throws -> [Float] {
        forwardLock.lock()
        defer { forwardLock.unlock() }
        let c = config
        let n = batch.tokens.count
        guard n > 0 else { return [] }
        guard batch.positions.count == n, batch.attention.count == cache.manager.groups.count,
              batch.attention.allSatisfy({ $0.tokenCount == n })
        else {
            throw ModelError.malformedBatch("\(n) tokens, \(batch.positions.count) positions, attention batches for \(batch.attention.map(\.tokenCount)) tokens")
        }
        for id in batch.tokens where id < 0 || id >= c.vocabSize {
            throw ModelError.invalidToken(id, vocabularySize: c.vocabSize)
        }
        for row in batch.logitRows where row < 0 || row >= n {
            throw ModelError.malformedBatch("logit row \(row) outside 0..<\(n)")
        }
        for (group, attention) in batch.attention.enumerated() {
            let spec = cache.manager.groups[group].spec
            let storage = group == cache.recentGroup ? cache.recentLayers.first : spec.layers.first.map { cache.layers[$0] }
            guard let storage else { continue }
            try attention.validate(blockCount: storage.blocks, blockSize: cache.options.blockSize, slidingWindow: spec.slidingWindow)
        }
        let w = workspace
        let hidden = c.hiddenSize
        let ctx = StepContext(tokens: n, positions: batch.positions, workspace: w, pool: pool)
        let residual = w.buffer(.hidden, n * hidden), normed = w.buffer(.normed, n * hidden)
        let blockOutput = w.buffer(.blockOutput, n * hidden)

        for (t, id) in batch.tokens.enumerated() {
            embedding.dequantizeRow(id, into: residual + t * hidden)
        }
        if let scale = c.embeddingScale { Vector.scale(residual, by: scale, n * hidden) }
        // The norms and residual adds between the blocks go row by row, split between the threads
        // (`StepContext.forRows`); the add after each feed-forward block also norms the next
        // layer's input.
        func between(adds: Bool, postNorm: [Float]?, norm: [Float]?) {
            ctx.forRows(n, width: hidden, ResidualRows(residual: residual, blockOutput: blockOutput, normed: normed, hidden: hidden,
                                                       eps: c.rmsNormEps, adds: adds, postNorm: postNorm, norm: norm))
        }
        if let first = layers.first { between(adds: false, postNorm: nil, norm: first.attentionNorm) }
        for (index, layer) in layers.enumerated() {
            let view = cache.layerView(index, batches: batch.attention)
            switch layer.attention {
            case .grouped(let a): try a.forward(normed, into: blockOutput, cache: view, ctx)
            case .latent(let a): try a.forward(normed, into: blockOutput, cache: view, ctx)
            }
            between(adds: true, postNorm: layer.postAttentionNorm, norm: layer.feedForwardNorm)
            layer.feedForward.forward(normed, into: blockOutput, ctx)
            between(adds: true, postNorm: layer.postFeedForwardNorm, norm: index + 1 < layers.count ? layers[index + 1].attentionNorm : nil)
        }

        // Only the rows that need logits go through the final norm and the output head.
        let rows = batch.logitRows.count
        for (i, row) in batch.logitRows.enumerated() {
            Norm.rms(residual + row * hidden, weight: outputNorm, eps: c.rmsNormEps, into: normed + i * hidden, rows: 1, n: hidden)
        }
        // The product writes every element, so the array is not zeroed first (at 32 decoding
        // sequences that was a 6 MB memset per step).
        let count = rows * c.vocabSize
        guard count > 0 else { return [] }
        return [Float](unsafeUninitializedCapacity: count) { out, initialized in
            let base = out.baseAddress.unsafelyUnwrapped
            MatMul.multiply(normed, tokens: rows, by: outputHead, into: base, pool: pool)
            if let cap = c.finalSoftCap { Activation.softCap(base, cap: cap, count) }
            initialized = count
        }
    }
}

/// Errors from running a model on bad input.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case malformedBatch(String)
    case invalidToken(Int, vocabularySize: Int)

    public var description: String {
        switch self {
        case .malformedBatch(let what):
            "malformed step batch: \(what)"
        case .invalidToken(let id, let vocab):
            "token id \(id) is outside the vocabulary (0..<\(vocab))"
        }
    }
}
