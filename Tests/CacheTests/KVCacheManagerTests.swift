import Cache
import Testing

@Suite struct KVCacheManagerTests {
    @Test func slotsGrowBlockByBlockAndUsageReturnsToZero() throws {
        let cache = try KVCacheManager(blockCount: 10, blockSize: 4)
        #expect(try cache.admit(sequence: 1, promptTokens: [1, 2, 3, 4, 5]) == 0)
        #expect(try cache.allocateSlots(sequence: 1, newTokens: 5))
        #expect(try cache.blockTable(for: 1).count == 2)
        try cache.commit(sequence: 1, tokens: [1, 2, 3, 4, 5])
        #expect(try cache.numComputedTokens(of: 1) == 5)
        // Decode steps 6..8 fit the second block; the 9th token needs a third.
        var tokens = [1, 2, 3, 4, 5]
        for token in 6...9 {
            #expect(try cache.allocateSlots(sequence: 1, newTokens: 1))
            tokens.append(token)
            try cache.commit(sequence: 1, tokens: tokens)
        }
        #expect(try cache.blockTable(for: 1).count == 3)

        _ = try prefill(cache, 2, [9, 9, 9])
        #expect(cache.freeBlockCount == 6)
        #expect(cache.usage == 0.4)
        #expect(cache.invariantViolations().isEmpty)
        try cache.free(sequence: 1)
        try cache.free(sequence: 2)
        #expect(cache.usage == 0)
        #expect(cache.freeBlockCount == 10)
        #expect(cache.sequenceIDs.isEmpty)
        #expect(cache.invariantViolations().isEmpty)
    }

    @Test func failedAllocationAllocatesNothing() throws {
        let cache = try KVCacheManager(blockCount: 4, blockSize: 4)
        _ = try prefill(cache, 1, Array(0..<12))
        #expect(try cache.admit(sequence: 2, promptTokens: Array(100..<108)) == 0)
        #expect(try !cache.canAllocateSlots(sequence: 2, newTokens: 8))
        #expect(try !cache.allocateSlots(sequence: 2, newTokens: 8))
        #expect(try cache.blockTable(for: 2).isEmpty)
        #expect(cache.freeBlockCount == 1)
        #expect(cache.canAllocate(blocks: [1]))
        #expect(!cache.canAllocate(blocks: [2]))
    }

    @Test func sharedBlocksAreCountedOncePerTable() throws {
        let cache = try KVCacheManager(blockCount: 20, blockSize: 4)
        let prompt = Array(0..<10)
        _ = try prefill(cache, 1, prompt)
        #expect(try prefill(cache, 2, prompt) == 8)
        let pool = cache.groups[0].pool
        let shared = try cache.blockTable(for: 1)[0..<2]
        #expect(try cache.blockTable(for: 2)[0..<2] == shared)
        #expect(shared.allSatisfy { pool.referenceCount(of: $0) == 2 })
        try cache.free(sequence: 1)
        #expect(shared.allSatisfy { pool.referenceCount(of: $0) == 1 })
        #expect(cache.invariantViolations().isEmpty)
    }

    @Test func requestLengthsThatCanNeverFitAreDetectable() throws {
        let cache = try KVCacheManager(blockCount: 8, blockSize: 16)
        #expect(cache.blockCount == 8)
        #expect(cache.blocksNeeded(tokens: 128) == [8])
        #expect(cache.blocksNeeded(tokens: 129) == [9])
        #expect(cache.fits(tokens: 128))
        #expect(!cache.fits(tokens: 129))
    }

    @Test func layersMapToTheirGroups() throws {
        let cache = try KVCacheManager(groups: [
            CacheGroupSpec(layers: [0, 2], blockCount: 4),
            CacheGroupSpec(layers: [1, 3], slidingWindow: 8, blockCount: 4),
        ], blockSize: 4)
        #expect(cache.group(ofLayer: 3) == 1)
        #expect(cache.group(ofLayer: 2) == 0)
        #expect(cache.group(ofLayer: 7) == nil)
        #expect(cache.blockCount == 8)
    }

    @Test func byteBudgetGivesWholeBlocks() {
        let bytesPerBlock = CacheGroupSpec.bytesPerBlock(layerCount: 2, blockSize: 16, kvHeads: 4, headDim: 64,
                                                         bytesPerElement: 2)
        #expect(bytesPerBlock == 2 * 2 * 16 * 4 * 64 * 2)
        let spec = CacheGroupSpec(layers: [0, 1], byteBudget: 10 * bytesPerBlock + 5, bytesPerBlock: bytesPerBlock)
        #expect(spec.blockCount == 10)
    }
}
