import Foundation

/// The body of `/v1/completions` and `/v1/chat/completions` (one type, so one mapping to
/// `GenerationParameters`): OpenAI's fields plus vLLM's sampling extras.
struct GenerationRequest: Decodable, Sendable {
    var model: String?
    var prompt: PromptInput?
    var messages: [Message]?
    var n: Int?
    var stop: OneOrMany?
    var maxTokens: Int?
    var maxCompletionTokens: Int?
    var temperature: Double?
    var topP: Double?
    var seed: Int64?
    var logprobs: LogprobsField?
    var topLogprobs: Int?
    var presencePenalty: Double?
    var frequencyPenalty: Double?
    var logitBias: [String: Double]?
    var stream: Bool?
    var streamOptions: StreamOptions?
    var echo: Bool?
    // vLLM extras
    var topK: Int?
    var minP: Double?
    var repetitionPenalty: Double?
    var ignoreEos: Bool?
    var stopTokenIds: [Int]?
    var addGenerationPrompt: Bool?
    var priority: Int?

    struct StreamOptions: Decodable, Sendable {
        var includeUsage: Bool?
        enum CodingKeys: String, CodingKey { case includeUsage = "include_usage" }
    }

    enum CodingKeys: String, CodingKey {
        case model, prompt, messages, n, stop, temperature, seed, logprobs, stream, echo, priority
        case maxTokens = "max_tokens", maxCompletionTokens = "max_completion_tokens", topP = "top_p"
        case topLogprobs = "top_logprobs", presencePenalty = "presence_penalty", frequencyPenalty = "frequency_penalty"
        case logitBias = "logit_bias", streamOptions = "stream_options", topK = "top_k", minP = "min_p"
        case repetitionPenalty = "repetition_penalty", ignoreEos = "ignore_eos", stopTokenIds = "stop_token_ids"
        case addGenerationPrompt = "add_generation_prompt"
    }
}

/// A completions prompt: text, or token ids (a one-element batch of either is accepted too).
enum PromptInput: Decodable, Sendable {
    case text(String)
    case tokens([Int])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            self = .text(text)
        } else if let tokens = try? container.decode([Int].self) {
            self = .tokens(tokens)
        } else if let texts = try? container.decode([String].self), texts.count == 1 {
            self = .text(texts[0])
        } else if let batches = try? container.decode([[Int]].self), batches.count == 1 {
            self = .tokens(batches[0])
        } else {
            throw DecodingError.typeMismatch(PromptInput.self, .init(
                codingPath: decoder.codingPath,
                debugDescription: "prompt must be a string or an array of token ids (batches of several prompts are not supported)"))
        }
    }
}

/// `stop`: one string or an array of strings.
struct OneOrMany: Decodable, Sendable {
    var values: [String]

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            values = []
        } else if let one = try? container.decode(String.self) {
            values = [one]
        } else {
            values = try container.decode([String].self)
        }
    }
}

/// `logprobs`: an integer for completions, a boolean for chat.
enum LogprobsField: Decodable, Sendable {
    case flag(Bool)
    case count(Int)

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let flag = try? container.decode(Bool.self) {
            self = .flag(flag)
        } else {
            self = .count(try container.decode(Int.self))
        }
    }
}

/// A chat message; `content` is text, an array of text parts, or null.
struct Message: Decodable, Sendable {
    var role: String
    var content: String

    enum CodingKeys: String, CodingKey { case role, content }

    struct Part: Decodable {
        var type: String
        var text: String?
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        role = try container.decode(String.self, forKey: .role)
        if (try? container.decodeNil(forKey: .content)) ?? true {
            content = ""
        } else if let text = try? container.decode(String.self, forKey: .content) {
            content = text
        } else {
            let parts = try container.decode([Part].self, forKey: .content)
            var texts: [String] = []
            for part in parts {
                guard part.type == "text", let text = part.text else {
                    throw DecodingError.dataCorruptedError(
                        forKey: .content, in: container,
                        debugDescription: "only text content parts are supported, got '\(part.type)'")
                }
                texts.append(text)
            }
            content = texts.joined(separator: "\n")
        }
    }
}

/// The body of `/tokenize`.
struct TokenizeRequest: Decodable, Sendable {
    var model: String?
    var prompt: String?
    var messages: [Message]?
    var addSpecialTokens: Bool?
    var addGenerationPrompt: Bool?

    enum CodingKeys: String, CodingKey {
        case model, prompt, messages
        case addSpecialTokens = "add_special_tokens", addGenerationPrompt = "add_generation_prompt"
    }
}

/// The body of `/detokenize`.
struct DetokenizeRequest: Decodable, Sendable {
    var model: String?
    var tokens: [Int]
}
