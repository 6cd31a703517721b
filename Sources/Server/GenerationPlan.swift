import Engine
import Foundation
import Models
import Tokenizers

/// Which OpenAI endpoint a generation request came through.
enum Endpoint: Sendable {
    case completion
    case chat
}

/// A validated generation request: the prompt's ids and the engine's parameters. This is the one
/// place request JSON becomes `GenerationParameters`.
struct GenerationPlan: Sendable {
    let endpoint: Endpoint
    let model: String
    let promptIds: [Int]
    let parameters: GenerationParameters
    let stream: Bool
    let includeUsage: Bool
    /// How many alternatives per token to report, when logprobs were asked for.
    let logprobs: Int?

    /// OpenAI's default `max_tokens` for completions; chat defaults to the rest of the context.
    static let defaultCompletionMaxTokens = 16

    init(_ request: GenerationRequest, endpoint: Endpoint, engine: InferenceEngine, options: ServerOptions) throws {
        self.endpoint = endpoint
        model = try checkModel(request.model, options: options)
        let config = engine.loaded.config
        let tokenizer = engine.loaded.tokenizer

        // The prompt.
        let ids: [Int]
        switch endpoint {
        case .completion:
            guard request.messages == nil else { throw APIError.badRequest("use /v1/chat/completions for 'messages'", param: "messages") }
            switch request.prompt {
            case .none: throw APIError.badRequest("missing required field 'prompt'", param: "prompt")
            case .text(let text):
                guard let tokenizer else { throw APIError.badRequest("the model has no tokenizer; send token ids", param: "prompt") }
                ids = tokenizer.encode(text, addSpecialTokens: true)
            case .tokens(let tokens): ids = tokens
            }
        case .chat:
            guard let messages = request.messages, !messages.isEmpty else {
                throw APIError.badRequest("'messages' must be a non-empty array", param: "messages")
            }
            ids = try chatPromptIds(messages, addGenerationPrompt: request.addGenerationPrompt ?? true, engine: engine)
        }
        guard !ids.isEmpty else { throw APIError.badRequest("the prompt is empty", param: "prompt") }
        if let bad = ids.first(where: { $0 < 0 || $0 >= config.vocabSize }) {
            throw APIError.badRequest("token id \(bad) is outside the vocabulary (0..<\(config.vocabSize))", param: "prompt")
        }
        promptIds = ids

        // Lengths.
        let requested = endpoint == .chat ? (request.maxCompletionTokens ?? request.maxTokens) : request.maxTokens
        let maxTokens = requested ?? (endpoint == .completion ? Self.defaultCompletionMaxTokens : config.contextLength - ids.count)
        let where_ = endpoint == .chat ? "messages" : "prompt"
        if requested != nil, maxTokens < 1 {
            throw APIError.badRequest("max_tokens must be at least 1, got \(maxTokens)", param: "max_tokens")
        }
        if ids.count + maxTokens > config.contextLength || maxTokens < 1 {
            throw APIError.badRequest(
                "This model's maximum context length is \(config.contextLength) tokens. However, you requested \(ids.count + max(maxTokens, 0)) tokens (\(ids.count) in the \(where_), \(max(maxTokens, 0)) in the completion). Please reduce the length of the \(where_) or completion.",
                param: "max_tokens")
        }

        // Log-probabilities.
        switch (endpoint, request.logprobs) {
        case (_, .none), (.chat, .flag(false)):
            if endpoint == .chat, request.topLogprobs != nil {
                throw APIError.badRequest("'top_logprobs' requires 'logprobs' to be true", param: "top_logprobs")
            }
            logprobs = nil
        case (.completion, .count(let count)): logprobs = count
        case (.chat, .flag(true)): logprobs = request.topLogprobs ?? 0
        case (.completion, .flag): throw APIError.badRequest("'logprobs' must be an integer for completions", param: "logprobs")
        case (.chat, .count): throw APIError.badRequest("'logprobs' must be a boolean for chat completions", param: "logprobs")
        }

        // Sampling.
        var bias: [Int: Float] = [:]
        for (key, value) in request.logitBias ?? [:] {
            guard let id = Int(key) else { throw APIError.badRequest("logit_bias keys must be token ids, got '\(key)'", param: "logit_bias") }
            bias[id] = Float(value)
        }
        let sampling = SamplingParameters(
            temperature: Float(request.temperature ?? 1),
            topK: request.topK.map { $0 < 0 ? 0 : $0 } ?? 0,
            topP: Float(request.topP ?? 1),
            minP: Float(request.minP ?? 0),
            repetitionPenalty: Float(request.repetitionPenalty ?? 1),
            presencePenalty: Float(request.presencePenalty ?? 0),
            frequencyPenalty: Float(request.frequencyPenalty ?? 0),
            logitBias: bias,
            logprobs: logprobs,
            seed: request.seed.map { UInt64(bitPattern: $0) })
        try sampling.validate(vocabularySize: config.vocabSize)
        if let bad = request.stopTokenIds?.first(where: { $0 < 0 || $0 >= config.vocabSize }) {
            throw APIError.badRequest("stop token id \(bad) is outside the vocabulary", param: "stop_token_ids")
        }
        let n = request.n ?? 1
        guard (1 ... 128).contains(n) else { throw APIError.badRequest("n must be between 1 and 128, got \(n)", param: "n") }
        if request.echo == true { throw APIError.badRequest("'echo' is not supported", param: "echo") }

        parameters = GenerationParameters(
            sampling: sampling, maxTokens: maxTokens,
            stopTokenIds: Set(request.stopTokenIds ?? []), ignoreEOS: request.ignoreEos ?? false,
            stopStrings: (request.stop?.values ?? []).filter { !$0.isEmpty }
                + (endpoint == .chat ? tokenizer?.chatStopStrings ?? [] : []),
            priority: request.priority ?? 0, n: n)
        stream = request.stream ?? false
        includeUsage = stream && (request.streamOptions?.includeUsage ?? false)
    }
}

/// The served model's name, or 404 for any other.
func checkModel(_ requested: String?, options: ServerOptions) throws -> String {
    guard let requested, requested != options.servedModelName else { return options.servedModelName }
    throw APIError(.notFound, "The model `\(requested)` does not exist.", type: "NotFoundError", param: "model", code: "model_not_found")
}

/// A conversation rendered with the model's chat template and encoded without added special tokens.
func chatPromptIds(_ messages: [Message], addGenerationPrompt: Bool, engine: InferenceEngine) throws -> [Int] {
    guard let tokenizer = engine.loaded.tokenizer else { throw APIError.badRequest("the model has no tokenizer", param: "messages") }
    let rendered = try tokenizer.applyChatTemplate(
        messages.map { ChatMessage(role: $0.role, content: $0.content) }, addGenerationPrompt: addGenerationPrompt)
    return tokenizer.encode(rendered, addSpecialTokens: false)
}
