import Cache
import Testing

@Suite struct BlockPoolTests {
    @Test func allocateAndReleaseTrackReferenceCounts() throws {
        let pool = try BlockPool(blockCount: 8, blockSize: 4)
        let blocks = try pool.allocate(3)
        #expect(blocks == [0, 1, 2])
        #expect(pool.freeBlockCount == 5)
        #expect(pool.usage == 3.0 / 8.0)
        pool.retain(blocks[1])
        #expect(pool.referenceCount(of: blocks[1]) == 2)
        pool.release(blocks)
        #expect(pool.referenceCount(of: blocks[1]) == 1)
        #expect(pool.freeBlockCount == 7)
        pool.release([blocks[1]])
        #expect(pool.usedBlockCount == 0)
        #expect(pool.usage == 0)
        #expect(pool.invariantViolations().isEmpty)
    }

    @Test func freedBlocksJoinTheTailOfTheFreeQueue() throws {
        let pool = try BlockPool(blockCount: 4, blockSize: 4)
        let blocks = try pool.allocate(2)
        pool.release(blocks.reversed())
        #expect(pool.freeQueue() == [2, 3, 1, 0])
    }

    @Test func cachedFreeBlockIsReusedUntilEvicted() throws {
        let pool = try BlockPool(blockCount: 2, blockSize: 2)
        let key = BlockKey(parent: .root, tokens: [5, 6])
        let block = try pool.allocate(1)[0]
        pool.register(block, as: key)
        pool.release([block])
        #expect(pool.cachedBlock(for: key) == block)
        #expect(pool.cachedBlockCount == 1)

        // Reuse: the cached block leaves the free queue.
        pool.retain(block)
        #expect(pool.referenceCount(of: block) == 1)
        #expect(!pool.freeQueue().contains(block))
        pool.release([block])

        // Pressure: allocation pops the LRU block (the other one), then the cached one.
        _ = try pool.allocate(1)
        #expect(pool.evictions == 0)
        #expect(try pool.allocate(1) == [block])
        #expect(pool.evictions == 1)
        #expect(pool.cachedBlock(for: key) == nil)
        #expect(pool.invariantViolations().isEmpty)
    }

    @Test func lookupComparesTokensNotJustTheHash() throws {
        let pool = try BlockPool(blockCount: 2, blockSize: 2)
        let block = try pool.allocate(1)[0]
        pool.register(block, as: BlockKey(parent: .root, tokens: [1, 2], extraKeys: [3]))
        #expect(pool.cachedBlock(for: BlockKey(parent: .root, tokens: [1, 2], extraKeys: [3])) == block)
        #expect(pool.cachedBlock(for: BlockKey(parent: .root, tokens: [1, 2])) == nil)
    }

    @Test func firstRegistrationOfAKeyWins() throws {
        let pool = try BlockPool(blockCount: 2, blockSize: 2)
        let key = BlockKey(parent: .root, tokens: [1, 2])
        let blocks = try pool.allocate(2)
        pool.register(blocks[0], as: key)
        pool.register(blocks[1], as: key)
        #expect(pool.cachedBlock(for: key) == blocks[0])
        #expect(pool.cachedKey(of: blocks[1]) == nil)
        #expect(pool.invariantViolations().isEmpty)
    }

    @Test func allocationIsAllOrNothing() throws {
        let pool = try BlockPool(blockCount: 3, blockSize: 4)
        _ = try pool.allocate(2)
        #expect(throws: CacheError.outOfBlocks(requested: 2, free: 1)) { try pool.allocate(2) }
        #expect(pool.freeBlockCount == 1)
    }

    @Test func disabledPrefixCachingRegistersNothing() throws {
        let pool = try BlockPool(blockCount: 2, blockSize: 2, enablePrefixCaching: false)
        let key = BlockKey(parent: .root, tokens: [1, 2])
        pool.register(try pool.allocate(1)[0], as: key)
        #expect(pool.cachedBlock(for: key) == nil)
    }

    @Test func resetForgetsCachedBlocksOnlyWhenIdle() throws {
        let pool = try BlockPool(blockCount: 2, blockSize: 2)
        let key = BlockKey(parent: .root, tokens: [1, 2])
        let block = try pool.allocate(1)[0]
        pool.register(block, as: key)
        #expect(!pool.resetPrefixCache())
        pool.release([block])
        #expect(pool.resetPrefixCache())
        #expect(pool.cachedBlock(for: key) == nil)
    }
}
