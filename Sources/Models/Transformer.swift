import Formats
import Kernels

/// Which positions of a forward pass need logits.
public enum LogitsSelection: Sendable {
    /// Every input position (scoring).
    case all
    /// Only the last input position (generation).
    case last
}

/// A causal language model: token ids in, next-token logits out, K/V kept in a cache.
public protocol CausalLanguageModel: AnyObject, Sendable {
    var config: ModelConfig { get }
    /// A cache for one sequence of up to `capacity` tokens.
    func makeCache(capacity: Int) -> SequenceKVCache
    /// Runs `tokens` after the cache's current contents and appends their K/V to it.
    /// Returns logits `[positions, vocab]` for the selected positions.
    func forward(tokens: [Int], cache: SequenceKVCache, logits: LogitsSelection) throws -> [Float]
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
/// `forward` is not reentrant: one caller at a time (the engine's step loop).
public final class DecoderTransformer: CausalLanguageModel, @unchecked Sendable {
    public let config: ModelConfig
    let embedding: WeightMatrix
    let layers: [DecoderLayerWeights]
    let outputNorm: [Float]
    let outputHead: WeightMatrix
    let rope: Rope
    let pool: WorkerPool
    let workspace = ForwardWorkspace()
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

    public func makeCache(capacity: Int) -> SequenceKVCache {
        SequenceKVCache(layers: config.layerCount, capacity: capacity, kvHeads: config.kvHeadCount, headDim: config.headDim)
    }

    public func forward(tokens: [Int], cache: SequenceKVCache, logits selection: LogitsSelection) throws -> [Float] {
        let c = config
        let n = tokens.count
        guard n > 0 else { return [] }
        guard cache.count + n <= cache.capacity else {
            throw ModelError.contextOverflow(needed: cache.count + n, capacity: cache.capacity)
        }
        for id in tokens where id < 0 || id >= c.vocabSize {
            throw ModelError.invalidToken(id, vocabularySize: c.vocabSize)
        }
        workspace.reserve(tokens: n, config: c)
        let w = workspace
        let hidden = c.hiddenSize, qDim = c.headCount * c.headDim, kvDim = c.kvHeadCount * c.headDim
        let start = cache.count

        for (t, id) in tokens.enumerated() {
            embedding.dequantizeRow(id, into: w.hidden + t * hidden)
        }
        let scale = 1 / Float(c.headDim).squareRoot()
        for (index, layer) in layers.enumerated() {
            // Attention block.
            Norm.rms(w.hidden, weight: layer.attentionNorm, eps: c.rmsNormEps, into: w.normed, rows: n, n: hidden)
            MatMul.multiply(w.normed, tokens: n, by: layer.q, into: w.q, pool: pool)
            let keys = cache.keys(layer: index), values = cache.values(layer: index)
            // New K and V go straight into the cache rows after the existing history.
            MatMul.multiply(w.normed, tokens: n, by: layer.k, into: keys + start * kvDim, pool: pool)
            MatMul.multiply(w.normed, tokens: n, by: layer.v, into: values + start * kvDim, pool: pool)
            for t in 0 ..< n {
                let qRow = w.q + t * qDim, kRow = keys + (start + t) * kvDim, vRow = values + (start + t) * kvDim
                if let b = layer.qBias { Vector.add(b, into: qRow, qDim) }
                if let b = layer.kBias { Vector.add(b, into: kRow, kvDim) }
                if let b = layer.vBias { Vector.add(b, into: vRow, kvDim) }
                if let qn = layer.qNorm, let kn = layer.kNorm {
                    Norm.rms(qRow, weight: qn, eps: c.rmsNormEps, into: qRow, rows: c.headCount, n: c.headDim)
                    Norm.rms(kRow, weight: kn, eps: c.rmsNormEps, into: kRow, rows: c.kvHeadCount, n: c.headDim)
                }
                rope.angles(position: start + t, cos: w.cos, sin: w.sin)
                rope.apply(qRow, heads: c.headCount, headDim: c.headDim, cos: w.cos, sin: w.sin)
                rope.apply(kRow, heads: c.kvHeadCount, headDim: c.headDim, cos: w.cos, sin: w.sin)
            }
            Attention.causal(
                q: w.q, keys: keys, values: values, out: w.attention, tokens: n, start: start,
                qHeads: c.headCount, kvHeads: c.kvHeadCount, headDim: c.headDim, scale: scale, pool: pool)
            MatMul.multiply(w.attention, tokens: n, by: layer.o, into: w.normed, pool: pool)
            Vector.add(w.normed, into: w.hidden, n * hidden)

            // MLP block.
            Norm.rms(w.hidden, weight: layer.mlpNorm, eps: c.rmsNormEps, into: w.normed, rows: n, n: hidden)
            MatMul.multiply(w.normed, tokens: n, by: layer.gate, into: w.gate, pool: pool)
            MatMul.multiply(w.normed, tokens: n, by: layer.up, into: w.up, pool: pool)
            Activation.swiglu(gate: w.gate, up: w.up, into: w.gate, n * c.intermediateSize)
            MatMul.multiply(w.gate, tokens: n, by: layer.down, into: w.normed, pool: pool)
            Vector.add(w.normed, into: w.hidden, n * hidden)
        }
        cache.advance(by: n)

        let first = selection == .all ? 0 : n - 1
        let rows = n - first
        Norm.rms(w.hidden + first * hidden, weight: outputNorm, eps: c.rmsNormEps, into: w.normed, rows: rows, n: hidden)
        var logits = [Float](repeating: 0, count: rows * c.vocabSize)
        logits.withUnsafeMutableBufferPointer { out in
            MatMul.multiply(w.normed, tokens: rows, by: outputHead, into: out.baseAddress.unsafelyUnwrapped, pool: pool)
        }
        return logits
    }
}

/// Errors from running a model on bad input.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case contextOverflow(needed: Int, capacity: Int)
    case invalidToken(Int, vocabularySize: Int)

    public var description: String {
        switch self {
        case .contextOverflow(let needed, let capacity):
            "sequence of \(needed) tokens does not fit the context of \(capacity) tokens"
        case .invalidToken(let id, let vocab):
            "token id \(id) is outside the vocabulary (0..<\(vocab))"
        }
    }
}
