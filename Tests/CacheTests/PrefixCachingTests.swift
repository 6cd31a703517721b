import Cache
import Testing

@Suite struct PrefixCachingTests {
    @Test func sharedPrefixReusesTheSameBlocks() throws {
        let cache = try KVCacheManager(blockCount: 300, blockSize: 16)
        let promptA = randomTokens(1_030, seed: 1)
        #expect(try prefill(cache, 1, promptA) == 0)
        let tableA = try cache.blockTable(for: 1)
        try cache.free(sequence: 1)

        let promptB = Array(promptA[0..<1_000]) + randomTokens(50, seed: 2)
        let computed = try cache.admit(sequence: 2, promptTokens: promptB)
        #expect(computed == 992)  // 62 full blocks ≤ 1,000 shared tokens
        #expect(try cache.numComputedTokens(of: 2) == 992)
        #expect(try cache.blockTable(for: 2) == Array(tableA[0..<62]))
        #expect(cache.prefixCacheQueries == 1_030 + 1_050)
        #expect(cache.prefixCacheHits == 992)
        #expect(cache.prefixCacheHitRate == 992.0 / 2_080.0)

        #expect(try cache.allocateSlots(sequence: 2, newTokens: promptB.count - computed))
        try cache.commit(sequence: 2, tokens: promptB)
        #expect(try cache.blockTable(for: 2).count == 66)
        #expect(cache.invariantViolations().isEmpty)
    }

    @Test func differentExtraKeyGetsNoHit() throws {
        let cache = try KVCacheManager(blockCount: 100, blockSize: 16)
        let prompt = randomTokens(500, seed: 3)
        _ = try prefill(cache, 1, prompt, extraKeys: [7])
        try cache.free(sequence: 1)
        #expect(try cache.admit(sequence: 2, promptTokens: prompt, extraKeys: [8]) == 0)
        #expect(try cache.admit(sequence: 3, promptTokens: prompt) == 0)
        #expect(try cache.admit(sequence: 4, promptTokens: prompt, extraKeys: [7]) == 496)
    }

    @Test func identicalPromptStillLeavesATokenToCompute() throws {
        let cache = try KVCacheManager(blockCount: 200, blockSize: 16)
        let prompt = randomTokens(1_024, seed: 4)  // exactly 64 blocks
        _ = try prefill(cache, 1, prompt)
        try cache.free(sequence: 1)
        #expect(try cache.admit(sequence: 2, promptTokens: prompt) == 1_008)
        let ragged = randomTokens(1_030, seed: 5)
        _ = try prefill(cache, 3, ragged)
        #expect(try cache.admit(sequence: 4, promptTokens: ragged) == 1_024)
    }

    @Test func livePrefixIsSharedWhileTheFirstSequenceRuns() throws {
        let cache = try KVCacheManager(blockCount: 100, blockSize: 16)
        let prompt = randomTokens(100, seed: 6)
        _ = try prefill(cache, 1, prompt)
        #expect(try prefill(cache, 2, prompt + [1, 2, 3]) == 96)
        #expect(try cache.blockTable(for: 2)[0..<6] == cache.blockTable(for: 1)[0..<6])
    }

    @Test func generatedTokensBecomeCachedToo() throws {
        let cache = try KVCacheManager(blockCount: 100, blockSize: 16)
        var tokens = randomTokens(20, seed: 7)
        _ = try prefill(cache, 1, tokens)
        for token in randomTokens(30, seed: 8) {
            #expect(try cache.allocateSlots(sequence: 1, newTokens: 1))
            tokens.append(token)
            try cache.commit(sequence: 1, tokens: tokens)
        }
        try cache.free(sequence: 1)
        // A follow-up turn sends the whole conversation (50 tokens = 3 full blocks) plus more.
        #expect(try cache.admit(sequence: 2, promptTokens: tokens + [42]) == 48)
    }

    @Test func evictionTakesTheLeastRecentlyFreedTailFirst() throws {
        let cache = try KVCacheManager(blockCount: 8, blockSize: 4)
        let pool = cache.groups[0].pool
        let prompt = Array(0..<8)  // two full blocks, 0 and 1
        _ = try prefill(cache, 1, prompt)
        try cache.free(sequence: 1)
        #expect(pool.cachedBlockCount == 2)
        #expect(pool.freeQueue() == [2, 3, 4, 5, 6, 7, 1, 0])

        _ = try prefill(cache, 2, Array(100..<124))  // takes the six never-cached blocks
        #expect(cache.evictions == 0)
        _ = try prefill(cache, 3, [500])  // evicts block 1, the tail of sequence 1
        #expect(cache.evictions == 1)
        #expect(try cache.blockTable(for: 3) == [1])
        #expect(try cache.admit(sequence: 4, promptTokens: prompt + [8]) == 4)
        #expect(try cache.blockTable(for: 4) == [0])
        #expect(cache.freeBlockCount == 0)
        // Nothing is free: blocks held by live sequences are never taken.
        #expect(try !cache.allocateSlots(sequence: 4, newTokens: 5))
        #expect(cache.invariantViolations().isEmpty)
    }

    @Test func preemptedSequenceResumesFromTheCache() throws {
        let cache = try KVCacheManager(blockCount: 50, blockSize: 16)
        var tokens = randomTokens(64, seed: 9)
        _ = try prefill(cache, 1, tokens)
        tokens += [1, 2, 3]
        #expect(try cache.allocateSlots(sequence: 1, newTokens: 3))
        try cache.commit(sequence: 1, tokens: tokens)
        try cache.free(sequence: 1)  // preempted
        #expect(try cache.admit(sequence: 1, promptTokens: tokens) == 64)
        #expect(try cache.allocateSlots(sequence: 1, newTokens: 3))
        try cache.commit(sequence: 1, tokens: tokens)
        #expect(try cache.numComputedTokens(of: 1) == 67)
    }

    @Test func disabledPrefixCachingNeverHits() throws {
        let cache = try KVCacheManager(blockCount: 50, blockSize: 16, enablePrefixCaching: false)
        let prompt = randomTokens(100, seed: 10)
        _ = try prefill(cache, 1, prompt)
        try cache.free(sequence: 1)
        #expect(try cache.admit(sequence: 2, promptTokens: prompt) == 0)
        #expect(cache.prefixCacheQueries == 0)
    }
}
