/// A token that is matched verbatim in input text before pre-tokenization: GGUF CONTROL /
/// USER_DEFINED / UNKNOWN tokens, tokenizer.json `added_tokens`.
struct AddedToken: Sendable {
    let id: Int
    let content: String
    /// tokenizer.json `lstrip` / `rstrip`: whitespace on that side is absorbed into the token.
    var absorbsSpaceBefore = false
    var absorbsSpaceAfter = false
}

/// Cuts text into runs of plain text and added tokens, taking the longest added token that
/// starts at the leftmost position.
struct SpecialTokenMatcher: Sendable {
    enum Segment: Equatable {
        case text(Range<Int>)
        case token(Int)
    }

    private struct Entry: Sendable {
        let scalars: [Unicode.Scalar]
        let token: AddedToken
    }

    /// Candidates by first scalar, longest first.
    private let entriesByFirstScalar: [UInt32: [Entry]]

    init(_ tokens: [AddedToken]) {
        var table: [UInt32: [Entry]] = [:]
        for token in tokens {
            let scalars = Array(token.content.unicodeScalars)
            guard let first = scalars.first else { continue }
            table[first.value, default: []].append(Entry(scalars: scalars, token: token))
        }
        for key in table.keys { table[key]?.sort { $0.scalars.count > $1.scalars.count } }
        entriesByFirstScalar = table
    }

    func segments(of s: [Unicode.Scalar]) -> [Segment] {
        guard !entriesByFirstScalar.isEmpty else { return s.isEmpty ? [] : [.text(0 ..< s.count)] }
        var segments: [Segment] = []
        var textStart = 0
        var i = 0
        while i < s.count {
            guard let entry = longestMatch(in: s, at: i) else { i += 1; continue }
            var textEnd = i
            if entry.token.absorbsSpaceBefore {
                while textEnd > textStart && s[textEnd - 1].properties.isWhitespace { textEnd -= 1 }
            }
            if textEnd > textStart { segments.append(.text(textStart ..< textEnd)) }
            segments.append(.token(entry.token.id))
            i += entry.scalars.count
            if entry.token.absorbsSpaceAfter {
                while i < s.count && s[i].properties.isWhitespace { i += 1 }
            }
            textStart = i
        }
        if textStart < s.count { segments.append(.text(textStart ..< s.count)) }
        return segments
    }

    private func longestMatch(in s: [Unicode.Scalar], at i: Int) -> Entry? {
        guard let candidates = entriesByFirstScalar[s[i].value] else { return nil }
        for entry in candidates where i + entry.scalars.count <= s.count {
            var matches = true
            for (offset, scalar) in entry.scalars.enumerated() where s[i + offset] != scalar {
                matches = false
                break
            }
            if matches { return entry }
        }
        return nil
    }
}
