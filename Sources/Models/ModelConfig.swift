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
    /// YaRN (DeepSeek V2/V3, GPT-OSS): frequencies blended between interpolation and extrapolation
    /// by a ramp over `[betaFast, betaSlow]` rotations; cos/sin multiplied by `attentionFactor`.
    case yarn(factor: Float, originalContext: Int, betaFast: Float, betaSlow: Float, truncate: Bool, attentionFactor: Float)
}

/// RoPE base and scaling of one kind of layer.
public struct RopeSettings: Sendable, Equatable {
    public var theta: Float
    public var scaling: RopeScaling
    public init(theta: Float, scaling: RopeScaling = .none) {
        self.theta = theta
        self.scaling = scaling
    }
}

/// The gated activation of the MLP (and of MoE experts).
public enum GatedActivation: Sendable, Equatable {
    /// `silu(gate) * up` (Llama, Qwen, Mixtral, DeepSeek).
    case silu
    /// `gelu_tanh(gate) * up` (Gemma).
    case geluTanh
    /// GPT-OSS: `(clamp(up) + 1) * g * sigmoid(alpha * g)`, `g = min(gate, limit)`.
    case clampedSwiglu(limit: Float, alpha: Float)
}

/// Mixture-of-experts MLP hyper-parameters.
public struct MoEConfig: Sendable, Equatable {
    /// How router logits become the chosen experts and their weights.
    public enum Routing: Sendable, Equatable {
        /// Softmax over all experts, top-k, optionally renormalized over the k (Mixtral, Qwen3-MoE).
        case softmaxTopK(renormalize: Bool)
        /// Top-k of the raw logits, then softmax over those k (GPT-OSS).
        case topKSoftmax
        /// DeepSeek: sigmoid (V3) or softmax (V2) scores; experts chosen by score + correction
        /// bias (if any) within the `groupsKept` best of `groups` groups (a group scores the sum of
        /// its two best); weights are the chosen scores, optionally renormalized, times the routed
        /// scaling factor.
        case grouped(sigmoid: Bool, groups: Int, groupsKept: Int, renormalize: Bool)
    }

    public var experts: Int
    public var expertsPerToken: Int
    /// Intermediate size of one expert.
    public var expertIntermediateSize: Int
    public var routing: Routing
    /// Multiplies the routing weights (DeepSeek's `routed_scaling_factor`).
    public var routedScale: Float = 1
    /// Intermediate size of the always-on shared expert MLP (0: none).
    public var sharedIntermediateSize: Int = 0
    /// Layers that use a dense MLP of `intermediateSize` instead (DeepSeek's first layers,
    /// Qwen3-MoE's `mlp_only_layers`).
    public var denseLayers: [Int] = []
    /// The router and experts carry biases (GPT-OSS).
    public var biases: Bool = false
}

/// DeepSeek multi-head latent attention sizes.
public struct MLAConfig: Sendable, Equatable {
    /// Rank of the query compression (nil: a plain `q_proj`).
    public var queryRank: Int?
    /// Rank of the compressed K/V latent: what the cache stores per token, with the RoPE key.
    public var latentRank: Int
    /// Per-head query/key dimensions without RoPE (`qk_nope_head_dim`) and with it (`qk_rope_head_dim`).
    public var noPositionDim: Int
    public var ropeDim: Int
    /// Per-head value dimension.
    public var valueDim: Int
    /// Softmax scale (`qk_head_dim^-0.5`, times mscale^2 with YaRN).
    public var softmaxScale: Float
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
    /// Per-head query/key dimension (and value dimension, except for MLA).
    public var headDim: Int
    public var rmsNormEps: Float
    public var contextLength: Int
    /// RoPE of full-attention layers (and of all layers unless `slidingRope` is set).
    public var ropeTheta: Float
    public var ropeScaling: RopeScaling
    public var ropePairing: Rope.Pairing
    public var rotaryDim: Int
    /// Q, K and V projections carry biases (Qwen2, GPT-OSS).
    public var attentionBias: Bool
    /// RMSNorm over each head of Q and K before RoPE (Qwen3, Gemma 3).
    public var qkNorm: Bool
    /// The output head reuses the embedding matrix.
    public var tieEmbeddings: Bool

    /// Sliding window W (a query at i sees keys j with i - W < j <= i) of the layers in `slidingLayers`.
    public var slidingWindow: Int? = nil
    /// Which layers use the sliding window (empty: none).
    public var slidingLayers: [Bool] = []
    /// RoPE of sliding layers when it differs from the full layers' (Gemma 3's local base).
    public var slidingRope: RopeSettings? = nil
    /// Softmax scale; nil means `1 / sqrt(headDim)` (Gemma: `query_pre_attn_scalar^-0.5`).
    public var attentionScale: Float? = nil
    /// `cap * tanh(s / cap)` on scaled attention scores (Gemma 2).
    public var attentionSoftCap: Float? = nil
    /// `cap * tanh(logit / cap)` on the output logits (Gemma 2/3).
    public var finalSoftCap: Float? = nil
    /// Multiplies the embeddings (Gemma: sqrt(hidden)).
    public var embeddingScale: Float? = nil
    /// Norms after the attention and the MLP as well as before them (Gemma 2/3).
    public var sandwichNorms: Bool = false
    /// Added to every RMSNorm weight at load (Hugging Face Gemma stores `w` for `x * (1 + w)`;
    /// llama.cpp's converter already added it).
    public var normWeightOffset: Float = 0
    public var activation: GatedActivation = .silu
    /// A learned per-head logit joins each softmax denominator (GPT-OSS).
    public var attentionSinks: Bool = false
    /// The attention output projection has a bias (GPT-OSS).
    public var outputProjectionBias: Bool = false
    public var moe: MoEConfig? = nil
    public var mla: MLAConfig? = nil

    public init(
        family: ModelFamily, architecture: String, vocabSize: Int, hiddenSize: Int, intermediateSize: Int,
        layerCount: Int, headCount: Int, kvHeadCount: Int, headDim: Int, rmsNormEps: Float, contextLength: Int,
        ropeTheta: Float, ropeScaling: RopeScaling, ropePairing: Rope.Pairing, rotaryDim: Int,
        attentionBias: Bool, qkNorm: Bool, tieEmbeddings: Bool
    ) {
        self.family = family
        self.architecture = architecture
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headDim = headDim
        self.rmsNormEps = rmsNormEps
        self.contextLength = contextLength
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.ropePairing = ropePairing
        self.rotaryDim = rotaryDim
        self.attentionBias = attentionBias
        self.qkNorm = qkNorm
        self.tieEmbeddings = tieEmbeddings
    }

    /// Whether layer `i` uses the sliding window.
    public func isSliding(layer i: Int) -> Bool {
        slidingWindow != nil && i < slidingLayers.count && slidingLayers[i]
    }

    /// What one layer's paged K/V storage holds per token.
    public struct CacheLayout: Sendable, Equatable {
        public var kvHeads: Int
        public var headDim: Int
        /// One vector per token serves as key and value (MLA latent).
        public var valuesAreKeys: Bool
    }

    /// The K/V storage of every layer: `kvHeads x headDim` keys and values, or for MLA one latent
    /// vector of `latentRank + ropeDim` per token.
    public var cacheLayout: CacheLayout {
        if let mla { return CacheLayout(kvHeads: 1, headDim: mla.latentRank + mla.ropeDim, valuesAreKeys: true) }
        return CacheLayout(kvHeads: kvHeadCount, headDim: headDim, valuesAreKeys: false)
    }

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
        if let w = slidingWindow {
            try require(w > 0, "sliding window \(w) must be positive")
            try require(slidingLayers.count == layerCount, "layer types list \(slidingLayers.count) layers for a \(layerCount)-layer model")
        }
        if let moe {
            try require(moe.experts > 0 && moe.expertsPerToken > 0 && moe.expertsPerToken <= moe.experts,
                        "experts per token (\(moe.expertsPerToken)) must be between 1 and the expert count (\(moe.experts))")
            try require(moe.expertIntermediateSize > 0, "expert intermediate size must be positive")
            if case .grouped(_, let groups, let kept, _) = moe.routing {
                try require(groups > 0 && moe.experts % groups == 0 && kept > 0 && kept <= groups,
                            "\(moe.experts) experts cannot form \(groups) groups with \(kept) kept")
                try require(groups == 1 || moe.experts / groups >= 2, "expert groups need at least 2 experts each")
            }
        }
        if let mla {
            try require(mla.latentRank > 0 && mla.noPositionDim > 0 && mla.ropeDim > 0 && mla.ropeDim % 2 == 0 && mla.valueDim > 0,
                        "latent attention sizes must be positive (latent \(mla.latentRank), nope \(mla.noPositionDim), rope \(mla.ropeDim), value \(mla.valueDim))")
        }
        return self
    }

    /// The RoPE tables of full-attention layers; `frequencyFactors` are GGUF `rope_freqs` divisors.
    public func rope(frequencyFactors: [Float]? = nil) -> Rope {
        Self.rope(RopeSettings(theta: ropeTheta, scaling: ropeScaling), rotaryDim: rotaryDim, pairing: ropePairing, frequencyFactors: frequencyFactors)
    }

    /// The RoPE tables of sliding-window layers (the full layers' unless `slidingRope` differs).
    public func slidingLayerRope(frequencyFactors: [Float]? = nil) -> Rope {
        guard let local = slidingRope else { return rope(frequencyFactors: frequencyFactors) }
        return Self.rope(local, rotaryDim: rotaryDim, pairing: ropePairing, frequencyFactors: nil)
    }

    static func rope(_ settings: RopeSettings, rotaryDim: Int, pairing: Rope.Pairing, frequencyFactors: [Float]?) -> Rope {
        var frequencies = Rope.defaultInverseFrequencies(base: settings.theta, rotaryDim: rotaryDim)
        var attentionFactor: Float = 1
        if let factors = frequencyFactors, factors.count == frequencies.count {
            frequencies = zip(frequencies, factors).map { $0 / $1 }
        } else {
            switch settings.scaling {
            case .none: break
            case .linear(let factor): frequencies = frequencies.map { $0 / factor }
            case .llama3(let factor, let low, let high, let original):
                frequencies = Rope.llama3Scaled(frequencies, factor: factor, lowFrequencyFactor: low, highFrequencyFactor: high, originalContext: Float(original))
            case .yarn(let factor, let original, let betaFast, let betaSlow, let truncate, let mscale):
                frequencies = Rope.yarnScaled(base: settings.theta, rotaryDim: rotaryDim, factor: factor, originalContext: original,
                                              betaFast: betaFast, betaSlow: betaSlow, truncate: truncate)
                attentionFactor = mscale
            }
        }
        return Rope(rotaryDim: rotaryDim, pairing: pairing, inverseFrequencies: frequencies, attentionFactor: attentionFactor)
    }

    /// YaRN's magnitude correction `0.1 * m * ln(factor) + 1` (1 for factor <= 1).
    static func yarnMagnitude(_ factor: Double, _ m: Double = 1) -> Double {
        factor <= 1 ? 1 : 0.1 * m * log(factor) + 1
    }
}

extension ModelConfig {
    /// Reads the config from GGUF metadata (`{arch}.block_count`, `{arch}.attention.head_count`, ...).
    public init(gguf file: GGUFFile) throws {
        let path = file.path
        guard let arch = file["general.architecture"]?.string else {
            throw FormatError(path, "missing metadata general.architecture")
        }
        let metadata = GGUFMetadata(file: file, arch: arch)
        var family = try ModelRegistry.family(forGGUFArchitecture: arch, path: path)
        if family == .llama, metadata.optionalInt("expert_count") ?? 0 > 0 { family = .mixtral }
        let hidden = try metadata.int("embedding_length")
        let heads = try metadata.int("attention.head_count")
        let headDim = metadata.optionalInt("attention.key_length") ?? (heads > 0 ? hidden / heads : 0)
        let vocab = metadata.optionalInt("vocab_size") ?? file["tokenizer.ggml.tokens"]?.array?.count
            ?? file.tensorsByName["token_embd.weight"]?.dims.last ?? 0
        var scaling = RopeScaling.none
        let scalingType = metadata.string("rope.scaling.type")
        let factor = metadata.float("rope.scaling.factor")
        if scalingType == "linear", let factor, factor > 0 {
            scaling = .linear(factor: factor)
        } else if scalingType == "yarn", let factor, factor > 0 {
            let original = metadata.optionalInt("rope.scaling.original_context_length") ?? 4096
            let multiplier = Double(metadata.float("rope.scaling.yarn_log_multiplier") ?? 0)
            scaling = .yarn(factor: factor, originalContext: original,
                            betaFast: metadata.float("rope.scaling.yarn_beta_fast") ?? 32,
                            betaSlow: metadata.float("rope.scaling.yarn_beta_slow") ?? 1,
                            truncate: true,
                            attentionFactor: Float(multiplier > 0 ? 1 : Self.yarnMagnitude(Double(factor))))
        }
        // GGUF files without rope.freq_base use llama.cpp's default of 10000.
        self.init(
            family: family, architecture: arch, vocabSize: vocab, hiddenSize: hidden,
            intermediateSize: metadata.optionalInt("feed_forward_length") ?? 0, layerCount: try metadata.int("block_count"),
            headCount: heads, kvHeadCount: metadata.optionalInt("attention.head_count_kv") ?? heads, headDim: headDim,
            rmsNormEps: metadata.float("attention.layer_norm_rms_epsilon") ?? 1e-5,
            contextLength: metadata.optionalInt("context_length") ?? 2048,
            ropeTheta: metadata.float("rope.freq_base") ?? 10000, ropeScaling: scaling,
            // llama.cpp permutes Q/K rows of llama models so that adjacent pairs rotate together;
            // the other families keep the Hugging Face row order (NEOX-style rope).
            ropePairing: family == .llama || family == .mixtral ? .adjacent : .halves,
            rotaryDim: metadata.optionalInt("rope.dimension_count") ?? headDim,
            attentionBias: file.tensorsByName["blk.0.attn_q.bias"] != nil,
            qkNorm: file.tensorsByName["blk.0.attn_q_norm.weight"] != nil,
            tieEmbeddings: file.tensorsByName["output.weight"] == nil
        )
        // A separate RoPE base for sliding-window layers (llama.cpp's `rope.freq_base_swa`).
        if let local = metadata.float("rope.freq_base_swa") { slidingRope = RopeSettings(theta: local) }
        try family.configureGGUF(&self, metadata)
        self = try validated(path: path)
    }

    /// Reads a Hugging Face `config.json` (both the older `rope_theta` + `rope_scaling` keys and
    /// transformers v5's `rope_parameters`).
    public init(huggingFaceConfig path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FormatError(path, "cannot read config.json")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw FormatError(path, "config.json is not a JSON object")
        }
        let json = HuggingFaceJSON(object, path: path)
        let architecture = (object["architectures"] as? [String])?.first ?? json.string("model_type") ?? "unknown"
        let family = try ModelRegistry.family(forHuggingFace: architecture, modelType: json.string("model_type"), path: path)
        let hidden = try json.int("hidden_size")
        let heads = try json.int("num_attention_heads")
        let headDim = json.optionalInt("head_dim") ?? (heads > 0 ? hidden / heads : 0)
        // transformers v5 folds rope_theta and rope_scaling into rope_parameters (for Gemma 3 one
        // entry per layer type).
        var ropeParameters = json.object("rope_parameters") ?? json.object("rope_scaling") ?? [:]
        if let full = ropeParameters["full_attention"] as? [String: Any] { ropeParameters = full }
        let rope = try json.ropeSettings(ropeParameters)
        let partialRotary = json.double("partial_rotary_factor", in: ropeParameters) ?? json.double("partial_rotary_factor") ?? 1
        self.init(
            family: family, architecture: architecture, vocabSize: try json.int("vocab_size"), hiddenSize: hidden,
            intermediateSize: json.optionalInt("intermediate_size") ?? 0, layerCount: try json.int("num_hidden_layers"),
            headCount: heads, kvHeadCount: json.optionalInt("num_key_value_heads") ?? heads, headDim: headDim,
            rmsNormEps: Float(json.double("rms_norm_eps") ?? 1e-6),
            contextLength: json.optionalInt("max_position_embeddings") ?? 2048,
            ropeTheta: rope.theta, ropeScaling: rope.scaling, ropePairing: .halves,
            rotaryDim: Int(Double(headDim) * partialRotary),
            attentionBias: family == .qwen2 || (object["attention_bias"] as? Bool ?? false),
            qkNorm: family == .qwen3 || family == .qwen3Moe,
            tieEmbeddings: object["tie_word_embeddings"] as? Bool ?? false
        )
        // Which layers slide: `layer_types` is authoritative (transformers v5); Mistral configs
        // without it slide on every layer when `sliding_window` is set.
        if let window = json.optionalInt("sliding_window"), window > 0 {
            if let types = object["layer_types"] as? [String] {
                slidingLayers = types.map { $0 == "sliding_attention" }
                if slidingLayers.contains(true) { slidingWindow = window }
            } else if json.string("model_type") == "mistral" {
                slidingLayers = Array(repeating: true, count: layerCount)
                slidingWindow = window
            }
        }
        try family.configureHuggingFace(&self, json)
        self = try validated(path: path)
    }
}

/// Typed access to a GGUF file's `{arch}.*` metadata.
struct GGUFMetadata {
    let file: GGUFFile
    let arch: String

    func value(_ key: String) -> GGUFValue? { file["\(arch).\(key)"] }
    func int(_ key: String) throws -> Int {
        guard let v = value(key)?.int else { throw FormatError(file.path, "missing metadata \(arch).\(key)") }
        return v
    }
    func optionalInt(_ key: String) -> Int? { value(key)?.int }
    func float(_ key: String) -> Float? { value(key)?.float }
    func string(_ key: String) -> String? { value(key)?.string }
    func bool(_ key: String) -> Bool? { value(key)?.bool }
    func hasTensor(_ name: String) -> Bool { file.tensorsByName[name] != nil }
}

/// Typed access to a Hugging Face `config.json` object; errors name the file.
struct HuggingFaceJSON {
    let object: [String: Any]
    let path: String

    init(_ object: [String: Any], path: String) {
        self.object = object
        self.path = path
    }

    func double(_ key: String, in dictionary: [String: Any]? = nil) -> Double? {
        ((dictionary ?? object)[key] as? NSNumber)?.doubleValue
    }
    func int(_ key: String) throws -> Int {
        guard let v = double(key) else { throw FormatError(path, "missing or non-numeric \"\(key)\"") }
        return Int(v)
    }
    func optionalInt(_ key: String) -> Int? { double(key).map { Int($0) } }
    func float(_ key: String) -> Float? { double(key).map { Float($0) } }
    func string(_ key: String) -> String? { object[key] as? String }
    func bool(_ key: String) -> Bool? { object[key] as? Bool }
    func object(_ key: String) -> [String: Any]? { object[key] as? [String: Any] }

    /// RoPE base and scaling from one `rope_parameters` (or `rope_scaling`) dictionary.
    func ropeSettings(_ parameters: [String: Any]) throws -> RopeSettings {
        let theta = Float(double("rope_theta", in: parameters) ?? double("rope_theta") ?? 10000)
        let type = (parameters["rope_type"] as? String) ?? (parameters["type"] as? String) ?? "default"
        switch type {
        case "default":
            return RopeSettings(theta: theta)
        case "linear":
            return RopeSettings(theta: theta, scaling: .linear(factor: Float(double("factor", in: parameters) ?? 1)))
        case "llama3":
            guard let factor = double("factor", in: parameters),
                  let original = double("original_max_position_embeddings", in: parameters)
            else { throw FormatError(path, "llama3 rope scaling needs factor and original_max_position_embeddings") }
            return RopeSettings(theta: theta, scaling: .llama3(
                factor: Float(factor),
                lowFrequencyFactor: Float(double("low_freq_factor", in: parameters) ?? 1),
                highFrequencyFactor: Float(double("high_freq_factor", in: parameters) ?? 4),
                originalContext: Int(original)))
        case "yarn":
            guard let original = double("original_max_position_embeddings", in: parameters) ?? double("original_max_position_embeddings")
            else { throw FormatError(path, "yarn rope scaling needs original_max_position_embeddings") }
            let factor = double("factor", in: parameters)
                ?? (double("max_position_embeddings").map { $0 / original } ?? 1)
            // transformers' `_compute_yarn_parameters`: an explicit attention_factor wins; else the
            // ratio of the two magnitude corrections when mscale and mscale_all_dim are both set.
            var attentionFactor = ModelConfig.yarnMagnitude(factor)
            if let explicit = double("attention_factor", in: parameters) {
                attentionFactor = explicit
            } else if let m = double("mscale", in: parameters), let all = double("mscale_all_dim", in: parameters), m != 0, all != 0 {
                attentionFactor = ModelConfig.yarnMagnitude(factor, m) / ModelConfig.yarnMagnitude(factor, all)
            }
            return RopeSettings(theta: theta, scaling: .yarn(
                factor: Float(factor), originalContext: Int(original),
                betaFast: Float(double("beta_fast", in: parameters) ?? 32),
                betaSlow: Float(double("beta_slow", in: parameters) ?? 1),
                truncate: parameters["truncate"] as? Bool ?? true,
                attentionFactor: Float(attentionFactor)))
        default:
            throw FormatError(path, "unsupported rope type \"\(type)\" (supported: default, linear, llama3, yarn)")
        }
    }
}
