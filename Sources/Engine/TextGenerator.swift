import Foundation
import Models
import Tokenizers

/// Why a generation ended.
public enum FinishReason: String, Sendable {
    /// A stop token was produced.
    case stop
    /// `maxTokens` were produced, or the context is full.
    case length
    /// The caller asked to stop.
    case abort
}

/// Timing of one generation.
public struct GenerationStats: Sendable {
    public var promptTokens = 0
    public var generatedTokens = 0
    public var prefillSeconds = 0.0
    public var decodeSeconds = 0.0
    public var finishReason = FinishReason.length

    public var prefillTokensPerSecond: Double { prefillSeconds > 0 ? Double(promptTokens) / prefillSeconds : 0 }
    /// Decode speed over the tokens after the first (the first comes from the prefill step).
    public var decodeTokensPerSecond: Double {
        decodeSeconds > 0 ? Double(max(0, generatedTokens - 1)) / decodeSeconds : 0
    }
}

/// Runs one sequence at a time through a model: prefill the prompt, then sample token by token.
public final class TextGenerator: @unchecked Sendable {
    public let loaded: LoadedModel

    public init(_ loaded: LoadedModel) {
        self.loaded = loaded
    }

    /// Generates up to `maxTokens` tokens after `promptIds`. `onToken` receives each token and
    /// returns false to stop early. Stops after a token in `stopTokens` (which is still reported).
    public func generate(
        promptIds: [Int], maxTokens: Int, sampling: SamplingParameters, stopTokens: Set<Int>,
        onToken: (Int) -> Bool
    ) throws -> GenerationStats {
        let model = loaded.model
        let contextLength = model.config.contextLength
        guard !promptIds.isEmpty else { throw GenerationError.emptyPrompt }
        guard promptIds.count < contextLength else {
            throw GenerationError.promptTooLong(tokens: promptIds.count, context: contextLength)
        }
        let capacity = min(contextLength, promptIds.count + max(0, maxTokens))
        let cache = model.makeCache(capacity: capacity)
        var sampler = Sampler(sampling)
        var stats = GenerationStats()
        stats.promptTokens = promptIds.count
        guard maxTokens > 0 else { return stats }

        let clock = ContinuousClock()
        var started = clock.now
        var logits = try model.forward(tokens: promptIds, cache: cache, logits: .last)
        stats.prefillSeconds = (clock.now - started).seconds
        started = clock.now
        while true {
            let token = logits.withUnsafeBufferPointer { sampler.sample($0) }
            stats.generatedTokens += 1
            if !onToken(token) {
                stats.finishReason = .abort
                break
            }
            if stopTokens.contains(token) {
                stats.finishReason = .stop
                break
            }
            if stats.generatedTokens >= maxTokens || cache.count >= cache.capacity {
                stats.finishReason = .length
                break
            }
            logits = try model.forward(tokens: [token], cache: cache, logits: .last)
        }
        stats.decodeSeconds = (clock.now - started).seconds
        return stats
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

extension Duration {
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) * 1e-18
    }
}
