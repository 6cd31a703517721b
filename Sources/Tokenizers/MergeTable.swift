/// The BPE merge rules of a vocabulary, keyed by the pair of token ids they join. The same table
/// serves byte-level BPE (rank = position in the merges list) and SentencePiece BPE (rank from the
/// merged token's score), so there is one merge loop for both.
struct MergeTable: Sendable {
    struct Merge: Sendable {
        /// Lower merges first; equal ranks merge leftmost first.
        let rank: Int32
        let result: Int32
    }

    private var pairs: [UInt64: Merge] = [:]

    var count: Int { pairs.count }

    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    /// Adds a rule; when the pair already has one, the lower rank wins.
    mutating func add(left: Int32, right: Int32, result: Int32, rank: Int32) {
        let key = Self.key(left, right)
        if let existing = pairs[key], existing.rank <= rank { return }
        pairs[key] = Merge(rank: rank, result: result)
    }

    func merge(_ left: Int32, _ right: Int32) -> Merge? {
        pairs[Self.key(left, right)]
    }

    /// Rules from a merges list (`"left right"` pairs, rank = index), as GPT-2 style vocabularies and
    /// tokenizer.json store them. A rule whose parts or result are not in the vocabulary is skipped.
    init(mergePairs: [(String, String)], tokenIds: [String: Int32]) {
        pairs.reserveCapacity(mergePairs.count)
        for (rank, pair) in mergePairs.enumerated() {
            guard let left = tokenIds[pair.0], let right = tokenIds[pair.1],
                  let result = tokenIds[pair.0 + pair.1] else { continue }
            add(left: left, right: right, result: result, rank: Int32(rank))
        }
    }

    /// Rules implied by SentencePiece scores (llama.cpp's SPM tokenizer): any two tokens whose
    /// concatenation is a token may merge, the merged token's higher score first. Equal scores get
    /// equal ranks so ties break leftmost, as in llama.cpp.
    init(scores: [Float], tokens: [String?], tokenIds: [String: Int32]) {
        let distinct = Set(scores).sorted(by: >)
        var rankOfScore: [Float: Int32] = [:]
        for (rank, score) in distinct.enumerated() { rankOfScore[score] = Int32(rank) }
        for (id, token) in tokens.enumerated() {
            guard let token, tokenIds[token] == Int32(id) else { continue }
            let scalars = Array(token.unicodeScalars)
            guard scalars.count >= 2, let rank = rankOfScore[scores[id]] else { continue }
            var prefix = String.UnicodeScalarView()
            for split in 1 ..< scalars.count {
                prefix.append(scalars[split - 1])
                var suffix = String.UnicodeScalarView()
                suffix.append(contentsOf: scalars[split...])
                guard let left = tokenIds[String(prefix)], let right = tokenIds[String(suffix)] else { continue }
                add(left: left, right: right, result: Int32(id), rank: rank)
            }
        }
    }

    /// Applies the rules to a sequence of symbol ids until no adjacent pair can merge: always the
    /// lowest-ranked pair, leftmost among equals. Uses a heap over candidate pairs and a linked list
    /// of symbols, so a long SentencePiece segment costs O(n log n), not O(n²).
    /// Negative ids (placeholders for characters outside the vocabulary) never merge.
    func apply(to ids: inout [Int32]) {
        let n = ids.count
        guard n >= 2, !pairs.isEmpty else { return }
        var next = Array(1 ... n).map(Int32.init)
        var prev = Array(-1 ..< n - 1).map(Int32.init)
        next[n - 1] = -1
        var heap = CandidateHeap()
        func consider(_ p: Int) {
            let q = Int(next[p])
            guard q >= 0, let m = merge(ids[p], ids[q]) else { return }
            heap.push(.init(rank: m.rank, position: Int32(p), left: ids[p], right: ids[q], result: m.result))
        }
        for p in 0 ..< n - 1 { consider(p) }
        let dead = Int32.min
        while let c = heap.pop() {
            let p = Int(c.position)
            let q = Int(next[p])
            // Skip candidates made stale by an earlier merge of either symbol.
            guard ids[p] == c.left, q >= 0, ids[q] == c.right else { continue }
            ids[p] = c.result
            ids[q] = dead
            let after = next[q]
            next[p] = after
            if after >= 0 { prev[Int(after)] = Int32(p) }
            if prev[p] >= 0 { consider(Int(prev[p])) }
            consider(p)
        }
        ids.removeAll { $0 == dead }
    }
}

/// A candidate merge of the symbol at `position` with its right neighbour.
private struct Candidate {
    let rank: Int32
    let position: Int32
    let left: Int32
    let right: Int32
    let result: Int32

    func precedes(_ other: Candidate) -> Bool {
        rank != other.rank ? rank < other.rank : position < other.position
    }
}

/// Binary min-heap of candidates ordered by (rank, position).
private struct CandidateHeap {
    private var items: [Candidate] = []

    mutating func push(_ item: Candidate) {
        items.append(item)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].precedes(items[parent]) else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Candidate? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                guard left < items.count else { break }
                let right = left + 1
                let child = right < items.count && items[right].precedes(items[left]) ? right : left
                guard items[child].precedes(items[parent]) else { break }
                items.swapAt(child, parent)
                parent = child
            }
        }
        return top
    }
}
