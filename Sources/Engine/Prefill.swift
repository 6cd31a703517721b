import Cache
import Models

/// Why a generation ended.
public enum FinishReason: String, Sendable {
    /// A stop token was produced.
    case stop
    /// `maxTokens` were produced, or the context is full.
    case length
    /// The caller asked to stop.
    case abort
}

extension ModelRunner {
    /// Computes every pending token of `id` in steps of at most `chunk` tokens. Returns the last
    /// token's logits (`.last`), every computed token's (`.all`, `[pending, vocab]`), or nothing.
    public func prefill(_ id: SequenceID, chunk: Int, logits request: LogitsRequest) throws -> [Float] {
        var result: [Float] = []
        var pending = try pendingTokens(id)
        while pending > 0 {
            let count = min(max(1, chunk), pending)
            pending -= count
            let wanted: LogitsRequest = switch request {
            case .all: .all
            case .last: pending == 0 ? .last : .none
            case .none: .none
            }
            let logits = try step([(id, count, wanted)])[0]
            result.append(contentsOf: logits)
        }
        return result
    }
}

/// Errors in a generation request.
public enum GenerationError: Error, CustomStringConvertible, Equatable {
    case emptyPrompt
    case promptTooLong(tokens: Int, context: Int)

    public var description: String {
        switch self {
        case .emptyPrompt: "the prompt is empty (no tokens)"
        case .promptTooLong(let tokens, let context):
            "the prompt has \(tokens) tokens, which does not fit the model's context of \(context) tokens"
        }
    }
}
