import Foundation
import Formats
import TestSupport
import Tokenizers

/// The parts of `Tests/Fixtures/smollm2-135m/reference.json` the tokenizer tests use.
struct SmolLMReference: Decodable {
    struct TokenizerCase: Decodable {
        let text: String
        let ids: [Int]
        let decoded: String
    }
    struct Prompt: Decodable {
        let name: String
        let text: String
        let ids: [Int]
        let addSpecialTokens: Bool
    }
    struct Divergences: Decodable {
        struct Case: Decodable {
            let text: String
            let idsDigitSplitLlamacpp: [Int]
        }
        let cases: [Case]
    }
    struct TokenizerInfo: Decodable {
        let addsBos: Bool
        let bosTokenId: Int
        let eosTokenId: Int
    }
    let tokenizer: TokenizerInfo
    let chatTemplate: String
    let prompts: [Prompt]
    let tokenizerCases: [TokenizerCase]
    let tokenizerKnownDivergences: Divergences

    /// Every (text, ids) pair the SmolLM2 tokenizer must reproduce.
    var allEncodings: [(text: String, ids: [Int])] {
        tokenizerCases.map { ($0.text, $0.ids) } + prompts.map { ($0.text, $0.ids) }
            + tokenizerKnownDivergences.cases.map { ($0.text, $0.idsDigitSplitLlamacpp) }
    }

    static func load() throws -> SmolLMReference {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(SmolLMReference.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("smollm2-135m/reference.json"))))
    }
}

/// Loaded once and shared by the tests.
enum Shared {
    static let reference = Result { try SmolLMReference.load() }
    static let smolLMFile = Result { try GGUFFile(path: DefaultModel.path()) }
    static let smolLM = Result { try Tokenizer.fromGGUF(smolLMFile.get()) }
}

/// Writes a tokenizer.json (and optionally tokenizer_config.json) into a fresh folder.
func writeHuggingFaceFolder(tokenizer: Any, config: Any? = nil) throws -> String {
    let folder = try TemporaryFiles.folder()
    try JSONSerialization.data(withJSONObject: tokenizer).write(to: URL(fileURLWithPath: folder + "/tokenizer.json"))
    if let config {
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: folder + "/tokenizer_config.json"))
    }
    return folder
}

/// Metadata-only GGUF test files for tokenizers, written with the shared `GGUFBuilder`.
struct GGUFMetadataWriter {
    enum Value {
        case string(String)
        case bool(Bool)
        case uint32(UInt32)
        case strings([String])
        case int32s([Int32])
        case floats([Float])

        var gguf: GGUFValue {
            switch self {
            case .string(let text): .string(text)
            case .bool(let flag): .bool(flag)
            case .uint32(let number): .uint32(number)
            case .strings(let texts): .array(texts.map { .string($0) })
            case .int32s(let numbers): .array(numbers.map { .int32($0) })
            case .floats(let numbers): .array(numbers.map { .float32($0) })
            }
        }
    }

    private var builder = GGUFBuilder()

    mutating func set(_ key: String, _ value: Value) { builder.add(key, value.gguf) }

    /// Writes the file into a fresh folder and loads it as a tokenizer.
    func tokenizer() throws -> Tokenizer {
        try Tokenizer.fromGGUF(GGUFFile(path: builder.write(named: "test.gguf")))
    }
}

/// A byte-level vocabulary of exactly the 256 byte characters (GPT-2 order), no merges: enough
/// to exercise the split patterns.
func byteCharacterVocabulary() -> [String] {
    let printable = Array(0x21 ... 0x7E) + Array(0xA1 ... 0xAC) + Array(0xAE ... 0xFF)
    let printableSet = Set(printable)
    var scalars = [UInt32](repeating: 0, count: 256)
    for b in printable { scalars[b] = UInt32(b) }
    var extra: UInt32 = 0
    for b in 0 ..< 256 where !printableSet.contains(b) {
        scalars[b] = 256 + extra
        extra += 1
    }
    return scalars.map { String(Character(Unicode.Scalar($0) ?? " ")) }
}

/// The hand-made SentencePiece vocabulary of `ReferenceData.swift`: specials, `<0xNN>` bytes,
/// single characters, then each merge result in merge order.
func sentencePieceVocabulary() -> [String] {
    var tokens = ["<unk>", "<s>", "</s>"]
    tokens += (0 ..< 256).map { String(format: "<0x%02X>", $0) }
    tokens += sentencePieceCharacters
    for (left, right) in sentencePieceMerges where !tokens.contains(left + right) { tokens.append(left + right) }
    return tokens
}
