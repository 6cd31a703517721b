import Foundation
import Formats
import Kernels

/// DeepSeek V2/V3: multi-head latent attention (MLA) and routed + shared experts with dense first
/// layers. The paged cache holds one vector per token and layer, `[latent, ropeKey]`
/// (`kv_lora_rank + qk_rope_head_dim` elements), never per-head keys and values.
enum DeepSeek {
    static let huggingFaceNames: [String: String] = [
        "attn_q_a.weight": "self_attn.q_a_proj.weight", "attn_q_a_norm.weight": "self_attn.q_a_layernorm.weight",
        "attn_q_b.weight": "self_attn.q_b_proj.weight",
        "attn_kv_a_mqa.weight": "self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_norm.weight": "self_attn.kv_a_layernorm.weight",
        "attn_kv_b.weight": "self_attn.kv_b_proj.weight",
        "exp_probs_b.bias": "mlp.gate.e_score_correction_bias",
    ]

    static func configureHuggingFace(_ c: inout ModelConfig, _ json: HuggingFaceJSON) throws {
        guard let latent = json.optionalInt("kv_lora_rank"), let nope = json.optionalInt("qk_nope_head_dim"),
              let ropeDim = json.optionalInt("qk_rope_head_dim"), let valueDim = json.optionalInt("v_head_dim")
        else { throw FormatError(json.path, "a DeepSeek config needs kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim and v_head_dim") }
        var scale = 1 / Float(nope + ropeDim).squareRoot()
        if case .yarn(let factor, _, _, _, _, _) = c.ropeScaling,
           let all = json.double("mscale_all_dim", in: json.object("rope_parameters") ?? json.object("rope_scaling")), all != 0 {
            let m = Float(ModelConfig.yarnMagnitude(Double(factor), all))
            scale = scale * m * m
        }
        c.mla = MLAConfig(queryRank: json.optionalInt("q_lora_rank"), latentRank: latent, noPositionDim: nope,
                          ropeDim: ropeDim, valueDim: valueDim, softmaxScale: scale)
        c.headDim = nope + ropeDim
        c.rotaryDim = ropeDim
        // rope_interleave (V3; V2 always): adjacent pairs rotate together.
        c.ropePairing = json.bool("rope_interleave") ?? true ? .adjacent : .halves
        c.kvHeadCount = c.headCount
        guard let experts = json.optionalInt("n_routed_experts"), let perToken = json.optionalInt("num_experts_per_tok") else { return }
        let width = json.optionalInt("moe_intermediate_size") ?? c.intermediateSize
        let sigmoid = json.string("scoring_func") == "sigmoid" || json.string("model_type") == "deepseek_v3"
        let method = json.string("topk_method") ?? (sigmoid ? "noaux_tc" : "greedy")
        let renormalize = json.bool("norm_topk_prob") ?? false
        let routing: MoEConfig.Routing
        switch (sigmoid, method) {
        case (true, _):
            routing = .grouped(sigmoid: true, groups: json.optionalInt("n_group") ?? 1, groupsKept: json.optionalInt("topk_group") ?? 1, renormalize: renormalize)
        case (false, "greedy"):
            routing = .softmaxTopK(renormalize: renormalize)
        default:
            throw FormatError(json.path, "unsupported DeepSeek routing \(method) with \(json.string("scoring_func") ?? "softmax") scores (supported: greedy softmax, sigmoid noaux_tc)")
        }
        var moe = MoEConfig(experts: experts, expertsPerToken: perToken, expertIntermediateSize: width, routing: routing)
        moe.routedScale = json.float("routed_scaling_factor") ?? 1
        moe.sharedIntermediateSize = (json.optionalInt("n_shared_experts") ?? 0) * width
        let firstDense = json.optionalInt("first_k_dense_replace") ?? 0
        let frequency = max(1, json.optionalInt("moe_layer_freq") ?? 1)
        moe.denseLayers = (0 ..< c.layerCount).filter { $0 < firstDense || $0 % frequency != 0 }
        c.moe = moe
    }

    /// llama.cpp's `deepseek2` keys; the softmax scale follows llama.cpp (YaRN log multiplier).
    static func configureGGUF(_ c: inout ModelConfig, _ metadata: GGUFMetadata) throws {
        let latent = try metadata.int("attention.kv_lora_rank")
        let ropeDim = try metadata.int("rope.dimension_count")
        let keyLength = metadata.optionalInt("attention.key_length_mla") ?? c.headDim
        let valueDim = metadata.optionalInt("attention.value_length_mla") ?? metadata.optionalInt("attention.value_length") ?? c.headDim
        var scale = 1 / Float(keyLength).squareRoot()
        if case .yarn(let factor, _, _, _, _, _) = c.ropeScaling, let multiplier = metadata.float("rope.scaling.yarn_log_multiplier"), multiplier > 0 {
            let m = 1 + multiplier * logf(factor)
            scale = scale * m * m
        }
        c.mla = MLAConfig(queryRank: metadata.optionalInt("attention.q_lora_rank"), latentRank: latent,
                          noPositionDim: keyLength - ropeDim, ropeDim: ropeDim, valueDim: valueDim, softmaxScale: scale)
        c.headDim = keyLength
        c.rotaryDim = ropeDim
        c.ropePairing = .adjacent
        c.kvHeadCount = c.headCount
        guard let experts = metadata.optionalInt("expert_count"), experts > 0 else { return }
        let width = try metadata.int("expert_feed_forward_length")
        let renormalize = metadata.bool("expert_weights_norm") ?? false
        let groups = metadata.optionalInt("expert_group_count") ?? 1
        // As llama.cpp: the selection bias (`exp_probs_b`) and group limits apply whichever the
        // gating function (2 = sigmoid; absent or 1 = softmax).
        let routing = MoEConfig.Routing.grouped(
            sigmoid: metadata.optionalInt("expert_gating_func") == 2, groups: groups,
            groupsKept: metadata.optionalInt("expert_group_used_count") ?? groups, renormalize: renormalize)
        var moe = MoEConfig(experts: experts, expertsPerToken: try metadata.int("expert_used_count"), expertIntermediateSize: width, routing: routing)
        moe.routedScale = metadata.float("expert_weights_scale") ?? 1
        moe.sharedIntermediateSize = (metadata.optionalInt("expert_shared_count") ?? 0) * width
        moe.denseLayers = Array(0 ..< min(c.layerCount, metadata.optionalInt("leading_dense_block_count") ?? 0))
        c.moe = moe
    }
}

/// DeepSeek's multi-head latent attention with absorbed projections (as tpu-inference's MLA
/// kernel): each head's query is moved into latent space (`q_nope · W_UK`) and joined with its
/// RoPE part, so scores are taken against the cached `[latent, ropeKey]` vectors directly (one
/// shared K/V "head"); the attention-weighted latent is then lifted by the head's `W_UV` and the
/// output projection. The same path serves prefill and decode.
struct LatentAttention {
    let mla: MLAConfig
    let heads: Int
    /// `q_a_proj` + `q_a_layernorm` + `q_b_proj`, or a single `q_proj` when `queryRank` is nil.
    let queryDown: WeightMatrix?
    let queryNorm: [Float]?
    let queryUp: WeightMatrix
    /// `[latentRank + ropeDim, hidden]` and the latent's norm.
    let kvDown: WeightMatrix
    let kvNorm: [Float]
    /// `W_UK`, `[heads, nope, latentRank]`, and `W_UV`, `[heads, valueDim, latentRank]`, in float32.
    let keyUp: [Float]
    let valueUp: [Float]
    let o: WeightMatrix
    let rope: Rope
    let normEps: Float

    init(_ names: WeightNames, layer i: Int, config c: ModelConfig, mla: MLAConfig, rope: Rope) throws {
        self.mla = mla
        heads = c.headCount
        let qkDim = mla.noPositionDim + mla.ropeDim, hidden = c.hiddenSize
        if let rank = mla.queryRank {
            queryDown = try names.matrix("attn_q_a.weight", layer: i, rows: rank, cols: hidden)
            queryNorm = try names.norm("attn_q_a_norm.weight", layer: i, count: rank)
            queryUp = try names.matrix("attn_q_b.weight", layer: i, rows: heads * qkDim, cols: rank)
        } else {
            queryDown = nil
            queryNorm = nil
            queryUp = try names.matrix("attn_q.weight", layer: i, rows: heads * qkDim, cols: hidden)
        }
        kvDown = try names.matrix("attn_kv_a_mqa.weight", layer: i, rows: mla.latentRank + mla.ropeDim, cols: hidden)
        kvNorm = try names.norm("attn_kv_a_norm.weight", layer: i, count: mla.latentRank)
        o = try names.matrix("attn_output.weight", layer: i, rows: hidden, cols: heads * mla.valueDim)
        (keyUp, valueUp) = try Self.upProjections(names, layer: i, heads: heads, mla: mla)
        self.rope = rope
        normEps = c.rmsNormEps
    }

    /// Splits the latent up-projection per head into `W_UK [heads, nope, latent]` and
    /// `W_UV [heads, value, latent]`: from `kv_b_proj [heads * (nope + value), latent]` (per head,
    /// its nope rows then its value rows), or from GGUF's split `attn_k_b [heads, latent, nope]` and
    /// `attn_v_b [heads, value, latent]`.
    static func upProjections(_ names: WeightNames, layer i: Int, heads: Int, mla: MLAConfig) throws -> ([Float], [Float]) {
        let nope = mla.noPositionDim, value = mla.valueDim, latent = mla.latentRank
        var keyUp = [Float](repeating: 0, count: heads * nope * latent)
        var valueUp = [Float](repeating: 0, count: heads * value * latent)
        if names.has("attn_kv_b.weight", layer: i) {
            let kvUp = try names.matrix("attn_kv_b.weight", layer: i, rows: heads * (nope + value), cols: latent)
            var row = [Float](repeating: 0, count: latent)
            for h in 0 ..< heads {
                for r in 0 ..< nope + value {
                    kvUp.dequantizeRow(h * (nope + value) + r, into: &row)
                    let destination = r < nope ? (h * nope + r) * latent : (h * value + r - nope) * latent
                    if r < nope { keyUp.replaceSubrange(destination ..< destination + latent, with: row) } else { valueUp.replaceSubrange(destination ..< destination + latent, with: row) }
                }
            }
            return (keyUp, valueUp)
        }
        let kB = try names.tensor("attn_k_b.weight", layer: i), vB = try names.tensor("attn_v_b.weight", layer: i)
        // Shapes, not just sizes: an untransposed `[heads, nope, latent]` attn_k_b has the same size.
        guard kB.shape == [heads, latent, nope], vB.shape == [heads, value, latent] else {
            throw FormatError(kB.path, "attn_k_b/attn_v_b of layer \(i) have shapes \(kB.shape)/\(vB.shape), expected \([heads, latent, nope])/\([heads, value, latent])")
        }
        let k = try kB.floats()
        valueUp = try vB.floats()
        // attn_k_b is [heads, latent, nope]: transpose each head to [nope, latent].
        for h in 0 ..< heads {
            for l in 0 ..< latent {
                for d in 0 ..< nope { keyUp[(h * nope + d) * latent + l] = k[(h * latent + l) * nope + d] }
            }
        }
        return (keyUp, valueUp)
    }

    var weights: [WeightMatrix] { [queryDown, queryUp, kvDown, o].compactMap { $0 } }
    var streamedBytes: Int { weights.reduce(0) { $0 + $1.rows * $1.rowBytes } + (keyUp.count + valueUp.count) * 4 }

    func forward(_ input: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>,
                 cache: LayerCacheView, _ ctx: StepContext) throws {
        let n = ctx.tokens, w = ctx.workspace
        let nope = mla.noPositionDim, ropeDim = mla.ropeDim, latent = mla.latentRank
        let qkDim = nope + ropeDim, cacheDim = latent + ropeDim
        let q = w.buffer(.q, n * heads * qkDim)
        if let down = queryDown, let norm = queryNorm {
            let compressed = w.buffer(.queryDown, n * down.rows)
            MatMul.multiply(input, tokens: n, by: down, into: compressed, pool: ctx.pool)
            Norm.rms(compressed, weight: norm, eps: normEps, into: compressed, rows: n, n: down.rows)
            MatMul.multiply(compressed, tokens: n, by: queryUp, into: q, pool: ctx.pool)
        } else {
            MatMul.multiply(input, tokens: n, by: queryUp, into: q, pool: ctx.pool)
        }
        // kv: [T, latent + rope] -> normed latent and rotated RoPE key, as cached.
        let kv = w.buffer(.latentKV, n * cacheDim)
        MatMul.multiply(input, tokens: n, by: kvDown, into: kv, pool: ctx.pool)
        let absorbed = w.buffer(.latentQuery, n * heads * cacheDim)
        let angles = w.ropeTables(rope, positions: ctx.positions)
        keyUp.withUnsafeBufferPointer { keyUp in
            let wuk = keyUp.baseAddress.unsafelyUnwrapped
            for t in 0 ..< n {
                let row = kv + t * cacheDim
                Norm.rms(row, weight: kvNorm, eps: normEps, into: row, rows: 1, n: latent)
                let cos = angles.cos + t * (rope.rotaryDim / 2), sin = angles.sin + t * (rope.rotaryDim / 2)
                rope.apply(row + latent, heads: 1, headDim: ropeDim, cos: cos, sin: sin)
                for h in 0 ..< heads {
                    let qHead = q + (t * heads + h) * qkDim
                    let target = absorbed + (t * heads + h) * cacheDim
                    // target[0 ..< latent] = sum_d q_nope[d] * W_UK[h, d, :]
                    target.update(repeating: 0, count: latent)
                    for d in 0 ..< nope {
                        Vector.addScaled(wuk + (h * nope + d) * latent, qHead[d], into: target, latent)
                    }
                    (target + latent).update(from: qHead + nope, count: ropeDim)
                    rope.apply(target + latent, heads: 1, headDim: ropeDim, cos: cos, sin: sin)
                }
            }
        }
        let attended = w.buffer(.attention, n * heads * cacheDim)
        try cache.attend(q: absorbed, keys: kv, values: kv, out: attended, tokens: n, qHeads: heads,
                         options: AttentionOptions(scale: mla.softmaxScale),
                         scratch: w.attentionScratch(tokens: n, heads: heads, headDim: cacheDim), pool: ctx.pool)
        // Per head: value = W_UV[h] · attended latent.
        let values = w.buffer(.latentOutput, n * heads * mla.valueDim)
        valueUp.withUnsafeBufferPointer { valueUp in
            let wuv = valueUp.baseAddress.unsafelyUnwrapped
            for t in 0 ..< n {
                for h in 0 ..< heads {
                    let source = attended + (t * heads + h) * cacheDim
                    let target = values + (t * heads + h) * mla.valueDim
                    for d in 0 ..< mla.valueDim {
                        target[d] = Vector.dot(wuv + (h * mla.valueDim + d) * latent, source, latent)
                    }
                }
            }
        }
        MatMul.multiply(values, tokens: n, by: o, into: output, pool: ctx.pool)
    }
}
