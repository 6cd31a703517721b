import Formats

/// The model implementations Pagoda has; each maps to one forward pass.
public enum ModelFamily: String, Sendable, CaseIterable {
    /// Llama 2/3.x, SmolLM2, Mistral, TinyLlama: RMSNorm, RoPE, GQA, SwiGLU.
    case llama
    /// Qwen2: the Llama block with biases on Q, K and V.
    case qwen2
    /// Qwen3: the Llama block with RMSNorm on each Q and K head.
    case qwen3
}

/// Maps the architecture names written in model files to implementations.
public enum ModelRegistry {
    /// GGUF `general.architecture` values.
    static let ggufArchitectures: [String: ModelFamily] = [
        "llama": .llama, "mistral": .llama, "qwen2": .qwen2, "qwen3": .qwen3,
    ]
    /// Hugging Face `architectures[0]` values.
    static let huggingFaceArchitectures: [String: ModelFamily] = [
        "LlamaForCausalLM": .llama, "MistralForCausalLM": .llama,
        "Qwen2ForCausalLM": .qwen2, "Qwen3ForCausalLM": .qwen3,
    ]

    static func family(forGGUFArchitecture name: String, path: String) throws -> ModelFamily {
        guard let family = ggufArchitectures[name] else {
            throw FormatError(path, "unsupported architecture '\(name)' (supported: \(ggufArchitectures.keys.sorted().joined(separator: ", ")))")
        }
        return family
    }

    static func family(forHuggingFace architecture: String, modelType: String?, path: String) throws -> ModelFamily {
        if let family = huggingFaceArchitectures[architecture] { return family }
        guard let type = modelType, let family = ggufArchitectures[type], architecture.hasSuffix("ForCausalLM") || architecture == type else {
            throw FormatError(path, "unsupported architecture '\(architecture)' (supported: \(huggingFaceArchitectures.keys.sorted().joined(separator: ", ")))")
        }
        return family
    }
}
