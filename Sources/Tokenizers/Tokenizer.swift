import Foundation
import Formats

/// How plain text (the runs between added tokens) becomes initial symbols before BPE merging.
enum TextModel: Sendable {
    /// GPT-2 style byte-level BPE: split by a pattern, then merge the UTF-8 bytes of each piece.
    case byteLevel(ByteLevelOptions)
    /// SentencePiece-style BPE: spaces become `▁`, characters merge, unknown characters fall back
    /// to `<0xNN>` byte tokens.
    case sentencePiece(SentencePieceOptions)
}

struct ByteLevelOptions: Sendable {
    var preTokenizer: PreTokenizer
    /// HF ByteLevel `add_prefix_space`: a space is put before each text run that lacks one.
    var addPrefixSpace = false
    /// A piece that is a whole vocabulary token is taken as is, without merging (llama3).
    var ignoreMerges = false
}

struct SentencePieceOptions: Sendable {
    enum SpacePrefix: Sendable {
        case never
        /// Only the text run at the very start of the input (HF Metaspace `prepend_scheme: first`).
        case firstRun
        /// Every text run, also those after an added token (llama.cpp, HF `Prepend("▁")`).
        case everyRun
    }
    var spacePrefix: SpacePrefix
    /// HF Metaspace `split: true`: each `▁`-started word is merged on its own.
    var splitAtSpaces = false
    /// The decoder drops one leading space from the first token (the space the prefix added).
    var stripsLeadingSpaceOnDecode: Bool
}

/// Everything a loader reads from a model's tokenizer files; `Tokenizer` derives its tables from it.
struct TokenizerDefinition {
    var tokens: [String?]
    var tokenIds: [String: Int32]
    var model: TextModel
    var merges: MergeTable
    var addedTokens: [AddedToken]
    /// Ids reported by `isSpecial`.
    var specialIds: Set<Int>
    var unknownId: Int?
    var bosId: Int?
    var eosId: Int?
    var addsBos: Bool
    var addsEos = false
    /// End-of-turn ids named by the file itself (GGUF eot/eom ids).
    var endOfTurnIds: [Int] = []
    var chatTemplate: String?
    /// Strings that end an assistant turn in the chat format (plain-text formats only).
    var chatStopStrings: [String] = []
    /// Unicode NFC normalization of text runs (HF `NFC` normalizer).
    var normalizesNFC = false
}

/// A BPE tokenizer loaded from a GGUF file or a Hugging Face tokenizer.json: byte-level BPE
/// (GPT-2, Llama 3, Qwen2, SmolLM) or SentencePiece-style BPE with byte fallback (Llama 2, Gemma).
/// Immutable after loading, so one instance can serve many threads.
public final class Tokenizer: Sendable {
    private let tokens: [String?]
    private let tokenIds: [String: Int32]
    private let model: TextModel
    private let merges: MergeTable
    private let matcher: SpecialTokenMatcher
    private let specialFlags: [Bool]
    private let unknownId: Int32?
    private let normalizesNFC: Bool
    private let addsEos: Bool
    /// Byte-level: the token of each single byte. SentencePiece: the `<0xNN>` fallback token.
    private let byteTokenIds: [Int32?]
    /// SentencePiece: the token of each single-scalar vocabulary entry.
    private let scalarTokenIds: [UInt32: Int32]
    /// What each token contributes to decoded text.
    private let decodedBytes: [[UInt8]]
    private let stripsLeadingSpaceOnDecode: Bool

    /// Number of token ids (the model's embedding rows).
    public let vocabularySize: Int
    /// Beginning-of-sequence token, if the files name one.
    public let bosTokenId: Int?
    /// End-of-sequence token, if the files name one.
    public let eosTokenId: Int?
    /// Ids that end generation: EOS plus end-of-turn tokens (`<|eot_id|>`, `<|im_end|>`,
    /// `<end_of_turn>`, `<|endoftext|>`, ...) present in the vocabulary.
    public let stopTokenIds: Set<Int>
    /// Whether `encode(_:addSpecialTokens: true)` prepends BOS.
    public let addsBos: Bool
    /// The Jinja chat template shipped with the tokenizer, if any (or the fallback the loader chose).
    public let chatTemplate: String?
    /// Strings that end an assistant reply in the chat format: empty for templates with turn tokens,
    /// `"\nUser:"` for the plain-dialogue fallback of base models. Chat requests stop at them.
    public let chatStopStrings: [String]

    /// Token texts that end a turn in common chat formats.
    static let endOfTurnTexts = ["<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<end_of_turn>", "<|endoftext|>",
                                 "<|end|>", "<|end_of_text|>", "<eos>", "</s>"]

    init(_ definition: TokenizerDefinition) {
        let tokens = definition.tokens
        self.tokens = tokens
        tokenIds = definition.tokenIds
        model = definition.model
        merges = definition.merges
        matcher = SpecialTokenMatcher(definition.addedTokens)
        unknownId = definition.unknownId.map(Int32.init)
        normalizesNFC = definition.normalizesNFC
        vocabularySize = tokens.count
        bosTokenId = definition.bosId
        eosTokenId = definition.eosId
        addsBos = definition.addsBos && definition.bosId != nil
        addsEos = definition.addsEos && definition.eosId != nil
        chatTemplate = definition.chatTemplate
        chatStopStrings = definition.chatStopStrings

        var specialFlags = [Bool](repeating: false, count: tokens.count)
        for id in definition.specialIds where id >= 0 && id < tokens.count { specialFlags[id] = true }
        self.specialFlags = specialFlags

        var stops = Set(definition.endOfTurnIds.filter { $0 >= 0 && $0 < tokens.count })
        if let eos = definition.eosId { stops.insert(eos) }
        for text in Self.endOfTurnTexts {
            if let id = definition.tokenIds[text].map(Int.init), id < specialFlags.count, specialFlags[id] { stops.insert(id) }
        }
        stopTokenIds = stops

        let addedIds = Set(definition.addedTokens.map { $0.id })
        var decoded = [[UInt8]](repeating: [], count: tokens.count)
        var byteTokenIds = [Int32?](repeating: nil, count: 256)
        var scalarTokenIds: [UInt32: Int32] = [:]
        switch definition.model {
        case .byteLevel:
            stripsLeadingSpaceOnDecode = false
            for byte in 0 ..< 256 {
                byteTokenIds[byte] = definition.tokenIds[String(ByteLevel.scalarForByte[byte])]
            }
            for (id, token) in tokens.enumerated() {
                guard let token else { continue }
                decoded[id] = addedIds.contains(id) ? Array(token.utf8) : ByteLevel.bytes(of: token) ?? Array(token.utf8)
            }
        case .sentencePiece(let options):
            stripsLeadingSpaceOnDecode = options.stripsLeadingSpaceOnDecode
            for (id, token) in tokens.enumerated() {
                guard let token else { continue }
                if !addedIds.contains(id), let byte = Self.fallbackByte(token) {
                    if byteTokenIds[Int(byte)] == nil { byteTokenIds[Int(byte)] = Int32(id) }
                    decoded[id] = [byte]
                    continue
                }
                let scalars = token.unicodeScalars
                if scalars.count == 1, let scalar = scalars.first, definition.tokenIds[token] == Int32(id) {
                    scalarTokenIds[scalar.value] = Int32(id)
                }
                decoded[id] = addedIds.contains(id)
                    ? Array(token.utf8) : Array(token.replacingOccurrences(of: "\u{2581}", with: " ").utf8)
            }
        }
        self.byteTokenIds = byteTokenIds
        self.scalarTokenIds = scalarTokenIds
        decodedBytes = decoded
    }

    /// The byte of a `<0xNN>` token.
    private static func fallbackByte(_ token: String) -> UInt8? {
        let utf8 = Array(token.utf8)
        guard utf8.count == 6, token.hasPrefix("<0x"), token.hasSuffix(">") else { return nil }
        return UInt8(String(decoding: utf8[3 ..< 5], as: UTF8.self), radix: 16)
    }

    // MARK: - Encoding

    /// Token ids of `text`. Added/special token texts in `text` (e.g. `<|im_start|>`) become those
    /// tokens; with `addSpecialTokens`, BOS (and EOS where the model asks for it) are added.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var out: [Int32] = []
        if addSpecialTokens, addsBos, let bos = bosTokenId { out.append(Int32(bos)) }
        let scalars = Array(text.unicodeScalars)
        for segment in matcher.segments(of: scalars) {
            switch segment {
            case .token(let id): out.append(Int32(id))
            case .text(let range): encodeText(Array(scalars[range]), atInputStart: range.lowerBound == 0, into: &out)
            }
        }
        if addSpecialTokens, addsEos, let eos = eosTokenId { out.append(Int32(eos)) }
        return out.map(Int.init)
    }

    /// The pieces BPE runs on, in order: added-token texts whole, plain text cut by the split
    /// pattern (byte-level) or at `▁` word starts (SentencePiece with split). For inspection and tests.
    public func preTokenize(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var pieces: [String] = []
        for segment in matcher.segments(of: scalars) {
            switch segment {
            case .token(let id): pieces.append(tokens[id] ?? "")
            case .text(let range):
                var run = normalizedRun(Array(scalars[range]))
                switch model {
                case .byteLevel(let options):
                    for piece in byteLevelPieces(&run, options) { pieces.append(String(String.UnicodeScalarView(run[piece]))) }
                case .sentencePiece(let options):
                    for piece in sentencePiecePieces(run, atInputStart: range.lowerBound == 0, options) {
                        pieces.append(String(String.UnicodeScalarView(piece)))
                    }
                }
            }
        }
        return pieces
    }

    private func normalizedRun(_ input: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard normalizesNFC else { return input }
        return Array(String(String.UnicodeScalarView(input)).precomposedStringWithCanonicalMapping.unicodeScalars)
    }

    private func byteLevelPieces(_ scalars: inout [Unicode.Scalar], _ options: ByteLevelOptions) -> [Range<Int>] {
        if options.addPrefixSpace, scalars.first != " " { scalars.insert(" ", at: 0) }
        return options.preTokenizer.split(scalars, scalars.map(ScalarKind.init), 0 ..< scalars.count)
    }

    /// Spaces as `▁`, the prefix `▁` where the model adds one, cut into words when the model splits.
    private func sentencePiecePieces(_ scalars: [Unicode.Scalar], atInputStart: Bool,
                                     _ options: SentencePieceOptions) -> [ArraySlice<Unicode.Scalar>] {
        let prefix = switch options.spacePrefix {
        case .never: false
        case .firstRun: atInputStart
        case .everyRun: true
        }
        var symbols: [Unicode.Scalar] = prefix ? ["\u{2581}"] : []
        symbols.reserveCapacity(scalars.count + 1)
        for scalar in scalars { symbols.append(scalar == " " ? "\u{2581}" : scalar) }
        guard !symbols.isEmpty else { return [] }
        guard options.splitAtSpaces else { return [symbols[...]] }
        var pieces: [ArraySlice<Unicode.Scalar>] = []
        var start = 0
        for i in 1 ... symbols.count where i == symbols.count || symbols[i] == "\u{2581}" {
            if i > start { pieces.append(symbols[start ..< i]) }
            start = i
        }
        return pieces
    }

    private func encodeText(_ input: [Unicode.Scalar], atInputStart: Bool, into out: inout [Int32]) {
        var scalars = normalizedRun(input)
        switch model {
        case .byteLevel(let options):
            var bytes: [UInt8] = []
            for piece in byteLevelPieces(&scalars, options) {
                bytes.removeAll(keepingCapacity: true)
                for scalar in scalars[piece] { UTF8.encode(scalar) { bytes.append($0) } }
                encodeBytePiece(bytes, ignoreMerges: options.ignoreMerges, into: &out)
            }
        case .sentencePiece(let options):
            for piece in sentencePiecePieces(scalars, atInputStart: atInputStart, options) {
                encodeSentencePiece(piece, into: &out)
            }
        }
    }

    /// Byte-level BPE of one pre-tokenized piece.
    private func encodeBytePiece(_ bytes: [UInt8], ignoreMerges: Bool, into out: inout [Int32]) {
        if ignoreMerges, let id = tokenIds[ByteLevel.spelling(of: bytes)] {
            out.append(id)
            return
        }
        // A byte without a vocabulary token becomes a placeholder that never merges.
        var ids = bytes.map { byteTokenIds[Int($0)] ?? -2 }
        merges.apply(to: &ids)
        for id in ids {
            if id >= 0 { out.append(id) } else if let unknownId { out.append(unknownId) }
        }
    }

    /// SentencePiece BPE of a run of characters (spaces already `▁`).
    private func encodeSentencePiece(_ symbols: ArraySlice<Unicode.Scalar>, into out: inout [Int32]) {
        guard !symbols.isEmpty else { return }
        // Characters outside the vocabulary are placeholders -2 - offset that never merge.
        var ids = symbols.indices.map { i in scalarTokenIds[symbols[i].value] ?? Int32(-2 - (i - symbols.startIndex)) }
        merges.apply(to: &ids)
        for id in ids {
            if id >= 0 { out.append(id); continue }
            var fallback: [Int32] = []
            var complete = true
            UTF8.encode(symbols[symbols.startIndex + Int(-2 - id)]) { byte in
                if let token = byteTokenIds[Int(byte)] { fallback.append(token) } else { complete = false }
            }
            if complete { out.append(contentsOf: fallback) } else if let unknownId { out.append(unknownId) }
        }
    }

    // MARK: - Decoding

    /// The text of `ids`, special tokens included (transformers' `decode` with
    /// `skip_special_tokens=False, clean_up_tokenization_spaces=False`). Ids out of range are skipped.
    public func decode(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        for (index, id) in ids.enumerated() { appendBytes(of: id, atStart: index == 0, to: &bytes) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Appends what `id` contributes to the decoded UTF-8 bytes; `atStart` marks the first token,
    /// whose prefix space a SentencePiece decoder removes.
    func appendBytes(of id: Int, atStart: Bool, to bytes: inout [UInt8]) {
        guard id >= 0, id < decodedBytes.count else { return }
        let piece = decodedBytes[id]
        if atStart, stripsLeadingSpaceOnDecode, piece.first == 0x20 {
            bytes.append(contentsOf: piece.dropFirst())
        } else {
            bytes.append(contentsOf: piece)
        }
    }

    /// The vocabulary string of `id` (byte-level spelling such as `Ġhello`, or `▁hello`).
    public func tokenText(_ id: Int) -> String? {
        guard id >= 0, id < tokens.count else { return nil }
        return tokens[id]
    }

    /// Whether `id` is a special (control) token such as BOS, EOS or `<|im_start|>`.
    public func isSpecial(_ id: Int) -> Bool {
        id >= 0 && id < specialFlags.count && specialFlags[id]
    }

    /// A decoder for tokens that arrive one at a time (generation output).
    public func makeStreamingDecoder() -> StreamingDecoder {
        StreamingDecoder(tokenizer: self)
    }
}
