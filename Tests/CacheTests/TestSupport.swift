import Cache
import Testing

/// A small seeded generator (SplitMix64) so randomized tests replay exactly.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// `count` token ids in 0..<50_000 drawn from `seed`.
func randomTokens(_ count: Int, seed: UInt64) -> [Int] {
    var generator = SeededGenerator(seed: seed)
    return (0..<count).map { _ in Int.random(in: 0..<50_000, using: &generator) }
}

/// Admits a sequence and computes its whole prompt in one step; returns the prefix-cache hit.
@discardableResult
func prefill(_ cache: KVCacheManager, _ id: SequenceID, _ prompt: [Int], extraKeys: [UInt64] = []) throws -> Int {
    let computed = try cache.admit(sequence: id, promptTokens: prompt, extraKeys: extraKeys)
    #expect(try cache.allocateSlots(sequence: id, newTokens: prompt.count - computed))
    try cache.commit(sequence: id, tokens: prompt)
    return computed
}

/// Blocks of a sequence held in `group` (entries that are not -1).
func heldBlocks(_ cache: KVCacheManager, _ id: SequenceID, group: Int) throws -> Int {
    try cache.blockTable(for: id, group: group).filter { $0 >= 0 }.count
}
