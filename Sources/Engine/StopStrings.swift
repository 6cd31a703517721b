/// Finds stop strings in a stream of decoded text deltas, including stop strings split across
/// token boundaries, and never emits any part of one.
///
/// Matching is on Unicode scalars (code points), like vLLM's Python `str` matching: deltas and
/// stop strings are compared scalar by scalar, with no normalization, so an emoji or a
/// multi-scalar sequence (ZWJ emoji, flags) matches as soon as its scalars have arrived, and
/// a stop string may also match the start of a longer grapheme cluster. Empty stop strings
/// are ignored.
public struct StopStringMatcher: Sendable {
    private let stops: [[Unicode.Scalar]]
    /// Text held back because it could still be the start of a stop string.
    private var pending: [Unicode.Scalar] = []
    /// Whether a stop string was found; later pushes emit nothing.
    public private(set) var stopped = false
    /// The stop string that ended the stream, if any.
    public private(set) var matchedStop: String?

    public init(_ stopStrings: [String]) {
        stops = stopStrings.map { Array($0.unicodeScalars) }.filter { !$0.isEmpty }
    }

    /// Adds the next delta. Returns the text that is now safe to show: everything except the
    /// longest suffix that could still start a stop string, or, on a match, only the text
    /// before the earliest stop string (then `stopped` is true).
    public mutating func push(_ delta: String) -> (emit: String, stopped: Bool) {
        guard !stopped else { return ("", true) }
        // Without stop strings nothing is held back: the text passes through untouched.
        if stops.isEmpty { return (delta, false) }
        pending.append(contentsOf: delta.unicodeScalars)
        if let (start, stop) = earliestMatch() {
            stopped = true
            matchedStop = String(String.UnicodeScalarView(stop))
            let emit = Self.text(pending[..<start])
            pending.removeAll()
            return (emit, true)
        }
        let cut = pending.count - heldBackLength()
        let emit = Self.text(pending[..<cut])
        pending.removeFirst(cut)
        return (emit, false)
    }

    /// Ends the stream: returns the text held back (empty after a stop).
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return stopped ? "" : Self.text(pending[...])
    }

    /// Start of the earliest stop string in `pending`, and which one.
    private func earliestMatch() -> (Int, [Unicode.Scalar])? {
        var found: (Int, [Unicode.Scalar])?
        for stop in stops where stop.count <= pending.count {
            for start in 0 ... pending.count - stop.count {
                if let (earliest, _) = found, start >= earliest { break }
                if pending[start ..< start + stop.count].elementsEqual(stop) {
                    found = (start, stop)
                    break
                }
            }
        }
        return found
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of a stop string.
    private func heldBackLength() -> Int {
        var longest = 0
        for stop in stops {
            let maxLength = Swift.min(stop.count - 1, pending.count)
            guard maxLength > longest else { continue }
            for length in stride(from: maxLength, to: longest, by: -1)
                where pending[(pending.count - length)...].elementsEqual(stop[..<length]) {
                longest = length
                break
            }
        }
        return longest
    }

    private static func text(_ scalars: ArraySlice<Unicode.Scalar>) -> String {
        String(String.UnicodeScalarView(scalars))
    }
}
