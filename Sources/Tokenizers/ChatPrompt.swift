import Foundation

/// One message of a conversation, as chat templates see it.
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

extension Tokenizer {
    /// Renders `messages` with the model's chat template, as transformers' `apply_chat_template`
    /// does: `messages`, `tools` and `documents` (none), `add_generation_prompt`, and the BOS/EOS
    /// token texts when the tokenizer has them, plus any `extra` variables. Encode the result with
    /// `addSpecialTokens: false`: the template already wrote the special tokens it wants.
    public func applyChatTemplate(
        _ messages: [ChatMessage], addGenerationPrompt: Bool = true, extra: [(String, TemplateValue)] = []
    ) throws -> String {
        guard let source = chatTemplate else {
            throw ChatTemplateError(.syntax, "the model has no chat template")
        }
        let template = try ChatTemplate(source)
        var context: [(String, TemplateValue)] = [
            ("messages", .array(messages.map { .object([("role", .string($0.role)), ("content", .string($0.content))]) })),
            ("tools", .none),
            ("documents", .none),
            ("add_generation_prompt", .bool(addGenerationPrompt)),
        ]
        if let bos = bosTokenId.flatMap(tokenText) { context.append(("bos_token", .string(bos))) }
        if let eos = eosTokenId.flatMap(tokenText) { context.append(("eos_token", .string(eos))) }
        context += extra
        return try template.render(context)
    }
}
