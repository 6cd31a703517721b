/// GPT-2's reversible byte ↔ unicode mapping: byte-level BPE vocabularies spell every byte as a
/// printable character (`Ġ` = space, `Ċ` = newline), so any byte sequence has a token spelling.
enum ByteLevel {
    /// The character that stands for each byte.
    static let scalarForByte: [Unicode.Scalar] = {
        let printable = Array(0x21 ... 0x7E) + Array(0xA1 ... 0xAC) + Array(0xAE ... 0xFF)
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        let printableSet = Set(printable)
        for b in printable { table[b] = Unicode.Scalar(UInt32(b))! }
        var extra: UInt32 = 0
        for b in 0 ..< 256 where !printableSet.contains(b) {
            table[b] = Unicode.Scalar(256 + extra)!
            extra += 1
        }
        return table
    }()

    /// The byte each mapped character stands for, indexed by code point (-1: not a byte character).
    static let byteForScalar: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x144)
        for (byte, scalar) in scalarForByte.enumerated() { table[Int(scalar.value)] = Int16(byte) }
        return table
    }()

    /// The bytes a byte-level token spells, or nil if it contains a character outside the mapping.
    static func bytes(of token: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(token.utf8.count)
        for scalar in token.unicodeScalars {
            let v = Int(scalar.value)
            guard v < byteForScalar.count, byteForScalar[v] >= 0 else { return nil }
            out.append(UInt8(byteForScalar[v]))
        }
        return out
    }

    /// The token spelling of raw bytes.
    static func spelling(of bytes: some Sequence<UInt8>) -> String {
        var view = String.UnicodeScalarView()
        for b in bytes { view.append(scalarForByte[Int(b)]) }
        return String(view)
    }
}
