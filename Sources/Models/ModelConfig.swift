import Foundation
import Formats
import Kernels

/// How RoPE frequencies are scaled for long context.
public enum RopeScaling: Sendable, Equatable {
    case none
    /// Positions divided by `factor` (all frequencies divided by it).
    case linear(factor: Float)
    /// Llama 3.x smooth interpolation between original and scaled frequencies.
    case llama3(factor: Float, lowFrequencyFactor: Float, highFrequencyFactor: Float, originalContext: Int)
}

/// The hyper-parameters of a decoder-only transformer, whatever file they came from.
public struct ModelConfig: Sendable {
    /// The implementation family (see `ModelRegistry`).
    public var family: ModelFamily
    /// The architecture string as the file wrote it (`llama`, `Qwen2ForCausalLM`, ...).
    public var architecture: String
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    public var rmsNormEps: Float
    public var contextLength: Int
    public var ropeTheta: Float
    public var ropeScaling: RopeScaling
    public var ropePairing: Rope.Pairing
    public var rotaryDim: Int
    /// Q, K and V projections carry biases (Qwen2).
    public var attentionBias: Bool
    /// RMSNorm over each head of Q and K before RoPE (Qwen3).
    public var qkNorm: Bool
    /// The output head reuses the embedding matrix.
    public var tieEmbeddings: Bool

    /// Checks the values make sense together; throws a `FormatError` naming `path` otherwise.
    func validated(path: String) throws -> ModelConfig {
        func require(_ condition: Bool, _ message: String) throws {
            if !condition { throw FormatError(path, message) }
        }
        try require(vocabSize > 0 && hiddenSize > 0 && intermediateSize > 0 && layerCount > 0, "model sizes must be positive (vocab \(vocabSize), hidden \(hiddenSize), intermediate \(intermediateSize), layers \(layerCount))")
        try require(headCount > 0 && kvHeadCount > 0 && headCount % kvHeadCount == 0, "attention heads (\(headCount)) must be a positive multiple of KV heads (\(kvHeadCount))")
        try require(headDim > 0 && headDim % 2 == 0, "head dimension \(headDim) must be positive and even")
        try require(rotaryDim > 0 && rotaryDim <= headDim && rotaryDim % 2 == 0, "rotary dimension \(rotaryDim) must be even and at most the head dimension \(headDim)")
        try require(contextLength > 0, "context length must be positive")
        return self
    }

    /// The RoPE tables' parameters for this model; `frequencyFactors` are GGUF `rope_freqs` divisors.
    public func rope(frequencyFactors: [Float]? = nil) -> Rope {
        var frequencies = Rope.defaultInverseFrequencies(base: ropeTheta, rotaryDim: rotaryDim)
        if let factors = frequencyFactors, factors.count == frequencies.count {
            frequencies = zip(frequencies, factors).map { $0 / $1 }
        } else {
            switch ropeScaling {
            case .none: break
            case .linear(let factor): frequencies = frequencies.map { $0 / factor }
            case .llama3(let factor, let low, let high, let original):
                frequencies = Rope.llama3Scaled(frequencies, factor: factor, lowFrequencyFactor: low, highFrequencyFactor: high, originalContext: Float(original))
            }
        }
        return Rope(rotaryDim: rotaryDim, pairing: ropePairing, inverseFrequencies: frequencies)
    }
}

extension ModelConfig {
    /// Reads the config from GGUF metadata (`{arch}.block_count`, `{arch}.attention.head_count`, ...).
    public init(gguf file: GGUFFile) throws {
        let path = file.path
        guard let arch = file["general.architecture"]?.string else {
            throw FormatError(path, "missing metadata general.architecture")
        }
        let family = try ModelRegistry.family(forGGUFArchitecture: arch, path: path)
        func int(_ key: String) throws -> Int {
            guard let v = file["\(arch).\(key)"]?.int else { throw FormatError(path, "missing metadata \(arch).\(key)") }
            return v
        }
        func optionalFloat(_ key: String) -> Float? { file["\(arch).\(key)"]?.float }
        let hidden = try int("embedding_length")
        let heads = try int("attention.head_count")
        let headDim = (try? int("attention.key_length")) ?? (heads > 0 ? hidden / heads : 0)
        let vocab = (try? int("vocab_size")) ?? file["tokenizer.ggml.tokens"]?.array?.count
            ?? file.tensorsByName["token_embd.weight"]?.dims.last ?? 0
        var scaling = RopeScaling.none
        let scalingType = file["\(arch).rope.scaling.type"]?.string
        if scalingType == "linear", let factor = optionalFloat("rope.scaling.factor"), factor > 0 {
            scaling = .linear(factor: factor)
        }
        // GGUF files without rope.freq_base use llama.cpp's default of 10000.
        self.init(
            family: family, architecture: arch, vocabSize: vocab, hiddenSize: hidden,
            intermediateSize: try int("feed_forward_length"), layerCount: try int("block_count"),
            headCount: heads, kvHeadCount: (try? int("attention.head_count_kv")) ?? heads, headDim: headDim,
            rmsNormEps: optionalFloat("attention.layer_norm_rms_epsilon") ?? 1e-5,
            contextLength: (try? int("context_length")) ?? 2048,
            ropeTheta: optionalFloat("rope.freq_base") ?? 10000, ropeScaling: scaling,
            // llama.cpp permutes Q/K rows of llama models so that adjacent pairs rotate together;
            // qwen2/qwen3 keep the Hugging Face row order (NEOX-style rope).
            ropePairing: family == .llama ? .adjacent : .halves,
            rotaryDim: (try? int("rope.dimension_count")) ?? headDim,
            attentionBias: file.tensorsByName["blk.0.attn_q.bias"] != nil,
            qkNorm: file.tensorsByName["blk.0.attn_q_norm.weight"] != nil,
            tieEmbeddings: file.tensorsByName["output.weight"] == nil
        )
        self = try validated(path: path)
    }

    /// Reads a Hugging Face `config.json` (both the older `rope_theta` + `rope_scaling` keys and
    /// transformers v5's `rope_parameters`).
    public init(huggingFaceConfig path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FormatError(path, "cannot read config.json")
        }
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw FormatError(path, "config.json is not a JSON object")
        }
        let architecture = (json["architectures"] as? [String])?.first ?? (json["model_type"] as? String) ?? "unknown"
        let family = try ModelRegistry.family(forHuggingFace: architecture, modelType: json["model_type"] as? String, path: path)
        func number(_ key: String, in object: [String: Any] = json) -> Double? {
            (object[key] as? NSNumber)?.doubleValue
        }
        func int(_ key: String) throws -> Int {
            guard let v = number(key) else { throw FormatError(path, "missing or non-numeric \"\(key)\"") }
            return Int(v)
        }
        let hidden = try int("hidden_size")
        let heads = try int("num_attention_heads")
        let headDim = number("head_dim").map { Int($0) } ?? (heads > 0 ? hidden / heads : 0)
        // transformers v5 folds rope_theta and rope_scaling into rope_parameters.
        let ropeParameters = (json["rope_parameters"] as? [String: Any]) ?? (json["rope_scaling"] as? [String: Any]) ?? [:]
        let theta = number("rope_theta", in: ropeParameters) ?? number("rope_theta") ?? 10000
        let ropeType = (ropeParameters["rope_type"] as? String) ?? (ropeParameters["type"] as? String) ?? "default"
        var scaling = RopeScaling.none
        switch ropeType {
        case "default": break
        case "linear":
            scaling = .linear(factor: Float(number("factor", in: ropeParameters) ?? 1))
        case "llama3":
            guard let factor = number("factor", in: ropeParameters),
                  let original = number("original_max_position_embeddings", in: ropeParameters)
            else { throw FormatError(path, "llama3 rope scaling needs factor and original_max_position_embeddings") }
            scaling = .llama3(
                factor: Float(factor),
                lowFrequencyFactor: Float(number("low_freq_factor", in: ropeParameters) ?? 1),
                highFrequencyFactor: Float(number("high_freq_factor", in: ropeParameters) ?? 4),
                originalContext: Int(original))
        default:
            throw FormatError(path, "unsupported rope type \"\(ropeType)\" (supported: default, linear, llama3)")
        }
        let partialRotary = number("partial_rotary_factor", in: ropeParameters) ?? number("partial_rotary_factor") ?? 1
        self.init(
            family: family, architecture: architecture, vocabSize: try int("vocab_size"), hiddenSize: hidden,
            intermediateSize: try int("intermediate_size"), layerCount: try int("num_hidden_layers"),
            headCount: heads, kvHeadCount: number("num_key_value_heads").map { Int($0) } ?? heads, headDim: headDim,
            rmsNormEps: Float(number("rms_norm_eps") ?? 1e-6),
            contextLength: number("max_position_embeddings").map { Int($0) } ?? 2048,
            ropeTheta: Float(theta), ropeScaling: scaling, ropePairing: .halves,
            rotaryDim: Int(Double(headDim) * partialRotary),
            attentionBias: family == .qwen2 || (json["attention_bias"] as? Bool ?? false),
            qkNorm: family == .qwen3,
            tieEmbeddings: json["tie_word_embeddings"] as? Bool ?? false
        )
        self = try validated(path: path)
    }
}
