import Cache
import Kernels
import Models

/// Which logits a step item wants back.
public enum LogitsRequest: Sendable {
    case none
    /// The last computed token's next-token logits: `[vocab]`.
    case last
    /// Every computed token's: `[count, vocab]`.
    case all
}

/// Drives a model over the paged KV cache, one step at a time: keeps each live sequence's tokens,
/// asks the cache manager for slots, builds the ragged batch (`cuQueryLens`, `seqLens`, block
/// tables) and registers newly full blocks for prefix caching. Used from one thread (the engine's).
public final class ModelRunner: @unchecked Sendable {
    public let model: any CausalLanguageModel
    public let cache: PagedKVCache
    /// Every known token (prompt and generated) of each live sequence.
    private var tokens: [SequenceID: [Int]] = [:]
    /// Prompt tokens whose K/V came from the prefix cache, over the runner's life.
    public private(set) var prefixCachedTokens = 0
    /// Tokens pushed through the model, over the runner's life.
    public private(set) var computedTokens = 0

    public init(model: any CausalLanguageModel, cache: PagedKVCache) {
        self.model = model
        self.cache = cache
    }

    /// Starts a sequence with its prompt; returns how many prompt tokens the prefix cache already holds.
    @discardableResult
    public func admit(_ id: SequenceID, prompt: [Int]) throws -> Int {
        let cached = try cache.manager.admit(sequence: id, promptTokens: prompt)
        tokens[id] = prompt
        prefixCachedTokens += cached
        return cached
    }

    /// Adds a generated token to a sequence (computed by a later step).
    public func append(_ id: SequenceID, token: Int) throws {
        guard tokens[id] != nil else { throw CacheError.unknownSequence(id) }
        tokens[id]?.append(token)
    }

    /// Tokens of `id` whose K/V are not computed yet.
    public func pendingTokens(_ id: SequenceID) throws -> Int {
        guard let all = tokens[id] else { throw CacheError.unknownSequence(id) }
        return all.count - (try cache.manager.numComputedTokens(of: id))
    }

    /// Allocates the slots for the next `count` pending tokens of `id` ahead of `step`, so a
    /// scheduler can plan a whole step against the pool; false (allocating nothing) when the pool
    /// cannot hold them. `step` then finds the slots already there.
    public func reserve(_ id: SequenceID, count: Int) throws -> Bool {
        try cache.manager.allocateSlots(sequence: id, newTokens: count)
    }

    /// Releases a sequence's blocks (full ones stay in the prefix cache).
    public func free(_ id: SequenceID) throws {
        try cache.manager.free(sequence: id)
        tokens[id] = nil
    }

    /// One model step: for each item, computes the next `count` pending tokens of its sequence.
    /// Returns the requested logits per item. Throws `CacheError.outOfBlocks` (computing nothing)
    /// when the pool cannot hold the step. (Copies every row out of the step's logits; the engine
    /// uses `stepLogits`, which does not.)
    public func step(_ items: [(id: SequenceID, count: Int, logits: LogitsRequest)]) throws -> [[Float]] {
        let logits = try stepLogits(items)
        return items.indices.map { Array(logits.values[logits.rows(of: $0)]) }
    }

    /// `step`, with the logits of all items in one buffer as the model produced them: item i's rows
    /// are `values[rows(of: i)]`, `[rows, vocab]`.
    public func stepLogits(_ items: [(id: SequenceID, count: Int, logits: LogitsRequest)]) throws -> StepLogits {
        let manager = cache.manager
        var starts: [Int] = []
        for item in items {
            guard let all = tokens[item.id] else { throw CacheError.unknownSequence(item.id) }
            let start = try manager.numComputedTokens(of: item.id)
            guard item.count > 0, start + item.count <= all.count else {
                throw CacheError.invalidArgument("step of \(item.count) tokens for \(item.id), which has \(all.count - start) pending")
            }
            starts.append(start)
        }
        // All or nothing: check every allocation before making any.
        for item in items where !(try manager.canAllocateSlots(sequence: item.id, newTokens: item.count)) {
            throw CacheError.outOfBlocks(requested: item.count, free: manager.freeBlockCount)
        }
        for item in items {
            guard try manager.allocateSlots(sequence: item.id, newTokens: item.count) else {
                throw CacheError.outOfBlocks(requested: item.count, free: manager.freeBlockCount)
            }
        }

        var batchTokens: [Int] = [], positions: [Int] = [], logitRows: [Int] = []
        var cuQueryLens = [0], seqLens: [Int] = []
        // Item i's logits rows are firstRows[i] ..< firstRows[i + 1] of the model's output.
        var firstRows: [Int] = []
        firstRows.reserveCapacity(items.count + 1)
        for (item, start) in zip(items, starts) {
            firstRows.append(logitRows.count)
            let all = tokens[item.id] ?? []
            let first = batchTokens.count
            batchTokens.append(contentsOf: all[start ..< start + item.count])
            positions.append(contentsOf: start ..< start + item.count)
            cuQueryLens.append(batchTokens.count)
            seqLens.append(start + item.count)
            switch item.logits {
            case .none: break
            case .last: logitRows.append(batchTokens.count - 1)
            case .all: logitRows.append(contentsOf: first ..< batchTokens.count)
            }
        }
        firstRows.append(logitRows.count)
        var attention: [RaggedBatch] = []
        for group in manager.groups.indices {
            let tables = try items.map { try manager.blockTable(for: $0.id, group: group) }
            let width = max(1, tables.map(\.count).max() ?? 1)
            var flat: [Int32] = []
            flat.reserveCapacity(width * tables.count)
            for table in tables {
                flat.append(contentsOf: table)
                flat.append(contentsOf: repeatElement(-1, count: width - table.count))
            }
            attention.append(RaggedBatch(cuQueryLens: cuQueryLens, seqLens: seqLens, blockTables: flat, maxBlocksPerSequence: width))
        }
        let logits = try model.forward(
            ForwardBatch(tokens: batchTokens, positions: positions, attention: attention, logitRows: logitRows),
            cache: cache)
        computedTokens += batchTokens.count
        for (item, start) in zip(items, starts) {
            // A decode computes up to the last known token: the array itself, not a copy of it.
            let all = tokens[item.id] ?? [], end = start + item.count
            try manager.commit(sequence: item.id, tokens: end == all.count ? all : Array(all[..<end]))
        }

        return StepLogits(values: logits, vocab: model.config.vocabSize, firstRows: firstRows)
    }
}

/// The logits of one `ModelRunner.stepLogits`: `values` is `[rows, vocab]` for all items, item i's
/// rows being `firstRows[i] ..< firstRows[i + 1]`.
public struct StepLogits: Sendable {
    public var values: [Float]
    public let vocab: Int
    let firstRows: [Int]

    /// The range of `values` holding item `i`'s rows (empty when it asked for none).
    public func rows(of i: Int) -> Range<Int> { firstRows[i] * vocab ..< firstRows[i + 1] * vocab }
}
