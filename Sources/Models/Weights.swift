import Formats
import Kernels

/// Looks tensors up by role (llama.cpp's GGUF names: `attn_q.weight`, `ffn_gate_exps.weight`, ...),
/// translating to the file's naming scheme (GGUF or the family's Hugging Face names), and turns a
/// missing or malformed tensor into a one-line error naming the file and tensor.
struct WeightNames {
    enum Scheme { case gguf, huggingFace }
    let scheme: Scheme
    let source: TensorSource
    /// The family's names that differ from the scheme's usual ones (`huggingFaceNames`, or the GGUF role).
    var familyNames: [String: String] = [:]
    /// Added to every norm weight read with `norm` (Hugging Face Gemma's `1 + w`).
    var normOffset: Float = 0
    /// The activations every matrix read from the file is multiplied with.
    var activations: ActivationPrecision = .fp32

    /// Hugging Face names of the Llama layout, by GGUF role.
    static let huggingFaceNames: [String: String] = [
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
        "attn_norm.weight": "input_layernorm.weight",
        "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
        "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
        "attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
        "attn_v.bias": "self_attn.v_proj.bias", "attn_output.bias": "self_attn.o_proj.bias",
        "attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight",
        "ffn_norm.weight": "post_attention_layernorm.weight",
        "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
        "ffn_down.weight": "mlp.down_proj.weight",
        // Mixture of experts (Qwen3-MoE / DeepSeek layout; `%d` is the expert).
        "ffn_gate_inp.weight": "mlp.gate.weight",
        "ffn_gate_exps.weight": "mlp.experts.%d.gate_proj.weight", "ffn_up_exps.weight": "mlp.experts.%d.up_proj.weight",
        "ffn_down_exps.weight": "mlp.experts.%d.down_proj.weight",
        "ffn_gate_shexp.weight": "mlp.shared_experts.gate_proj.weight", "ffn_up_shexp.weight": "mlp.shared_experts.up_proj.weight",
        "ffn_down_shexp.weight": "mlp.shared_experts.down_proj.weight",
    ]

    init(scheme: Scheme, source: TensorSource, config: ModelConfig, activations: ActivationPrecision = .fp32) {
        self.scheme = scheme
        self.source = source
        self.activations = activations
        switch scheme {
        case .huggingFace:
            familyNames = config.family.huggingFaceNames
            normOffset = config.normWeightOffset
        case .gguf:
            familyNames = config.family.ggufNames
        }
    }

    func name(_ role: String, layer: Int? = nil, expert: Int? = nil) -> String {
        switch scheme {
        case .gguf:
            let prefix = layer.map { "blk.\($0)." } ?? ""
            return prefix + (familyNames[role] ?? role)
        case .huggingFace:
            var mapped = familyNames[role] ?? Self.huggingFaceNames[role] ?? role
            if let expert { mapped = mapped.replacingOccurrences(of: "%d", with: String(expert)) }
            return layer.map { "model.layers.\($0).\(mapped)" } ?? mapped
        }
    }

    func has(_ role: String, layer: Int? = nil) -> Bool {
        source.tensor(named: name(role, layer: layer, expert: 0)) != nil
    }

    func tensor(_ role: String, layer: Int? = nil, expert: Int? = nil) throws -> TensorData {
        let n = name(role, layer: layer, expert: expert)
        guard let t = source.tensor(named: n) else {
            throw FormatError(source.sourcePath, "missing tensor '\(n)'")
        }
        return t
    }

    /// A matrix `[rows, cols]`, checked against the expected shape.
    func matrix(_ role: String, layer: Int? = nil, rows: Int, cols: Int) throws -> WeightMatrix {
        try checked(try WeightMatrix(try tensor(role, layer: layer), activations: activations), rows: rows, cols: cols, path: source.sourcePath)
    }

    /// The `[rows, cols]` matrix of each of `count` experts: slices of one stacked
    /// `[experts, rows, cols]` GGUF tensor, or one Hugging Face tensor per expert.
    func expertMatrices(_ role: String, layer: Int, count: Int, rows: Int, cols: Int) throws -> [WeightMatrix] {
        switch scheme {
        case .gguf:
            let stacked = try tensor(role, layer: layer)
            guard stacked.shape.count == 3, stacked.shape[0] == count else {
                throw FormatError(stacked.path, "tensor '\(stacked.name)' has shape \(stacked.shape), expected [\(count), \(rows), \(cols)]")
            }
            return try (0 ..< count).map { e in
                guard let slice = stacked.slice(e) else {
                    throw FormatError(stacked.path, "tensor '\(stacked.name)' cannot be split into \(count) experts")
                }
                return try checked(try WeightMatrix(slice, activations: activations), rows: rows, cols: cols, path: stacked.path)
            }
        case .huggingFace:
            return try (0 ..< count).map { e in
                try checked(try WeightMatrix(try tensor(role, layer: layer, expert: e), activations: activations), rows: rows, cols: cols, path: source.sourcePath)
            }
        }
    }

    /// Each expert's `length`-element vector (expert biases) from one stacked `[experts, length]` tensor.
    func expertVectors(_ role: String, layer: Int, count: Int, length: Int) throws -> [[Float]] {
        let all = try vector(role, layer: layer, count: count * length)
        return (0 ..< count).map { Array(all[$0 * length ..< ($0 + 1) * length]) }
    }

    /// `m`, multiplied with this model's activations, once its shape is checked.
    func checked(_ m: WeightMatrix, rows: Int, cols: Int, path: String) throws -> WeightMatrix {
        guard m.rows == rows, m.cols == cols else {
            throw FormatError(path, "tensor '\(m.name)' has shape [\(m.rows), \(m.cols)], expected [\(rows), \(cols)]")
        }
        return m.using(activations: activations)
    }

    /// A float vector of `count` elements.
    func vector(_ role: String, layer: Int? = nil, count: Int) throws -> [Float] {
        let t = try tensor(role, layer: layer)
        guard t.elementCount == count else {
            throw FormatError(t.path, "tensor '\(t.name)' has \(t.elementCount) elements, expected \(count)")
        }
        return try t.floats()
    }

    func optionalVector(_ role: String, layer: Int? = nil, count: Int) throws -> [Float]? {
        has(role, layer: layer) ? try vector(role, layer: layer, count: count) : nil
    }

    /// An RMSNorm weight, with the file's offset applied (so every norm computes `x * w`).
    func norm(_ role: String, layer: Int? = nil, count: Int) throws -> [Float] {
        let w = try vector(role, layer: layer, count: count)
        return normOffset == 0 ? w : w.map { $0 + normOffset }
    }
}
