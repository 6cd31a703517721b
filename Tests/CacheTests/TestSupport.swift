import Cache
import Kernels
import Testing

/// A small seeded generator so randomized tests replay exactly.
typealias SeededGenerator = SplitMix64

extension SplitMix64 {
    init(seed: UInt64) { self.init(state: seed) }
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
