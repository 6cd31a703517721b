import Foundation
import Formats
import Kernels

/// GPT-OSS: attention with per-head sinks and Q/K/V/O biases on alternating sliding/full layers,
/// YaRN RoPE, and a mixture of clamped-SwiGLU experts with biases (top-k of the router logits,
/// softmax over the k).
enum GptOss {
    static let huggingFaceNames: [String: String] = [
        "attn_sinks.weight": "self_attn.sinks",
        "ffn_gate_inp.weight": "mlp.router.weight", "ffn_gate_inp.bias": "mlp.router.bias",
    ]
    /// GGUF names that differ from the other families': the pre-MLP norm keeps HF's name.
    static let ggufNames: [String: String] = ["ffn_norm.weight": "post_attention_norm.weight"]

    static func configureCommon(_ c: inout ModelConfig, experts: Int, perToken: Int, width: Int, limit: Float, alpha: Float) {
        c.attentionSinks = true
        c.attentionBias = true
        c.outputProjectionBias = true
        c.activation = .clampedSwiglu(limit: limit, alpha: alpha)
        var moe = MoEConfig(experts: experts, expertsPerToken: perToken, expertIntermediateSize: width, routing: .topKSoftmax)
        moe.biases = true
        c.moe = moe
    }

    static func configureHuggingFace(_ c: inout ModelConfig, _ json: HuggingFaceJSON) throws {
        guard let experts = json.optionalInt("num_local_experts"), let perToken = json.optionalInt("num_experts_per_tok") else {
            throw FormatError(json.path, "a GPT-OSS config needs num_local_experts and num_experts_per_tok")
        }
        configureCommon(&c, experts: experts, perToken: perToken, width: c.intermediateSize,
                        limit: json.float("swiglu_limit") ?? 7, alpha: json.float("swiglu_alpha") ?? 1.702)
    }

    /// llama.cpp fixes the clamp (7.0, alpha 1.702) and slides on even layers.
    static func configureGGUF(_ c: inout ModelConfig, _ metadata: GGUFMetadata) throws {
        let width = try metadata.int("expert_feed_forward_length")
        configureCommon(&c, experts: try metadata.int("expert_count"), perToken: try metadata.int("expert_used_count"),
                        width: width, limit: 7, alpha: 1.702)
        if c.intermediateSize == 0 { c.intermediateSize = width }
        if let window = metadata.optionalInt("attention.sliding_window"), window > 0 {
            c.slidingWindow = window
            c.slidingLayers = (0 ..< c.layerCount).map { $0 % 2 == 0 }
        }
    }

    /// The experts of layer `i` from Hugging Face's fused float tensors: `gate_up_proj [E, hidden, 2I]`
    /// used as `x @ W` with gate and up interleaved along the last axis (gate = even columns),
    /// `down_proj [E, I, hidden]`, and their biases. Transposed here to `[out, in]` matrices.
    static func huggingFaceExperts(_ names: WeightNames, layer i: Int, config c: ModelConfig, moe: MoEConfig) throws -> [GatedMLP] {
        let hidden = c.hiddenSize, width = moe.expertIntermediateSize, e = moe.experts
        let prefix = "model.layers.\(i).mlp.experts."
        func floats(_ suffix: String, _ count: Int) throws -> [Float] {
            guard let t = names.source.tensor(named: prefix + suffix) else {
                throw FormatError(names.source.sourcePath, "missing tensor '\(prefix + suffix)' (MXFP4 `_blocks` checkpoints are not supported from Hugging Face folders; use a GGUF)")
            }
            guard t.elementCount == count else {
                throw FormatError(t.path, "tensor '\(t.name)' has \(t.elementCount) elements, expected \(count)")
            }
            return try t.floats()
        }
        let gateUp = try floats("gate_up_proj", e * hidden * 2 * width)
        let gateUpBias = try floats("gate_up_proj_bias", e * 2 * width)
        let down = try floats("down_proj", e * width * hidden)
        let downBias = try floats("down_proj_bias", e * hidden)
        return try (0 ..< e).map { x in
            var gate = [Float](repeating: 0, count: width * hidden), up = gate
            for h in 0 ..< hidden {
                for j in 0 ..< width {
                    gate[j * hidden + h] = gateUp[(x * hidden + h) * 2 * width + 2 * j]
                    up[j * hidden + h] = gateUp[(x * hidden + h) * 2 * width + 2 * j + 1]
                }
            }
            var downT = [Float](repeating: 0, count: hidden * width)
            for j in 0 ..< width {
                for h in 0 ..< hidden { downT[h * width + j] = down[(x * width + j) * hidden + h] }
            }
            let biasBase = x * 2 * width
            return GatedMLP(
                gate: try WeightMatrix(name: "\(prefix)\(x).gate", rows: width, cols: hidden, floats: gate),
                up: try WeightMatrix(name: "\(prefix)\(x).up", rows: width, cols: hidden, floats: up),
                down: try WeightMatrix(name: "\(prefix)\(x).down", rows: hidden, cols: width, floats: downT),
                activation: c.activation,
                gateBias: (0 ..< width).map { gateUpBias[biasBase + 2 * $0] },
                upBias: (0 ..< width).map { gateUpBias[biasBase + 2 * $0 + 1] },
                downBias: Array(downBias[x * hidden ..< (x + 1) * hidden]))
        }
    }
}
