import Formats
import Kernels

/// Looks tensors up by role, translating to the file's naming scheme (GGUF or Hugging Face),
/// and turns a missing or malformed tensor into a one-line error naming the file and tensor.
struct WeightNames {
    enum Scheme { case gguf, huggingFace }
    let scheme: Scheme
    let source: TensorSource

    func name(_ role: String, layer: Int? = nil) -> String {
        switch scheme {
        case .gguf:
            let prefix = layer.map { "blk.\($0)." } ?? ""
            return prefix + role
        case .huggingFace:
            let map: [String: String] = [
                "token_embd.weight": "model.embed_tokens.weight",
                "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight",
                "attn_norm.weight": "input_layernorm.weight",
                "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
                "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
                "attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
                "attn_v.bias": "self_attn.v_proj.bias",
                "attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight",
                "ffn_norm.weight": "post_attention_layernorm.weight",
                "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
                "ffn_down.weight": "mlp.down_proj.weight",
            ]
            let mapped = map[role] ?? role
            return layer.map { "model.layers.\($0).\(mapped)" } ?? mapped
        }
    }

    func has(_ role: String, layer: Int? = nil) -> Bool {
        source.tensor(named: name(role, layer: layer)) != nil
    }

    func tensor(_ role: String, layer: Int? = nil) throws -> TensorData {
        let n = name(role, layer: layer)
        guard let t = source.tensor(named: n) else {
            throw FormatError(source.sourcePath, "missing tensor '\(n)'")
        }
        return t
    }

    /// A matrix `[rows, cols]`, checked against the expected shape.
    func matrix(_ role: String, layer: Int? = nil, rows: Int, cols: Int) throws -> WeightMatrix {
        let t = try tensor(role, layer: layer)
        let m = try WeightMatrix(t)
        guard m.rows == rows, m.cols == cols else {
            throw FormatError(t.path, "tensor '\(t.name)' has shape [\(m.rows), \(m.cols)], expected [\(rows), \(cols)]")
        }
        return m
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
}
