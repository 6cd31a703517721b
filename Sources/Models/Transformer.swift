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

/// One decoder block's weights (attention + SwiGLU MLP, pre-norm).
struct DecoderLayerWeights {
    let attentionNorm: [Float]
    let q, k, v, o: WeightMatrix
    let qBias, kBias, vBias: [Float]?
    /// Per-head RMSNorm weights on Q and K (Qwen3).
    let qNorm, kNorm: [Float]?
    let mlpNorm: [Float]
    let gate, up, down: WeightMatrix

    init(_ names: WeightNames, layer i: Int, config c: ModelConfig) throws {
        let qDim = c.headCount * c.headDim, kvDim = c.kvHeadCount * c.headDim
        attentionNorm = try names.vector("attn_norm.weight", layer: i, count: c.hiddenSize)
        q = try names.matrix("attn_q.weight", layer: i, rows: qDim, cols: c.hiddenSize)
        k = try names.matrix("attn_k.weight", layer: i, rows: kvDim, cols: c.hiddenSize)
        v = try names.matrix("attn_v.weight", layer: i, rows: kvDim, cols: c.hiddenSize)
        o = try names.matrix("attn_output.weight", layer: i, rows: c.hiddenSize, cols: qDim)
        if c.attentionBias {
            qBias = try names.vector("attn_q.bias", layer: i, count: qDim)
            kBias = try names.vector("attn_k.bias", layer: i, count: kvDim)
            vBias = try names.vector("attn_v.bias", layer: i, count: kvDim)
        } else {
            qBias = nil; kBias = nil; vBias = nil
        }
        if c.qkNorm {
            qNorm = try names.vector("attn_q_norm.weight", layer: i, count: c.headDim)
            kNorm = try names.vector("attn_k_norm.weight", layer: i, count: c.headDim)
        } else {
            qNorm = nil; kNorm = nil
        }
        mlpNorm = try names.vector("ffn_norm.weight", layer: i, count: c.hiddenSize)
        gate = try names.matrix("ffn_gate.weight", layer: i, rows: c.intermediateSize, cols: c.hiddenSize)
        up = try names.matrix("ffn_up.weight", layer: i, rows: c.intermediateSize, cols: c.hiddenSize)
        down = try names.matrix("ffn_down.weight", layer: i, rows: c.hiddenSize, cols: c.intermediateSize)
    }
}

/// Activation buffers for a forward pass, grown to the largest step seen and then reused,
/// so steady-state decoding allocates nothing.
final class ForwardWorkspace {
    private(set) var tokenCapacity = 0
    var hidden = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var normed = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var q = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var k = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var v = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var attention = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var gate = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var up = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var cos = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var sin = UnsafeMutablePointer<Float>.allocate(capacity: 1)

    func reserve(tokens: Int, config c: ModelConfig) {
        guard tokens > tokenCapacity else { return }
        let qDim = c.headCount * c.headDim, kvDim = c.kvHeadCount * c.headDim
        func grow(_ p: inout UnsafeMutablePointer<Float>, _ perToken: Int) {
            p.deallocate()
            p = .allocate(capacity: max(1, tokens * perToken))
        }
        grow(&hidden, c.hiddenSize)
        grow(&normed, max(c.hiddenSize, qDim))
        grow(&q, qDim)
        grow(&k, kvDim)
        grow(&v, kvDim)
        grow(&attention, qDim)
        grow(&gate, c.intermediateSize)
        grow(&up, c.intermediateSize)
        grow(&cos, c.rotaryDim / 2)
        grow(&sin, c.rotaryDim / 2)
        tokenCapacity = tokens
    }

    deinit {
        for p in [hidden, normed, q, k, v, attention, gate, up, cos, sin] { p.deallocate() }
    }
}

/// The Llama-style decoder shared by the Llama, Qwen2 and Qwen3 families: embeddings,
/// pre-norm blocks of GQA attention with RoPE and a SwiGLU MLP, final RMSNorm and the output head.
/// `forward` may be called from several threads (e.g. two engines over one loaded model); calls
/// take turns, since they share the activation workspace.
public final class DecoderTransformer: CausalLanguageModel, @unchecked Sendable {
    public let config: ModelConfig
    let embedding: WeightMatrix
    let layers: [DecoderLayerWeights]
    let outputNorm: [Float]
    let outputHead: WeightMatrix
    let rope: Rope
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
        layers = try (0 ..< c.layerCount).map { try DecoderLayerWeights(names, layer: $0, config: c) }
        outputNorm = try names.vector("output_norm.weight", count: c.hiddenSize)
        outputHead = c.tieEmbeddings ? embedding : try names.matrix("output.weight", rows: c.vocabSize, cols: c.hiddenSize)
        let factors = names.scheme == .gguf ? try names.optionalVector("rope_freqs.weight", count: c.rotaryDim / 2) : nil
        rope = c.rope(frequencyFactors: factors)
    }

    public var streamedWeightBytes: Int {
        let perLayer = layers.reduce(0) { sum, l in
            sum + [l.q, l.k, l.v, l.o, l.gate, l.up, l.down].reduce(0) { $0 + $1.rows * $1.rowBytes }
        }
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
        for attention in batch.attention {
            try attention.validate(blockCount: cache.layers[0].blocks, blockSize: cache.options.blockSize)
        }
        workspace.reserve(tokens: n, config: c)
        let w = workspace
        let hidden = c.hiddenSize, qDim = c.headCount * c.headDim, kvDim = c.kvHeadCount * c.headDim

        for (t, id) in batch.tokens.enumerated() {
            embedding.dequantizeRow(id, into: w.hidden + t * hidden)
        }
        let options = AttentionOptions(scale: 1 / Float(c.headDim).squareRoot())
        for (index, layer) in layers.enumerated() {
            // Attention block.
            Norm.rms(w.hidden, weight: layer.attentionNorm, eps: c.rmsNormEps, into: w.normed, rows: n, n: hidden)
            MatMul.multiply(w.normed, tokens: n, fused: [(layer.q, w.q), (layer.k, w.k), (layer.v, w.v)], pool: pool)
            for t in 0 ..< n {
                let qRow = w.q + t * qDim, kRow = w.k + t * kvDim, vRow = w.v + t * kvDim
                if let b = layer.qBias { Vector.add(b, into: qRow, qDim) }
                if let b = layer.kBias { Vector.add(b, into: kRow, kvDim) }
                if let b = layer.vBias { Vector.add(b, into: vRow, kvDim) }
                if let qn = layer.qNorm, let kn = layer.kNorm {
                    Norm.rms(qRow, weight: qn, eps: c.rmsNormEps, into: qRow, rows: c.headCount, n: c.headDim)
                    Norm.rms(kRow, weight: kn, eps: c.rmsNormEps, into: kRow, rows: c.kvHeadCount, n: c.headDim)
                }
                rope.angles(position: batch.positions[t], cos: w.cos, sin: w.sin)
                rope.apply(qRow, heads: c.headCount, headDim: c.headDim, cos: w.cos, sin: w.sin)
                rope.apply(kRow, heads: c.kvHeadCount, headDim: c.headDim, cos: w.cos, sin: w.sin)
            }
            try RaggedPagedAttention.forward(
                q: w.q, newKeys: w.k, newValues: w.v, out: w.attention,
                batch: batch.attention[cache.groupOfLayer[index]], layer: cache.layers[index],
                qHeads: c.headCount, options: options, pool: pool)
            MatMul.multiply(w.attention, tokens: n, by: layer.o, into: w.normed, pool: pool)
            Vector.add(w.normed, into: w.hidden, n * hidden)

            // MLP block.
            Norm.rms(w.hidden, weight: layer.mlpNorm, eps: c.rmsNormEps, into: w.normed, rows: n, n: hidden)
            MatMul.multiply(w.normed, tokens: n, fused: [(layer.gate, w.gate), (layer.up, w.up)], pool: pool)
            Activation.swiglu(gate: w.gate, up: w.up, into: w.gate, n * c.intermediateSize)
            MatMul.multiply(w.gate, tokens: n, by: layer.down, into: w.normed, pool: pool)
            Vector.add(w.normed, into: w.hidden, n * hidden)
        }

        // Only the rows that need logits go through the final norm and the output head.
        let rows = batch.logitRows.count
        for (i, row) in batch.logitRows.enumerated() {
            Norm.rms(w.hidden + row * hidden, weight: outputNorm, eps: c.rmsNormEps, into: w.normed + i * hidden, rows: 1, n: hidden)
        }
        var logits = [Float](repeating: 0, count: rows * c.vocabSize)
        logits.withUnsafeMutableBufferPointer { out in
            MatMul.multiply(w.normed, tokens: rows, by: outputHead, into: out.baseAddress.unsafelyUnwrapped, pool: pool)
        }
        return logits
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
