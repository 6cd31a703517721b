import Cache
import Testing

@Suite struct SlidingWindowTests {
    /// Full-attention layers 0, 2 and sliding layers 1, 3 with window `window`.
    func hybridCache(fullBlocks: Int, slidingBlocks: Int, window: Int, blockSize: Int = 16) throws -> KVCacheManager {
        try KVCacheManager(groups: [
            CacheGroupSpec(layers: [0, 2], blockCount: fullBlocks),
            CacheGroupSpec(layers: [1, 3], slidingWindow: window, blockCount: slidingBlocks),
        ], blockSize: blockSize)
    }

    /// The blocks a query at `position` can see with window `window` must be present, the ones
    /// before must be given back (-1).
    func expectWindowCovered(_ table: [Int32], queryAt position: Int, window: Int, blockSize: Int,
                             sourceLocation: SourceLocation = #_sourceLocation) {
        let firstVisible = max(0, position - window + 1) / blockSize
        #expect(table[..<min(firstVisible, table.count)].allSatisfy { $0 == -1 }, sourceLocation: sourceLocation)
        #expect(table[min(firstVisible, table.count)...].allSatisfy { $0 >= 0 }, sourceLocation: sourceLocation)
    }

    @Test func longGenerationHoldsOnlyTheWindow() throws {
        let window = 512, blockSize = 16
        let limit = window / blockSize + 2
        let cache = try hybridCache(fullBlocks: 4_096 / blockSize, slidingBlocks: limit, window: window)
        var tokens = randomTokens(16, seed: 1)
        _ = try prefill(cache, 1, tokens)
        var mostHeld = 0
        for token in randomTokens(4_096 - 16, seed: 2) {
            #expect(try cache.allocateSlots(sequence: 1, newTokens: 1))
            mostHeld = max(mostHeld, try heldBlocks(cache, 1, group: 1))
            tokens.append(token)
            try cache.commit(sequence: 1, tokens: tokens)
            expectWindowCovered(try cache.blockTable(for: 1, group: 1), queryAt: tokens.count, window: window,
                                blockSize: blockSize)
        }
        #expect(mostHeld <= limit)
        #expect(mostHeld == cache.blocksNeeded(tokens: 4_096, maxChunkTokens: 1)[1])
        #expect(try heldBlocks(cache, 1, group: 0) == 4_096 / blockSize)
        #expect(try cache.blockTable(for: 1, group: 1).count == 4_096 / blockSize)
        #expect(cache.invariantViolations().isEmpty)
        try cache.free(sequence: 1)
        #expect(cache.usage == 0)
    }

    @Test(arguments: [1, 7, 16, 100, 256])
    func chunkedPrefillStaysWithinBlocksNeeded(chunk: Int) throws {
        let window = 512, blockSize = 16
        let cache = try hybridCache(fullBlocks: 300, slidingBlocks: 300, window: window)
        let prompt = randomTokens(4_096, seed: UInt64(chunk))
        var computed = try cache.admit(sequence: 1, promptTokens: prompt)
        var mostHeld = 0
        while computed < prompt.count {
            let step = min(chunk, prompt.count - computed)
            #expect(try cache.allocateSlots(sequence: 1, newTokens: step))
            mostHeld = max(mostHeld, try heldBlocks(cache, 1, group: 1))
            computed += step
            try cache.commit(sequence: 1, tokens: Array(prompt[..<computed]))
        }
        #expect(mostHeld <= cache.blocksNeeded(tokens: 4_096, maxChunkTokens: chunk)[1])
        #expect(cache.invariantViolations().isEmpty)
    }

    @Test func slidingOnlyModelReusesTheCachedWindow() throws {
        let window = 32, blockSize = 16
        let cache = try KVCacheManager(groups: [CacheGroupSpec(layers: [0], slidingWindow: window, blockCount: 6)],
                                       blockSize: blockSize)
        let prompt = randomTokens(160, seed: 3)
        var computed = 0
        _ = try cache.admit(sequence: 1, promptTokens: prompt)
        while computed < prompt.count {  // prefill block by block: early blocks leave the window
            #expect(try cache.allocateSlots(sequence: 1, newTokens: blockSize))
            computed += blockSize
            try cache.commit(sequence: 1, tokens: Array(prompt[..<computed]))
        }
        #expect(try heldBlocks(cache, 1, group: 0) == 2)
        let windowBlocks = try cache.blockTable(for: 1)[8...]
        try cache.free(sequence: 1)

        // All 160 tokens are computed; only the last two blocks are needed for the next query.
        #expect(try cache.admit(sequence: 2, promptTokens: prompt + [7]) == 160)
        let table = try cache.blockTable(for: 2)
        #expect(table[..<8].allSatisfy { $0 == -1 })
        #expect(table[8...] == windowBlocks)
        #expect(cache.invariantViolations().isEmpty)
    }

    @Test func hybridHitIsTheLengthEveryGroupCanServe() throws {
        let window = 32, blockSize = 16
        let cache = try hybridCache(fullBlocks: 50, slidingBlocks: 50, window: window)
        let prompt = randomTokens(200, seed: 4)
        _ = try prefill(cache, 1, prompt)
        try cache.free(sequence: 1)
        let promptB = Array(prompt[..<100]) + randomTokens(20, seed: 5)
        #expect(try cache.admit(sequence: 2, promptTokens: promptB) == 96)
        expectWindowCovered(try cache.blockTable(for: 2, group: 1), queryAt: 96, window: window, blockSize: blockSize)
        #expect(try cache.blockTable(for: 2, group: 0).count == 6)
        #expect(try heldBlocks(cache, 2, group: 1) == 2)
    }

    @Test func slidingGroupWithoutItsWindowLimitsTheHit() throws {
        // The full group keeps the whole 160-token prefix, but the sliding group only keeps the
        // window of position 64 (held by a live sequence): the hit falls back to 64 tokens.
        let window = 32, blockSize = 16
        let cache = try hybridCache(fullBlocks: 50, slidingBlocks: 12, window: window)
        let prompt = randomTokens(160, seed: 6)
        var computed = try cache.admit(sequence: 1, promptTokens: prompt)
        while computed < prompt.count {
            #expect(try cache.allocateSlots(sequence: 1, newTokens: blockSize))
            computed += blockSize
            try cache.commit(sequence: 1, tokens: Array(prompt[..<computed]))
        }
        try cache.free(sequence: 1)
        #expect(try prefill(cache, 2, Array(prompt[..<64]) + [1]) == 64)
        #expect(try heldBlocks(cache, 2, group: 1) == 3)  // blocks 2, 3 from the cache, 4 new
        // A third sequence takes every free sliding block, evicting the rest of sequence 1's.
        _ = try prefill(cache, 3, randomTokens(144, seed: 7))
        let hit = try cache.admit(sequence: 4, promptTokens: prompt + [1])
        #expect(hit == 64)
        expectWindowCovered(try cache.blockTable(for: 4, group: 1), queryAt: hit, window: window, blockSize: blockSize)
        #expect(try cache.blockTable(for: 4, group: 0) == Array(cache.blockTable(for: 2, group: 0)[..<4]))
        #expect(cache.invariantViolations().isEmpty)
    }
}
