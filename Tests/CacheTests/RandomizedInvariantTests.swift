import Cache
import Testing

/// Replays seeded random admit / step / preempt / free sequences against the manager and checks,
/// after every operation, invariants computed independently of its own bookkeeping.
@Suite struct RandomizedInvariantTests {
    struct Configuration: Sendable, CustomStringConvertible {
        var seed: UInt64
        var slidingWindow: Int?
        var description: String { "seed \(seed), window \(slidingWindow.map(String.init) ?? "none")" }
    }

    /// A live sequence as the test sees it.
    struct Live {
        var prompt: [Int]
        var tokens: [Int]  // committed
        var extraKeys: [UInt64]
        var blockHashes: [BlockHash]  // expected hash of each committed full block
        var length: Int  // total tokens it will reach
    }

    static let blockSize = 8

    @Test(arguments: [
        Configuration(seed: 1, slidingWindow: nil), Configuration(seed: 2, slidingWindow: nil),
        Configuration(seed: 3, slidingWindow: 20), Configuration(seed: 4, slidingWindow: 33),
        Configuration(seed: 5, slidingWindow: 8), Configuration(seed: 6, slidingWindow: 1),
    ])
    func randomOperationsKeepInvariants(configuration: Configuration) throws {
        var random = SeededGenerator(seed: configuration.seed)
        var specs = [CacheGroupSpec(layers: [0], blockCount: 48)]
        if let window = configuration.slidingWindow {
            specs.append(CacheGroupSpec(layers: [1], slidingWindow: window, blockCount: 30))
        }
        let cache = try KVCacheManager(groups: specs, blockSize: Self.blockSize)
        let bases = (0..<3).map { randomTokens(120, seed: configuration.seed &* 100 &+ UInt64($0)) }
        // What each block holds according to the test: the expected hash of the last full block written.
        var content = cache.groups.map { [BlockHash?](repeating: nil, count: $0.pool.blockCount) }
        var live: [SequenceID: Live] = [:]
        var waiting: [(SequenceID, [Int], [UInt64], Int)] = []
        var nextID = 0
        var hits = 0

        func admit(_ id: SequenceID, prompt: [Int], extraKeys: [UInt64], length: Int) throws {
            let computed = try cache.admit(sequence: id, promptTokens: prompt, extraKeys: extraKeys)
            #expect(computed % Self.blockSize == 0 && computed < prompt.count)
            hits += computed
            let hashes = BlockKey.chain(tokens: prompt, blockSize: Self.blockSize, count: computed / Self.blockSize,
                                        extraKeys: extraKeys).map(\.hash)
            live[id] = Live(prompt: prompt, tokens: Array(prompt[..<computed]), extraKeys: extraKeys,
                            blockHashes: hashes, length: length)
        }

        func step(_ id: SequenceID) throws {
            var sequence = live[id]!
            let done = sequence.tokens.count
            let remainingPrompt = sequence.prompt.count - done
            let count = remainingPrompt > 0 ? min(remainingPrompt, Int.random(in: 1...24, using: &random))
                                            : min(sequence.length - done, Int.random(in: 1...3, using: &random))
            guard try cache.allocateSlots(sequence: id, newTokens: count) else {
                // Preempt: recompute later from everything it has so far.
                try cache.free(sequence: id)
                live[id] = nil
                waiting.append((id, sequence.tokens.isEmpty ? sequence.prompt : sequence.tokens + [7],
                                sequence.extraKeys, sequence.length))
                return
            }
            let newTokens = remainingPrompt > 0 ? Array(sequence.prompt[done..<done + count])
                                                : (0..<count).map { _ in Int.random(in: 0..<50, using: &random) }
            sequence.tokens += newTokens
            let tablesBeforeCommit = try cache.groups.indices.map { try cache.blockTable(for: id, group: $0) }
            try cache.commit(sequence: id, tokens: sequence.tokens)
            let full = sequence.tokens.count / Self.blockSize
            sequence.blockHashes += BlockKey.chain(
                tokens: Array(sequence.tokens[sequence.blockHashes.count * Self.blockSize..<full * Self.blockSize]),
                blockSize: Self.blockSize, count: full - sequence.blockHashes.count, extraKeys: sequence.extraKeys,
                after: sequence.blockHashes.last ?? .root).map(\.hash)
            for group in cache.groups.indices {
                for index in done / Self.blockSize..<full {
                    content[group][Int(tablesBeforeCommit[group][index])] = sequence.blockHashes[index]
                }
            }
            if sequence.tokens.count >= sequence.length {
                try cache.free(sequence: id)
                live[id] = nil
            } else {
                live[id] = sequence
            }
        }

        func checkInvariants(after operation: Int) throws {
            #expect(cache.invariantViolations() == [], "after operation \(operation)")
            for (groupIndex, group) in cache.groups.enumerated() {
                let pool = group.pool
                var holders = [Int](repeating: 0, count: pool.blockCount)
                for id in live.keys {
                    for block in try cache.blockTable(for: id, group: groupIndex) where block >= 0 {
                        holders[Int(block)] += 1
                    }
                }
                let freeQueue = pool.freeQueue()
                #expect(Set(freeQueue).count == freeQueue.count, "duplicate in free queue")
                let free = Set(freeQueue)
                for block in 0..<pool.blockCount {
                    #expect(pool.referenceCount(of: Int32(block)) == holders[block], "block \(block) references")
                    #expect(free.contains(Int32(block)) == (holders[block] == 0), "block \(block) free")
                    if let key = pool.cachedKey(of: Int32(block)) {
                        #expect(content[groupIndex][block] == key.hash, "block \(block) cached under other content")
                    }
                }
                for (id, sequence) in live {
                    let table = try cache.blockTable(for: id, group: groupIndex)
                    let firstVisible = group.firstVisibleBlock(forQueryAt: sequence.tokens.count)
                    for index in 0..<sequence.tokens.count / Self.blockSize where index >= firstVisible {
                        // Every block the next query sees holds exactly this sequence's prefix.
                        #expect(table[index] >= 0 && content[groupIndex][Int(table[index])] == sequence.blockHashes[index],
                                "sequence \(id) block \(index) in group \(groupIndex)")
                    }
                }
            }
        }

        for operation in 0..<400 {
            let roll = Double.random(in: 0..<1, using: &random)
            if roll < 0.25, live.count < 6 {
                if let resumed = waiting.popLast() {
                    try admit(resumed.0, prompt: resumed.1, extraKeys: resumed.2, length: max(resumed.3, resumed.1.count + 1))
                } else {
                    let base = bases.randomElement(using: &random)!
                    let prompt = Array(base[..<Int.random(in: 0...100, using: &random)])
                        + (0..<Int.random(in: 1...20, using: &random)).map { _ in Int.random(in: 0..<50, using: &random) }
                    let extraKeys: [UInt64] = Int.random(in: 0..<5, using: &random) == 0 ? [1] : []
                    nextID += 1
                    try admit(SequenceID(nextID), prompt: prompt, extraKeys: extraKeys,
                              length: prompt.count + Int.random(in: 1...60, using: &random))
                }
            } else if roll < 0.9, let id = live.keys.sorted().randomElement(using: &random) {
                try step(id)
            } else if let id = live.keys.sorted().randomElement(using: &random) {
                try cache.free(sequence: id)
                live[id] = nil
            }
            try checkInvariants(after: operation)
        }
        #expect(hits > 0, "the workload should exercise prefix hits")
        #expect(cache.evictions > 0, "the workload should exercise eviction")
        for id in live.keys { try cache.free(sequence: id) }
        #expect(cache.usage == 0)
        #expect(cache.invariantViolations().isEmpty)
    }
}
