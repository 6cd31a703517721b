import Foundation
import Cache
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

/// Runs one sequence at a time through a model over the paged KV cache: prefill the prompt
/// (in chunks of at most `prefillChunk` tokens), then sample token by token. The cache outlives
/// each call, so a later prompt that shares a prefix reuses its blocks.
public final class TextGenerator: @unchecked Sendable {
    public let loaded: LoadedModel
    public let runner: ModelRunner
    /// Most prompt tokens per prefill step.
    public let prefillChunk: Int
    private var nextSequence = 0

    public init(_ loaded: LoadedModel, cache: KVCacheOptions = KVCacheOptions(), prefillChunk: Int = 512) throws {
        self.loaded = loaded
        runner = ModelRunner(model: loaded.model, cache: try PagedKVCache(config: loaded.config, options: cache))
        self.prefillChunk = max(1, prefillChunk)
    }

    /// Generates up to `maxTokens` tokens after `promptIds`. `onToken` receives each token and
    /// returns false to stop early. Stops after a token in `stopTokens` (which is still reported).
    public func generate(
        promptIds: [Int], maxTokens: Int, sampling: SamplingParameters, stopTokens: Set<Int>,
        onToken: (Int) -> Bool
    ) throws -> GenerationStats {
        let contextLength = loaded.config.contextLength
        guard !promptIds.isEmpty else { throw GenerationError.emptyPrompt }
        guard promptIds.count < contextLength else {
            throw GenerationError.promptTooLong(tokens: promptIds.count, context: contextLength)
        }
        var stats = GenerationStats()
        stats.promptTokens = promptIds.count
        guard maxTokens > 0 else { return stats }
        let id = SequenceID(nextSequence)
        nextSequence += 1
        var sampler = Sampler(sampling)
        let clock = ContinuousClock()
        var started = clock.now
        try runner.admit(id, prompt: promptIds)
        defer { try? runner.free(id) }
        var logits = try runner.prefill(id, chunk: prefillChunk, logits: .last)
        stats.prefillSeconds = (clock.now - started).seconds
        started = clock.now
        var length = promptIds.count
        while true {
            let token = logits.withUnsafeBufferPointer { sampler.sample($0) }
            stats.generatedTokens += 1
            length += 1
            if !onToken(token) {
                stats.finishReason = .abort
                break
            }
            if stopTokens.contains(token) {
                stats.finishReason = .stop
                break
            }
            if stats.generatedTokens >= maxTokens || length >= contextLength {
                stats.finishReason = .length
                break
            }
            try runner.append(id, token: token)
            logits = try runner.step([(id, 1, .last)])[0]
        }
        stats.decodeSeconds = (clock.now - started).seconds
        return stats
    }
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

extension Duration {
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) * 1e-18
    }
}
