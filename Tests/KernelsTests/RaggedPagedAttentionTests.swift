import Foundation
import Kernels
import Testing

/// Max |a - b| over two equally long arrays.
func maxAbsError(_ a: [Float], _ b: [Double]) -> Double {
    zip(a, b).reduce(0) { max($0, abs(Double($1.0) - $1.1)) }
}

/// The option sets the property cases cycle through: each option alone and combined.
func optionVariant(_ index: Int, headDim: Int, qHeads: Int, rng: inout SeededGenerator) -> (String, AttentionOptions) {
    let base = 1 / Float(headDim).squareRoot()
    let window = Int.random(in: 1 ... 120, using: &rng)
    let sinks = (0 ..< qHeads).map { _ in rng.symmetric(3) }
    switch index % 8 {
    case 0: return ("plain", AttentionOptions(scale: base))
    case 1: return ("window \(window)", AttentionOptions(scale: base, slidingWindow: window))
    case 2: return ("softcap 2", AttentionOptions(scale: base * 4, logitSoftCap: 2))
    case 3: return ("sinks", AttentionOptions(scale: base, sinks: sinks))
    case 4: return ("scale 0.37", AttentionOptions(scale: 0.37))
    case 5: return ("window \(window) + softcap", AttentionOptions(scale: base * 3, slidingWindow: window, logitSoftCap: 5))
    case 6: return ("window \(window) + sinks", AttentionOptions(scale: base, slidingWindow: window, sinks: sinks))
    default: return ("all", AttentionOptions(scale: 0.2, slidingWindow: window, logitSoftCap: 3, sinks: sinks))
    }
}

/// Error bound against the float64 reference computed from the original (unquantized) K/V.
func storageBound(_ dtype: KVCacheDType) -> Double {
    switch dtype {
    case .fp32: return 1e-4
    case .f16: return 2e-3
    case .bf16: return 1e-2
    case .int8: return 3e-2  // softcap cases (scale x4, peaky softmax) amplify per-token K rounding
    }
}

@Suite struct RaggedPagedAttentionPropertyTests {
    /// Random ragged batches (prefills, chunked prefills continuing earlier calls, decodes) against the
    /// naive reference. Every case checks the kernel against the reference over the values the cache
    /// actually holds (< 1e-4 for every dtype) and over the original values (`storageBound`).
    @Test(arguments: 0 ..< 60)
    func matchesReference(seed: Int) throws {
        var rng = SeededGenerator(seed: UInt64(seed) &+ 1000)
        let heads = [(1, 1), (4, 1), (8, 2), (4, 4)][seed % 4]
        let headDim = [64, 80, 96, 128, 256][Int.random(in: 0 ..< 5, using: &rng)]
        let blockSize = [8, 16, 32].randomElement(using: &rng)!
        let dtype: KVCacheDType = [.fp32, .fp32, .f16, .bf16, .int8][(seed / 4) % 5]
        let shape = AttentionShape(qHeads: heads.0, kvHeads: heads.1, headDim: headDim, blockSize: blockSize, dtype: dtype)
        let (optionName, options) = optionVariant(seed, headDim: headDim, qHeads: heads.0, rng: &rng)

        // Every 6th case has a long context (up to a few thousand), with fewer sequences.
        let long = seed % 6 == 5
        let sequenceCount = long ? Int.random(in: 1 ... 3, using: &rng) : Int.random(in: 1 ... 16, using: &rng)
        let maxLength = long ? (headDim * heads.0 > 512 ? 1200 : 3000) : 200
        var lengths: [Int] = []
        for _ in 0 ..< sequenceCount { lengths.append(Int.random(in: 1 ... maxLength, using: &rng)) }
        let harness = AttentionHarness(shape: shape, capacityTokens: lengths.reduce(0, +) + 64 * sequenceCount, seed: UInt64(seed))
        // Kind of each sequence: tokens before the final step, split into earlier chunks.
        var earlierChunks: [[Int]] = []
        for length in lengths {
            harness.addSequence(length: length)
            switch Int.random(in: 0 ..< 3, using: &rng) {
            case 0:  // prefill in the final step
                earlierChunks.append([])
            case 1:  // decode: whole prefix written earlier (in one or two chunks)
                let prefix = length - 1
                if prefix == 0 { earlierChunks.append([]) } else {
                    let cut = Int.random(in: 0 ... prefix, using: &rng)
                    earlierChunks.append([cut, prefix - cut].filter { $0 > 0 })
                }
            default:  // chunked prefill: up to three earlier chunks, the rest in the final step
                var remaining = Int.random(in: 0 ..< length, using: &rng)
                var chunks: [Int] = []
                while remaining > 0 && chunks.count < 3 {
                    let c = chunks.count == 2 ? remaining : Int.random(in: 1 ... remaining, using: &rng)
                    chunks.append(c)
                    remaining -= c
                }
                earlierChunks.append(chunks)
            }
        }

        var worstCached = 0.0, worstOriginal = 0.0, maxOutput = 0.0, rowsChecked = 0
        func check(_ parts: [(seq: Int, count: Int)], _ outputs: [[Float]]) {
            let rowSize = shape.qHeads * shape.headDim
            for (part, output) in zip(parts, outputs) where part.count > 0 {
                let seq = harness.sequences[part.seq]
                let cached = harness.cachedKV(part.seq)
                let firstNew = seq.written - part.count
                // Check every row of short parts, a sample (first, last, random) of long ones.
                var rows = Set([0, part.count - 1])
                while rows.count < min(part.count, 12) { rows.insert(Int.random(in: 0 ..< part.count, using: &rng)) }
                for row in rows.sorted() {
                    let got = Array(output[row * rowSize ..< (row + 1) * rowSize])
                    let fromCache = harness.reference(part.seq, position: firstNew + row, options: options, k: cached.k, v: cached.v)
                    let fromOriginal = harness.reference(part.seq, position: firstNew + row, options: options, k: seq.k, v: seq.v)
                    worstCached = max(worstCached, maxAbsError(got, fromCache))
                    worstOriginal = max(worstOriginal, maxAbsError(got, fromOriginal))
                    maxOutput = max(maxOutput, fromOriginal.map(abs).max()!)
                    rowsChecked += 1
                }
            }
        }

        // Earlier steps: round r runs every sequence's r-th earlier chunk together.
        for round in 0 ..< 3 {
            let parts = earlierChunks.enumerated().compactMap { s, chunks in round < chunks.count ? (seq: s, count: chunks[round]) : nil }
                .shuffled(using: &rng)
            if parts.isEmpty { continue }
            check(parts, try harness.step(parts, options: options))
        }
        // Final step: everything that is left, in shuffled order.
        let final = lengths.enumerated().map { s, length in (seq: s, count: length - earlierChunks[s].reduce(0, +)) }
            .shuffled(using: &rng)
        check(final, try harness.step(final, options: options))

        print("case \(seed): \(shape), \(optionName), \(sequenceCount) seqs, lengths \(lengths.max()!), rows \(rowsChecked): "
            + "err vs cache \(String(format: "%.2e", worstCached)), vs original \(String(format: "%.2e", worstOriginal)) (max |out| \(String(format: "%.2f", maxOutput)))")
        #expect(worstCached < 1e-4, "kernel vs reference on cached values: \(worstCached)")
        #expect(worstOriginal < storageBound(dtype), "\(dtype) vs reference on original values: \(worstOriginal)")
    }
}

/// Pools of other sizes: the result must not depend on how many threads share the work.
let singleThreadPool = WorkerPool(threads: 1)
let threeThreadPool = WorkerPool(threads: 3)

@Suite struct BatchInvarianceTests {
    struct Config: CustomStringConvertible, Sendable {
        var qHeads: Int, kvHeads: Int, headDim: Int, blockSize: Int, dtype: KVCacheDType, length: Int, variant: Int
        var description: String { "q\(qHeads)/kv\(kvHeads) d\(headDim) bs\(blockSize) \(dtype) L\(length) options#\(variant)" }
    }

    static let configs: [Config] = [
        Config(qHeads: 8, kvHeads: 2, headDim: 64, blockSize: 16, dtype: .fp32, length: 700, variant: 0),
        Config(qHeads: 4, kvHeads: 1, headDim: 80, blockSize: 8, dtype: .f16, length: 600, variant: 1),
        Config(qHeads: 4, kvHeads: 4, headDim: 128, blockSize: 32, dtype: .int8, length: 300, variant: 7),
        Config(qHeads: 1, kvHeads: 1, headDim: 96, blockSize: 16, dtype: .bf16, length: 1100, variant: 4),
        Config(qHeads: 8, kvHeads: 2, headDim: 256, blockSize: 8, dtype: .fp32, length: 530, variant: 5),
        Config(qHeads: 9, kvHeads: 3, headDim: 64, blockSize: 16, dtype: .fp32, length: 1030, variant: 3),
    ]

    /// Where two output arrays first differ (row of `[qHeads * headDim]` floats), for failure messages.
    static func difference(_ a: [Float], _ b: [Float]) -> String {
        guard a.count == b.count else { return "\(a.count) vs \(b.count) floats" }
        guard let i = a.indices.first(where: { a[$0] != b[$0] }) else { return "none" }
        let mismatches = zip(a, b).filter { $0.0 != $0.1 }.count
        return "\(mismatches) floats, first at index \(i): \(a[i]) vs \(b[i])"
    }

    /// The target sequence's outputs `[length, qHeads, headDim]` under one schedule.
    static func run(_ config: Config, chunk: Int?, batched: UInt64?, pool: WorkerPool = testPool) throws -> [Float] {
        var dataRng = SeededGenerator(seed: 77)
        let (_, options) = optionVariant(config.variant, headDim: config.headDim, qHeads: config.qHeads, rng: &dataRng)
        let shape = AttentionShape(qHeads: config.qHeads, kvHeads: config.kvHeads, headDim: config.headDim,
                                   blockSize: config.blockSize, dtype: config.dtype)
        // A different block shuffle per schedule; the same target data (from `dataRng`) in all.
        let harness = AttentionHarness(shape: shape, capacityTokens: config.length * 6 + 4000, seed: (batched ?? 0) &+ UInt64(chunk ?? 999))
        let source = AttentionHarness(shape: shape, capacityTokens: 16, seed: 5)
        source.rng = dataRng
        source.addSequence(length: config.length)
        harness.sequences.append(source.sequences[0])
        let target = 0
        var output: [Float] = []
        if let seed = batched {
            // Random batches: the target's chunk sizes, its neighbours and its place all vary.
            var rng = SeededGenerator(seed: seed)
            var others: [Int] = []
            while harness.sequences[target].written < config.length {
                let left = config.length - harness.sequences[target].written
                let count = min(left, [1, 1, 3, 17, 64, 200].randomElement(using: &rng)!)
                others = others.filter { harness.sequences[$0].written < harness.sequences[$0].length }
                while others.count < Int.random(in: 0 ... 6, using: &rng) {
                    others.append(harness.addSequence(length: Int.random(in: 1 ... 300, using: &rng)))
                }
                var parts = others.map { s -> (seq: Int, count: Int) in
                    let rest = harness.sequences[s].length - harness.sequences[s].written
                    return (s, Bool.random(using: &rng) ? 1 : Int.random(in: 1 ... rest, using: &rng))
                }
                parts.insert((target, count), at: Int.random(in: 0 ... parts.count, using: &rng))
                let outputs = try harness.step(parts, options: options, pool: pool)
                output += outputs[parts.firstIndex { $0.seq == target }!]
            }
        } else {
            let size = chunk ?? config.length
            while harness.sequences[target].written < config.length {
                let count = min(size, config.length - harness.sequences[target].written)
                output += try harness.step([(target, count)], options: options, pool: pool)[0]
            }
        }
        return output
    }

    /// The same sequence alone, chunked as 1 / 7 / 64 / unchunked, inside random batches, and on pools
    /// of 1, 2 and 3 threads gives bitwise identical output rows.
    @Test(arguments: configs)
    func bitwiseIdenticalAcrossSchedules(config: Config) throws {
        let whole = try Self.run(config, chunk: nil, batched: nil)
        #expect(whole.allSatisfy { $0.isFinite })
        for chunk in [1, 7, 64] {
            let chunked = try Self.run(config, chunk: chunk, batched: nil)
            #expect(chunked == whole, "chunks of \(chunk) differ from one chunk: \(Self.difference(chunked, whole))")
        }
        for seed in [UInt64(1), 2] {
            let batched = try Self.run(config, chunk: nil, batched: seed)
            #expect(batched == whole, "random batches (seed \(seed)) differ from running alone: \(Self.difference(batched, whole))")
        }
        let single = try Self.run(config, chunk: 13, batched: nil, pool: singleThreadPool)
        #expect(single == whole, "1-thread pool differs: \(Self.difference(single, whole))")
        let three = try Self.run(config, chunk: nil, batched: 3, pool: threeThreadPool)
        #expect(three == whole, "3-thread pool differs: \(Self.difference(three, whole))")
    }
}

@Suite struct SlidingWindowTests {
    /// Blocks wholly outside the window are passed as -1 and their storage poisoned with NaN: the
    /// result still matches the reference, so they are never read.
    @Test(arguments: [KVCacheDType.fp32, .int8])
    func skipsBlocksOutsideWindow(dtype: KVCacheDType) throws {
        let shape = AttentionShape(qHeads: 4, kvHeads: 2, headDim: 64, blockSize: 8, dtype: dtype)
        let harness = AttentionHarness(shape: shape, capacityTokens: 2000, seed: 9)
        let options = AttentionOptions(scale: 0.125, slidingWindow: 37)
        let a = harness.addSequence(length: 420), b = harness.addSequence(length: 90)
        _ = try harness.step([(a, 300), (b, 40)], options: options)
        let nanToken = [Float](repeating: .nan, count: shape.kvHeads * shape.headDim)
        var worst = 0.0
        for _ in 0 ..< 50 {
            // Poison every block both sequences no longer need.
            for s in [a, b] {
                let firstNew = harness.sequences[s].written
                for (logical, block) in harness.sequences[s].table.enumerated() where (logical + 1) * 8 - 1 < firstNew - 37 + 1 {
                    for slot in 0 ..< 8 { harness.layer.write(key: nanToken, value: nanToken, block: Int(block), slot: slot) }
                }
            }
            let parts = [(seq: a, count: 2), (seq: b, count: 1)]
            let outputs = try harness.step(parts, options: options)
            for (part, output) in zip(parts, outputs) {
                let cached = harness.cachedKV(part.seq)
                let seq = harness.sequences[part.seq]
                let rowSize = shape.qHeads * shape.headDim
                for row in 0 ..< part.count {
                    let expected = harness.reference(part.seq, position: seq.written - part.count + row, options: options, k: cached.k, v: cached.v)
                    worst = max(worst, maxAbsError(Array(output[row * rowSize ..< (row + 1) * rowSize]), expected))
                }
            }
        }
        print("sliding window \(dtype): max error \(worst)")
        #expect(worst < 1e-4)
    }
}

@Suite struct ValidationTests {
    let shape = AttentionShape(qHeads: 4, kvHeads: 2, headDim: 64, blockSize: 16, dtype: .fp32)

    /// Runs forward on a hand-made batch with random inputs.
    func attempt(_ batch: RaggedBatch, qHeads: Int = 4, options: AttentionOptions = AttentionOptions(scale: 0.125)) throws {
        let layer = PagedKVLayer(blocks: 8, blockSize: 16, kvHeads: 2, headDim: 64, dtype: .fp32)
        let rows = max(batch.cuQueryLens.max() ?? 0, 1)
        let q = [Float](repeating: 0.5, count: rows * qHeads * 64)
        let kv = [Float](repeating: 0.25, count: rows * 2 * 64)
        var out = [Float](repeating: 0, count: rows * qHeads * 64)
        try RaggedPagedAttention.forward(q: q, newKeys: kv, newValues: kv, out: &out, batch: batch, layer: layer,
                                         qHeads: qHeads, options: options, pool: testPool)
    }

    @Test func acceptsValidBatch() throws {
        try attempt(RaggedBatch(cuQueryLens: [0, 3, 4], seqLens: [3, 20], blockTables: [0, -1, 1, 2], maxBlocksPerSequence: 2))
    }

    @Test func rejectsBadCumulativeLengths() {
        for cu in [[1, 3, 4], [0, 3, 2], [0, 3], [0, 3, 4, 5]] {
            #expect(throws: AttentionError.self) {
                try attempt(RaggedBatch(cuQueryLens: cu, seqLens: [3, 20], blockTables: [0, -1, 1, 2], maxBlocksPerSequence: 2))
            }
        }
    }

    @Test func rejectsQueryLongerThanContext() {
        #expect(throws: AttentionError.queryLongerThanContext(sequence: 0, queryLength: 3, seqLen: 2)) {
            try attempt(RaggedBatch(cuQueryLens: [0, 3], seqLens: [2], blockTables: [0], maxBlocksPerSequence: 1))
        }
    }

    @Test func rejectsOutOfRangeBlockIds() {
        for bad: Int32 in [8, 1000, -1, .min] {
            #expect(throws: AttentionError.self) {
                try attempt(RaggedBatch(cuQueryLens: [0, 1, 2], seqLens: [1, 20], blockTables: [0, 0, bad, 3], maxBlocksPerSequence: 2))
            }
        }
        // -1 is allowed (never read) only for blocks outside the sliding window.
        #expect(throws: AttentionError.self) {
            try attempt(RaggedBatch(cuQueryLens: [0, 1], seqLens: [40], blockTables: [-1, 0, 1], maxBlocksPerSequence: 3),
                        options: AttentionOptions(scale: 0.125, slidingWindow: 30))
        }
        #expect(throws: Never.self) {
            try attempt(RaggedBatch(cuQueryLens: [0, 1], seqLens: [40], blockTables: [-1, 0, 1], maxBlocksPerSequence: 3),
                        options: AttentionOptions(scale: 0.125, slidingWindow: 20))
        }
    }

    @Test func rejectsShortTables() {
        // seqLen 40 needs 3 blocks of 16.
        #expect(throws: AttentionError.blockTableTooShort(sequence: 0, needed: 3, have: 2)) {
            try attempt(RaggedBatch(cuQueryLens: [0, 1], seqLens: [40], blockTables: [0, 1], maxBlocksPerSequence: 2))
        }
        // Table array shorter than S * maxBlocksPerSequence.
        #expect(throws: AttentionError.self) {
            try attempt(RaggedBatch(cuQueryLens: [0, 1, 2], seqLens: [1, 1], blockTables: [0, 1, 2], maxBlocksPerSequence: 2))
        }
    }

    @Test func rejectsBadShapesAndOptions() {
        let batch = RaggedBatch(cuQueryLens: [0, 1], seqLens: [1], blockTables: [0], maxBlocksPerSequence: 1)
        #expect(throws: AttentionError.self) { try attempt(batch, qHeads: 3) }
        #expect(throws: AttentionError.self) { try attempt(batch, options: AttentionOptions(scale: 0.1, sinks: [1, 2])) }
        #expect(throws: AttentionError.self) { try attempt(batch, options: AttentionOptions(scale: 0.1, slidingWindow: 0)) }
        #expect(throws: AttentionError.self) { try attempt(batch, options: AttentionOptions(scale: 0.1, logitSoftCap: -1)) }
        #expect(throws: AttentionError.self) { try attempt(batch, options: AttentionOptions(scale: .nan)) }
    }
}

@Suite struct PagedKVLayerTests {
    @Test func int8HalvesF16AndQuartersFP32() {
        for (kvHeads, headDim) in [(3, 64), (8, 128), (1, 256)] {
            let fp32 = PagedKVLayer.bytesPerToken(kvHeads: kvHeads, headDim: headDim, dtype: .fp32)
            let f16 = PagedKVLayer.bytesPerToken(kvHeads: kvHeads, headDim: headDim, dtype: .f16)
            let bf16 = PagedKVLayer.bytesPerToken(kvHeads: kvHeads, headDim: headDim, dtype: .bf16)
            let int8 = PagedKVLayer.bytesPerToken(kvHeads: kvHeads, headDim: headDim, dtype: .int8)
            #expect(fp32 == 2 * kvHeads * headDim * 4)
            #expect(f16 == fp32 / 2 && bf16 == f16)
            // int8 elements are half of f16's, plus one float scale per (token, head) for K and V.
            #expect(int8 == f16 / 2 + 2 * kvHeads * 4)
            #expect(Double(int8) <= 0.54 * Double(f16) && Double(int8) <= 0.27 * Double(fp32))
            print("bytes/token kv\(kvHeads) d\(headDim): fp32 \(fp32), f16 \(f16), int8 \(int8) (\(Double(int8) / Double(f16)) of f16)")
            for dtype in KVCacheDType.allCases {
                let layer = PagedKVLayer(blocks: 5, blockSize: 16, kvHeads: kvHeads, headDim: headDim, dtype: dtype)
                #expect(layer.bytes == 5 * 16 * PagedKVLayer.bytesPerToken(kvHeads: kvHeads, headDim: headDim, dtype: dtype))
            }
        }
    }

    /// Write, read back (dequantized) and copy a block, for every dtype.
    @Test(arguments: KVCacheDType.allCases)
    func roundTripAndCopy(dtype: KVCacheDType) {
        var rng = SeededGenerator(seed: 3)
        let kvHeads = 2, headDim = 80
        let layer = PagedKVLayer(blocks: 4, blockSize: 8, kvHeads: kvHeads, headDim: headDim, dtype: dtype)
        let key = (0 ..< kvHeads * headDim).map { _ in rng.symmetric(3) }
        let value = (0 ..< kvHeads * headDim).map { _ in rng.symmetric(3) }
        layer.write(key: key, value: value, block: 2, slot: 5)
        layer.copyBlock(from: 2, to: 0)
        let tolerance: Float = [.fp32: 0, .f16: 2e-3, .bf16: 1.2e-2, .int8: 1.2e-2][dtype]!
        var readK = [Float](repeating: 0, count: headDim), readV = readK
        for block in [2, 0] {
            for head in 0 ..< kvHeads {
                layer.readKey(block: block, slot: 5, head: head, into: &readK)
                layer.readValue(block: block, slot: 5, head: head, into: &readV)
                for i in 0 ..< headDim {
                    #expect(abs(readK[i] - key[head * headDim + i]) <= tolerance * 3)
                    #expect(abs(readV[i] - value[head * headDim + i]) <= tolerance * 3)
                }
            }
        }
        // Out-of-range addresses are ignored or read as zeros, never a crash.
        layer.write(key: key, value: value, block: 4, slot: 0)
        layer.write(key: key, value: value, block: 0, slot: 8)
        layer.readKey(block: -1, slot: 0, head: 0, into: &readK)
        #expect(readK.allSatisfy { $0 == 0 })
        layer.copyBlock(from: 7, to: 0)
    }
}
