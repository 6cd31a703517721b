import Foundation
import Formats

/// Gemma 2 and Gemma 3 (text): the decoder with norms before and after attention and MLP, GeGLU,
/// embeddings scaled by sqrt(hidden), a softmax scale from `query_pre_attn_scalar`, sliding-window
/// layers (Gemma 2: every other layer; Gemma 3: five of every six) and soft-capped logits. Gemma 3
/// adds qk-norm and a separate RoPE base for its sliding layers.
enum Gemma {
    /// Hugging Face names: Gemma's `post_attention_layernorm` follows the attention (Llama's is the
    /// pre-MLP norm, here `pre_feedforward_layernorm`).
    static let huggingFaceNames: [String: String] = [
        "post_attention_norm.weight": "post_attention_layernorm.weight",
        "ffn_norm.weight": "pre_feedforward_layernorm.weight",
        "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    ]

    /// Gemma's turn format (`<start_of_turn>user` / `model`, each turn closed by `<end_of_turn>`; a
    /// system message is folded into the first user turn), for instruction-tuned Gemma GGUF files
    /// that ship no template.
    static let chatTemplate = """
        {{ bos_token }}
        {%- if messages[0]['role'] == 'system' -%}
            {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
            {%- set loop_messages = messages[1:] -%}
        {%- else -%}
            {%- set first_user_prefix = "" -%}
            {%- set loop_messages = messages -%}
        {%- endif -%}
        {%- for message in loop_messages -%}
            {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
                {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
            {%- endif -%}
            {%- set role = "model" if message['role'] == 'assistant' else message['role'] -%}
            {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
            {{- message['content'] | trim }}
            {{- '<end_of_turn>\\n' }}
        {%- endfor -%}
        {%- if add_generation_prompt -%}
            {{ '<start_of_turn>model\\n' }}
        {%- endif -%}
        """

    /// Every Gemma: sandwich norms, GeGLU, scaled embeddings, tied output head.
    static func configureCommon(_ c: inout ModelConfig) {
        c.sandwichNorms = true
        c.activation = .geluTanh
        c.embeddingScale = Float(Double(c.hiddenSize).squareRoot())
    }

    /// Layers that slide when the file gives no list: Gemma 2 alternates starting with a sliding
    /// layer; Gemma 3 makes every `pattern`-th layer global.
    static func defaultSlidingLayers(family: ModelFamily, layers: Int, pattern: Int = 6) -> [Bool] {
        (0 ..< layers).map { i in family == .gemma2 ? i % 2 == 0 : (i + 1) % max(1, pattern) != 0 }
    }

    static func configureHuggingFace(_ c: inout ModelConfig, _ json: HuggingFaceJSON) throws {
        configureCommon(&c)
        // transformers computes `1 + w` in float32 for every Gemma RMSNorm (q/k norms included).
        c.normWeightOffset = 1
        c.tieEmbeddings = json.bool("tie_word_embeddings") ?? true
        if let scalar = json.double("query_pre_attn_scalar"), scalar > 0 {
            c.attentionScale = Float(pow(scalar, -0.5))
        }
        c.finalSoftCap = json.float("final_logit_softcapping")
        if c.family == .gemma2 {
            // transformers' Gemma 3 ignores attn_logit_softcapping; Gemma 2 applies it.
            c.attentionSoftCap = json.float("attn_logit_softcapping")
        } else {
            c.qkNorm = true
            if let local = json.object("rope_parameters")?["sliding_attention"] as? [String: Any] {
                c.slidingRope = try json.ropeSettings(local)
            } else {
                c.slidingRope = RopeSettings(theta: json.float("rope_local_base_freq") ?? 10000)
            }
        }
        if c.slidingWindow == nil, let window = json.optionalInt("sliding_window"), window > 0, json.object["layer_types"] == nil {
            c.slidingWindow = window
            c.slidingLayers = defaultSlidingLayers(family: c.family, layers: c.layerCount,
                                                   pattern: json.optionalInt("sliding_window_pattern") ?? 6)
        }
    }

    /// llama.cpp's converter has already added 1 to the norm weights; the layer pattern and the
    /// softmax scale are llama.cpp's fixed per-family values. Gemma 3's local RoPE base is
    /// `rope.freq_base_swa` (written by current converters from `rope_parameters`), else 10000.
    static func configureGGUF(_ c: inout ModelConfig, _ metadata: GGUFMetadata) {
        configureCommon(&c)
        c.tieEmbeddings = !metadata.hasTensor("output.weight")
        // llama.cpp's defaults: Gemma 2 slides over 4096 keys when the file names no window; the
        // layer pattern is a per-layer bool array, a period, or the family's own.
        let window = metadata.optionalInt("attention.sliding_window") ?? (c.family == .gemma2 ? 4096 : nil)
        if let window, window > 0 {
            c.slidingWindow = window
            if let flags = metadata.value("attention.sliding_window_pattern")?.array?.compactMap(\.bool), flags.count == c.layerCount {
                c.slidingLayers = flags
            } else {
                c.slidingLayers = defaultSlidingLayers(family: c.family, layers: c.layerCount,
                                                       pattern: metadata.optionalInt("attention.sliding_window_pattern") ?? 6)
            }
        }
        c.finalSoftCap = metadata.float("final_logit_softcapping")
        // The 27B models scale by (hidden / heads)^-0.5 instead of headDim^-0.5.
        let is27B = (c.family == .gemma2 && c.layerCount == 46) || (c.family == .gemma3 && c.layerCount == 62)
        c.attentionScale = 1 / Float(is27B ? c.hiddenSize / c.headCount : c.headDim).squareRoot()
        if c.family == .gemma2 {
            c.attentionSoftCap = metadata.float("attn_logit_softcapping")
        } else if c.slidingRope == nil {
            c.slidingRope = RopeSettings(theta: 10000)
        }
    }
}
