/// A fixed set of KV cache blocks: ids `0..<blockCount`, each holding `blockSize` tokens of K/V in
/// storage the caller owns (the pool only does the bookkeeping).
///
/// Follows vLLM's block pool: every block has a reference count (how many block tables hold it).
/// Blocks with no references form one LRU free queue (a doubly linked list over block ids, O(1)
/// pop/append/remove). A full block can be registered under its `BlockKey`; it stays findable after
/// its last user frees it, until allocation pops it from the free queue and evicts its key.
/// Reusing a cached free block (`retain`) takes it out of the free queue. A block with references is
/// never handed out or evicted.
///
/// Not `Sendable`: the pool is owned by one engine thread (see `KVCacheManager`).
public final class BlockPool {
    /// Number of blocks in the pool.
    public let blockCount: Int
    /// Tokens per block.
    public let blockSize: Int
    /// Whether full blocks can be registered and found again.
    public let enablePrefixCaching: Bool
    /// Blocks with no references, cached ones included (they can be evicted on demand).
    public private(set) var freeBlockCount: Int
    /// Cached blocks whose key was dropped to hand them out again.
    public private(set) var evictions = 0

    private static let none: Int32 = -1
    private var referenceCounts: [Int32]
    private var previousFree: [Int32]
    private var nextFree: [Int32]
    private var freeHead: Int32
    private var freeTail: Int32
    private var keys: [BlockKey?]
    private var blockByHash: [BlockHash: Int32] = [:]

    /// A pool of `blockCount` free blocks, in id order in the free queue.
    public init(blockCount: Int, blockSize: Int = 16, enablePrefixCaching: Bool = true) throws(CacheError) {
        guard blockCount > 0, blockCount <= Int(Int32.max) else {
            throw .invalidArgument("block count \(blockCount) must be in 1...\(Int32.max)")
        }
        guard blockSize > 0 else { throw .invalidArgument("block size \(blockSize) must be positive") }
        self.blockCount = blockCount
        self.blockSize = blockSize
        self.enablePrefixCaching = enablePrefixCaching
        freeBlockCount = blockCount
        referenceCounts = Array(repeating: 0, count: blockCount)
        previousFree = (0..<Int32(blockCount)).map { $0 - 1 }
        nextFree = (0..<Int32(blockCount)).map { $0 + 1 == Int32(blockCount) ? Self.none : $0 + 1 }
        freeHead = 0
        freeTail = Int32(blockCount - 1)
        keys = Array(repeating: nil, count: blockCount)
    }

    /// Blocks held by at least one block table.
    public var usedBlockCount: Int { blockCount - freeBlockCount }
    /// Fraction of blocks held by block tables, 0...1.
    public var usage: Double { Double(usedBlockCount) / Double(blockCount) }
    /// Blocks currently registered under a key (live or free).
    public var cachedBlockCount: Int { blockByHash.count }

    /// Whether `count` blocks can be allocated now (evicting cached free blocks if needed).
    public func canAllocate(_ count: Int) -> Bool { count <= freeBlockCount }

    /// Takes `count` blocks from the head of the free queue (least recently freed first), evicting
    /// their cached keys, each with one reference. All or nothing.
    public func allocate(_ count: Int) throws(CacheError) -> [Int32] {
        guard count >= 0 else { throw .invalidArgument("cannot allocate \(count) blocks") }
        guard canAllocate(count) else { throw .outOfBlocks(requested: count, free: freeBlockCount) }
        var blocks: [Int32] = []
        blocks.reserveCapacity(count)
        for _ in 0..<count {
            let block = freeHead
            removeFromFreeQueue(block)
            evictKey(of: block)
            referenceCounts[Int(block)] = 1
            blocks.append(block)
        }
        return blocks
    }

    /// Adds a reference to `block` (a prefix-cache hit); a free block leaves the free queue.
    public func retain(_ block: Int32) {
        precondition(contains(block), "block \(block) is not in the pool")
        if referenceCounts[Int(block)] == 0 { removeFromFreeQueue(block) }
        referenceCounts[Int(block)] += 1
    }

    /// Drops one reference from each block, in order; blocks reaching zero join the tail of the free
    /// queue (so the first released is evicted first) and keep their cached key.
    public func release(_ blocks: some Sequence<Int32>) {
        for block in blocks {
            precondition(contains(block) && referenceCounts[Int(block)] > 0,
                         "block \(block) released more often than it was referenced")
            referenceCounts[Int(block)] -= 1
            if referenceCounts[Int(block)] == 0 { appendToFreeQueue(block) }
        }
    }

    /// The cached block whose stored key equals `key` (hash, parent, tokens and extra keys all
    /// compared), or nil. Takes no reference; `retain` it to use it.
    public func cachedBlock(for key: BlockKey) -> Int32? {
        guard let block = blockByHash[key.hash], keys[Int(block)] == key else { return nil }
        return block
    }

    /// Registers a full, referenced block under `key` so later requests can reuse it. Does nothing
    /// when prefix caching is off, when the block already has a key, or when another block already
    /// holds this key (the first one stays; this block is then just an uncached duplicate).
    public func register(_ block: Int32, as key: BlockKey) {
        precondition(contains(block) && referenceCounts[Int(block)] > 0, "block \(block) is not referenced")
        precondition(key.tokens.count == blockSize, "only full blocks can be cached")
        guard enablePrefixCaching, keys[Int(block)] == nil, blockByHash[key.hash] == nil else { return }
        keys[Int(block)] = key
        blockByHash[key.hash] = block
    }

    /// Forgets every cached key; only possible when no block is in use (e.g. after new weights are
    /// loaded). Returns whether it did.
    @discardableResult
    public func resetPrefixCache() -> Bool {
        guard usedBlockCount == 0 else { return false }
        blockByHash.removeAll()
        keys = Array(repeating: nil, count: blockCount)
        return true
    }

    // MARK: Inspection

    /// How many block tables hold `block`.
    public func referenceCount(of block: Int32) -> Int { Int(referenceCounts[Int(block)]) }

    /// The key `block` is cached under, if any.
    public func cachedKey(of block: Int32) -> BlockKey? { keys[Int(block)] }

    /// The free queue from the next block to be allocated to the last one.
    public func freeQueue() -> [Int32] {
        var order: [Int32] = []
        var block = freeHead
        while block != Self.none, order.count <= blockCount {
            order.append(block)
            block = nextFree[Int(block)]
        }
        return order
    }

    /// Internal consistency problems, empty when all is well: the free queue is a well-linked list
    /// without duplicates holding exactly the unreferenced blocks, and every cached key maps to a
    /// block that stores that key, whose hash matches its contents.
    public func invariantViolations() -> [String] {
        var problems: [String] = []
        let queue = freeQueue()
        if queue.count != freeBlockCount {
            problems.append("free queue has \(queue.count) blocks, free count is \(freeBlockCount)")
        }
        var seen = Set<Int32>()
        var previous = Self.none
        for block in queue {
            if !seen.insert(block).inserted { problems.append("block \(block) is twice in the free queue") }
            if previousFree[Int(block)] != previous { problems.append("block \(block) has a wrong back link") }
            previous = block
        }
        if previous != freeTail { problems.append("free queue tail is \(freeTail), walk ends at \(previous)") }
        for block in 0..<Int32(blockCount) {
            let references = referenceCounts[Int(block)]
            if references < 0 { problems.append("block \(block) has \(references) references") }
            if (references == 0) != seen.contains(block) {
                problems.append("block \(block) has \(references) references but is \(seen.contains(block) ? "" : "not ")free")
            }
            if let key = keys[Int(block)] {
                if blockByHash[key.hash] != block { problems.append("block \(block)'s key does not map back to it") }
                if BlockHash(parent: key.parent, tokens: key.tokens, extraKeys: key.extraKeys) != key.hash {
                    problems.append("block \(block)'s hash does not match its tokens")
                }
            }
        }
        for (hash, block) in blockByHash where keys[Int(block)]?.hash != hash {
            problems.append("hash \(hash) maps to block \(block), which is not cached under it")
        }
        return problems
    }

    // MARK: Private

    private func contains(_ block: Int32) -> Bool { block >= 0 && Int(block) < blockCount }

    private func evictKey(of block: Int32) {
        guard let key = keys[Int(block)] else { return }
        blockByHash[key.hash] = nil
        keys[Int(block)] = nil
        evictions += 1
    }

    private func removeFromFreeQueue(_ block: Int32) {
        let previous = previousFree[Int(block)], next = nextFree[Int(block)]
        if previous == Self.none { freeHead = next } else { nextFree[Int(previous)] = next }
        if next == Self.none { freeTail = previous } else { previousFree[Int(next)] = previous }
        previousFree[Int(block)] = Self.none
        nextFree[Int(block)] = Self.none
        freeBlockCount -= 1
    }

    private func appendToFreeQueue(_ block: Int32) {
        previousFree[Int(block)] = freeTail
        nextFree[Int(block)] = Self.none
        if freeTail == Self.none { freeHead = block } else { nextFree[Int(freeTail)] = block }
        freeTail = block
        freeBlockCount += 1
    }
}
