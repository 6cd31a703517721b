import Formats

/// The model families Pagoda implements. All run on `DecoderTransformer`; a family decides how its
/// config and tensor names are read (the per-family files: `Llama.swift`, `Gemma.swift`,
/// `MixtureOfExperts.swift`, `DeepSeek.swift`, `GptOss.swift`).
public enum ModelFamily: String, Sendable, CaseIterable {
    /// Llama 2/3.x, SmolLM2, Mistral, TinyLlama: RMSNorm, RoPE, GQA, SwiGLU.
    case llama
    /// Qwen2: the Llama block with biases on Q, K and V.
    case qwen2
    /// Qwen3: the Llama block with RMSNorm on each Q and K head.
    case qwen3
    /// Mixtral: the Llama block with a softmax-routed mixture of SwiGLU experts.
    case mixtral
    /// Qwen3-MoE: Qwen3 attention with a mixture of experts.
    case qwen3Moe
    /// Gemma 2: sandwich norms, GeGLU, alternating sliding/global layers, logit soft-capping.
    case gemma2
    /// Gemma 3 (text): Gemma 2's block with qk-norm, local/global RoPE bases, 5:1 sliding layers.
    case gemma3
    /// DeepSeek V2/V3: multi-head latent attention over a compressed cache, routed + shared experts.
    case deepseek
    /// GPT-OSS: attention sinks, alternating sliding/full layers, clamped-SwiGLU experts.
    case gptOss

    /// Hugging Face tensor names that differ from the Llama layout.
    var huggingFaceNames: [String: String] {
        switch self {
        case .llama, .qwen2, .qwen3, .qwen3Moe: [:]
        case .mixtral: MixtralNames.huggingFace
        case .gemma2, .gemma3: Gemma.huggingFaceNames
        case .deepseek: DeepSeek.huggingFaceNames
        case .gptOss: GptOss.huggingFaceNames
        }
    }

    /// GGUF tensor names that differ from the other families'.
    var ggufNames: [String: String] {
        self == .gptOss ? GptOss.ggufNames : [:]
    }

    /// Reads the family's own GGUF metadata into `config`.
    func configureGGUF(_ config: inout ModelConfig, _ metadata: GGUFMetadata) throws {
        switch self {
        case .llama, .qwen2, .qwen3: break
        case .mixtral, .qwen3Moe: try MixtureOfExperts.configureGGUF(&config, metadata)
        case .gemma2, .gemma3: Gemma.configureGGUF(&config, metadata)
        case .deepseek: try DeepSeek.configureGGUF(&config, metadata)
        case .gptOss: try GptOss.configureGGUF(&config, metadata)
        }
    }

    /// Reads the family's own `config.json` keys into `config`.
    func configureHuggingFace(_ config: inout ModelConfig, _ json: HuggingFaceJSON) throws {
        switch self {
        case .llama, .qwen2, .qwen3: break
        case .mixtral, .qwen3Moe: try MixtureOfExperts.configureHuggingFace(&config, json)
        case .gemma2, .gemma3: try Gemma.configureHuggingFace(&config, json)
        case .deepseek: try DeepSeek.configureHuggingFace(&config, json)
        case .gptOss: try GptOss.configureHuggingFace(&config, json)
        }
    }
}

/// Maps the architecture names written in model files to implementations.
public enum ModelRegistry {
    /// GGUF `general.architecture` values (a `llama` file with experts is Mixtral).
    static let ggufArchitectures: [String: ModelFamily] = [
        "llama": .llama, "mistral": .llama, "qwen2": .qwen2, "qwen3": .qwen3, "qwen3moe": .qwen3Moe,
        "gemma2": .gemma2, "gemma3": .gemma3, "deepseek2": .deepseek, "gpt-oss": .gptOss,
    ]
    /// Hugging Face `architectures[0]` values.
    static let huggingFaceArchitectures: [String: ModelFamily] = [
        "LlamaForCausalLM": .llama, "MistralForCausalLM": .llama, "MixtralForCausalLM": .mixtral,
        "Qwen2ForCausalLM": .qwen2, "Qwen3ForCausalLM": .qwen3, "Qwen3MoeForCausalLM": .qwen3Moe,
        "Gemma2ForCausalLM": .gemma2, "Gemma3ForCausalLM": .gemma3,
        "DeepseekV2ForCausalLM": .deepseek, "DeepseekV3ForCausalLM": .deepseek, "GptOssForCausalLM": .gptOss,
    ]
    /// Hugging Face `model_type` values, for configs whose `architectures` names a wrapper class.
    static let huggingFaceModelTypes: [String: ModelFamily] = [
        "llama": .llama, "mistral": .llama, "mixtral": .mixtral, "qwen2": .qwen2, "qwen3": .qwen3,
        "qwen3_moe": .qwen3Moe, "gemma2": .gemma2, "gemma3_text": .gemma3,
        "deepseek_v2": .deepseek, "deepseek_v3": .deepseek, "gpt_oss": .gptOss,
    ]

    static func family(forGGUFArchitecture name: String, path: String) throws -> ModelFamily {
        guard let family = ggufArchitectures[name] else {
            throw FormatError(path, "unsupported architecture '\(name)' (supported: \(ggufArchitectures.keys.sorted().joined(separator: ", ")))")
        }
        return family
    }

    static func family(forHuggingFace architecture: String, modelType: String?, path: String) throws -> ModelFamily {
        if let family = huggingFaceArchitectures[architecture] { return family }
        guard let type = modelType, let family = huggingFaceModelTypes[type], architecture.hasSuffix("ForCausalLM") || architecture == type else {
            throw FormatError(path, "unsupported architecture '\(architecture)' (supported: \(huggingFaceArchitectures.keys.sorted().joined(separator: ", ")))")
        }
        return family
    }
}
