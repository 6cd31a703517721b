import Engine
import Foundation
import Tokenizers

/// Collects a request's outputs per choice and writes them in OpenAI's shapes: the stream chunk
/// for each output, the usage chunk, and the whole (non-streaming) response.
struct ResponseBuilder: Sendable {
    let plan: GenerationPlan
    let id: String
    let created: Int
    let tokenizer: Tokenizer?

    struct Choice: Sendable {
        var text = ""
        /// Length of `text` in Unicode scalars (Python characters).
        var characters = 0
        var tokenCount = 0
        var logprobs: [SampledToken] = []
        /// Character offset of each token's text in `text` (completions' `text_offset`).
        var textOffsets: [Int] = []
        var finishReason: FinishReason?
    }

    private(set) var choices: [Choice]

    init(plan: GenerationPlan, tokenizer: Tokenizer?) {
        self.plan = plan
        self.tokenizer = tokenizer
        let prefix = plan.endpoint == .chat ? "chatcmpl-" : "cmpl-"
        id = prefix + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        created = Int(Date().timeIntervalSince1970)
        choices = Array(repeating: Choice(), count: plan.parameters.n)
    }

    var completionTokens: Int { choices.reduce(0) { $0 + $1.tokenCount } }

    var usage: JSON {
        .object([
            ("prompt_tokens", .int(plan.promptIds.count)),
            ("completion_tokens", .int(completionTokens)),
            ("total_tokens", .int(plan.promptIds.count + completionTokens)),
        ])
    }

    // MARK: Absorbing outputs

    /// Adds one engine output; returns the stream chunk that carries it (nil when it carries nothing).
    mutating func absorb(_ output: GenerationOutput) -> JSON? {
        guard choices.indices.contains(output.index) else { return nil }
        // The engine emits one token per output, so each token's text starts where the choice's text ended.
        let offsets = Array(repeating: choices[output.index].characters, count: output.logprobs.count)
        choices[output.index].text += output.textDelta
        choices[output.index].characters += output.textDelta.unicodeScalars.count
        choices[output.index].tokenCount += output.tokenIds.count
        choices[output.index].logprobs += output.logprobs
        choices[output.index].textOffsets += offsets
        if let reason = output.finishReason { choices[output.index].finishReason = reason }
        let wantsLogprobs = plan.logprobs != nil && !output.logprobs.isEmpty
        guard !output.textDelta.isEmpty || wantsLogprobs || output.finishReason != nil else { return nil }
        let logprobs: JSON = plan.logprobs == nil ? .null : logprobsJSON(output.logprobs, offsets: offsets)
        switch plan.endpoint {
        case .completion:
            return chunk([.object([
                ("index", .int(output.index)),
                ("text", .string(output.textDelta)),
                ("logprobs", logprobs),
                ("finish_reason", .optional(output.finishReason.map(Self.reasonText))),
            ])])
        case .chat:
            let delta: JSON = output.textDelta.isEmpty && output.finishReason != nil
                ? .object([]) : .object([("content", .string(output.textDelta))])
            return chunk([.object([
                ("index", .int(output.index)),
                ("delta", delta),
                ("logprobs", logprobs),
                ("finish_reason", .optional(output.finishReason.map(Self.reasonText))),
            ])])
        }
    }

    // MARK: Stream chunks

    /// The chunk sent as soon as the request is admitted: the assistant role of every chat choice
    /// (nil for completions, which have no such chunk).
    var initialChunk: JSON? {
        guard plan.endpoint == .chat else { return nil }
        return chunk((0 ..< plan.parameters.n).map { index in
            .object([
                ("index", .int(index)),
                ("delta", .object([("role", "assistant"), ("content", "")])),
                ("logprobs", .null),
                ("finish_reason", .null),
            ])
        })
    }

    /// The last chunk when `stream_options.include_usage` is set: no choices, the request's usage.
    var usageChunk: JSON { chunk([], usage: usage) }

    private func chunk(_ choices: [JSON], usage: JSON = .null) -> JSON {
        var members: [(String, JSON)] = [
            ("id", .string(id)),
            ("object", .string(plan.endpoint == .chat ? "chat.completion.chunk" : "text_completion")),
            ("created", .int(created)),
            ("model", .string(plan.model)),
            ("choices", .array(choices)),
        ]
        if plan.includeUsage { members.append(("usage", usage)) }
        return .object(members)
    }

    // MARK: Whole response

    /// The non-streaming response.
    var response: JSON {
        let choicesJSON: [JSON] = choices.enumerated().map { index, choice in
            let logprobs: JSON = plan.logprobs == nil ? .null : logprobsJSON(choice.logprobs, offsets: choice.textOffsets)
            let reason = JSON.optional(choice.finishReason.map(Self.reasonText))
            switch plan.endpoint {
            case .completion:
                return .object([
                    ("index", .int(index)), ("text", .string(choice.text)),
                    ("logprobs", logprobs), ("finish_reason", reason),
                ])
            case .chat:
                return .object([
                    ("index", .int(index)),
                    ("message", .object([("role", "assistant"), ("content", .string(choice.text))])),
                    ("logprobs", logprobs), ("finish_reason", reason),
                ])
            }
        }
        return .object([
            ("id", .string(id)),
            ("object", .string(plan.endpoint == .chat ? "chat.completion" : "text_completion")),
            ("created", .int(created)),
            ("model", .string(plan.model)),
            ("choices", .array(choicesJSON)),
            ("usage", usage),
        ])
    }

    // MARK: Pieces

    static func reasonText(_ reason: FinishReason) -> String {
        switch reason {
        case .stop: "stop"
        case .length: "length"
        case .abort: "abort"
        }
    }

    private func tokenString(_ id: Int) -> String {
        tokenizer?.decode([id]) ?? ""
    }

    /// Completions: `{tokens, token_logprobs, top_logprobs, text_offset}`; chat: `{content: [{token, logprob, bytes, top_logprobs}]}`.
    private func logprobsJSON(_ tokens: [SampledToken], offsets: [Int]) -> JSON {
        switch plan.endpoint {
        case .completion:
            return .object([
                ("tokens", .array(tokens.map { .string(tokenString($0.id)) })),
                ("token_logprobs", .array(tokens.map { .logprob($0.logprob) })),
                ("top_logprobs", .array(tokens.map { token in
                    .object(token.topLogprobs.map { (tokenString($0.id), .logprob($0.logprob)) })
                })),
                ("text_offset", .array(offsets.map(JSON.int))),
            ])
        case .chat:
            func entry(_ id: Int, _ logprob: Float?) -> [(String, JSON)] {
                let text = tokenString(id)
                return [("token", .string(text)), ("logprob", .logprob(logprob)), ("bytes", .array(text.utf8.map { .int(Int($0)) }))]
            }
            return .object([("content", .array(tokens.map { token in
                .object(entry(token.id, token.logprob) + [("top_logprobs", .array(token.topLogprobs.map { .object(entry($0.id, $0.logprob)) }))])
            }))])
        }
    }
}
