/// The identity of a full block's contents *in context*: the SHA-256 digest of its parent block's
/// hash, its extra keys and its token ids, so equal hashes mean an equal whole prefix.
///
/// SHA-256 (rather than Swift's per-process randomly seeded `Hasher` or a fast non-cryptographic
/// mix) makes the hash stable across runs and machines and keeps crafted prompts from colliding
/// with another request's prefix — the reason vLLM moved its prefix cache to SHA-256 as well.
public struct BlockHash: Hashable, Sendable, CustomStringConvertible {
    /// The 256-bit digest as four big-endian 64-bit words.
    public let words: [UInt64]

    /// The parent of a sequence's first block.
    public static let root = BlockHash(words: [0, 0, 0, 0])

    init(words: [UInt64]) { self.words = words }

    /// The hash of a block with `tokens` following the block hashed `parent`.
    ///
    /// Hashed bytes, all integers little-endian: parent digest (32 bytes), extra-key count (8),
    /// each extra key (8), token count (8), each token id as a 64-bit integer (8).
    public init(parent: BlockHash, tokens: some Collection<Int>, extraKeys: [UInt64] = []) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(48 + 8 * (extraKeys.count + tokens.count))
        for word in parent.words { bytes.appendBigEndian(word) }
        bytes.appendLittleEndian(UInt64(extraKeys.count))
        for key in extraKeys { bytes.appendLittleEndian(key) }
        bytes.appendLittleEndian(UInt64(tokens.count))
        for token in tokens { bytes.appendLittleEndian(UInt64(bitPattern: Int64(token))) }
        words = SHA256.digest(bytes)
    }

    /// The digest in lowercase hex (64 characters).
    public var hex: String {
        words.map { word in
            let digits = String(word, radix: 16)
            return String(repeating: "0", count: 16 - digits.count) + digits
        }.joined()
    }

    public var description: String { String(hex.prefix(16)) }
}

/// A full block's key for prefix caching: its hash plus everything the hash covers, so a lookup
/// compares the actual tokens and never trusts the hash alone.
public struct BlockKey: Hashable, Sendable {
    /// Hash of the block before this one (`BlockHash.root` for a sequence's first block).
    public let parent: BlockHash
    /// The block's token ids (exactly `blockSize` of them).
    public let tokens: [Int]
    /// Anything besides tokens that changes the K/V, e.g. a LoRA adapter id or multimodal input hash.
    public let extraKeys: [UInt64]
    /// `BlockHash(parent:tokens:extraKeys:)`, computed once.
    public let hash: BlockHash

    public init(parent: BlockHash, tokens: some Collection<Int>, extraKeys: [UInt64] = []) {
        self.parent = parent
        self.tokens = Array(tokens)
        self.extraKeys = extraKeys
        self.hash = BlockHash(parent: parent, tokens: tokens, extraKeys: extraKeys)
    }

    /// The keys of the first `count` full blocks of `tokens`, each chained on the one before.
    public static func chain(tokens: [Int], blockSize: Int, count: Int, extraKeys: [UInt64] = [],
                             after parent: BlockHash = .root) -> [BlockKey] {
        var keys: [BlockKey] = []
        keys.reserveCapacity(count)
        var parent = parent
        for index in 0..<count {
            let key = BlockKey(parent: parent, tokens: tokens[index * blockSize..<(index + 1) * blockSize],
                               extraKeys: extraKeys)
            keys.append(key)
            parent = key.hash
        }
        return keys
    }
}

extension [UInt8] {
    mutating func appendLittleEndian(_ value: UInt64) {
        for shift in stride(from: 0, to: 64, by: 8) { append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    mutating func appendBigEndian(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }
}

/// FIPS 180-4 SHA-256 over a byte array (Foundation on Linux has no CryptoKit).
enum SHA256 {
    private static let roundConstants: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    private static let initialState: [UInt32] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ]

    /// The digest as four big-endian 64-bit words.
    static func digest(_ message: [UInt8]) -> [UInt64] {
        var padded = message
        padded.append(0x80)
        while padded.count % 64 != 56 { padded.append(0) }
        padded.appendBigEndian(UInt64(message.count) &* 8)

        var state = initialState
        var schedule = [UInt32](repeating: 0, count: 64)
        for chunkStart in stride(from: 0, to: padded.count, by: 64) {
            for i in 0..<16 {
                let at = chunkStart + 4 * i
                schedule[i] = UInt32(padded[at]) << 24 | UInt32(padded[at + 1]) << 16
                    | UInt32(padded[at + 2]) << 8 | UInt32(padded[at + 3])
            }
            for i in 16..<64 {
                let s0 = rotateRight(schedule[i - 15], 7) ^ rotateRight(schedule[i - 15], 18) ^ (schedule[i - 15] >> 3)
                let s1 = rotateRight(schedule[i - 2], 17) ^ rotateRight(schedule[i - 2], 19) ^ (schedule[i - 2] >> 10)
                schedule[i] = schedule[i - 16] &+ s0 &+ schedule[i - 7] &+ s1
            }
            var (a, b, c, d, e, f, g, h) = (state[0], state[1], state[2], state[3],
                                            state[4], state[5], state[6], state[7])
            for i in 0..<64 {
                let s1 = rotateRight(e, 6) ^ rotateRight(e, 11) ^ rotateRight(e, 25)
                let choice = (e & f) ^ (~e & g)
                let temp1 = h &+ s1 &+ choice &+ roundConstants[i] &+ schedule[i]
                let s0 = rotateRight(a, 2) ^ rotateRight(a, 13) ^ rotateRight(a, 22)
                let majority = (a & b) ^ (a & c) ^ (b & c)
                let temp2 = s0 &+ majority
                (h, g, f, e, d, c, b, a) = (g, f, e, d &+ temp1, c, b, a, temp1 &+ temp2)
            }
            state[0] = state[0] &+ a; state[1] = state[1] &+ b; state[2] = state[2] &+ c; state[3] = state[3] &+ d
            state[4] = state[4] &+ e; state[5] = state[5] &+ f; state[6] = state[6] &+ g; state[7] = state[7] &+ h
        }
        return (0..<4).map { UInt64(state[2 * $0]) << 32 | UInt64(state[2 * $0 + 1]) }
    }

    private static func rotateRight(_ value: UInt32, _ count: UInt32) -> UInt32 {
        (value >> count) | (value << (32 - count))
    }
}
