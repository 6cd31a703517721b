/// Incremental detokenization: push ids one at a time and get back only text that is complete.
/// Bytes of a character split across byte tokens are held back until the character is whole, so
/// no push returns a broken UTF-8 sequence; for valid UTF-8 output, the concatenation of all
/// pushes and `finish()` equals `Tokenizer.decode` of all the ids.
public struct StreamingDecoder: Sendable {
    private let tokenizer: Tokenizer
    private var pending: [UInt8] = []
    private var atStart = true

    init(tokenizer: Tokenizer) {
        self.tokenizer = tokenizer
    }

    /// Adds one token; returns the text it completes (possibly empty).
    public mutating func push(_ id: Int) -> String {
        tokenizer.appendBytes(of: id, atStart: atStart, to: &pending)
        atStart = false
        let complete = Self.completeLength(pending)
        guard complete > 0 else { return "" }
        let text = String(decoding: pending[..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return text
    }

    /// Returns whatever is still held back (an incomplete character decodes as U+FFFD) and resets.
    public mutating func finish() -> String {
        defer {
            pending = []
            atStart = true
        }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Length of the prefix of `bytes` that does not end inside an unfinished UTF-8 sequence.
    static func completeLength(_ bytes: [UInt8]) -> Int {
        var start = bytes.count - 1
        // Find the lead byte of the last sequence (at most 3 continuation bytes back).
        while start >= 0, start >= bytes.count - 4, bytes[start] & 0xC0 == 0x80 { start -= 1 }
        guard start >= 0, start >= bytes.count - 4 else { return bytes.count }
        let lead = bytes[start]
        let expected = switch lead {
        case 0xC0 ... 0xDF: 2
        case 0xE0 ... 0xEF: 3
        case 0xF0 ... 0xF7: 4
        default: 1
        }
        return bytes.count - start < expected ? start : bytes.count
    }
}
