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

    /// The experts of layer `i` from Hugging Face's fused tensors: float `gate_up_proj [E, hidden, 2I]`
    /// used as `x @ W` with gate and up interleaved along the last axis (gate = even columns),
    /// `down_proj [E, I, hidden]` (transposed here to `[out, in]` matrices), or the MXFP4 `*_blocks`
    /// and `*_scales` of openai/gpt-oss checkpoints (see `mxfp4Experts`); and their float biases.
    static func huggingFaceExperts(_ names: WeightNames, layer i: Int, config c: ModelConfig, moe: MoEConfig) throws -> [GatedMLP] {
        let hidden = c.hiddenSize, width = moe.expertIntermediateSize, e = moe.experts
        let prefix = "model.layers.\(i).mlp.experts."
        func floats(_ suffix: String, _ count: Int) throws -> [Float] {
            let t = try tensor(names, prefix + suffix)
            guard t.elementCount == count else {
                throw FormatError(t.path, "tensor '\(t.name)' has \(t.elementCount) elements, expected \(count)")
            }
            return try t.floats()
        }
        let gateUpBias = try floats("gate_up_proj_bias", e * 2 * width)
        let downBias = try floats("down_proj_bias", e * hidden)
        let matrices: [(gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix)]
        if names.source.tensor(named: prefix + "gate_up_proj_blocks") != nil {
            matrices = try mxfp4Experts(names, prefix: prefix, experts: e, hidden: hidden, width: width)
        } else {
            let gateUp = try floats("gate_up_proj", e * hidden * 2 * width)
            let down = try floats("down_proj", e * width * hidden)
            matrices = try (0 ..< e).map { x in
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
                return (try WeightMatrix(name: "\(prefix)\(x).gate", rows: width, cols: hidden, floats: gate),
                        try WeightMatrix(name: "\(prefix)\(x).up", rows: width, cols: hidden, floats: up),
                        try WeightMatrix(name: "\(prefix)\(x).down", rows: hidden, cols: width, floats: downT))
            }
        }
        return (0 ..< e).map { x in
            let biasBase = x * 2 * width
            return GatedMLP(
                gate: matrices[x].gate, up: matrices[x].up, down: matrices[x].down,
                activation: c.activation,
                gateBias: (0 ..< width).map { gateUpBias[biasBase + 2 * $0] },
                upBias: (0 ..< width).map { gateUpBias[biasBase + 2 * $0 + 1] },
                downBias: Array(downBias[x * hidden ..< (x + 1) * hidden]))
        }
    }

    /// Each expert's gate, up and down matrices from MXFP4 tensors, repacked to ggml `block_mxfp4`
    /// (`MXFP4.ggmlBlocks`) without dequantizing: `gate_up_proj_blocks [E, 2I, hidden/32, 16]` and
    /// `gate_up_proj_scales [E, 2I, hidden/32]` hold one row per output feature, gate and up
    /// interleaved (even rows gate, odd rows up); `down_proj_blocks [E, hidden, I/32, 16]` and
    /// `down_proj_scales [E, hidden, I/32]`. All are U8.
    static func mxfp4Experts(_ names: WeightNames, prefix: String, experts e: Int, hidden: Int, width: Int) throws
        -> [(gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix)] {
        guard hidden % 32 == 0, width % 32 == 0 else {
            throw FormatError(names.source.sourcePath, "MXFP4 experts need hidden size (\(hidden)) and expert width (\(width)) to be multiples of 32")
        }
        func bytes(_ suffix: String, _ shape: [Int]) throws -> TensorData {
            let t = try tensor(names, prefix + suffix)
            guard t.type == .i8, t.shape == shape else {
                throw FormatError(t.path, "tensor '\(t.name)' has type \(t.type) and shape \(t.shape), expected U8 \(shape)")
            }
            return t
        }
        let gateUpBlocks = try bytes("gate_up_proj_blocks", [e, 2 * width, hidden / 32, 16])
        let gateUpScales = try bytes("gate_up_proj_scales", [e, 2 * width, hidden / 32])
        let downBlocks = try bytes("down_proj_blocks", [e, hidden, width / 32, 16])
        let downScales = try bytes("down_proj_scales", [e, hidden, width / 32])
        /// Rows `rows` of expert `x` (of `count` rows of `cols` inputs each) as one MXFP4 matrix.
        func matrix(_ blocks: TensorData, _ scales: TensorData, expert x: Int, rows: StrideTo<Int>, of count: Int, cols: Int, name: String) throws -> WeightMatrix {
            let groups = cols / 32
            var rowBlocks: [UInt8] = [], rowScales: [UInt8] = []
            for r in rows {
                let row = x * count + r
                rowBlocks.append(contentsOf: blocks.bytes[row * groups * 16 ..< (row + 1) * groups * 16])
                rowScales.append(contentsOf: scales.bytes[row * groups ..< (row + 1) * groups])
            }
            let n = rowScales.count / groups
            let packed = try MXFP4.ggmlBlocks(fromHuggingFaceBlocks: rowBlocks, scales: rowScales, rows: n, cols: cols, name: name)
            return try WeightMatrix(name: name, type: .mxfp4, rows: n, cols: cols, bytes: packed)
        }
        return try (0 ..< e).map { x in
            (try matrix(gateUpBlocks, gateUpScales, expert: x, rows: stride(from: 0, to: 2 * width, by: 2), of: 2 * width, cols: hidden, name: "\(prefix)\(x).gate"),
             try matrix(gateUpBlocks, gateUpScales, expert: x, rows: stride(from: 1, to: 2 * width, by: 2), of: 2 * width, cols: hidden, name: "\(prefix)\(x).up"),
             try matrix(downBlocks, downScales, expert: x, rows: stride(from: 0, to: hidden, by: 1), of: hidden, cols: width, name: "\(prefix)\(x).down"))
        }
    }

    /// Tensor `name` of the folder, or an error naming it.
    static func tensor(_ names: WeightNames, _ name: String) throws -> TensorData {
        guard let t = names.source.tensor(named: name) else {
            throw FormatError(names.source.sourcePath, "missing tensor '\(name)' (GPT-OSS experts need float gate_up_proj/down_proj or MXFP4 *_blocks and *_scales, and their biases)")
        }
        return t
    }
}
