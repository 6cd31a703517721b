/// One KV cache group at run time: its spec, its block pool, and the window arithmetic that
/// decides which of a sequence's blocks its queries can still see.
public final class CacheGroup {
    public let spec: CacheGroupSpec
    public let pool: BlockPool

    init(spec: CacheGroupSpec, blockSize: Int, enablePrefixCaching: Bool) throws(CacheError) {
        self.spec = spec
        pool = try BlockPool(blockCount: spec.blockCount, blockSize: blockSize,
                             enablePrefixCaching: enablePrefixCaching)
    }

    var blockSize: Int { pool.blockSize }

    /// The first block that a query at `position` (or any later one) can see; every block before it
    /// can be given back. Always 0 for full attention.
    public func firstVisibleBlock(forQueryAt position: Int) -> Int {
        guard let window = spec.slidingWindow else { return 0 }
        return max(0, position - window + 1) / blockSize
    }

    /// The most blocks one sequence of `tokens` tokens holds at once in this group when its K/V are
    /// computed in steps of at most `maxChunkTokens` new tokens (nil: all in one step). A sliding
    /// group holds at most ⌈(W - 1 + chunk) / blockSize⌉ + 1 blocks (window plus the new chunk,
    /// misaligned by up to a block on each side).
    public func blocksNeeded(tokens: Int, maxChunkTokens: Int? = nil) -> Int {
        let allBlocks = (tokens + blockSize - 1) / blockSize
        guard let window = spec.slidingWindow else { return allBlocks }
        let chunk = min(max(maxChunkTokens ?? tokens, 1), max(tokens, 1))
        return min(allBlocks, (window - 1 + chunk + 2 * blockSize - 2) / blockSize)
    }

    /// Blocks a query at the end of a `blocks`-block prefix needs cached: all of them for full
    /// attention, the ones overlapping the window for sliding attention.
    private func visibleBlocks(beforeBlock blocks: Int) -> Int {
        blocks - firstVisibleBlock(forQueryAt: blocks * blockSize)
    }

    /// The largest hit of at most `limit` blocks usable by this group: every block the next query
    /// can see is cached. Scans right to left for a long enough run of cached blocks (vLLM's
    /// sliding-window search; for full attention the run must reach block 0).
    func longestCacheHit(keys: [BlockKey], limit: Int) -> Int {
        if limit == 0 || visibleBlocks(beforeBlock: limit) == 0 { return limit }
        var run = 0
        for index in stride(from: limit - 1, through: 0, by: -1) {
            guard pool.cachedBlock(for: keys[index]) != nil else { run = 0; continue }
            run += 1
            if run >= visibleBlocks(beforeBlock: index + run) { return index + run }
        }
        return 0
    }
}

/// The paged KV cache's bookkeeping, driven by the engine each step (vLLM's KV cache manager):
/// block tables per sequence in every KV cache group, automatic prefix caching, sliding-window
/// block release, and usage/prefix-cache counters. It owns no tensors: the caller allocates K/V
/// storage of `[blockCount, blockSize, kvHeads, headDim]` per layer of each group and indexes it
/// with the block ids of `blockTable(for:group:)`.
///
/// A sequence's life: `admit` (finds the cached prefix) → each step `allocateSlots` for the tokens
/// to compute, run the model, `commit` the tokens whose K/V are now written → `free`. Preemption is
/// `free` followed later by `admit` again, which recomputes what the prefix cache no longer holds.
///
/// Block tables have one entry per `blockSize` tokens; an entry of -1 is a block a sliding window
/// has left (or never needed after a prefix hit) — attention never reads it.
///
/// Prefix caching works in every group: a hit must be usable by all groups at once (a full group
/// needs every block of the prefix, a sliding group only the blocks in the window of the first
/// query to compute), found by shrinking the hit until all groups agree.
///
/// Threading: a plain, non-`Sendable` class — one engine thread (or actor) owns it and the compiler
/// keeps other isolation domains from touching it; no locks on the per-step path.
public final class KVCacheManager {
    /// Tokens per block, the same in every group.
    public let blockSize: Int
    /// Groups in the order given at init; their index is the `group` argument elsewhere.
    public let groups: [CacheGroup]
    public let enablePrefixCaching: Bool
    /// Prompt tokens looked up in the prefix cache by `admit`.
    public private(set) var prefixCacheQueries = 0
    /// Prompt tokens found computed in the prefix cache.
    public private(set) var prefixCacheHits = 0

    private var sequences: [SequenceID: SequenceState] = [:]

    /// A manager with one block pool per group. Each layer may belong to at most one group.
    public init(groups specs: [CacheGroupSpec], blockSize: Int = 16,
                enablePrefixCaching: Bool = true) throws(CacheError) {
        guard !specs.isEmpty else { throw .invalidArgument("at least one KV cache group is needed") }
        var seenLayers = Set<Int>()
        for spec in specs {
            for layer in spec.layers where !seenLayers.insert(layer).inserted {
                throw .invalidArgument("layer \(layer) is in more than one KV cache group")
            }
            if let window = spec.slidingWindow, window < 1 {
                throw .invalidArgument("sliding window \(window) must be at least 1")
            }
        }
        var groups: [CacheGroup] = []
        for spec in specs {
            groups.append(try CacheGroup(spec: spec, blockSize: blockSize, enablePrefixCaching: enablePrefixCaching))
        }
        self.blockSize = blockSize
        self.groups = groups
        self.enablePrefixCaching = enablePrefixCaching
    }

    /// A manager for a model without sliding-window layers: one full-attention group.
    public convenience init(blockCount: Int, blockSize: Int = 16, layers: [Int] = [],
                            enablePrefixCaching: Bool = true) throws(CacheError) {
        try self.init(groups: [CacheGroupSpec(layers: layers, blockCount: blockCount)], blockSize: blockSize,
                      enablePrefixCaching: enablePrefixCaching)
    }

    // MARK: Sequence lifecycle

    /// Starts a sequence: finds the longest cached prefix of full prompt blocks (leaving at least the
    /// last prompt token to compute, so its logits exist), references those blocks, and returns how
    /// many prompt tokens are already computed (a multiple of `blockSize`).
    /// `extraKeys` (LoRA id, multimodal input hashes, …) must match for a hit.
    /// Throws if the sequence is live, the prompt is empty, or it can never fit a group's pool.
    public func admit(sequence id: SequenceID, promptTokens: [Int], extraKeys: [UInt64] = []) throws(CacheError) -> Int {
        guard sequences[id] == nil else { throw .sequenceAlreadyAdmitted(id) }
        guard !promptTokens.isEmpty else { throw .emptyPrompt(id) }
        for (index, group) in groups.enumerated() {
            let needed = group.blocksNeeded(tokens: promptTokens.count, maxChunkTokens: 1)
            if needed > group.pool.blockCount {
                throw .promptTooLong(tokens: promptTokens.count, group: index, blocksNeeded: needed,
                                     blockCount: group.pool.blockCount)
            }
        }
        let state = SequenceState(extraKeys: extraKeys, groupCount: groups.count)
        if enablePrefixCaching {
            let keys = BlockKey.chain(tokens: promptTokens, blockSize: blockSize,
                                      count: (promptTokens.count - 1) / blockSize, extraKeys: extraKeys)
            let hitBlocks = longestCacheHit(keys: keys)
            for (index, group) in groups.enumerated() {
                let first = group.firstVisibleBlock(forQueryAt: hitBlocks * blockSize)
                state.tables[index] = Array(repeating: -1, count: first)
                state.releasedBlocks[index] = first
                for key in keys[first..<hitBlocks] {
                    let block = group.pool.cachedBlock(for: key)!
                    group.pool.retain(block)
                    state.tables[index].append(block)
                }
            }
            state.computedTokens = hitBlocks * blockSize
            state.hashedBlocks = hitBlocks
            state.lastHash = hitBlocks > 0 ? keys[hitBlocks - 1].hash : .root
            prefixCacheQueries += promptTokens.count
            prefixCacheHits += state.computedTokens
        }
        sequences[id] = state
        return state.computedTokens
    }

    /// Makes every group's block table cover `numComputedTokens + newTokens` tokens. Returns false,
    /// allocating nothing, when some pool cannot supply the blocks (the scheduler then preempts or
    /// waits).
    public func allocateSlots(sequence id: SequenceID, newTokens: Int) throws(CacheError) -> Bool {
        let state = try state(of: id)
        let needed = try blocksToAllocate(state, newTokens: newTokens)
        guard canAllocate(blocks: needed) else { return false }
        for (index, group) in groups.enumerated() where needed[index] > 0 {
            state.tables[index] += try group.pool.allocate(needed[index])
        }
        return true
    }

    /// Whether `allocateSlots(sequence:newTokens:)` would succeed now.
    public func canAllocateSlots(sequence id: SequenceID, newTokens: Int) throws(CacheError) -> Bool {
        canAllocate(blocks: try blocksToAllocate(try state(of: id), newTokens: newTokens))
    }

    /// Records that the K/V of `tokens` (all of the sequence's tokens computed so far, prompt first)
    /// are written: registers every newly full block in the prefix cache and gives back sliding
    /// blocks no future query can see. `tokens` must extend the tokens committed before.
    public func commit(sequence id: SequenceID, tokens: [Int]) throws(CacheError) {
        let state = try state(of: id)
        guard tokens.count >= state.computedTokens else {
            throw .commitRewinds(id, tokens: tokens.count, computed: state.computedTokens)
        }
        let slots = state.tables[0].count * blockSize
        guard tokens.count <= slots else { throw .commitBeyondAllocatedSlots(id, tokens: tokens.count, slots: slots) }
        state.computedTokens = tokens.count
        let fullBlocks = tokens.count / blockSize
        if enablePrefixCaching, fullBlocks > state.hashedBlocks {
            let keys = BlockKey.chain(tokens: Array(tokens[state.hashedBlocks * blockSize..<fullBlocks * blockSize]),
                                      blockSize: blockSize, count: fullBlocks - state.hashedBlocks,
                                      extraKeys: state.extraKeys, after: state.lastHash)
            for (index, group) in groups.enumerated() {
                for (offset, key) in keys.enumerated() {
                    let block = state.tables[index][state.hashedBlocks + offset]
                    if block >= 0 { group.pool.register(block, as: key) }
                }
            }
            state.hashedBlocks = fullBlocks
            state.lastHash = keys.last!.hash
        }
        for index in groups.indices { releaseBlocksOutsideWindow(of: state, group: index) }
    }

    /// Ends a sequence (finished or preempted): drops its references, last block first, so the
    /// tail of a sequence is evicted before its more shareable head. Full blocks stay cached.
    public func free(sequence id: SequenceID) throws(CacheError) {
        guard let state = sequences.removeValue(forKey: id) else { throw .unknownSequence(id) }
        for (index, group) in groups.enumerated() {
            group.pool.release(state.tables[index].reversed().lazy.filter { $0 >= 0 })
        }
    }

    // MARK: Queries

    /// The sequence's block ids in `group`, one per `blockSize` tokens; -1 marks a block outside
    /// the sliding window.
    public func blockTable(for id: SequenceID, group: Int = 0) throws(CacheError) -> [Int32] {
        try state(of: id).tables[group]
    }

    /// Tokens of the sequence whose K/V are computed (admitted prefix hit, then the last commit).
    public func numComputedTokens(of id: SequenceID) throws(CacheError) -> Int {
        try state(of: id).computedTokens
    }

    /// Live sequences, in id order.
    public var sequenceIDs: [SequenceID] { sequences.keys.sorted() }

    /// The index of the group holding `layer`, or nil.
    public func group(ofLayer layer: Int) -> Int? { groups.firstIndex { $0.spec.layers.contains(layer) } }

    /// Blocks over all groups.
    public var blockCount: Int { groups.reduce(0) { $0 + $1.pool.blockCount } }
    /// Free blocks over all groups (cached free blocks included).
    public var freeBlockCount: Int { groups.reduce(0) { $0 + $1.pool.freeBlockCount } }
    /// Fraction of all blocks held by sequences, 0...1.
    public var usage: Double { Double(blockCount - freeBlockCount) / Double(blockCount) }
    /// Cached blocks evicted to be reused, over all groups.
    public var evictions: Int { groups.reduce(0) { $0 + $1.pool.evictions } }
    /// `prefixCacheHits / prefixCacheQueries`, 0 before any query.
    public var prefixCacheHitRate: Double {
        prefixCacheQueries == 0 ? 0 : Double(prefixCacheHits) / Double(prefixCacheQueries)
    }

    /// Per group, the most blocks a sequence of `tokens` tokens holds at once when computed in steps
    /// of at most `maxChunkTokens` (nil: one step). Compare with each group's `pool.blockCount` to
    /// reject a request that can never fit, or use `fits(tokens:maxChunkTokens:)`.
    public func blocksNeeded(tokens: Int, maxChunkTokens: Int? = nil) -> [Int] {
        groups.map { $0.blocksNeeded(tokens: tokens, maxChunkTokens: maxChunkTokens) }
    }

    /// Whether a sequence of `tokens` tokens fits the empty pools at all.
    public func fits(tokens: Int, maxChunkTokens: Int? = nil) -> Bool {
        zip(groups, blocksNeeded(tokens: tokens, maxChunkTokens: maxChunkTokens))
            .allSatisfy { $1 <= $0.pool.blockCount }
    }

    /// Whether every group can allocate the given number of new blocks (one count per group).
    public func canAllocate(blocks: [Int]) -> Bool {
        zip(groups, blocks).allSatisfy { $0.pool.canAllocate($1) }
    }

    /// Forgets the prefix cache of every group; only when no sequence is live. Returns whether it did.
    @discardableResult
    public func resetPrefixCache() -> Bool {
        guard sequences.isEmpty else { return false }
        return groups.allSatisfy { $0.pool.resetPrefixCache() }
    }

    /// Consistency problems, empty when all is well: each pool's own invariants, and every block's
    /// reference count equals the number of block-table entries holding it.
    public func invariantViolations() -> [String] {
        var problems: [String] = []
        for (index, group) in groups.enumerated() {
            problems += group.pool.invariantViolations().map { "group \(index): \($0)" }
            var holders = [Int](repeating: 0, count: group.pool.blockCount)
            for state in sequences.values { for block in state.tables[index] where block >= 0 { holders[Int(block)] += 1 } }
            for block in 0..<group.pool.blockCount where holders[block] != group.pool.referenceCount(of: Int32(block)) {
                problems.append("group \(index): block \(block) is in \(holders[block]) tables but has "
                    + "\(group.pool.referenceCount(of: Int32(block))) references")
            }
        }
        return problems
    }

    // MARK: Private

    private func state(of id: SequenceID) throws(CacheError) -> SequenceState {
        guard let state = sequences[id] else { throw .unknownSequence(id) }
        return state
    }

    /// The largest number of prompt blocks every group can take from the cache: each group's best
    /// hit within the current bound, until they agree.
    private func longestCacheHit(keys: [BlockKey]) -> Int {
        var hit = keys.count
        while true {
            let agreed = groups.map { $0.longestCacheHit(keys: keys, limit: hit) }.min()!
            if agreed == hit { return hit }
            hit = agreed
        }
    }

    private func blocksToAllocate(_ state: SequenceState, newTokens: Int) throws(CacheError) -> [Int] {
        guard newTokens >= 0 else { throw .invalidArgument("new token count \(newTokens) is negative") }
        let blocks = (state.computedTokens + newTokens + blockSize - 1) / blockSize
        return state.tables.map { max(0, blocks - $0.count) }
    }

    private func releaseBlocksOutsideWindow(of state: SequenceState, group index: Int) {
        let first = groups[index].firstVisibleBlock(forQueryAt: state.computedTokens)
        let released = state.releasedBlocks[index]
        guard first > released else { return }
        groups[index].pool.release(state.tables[index][released..<first].filter { $0 >= 0 })
        for position in released..<first { state.tables[index][position] = -1 }
        state.releasedBlocks[index] = first
    }
}

/// What the manager tracks for one live sequence.
private final class SequenceState {
    let extraKeys: [UInt64]
    /// Tokens whose K/V are written.
    var computedTokens = 0
    /// Leading full blocks whose keys are known (and registered where possible).
    var hashedBlocks = 0
    /// Hash of the last of those blocks, the parent of the next.
    var lastHash = BlockHash.root
    /// Block table per group.
    var tables: [[Int32]]
    /// Per group, leading table entries already given back (-1).
    var releasedBlocks: [Int]

    init(extraKeys: [UInt64], groupCount: Int) {
        self.extraKeys = extraKeys
        tables = Array(repeating: [], count: groupCount)
        releasedBlocks = Array(repeating: 0, count: groupCount)
    }
}
