import Cache
import Testing

@Suite struct BlockHashTests {
    // Expected digests come from Python's hashlib.sha256 over the documented byte layout.
    @Test func hashIsSHA256OfTheDocumentedLayoutAndStable() {
        let first = BlockHash(parent: .root, tokens: [1, 2, 3, -4])
        #expect(first.hex == "ae275076e78e255d7fc25e086a0691eb17089bebd85d333d52e26ed9512b17df")
        let second = BlockHash(parent: first, tokens: [5, 6, 7, 8], extraKeys: [7, .max])
        #expect(second.hex == "4bdd10b43a3df8fc98fd9b9cd3d68d2c51feb5876e97eec6a6817ef26df02f84")
        // 8,048 bytes: many SHA-256 chunks.
        let long = BlockHash(parent: .root, tokens: Array(0..<1000))
        #expect(long.hex == "71871110c536722f739c646af1f852eae86a528f58781b6fea22f9eb4ee7a7cb")
    }

    @Test func hashDependsOnParentTokensAndExtraKeys() {
        let base = BlockHash(parent: .root, tokens: [1, 2, 3, 4])
        #expect(BlockHash(parent: .root, tokens: [1, 2, 3, 4]) == base)
        #expect(BlockHash(parent: .root, tokens: [1, 2, 4, 3]) != base)
        #expect(BlockHash(parent: .root, tokens: [1, 2, 3, 4], extraKeys: [0]) != base)
        #expect(BlockHash(parent: base, tokens: [1, 2, 3, 4]) != base)
    }

    @Test func chainLinksEachBlockToTheOneBefore() {
        let tokens = randomTokens(40, seed: 1)
        let keys = BlockKey.chain(tokens: tokens, blockSize: 16, count: 2, extraKeys: [9])
        #expect(keys.count == 2)
        #expect(keys[0].parent == .root)
        #expect(keys[1].parent == keys[0].hash)
        #expect(keys[1].tokens == Array(tokens[16..<32]))
        #expect(keys[1].hash == BlockHash(parent: keys[0].hash, tokens: tokens[16..<32], extraKeys: [9]))
    }
}
