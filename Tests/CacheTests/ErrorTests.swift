import Cache
import Testing

@Suite struct ErrorTests {
    @Test func unknownSequenceIsRejectedEverywhere() throws {
        let cache = try KVCacheManager(blockCount: 4, blockSize: 4)
        #expect(throws: CacheError.unknownSequence(9)) { try cache.allocateSlots(sequence: 9, newTokens: 1) }
        #expect(throws: CacheError.unknownSequence(9)) { try cache.commit(sequence: 9, tokens: [1]) }
        #expect(throws: CacheError.unknownSequence(9)) { try cache.free(sequence: 9) }
        #expect(throws: CacheError.unknownSequence(9)) { try cache.blockTable(for: 9) }
        #expect(throws: CacheError.unknownSequence(9)) { try cache.numComputedTokens(of: 9) }
        _ = try prefill(cache, 9, [1, 2])
        try cache.free(sequence: 9)
        #expect(throws: CacheError.unknownSequence(9)) { try cache.free(sequence: 9) }
    }

    @Test func admittingTwiceOrAnEmptyPromptFails() throws {
        let cache = try KVCacheManager(blockCount: 4, blockSize: 4)
        _ = try cache.admit(sequence: 1, promptTokens: [1])
        #expect(throws: CacheError.sequenceAlreadyAdmitted(1)) { try cache.admit(sequence: 1, promptTokens: [1]) }
        #expect(throws: CacheError.emptyPrompt(2)) { try cache.admit(sequence: 2, promptTokens: []) }
    }

    @Test func promptLongerThanAnyPoolCanHoldFails() throws {
        let cache = try KVCacheManager(blockCount: 4, blockSize: 16)
        #expect(throws: CacheError.promptTooLong(tokens: 65, group: 0, blocksNeeded: 5, blockCount: 4)) {
            try cache.admit(sequence: 1, promptTokens: Array(0..<65))
        }
        #expect(cache.sequenceIDs.isEmpty)
        _ = try cache.admit(sequence: 1, promptTokens: Array(0..<64))

        let sliding = try KVCacheManager(groups: [CacheGroupSpec(layers: [0], slidingWindow: 512, blockCount: 10)])
        #expect(throws: CacheError.promptTooLong(tokens: 4_096, group: 0, blocksNeeded: 33, blockCount: 10)) {
            try sliding.admit(sequence: 1, promptTokens: Array(0..<4_096))
        }
    }

    @Test func commitMustStayWithinAllocatedSlotsAndNeverRewind() throws {
        let cache = try KVCacheManager(blockCount: 4, blockSize: 4)
        _ = try cache.admit(sequence: 1, promptTokens: [1, 2, 3])
        #expect(throws: CacheError.commitBeyondAllocatedSlots(1, tokens: 3, slots: 0)) {
            try cache.commit(sequence: 1, tokens: [1, 2, 3])
        }
        #expect(try cache.allocateSlots(sequence: 1, newTokens: 3))
        try cache.commit(sequence: 1, tokens: [1, 2, 3])
        #expect(throws: CacheError.commitRewinds(1, tokens: 2, computed: 3)) {
            try cache.commit(sequence: 1, tokens: [1, 2])
        }
        #expect(throws: CacheError.invalidArgument("new token count -1 is negative")) {
            try cache.allocateSlots(sequence: 1, newTokens: -1)
        }
    }

    @Test func badConfigurationsAreRejected() {
        #expect(throws: CacheError.self) { try KVCacheManager(groups: []) }
        #expect(throws: CacheError.self) { try KVCacheManager(blockCount: 0) }
        #expect(throws: CacheError.self) { try KVCacheManager(blockCount: 4, blockSize: 0) }
        #expect(throws: CacheError.self) {
            try KVCacheManager(groups: [CacheGroupSpec(layers: [0], slidingWindow: 0, blockCount: 4)])
        }
        #expect(throws: CacheError.self) {
            try KVCacheManager(groups: [CacheGroupSpec(layers: [0, 1], blockCount: 4),
                                        CacheGroupSpec(layers: [1], slidingWindow: 8, blockCount: 4)])
        }
    }

    @Test func outOfBlocksComesFromThePool() throws {
        let pool = try BlockPool(blockCount: 2)
        #expect(throws: CacheError.outOfBlocks(requested: 3, free: 2)) { try pool.allocate(3) }
    }

    @Test func messagesNameTheValues() {
        #expect(CacheError.unknownSequence(7).description.contains("#7"))
        let tooLong = CacheError.promptTooLong(tokens: 65, group: 0, blocksNeeded: 5, blockCount: 4).description
        #expect(tooLong.contains("65") && tooLong.contains("5 blocks") && tooLong.contains("only has 4"))
        #expect(CacheError.outOfBlocks(requested: 3, free: 2).description == "out of KV cache blocks: 3 requested, 2 free")
    }
}
