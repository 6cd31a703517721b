import Formats

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
enum GGUFTokenType: Int {
    case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

extension Tokenizer {
    /// Loads the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata:
    /// `gpt2` (byte-level BPE, split pattern from `tokenizer.ggml.pre`) or `llama` (SentencePiece BPE
    /// with scores and byte fallback).
    /// `fallbackChat` (a template and the strings that end a reply in it) is used when the file
    /// carries no `tokenizer.chat_template`.
    public static func fromGGUF(_ file: GGUFFile, fallbackChat: (template: String, stopStrings: [String])? = nil) throws -> Tokenizer {
        try fromGGUF(metadata: file.metadata, path: file.path, fallbackChat: fallbackChat)
    }

    static func fromGGUF(metadata: [String: GGUFValue], path: String, fallbackChat: (template: String, stopStrings: [String])? = nil) throws -> Tokenizer {
        func fail(_ message: String) -> FormatError { FormatError(path, message) }
        guard let modelName = metadata["tokenizer.ggml.model"]?.string else {
            throw fail("missing tokenizer.ggml.model (the file has no tokenizer)")
        }
        guard let tokenTexts = metadata["tokenizer.ggml.tokens"]?.stringArray, !tokenTexts.isEmpty else {
            throw fail("missing or empty tokenizer.ggml.tokens")
        }
        let count = tokenTexts.count
        var types = [Int](repeating: GGUFTokenType.normal.rawValue, count: count)
        if let value = metadata["tokenizer.ggml.token_type"] {
            guard let array = value.intArray, array.count == count else {
                throw fail("tokenizer.ggml.token_type must be \(count) integers, one per token")
            }
            types = array
        }
        func tokenId(_ key: String) throws -> Int? {
            guard let value = metadata[key] else { return nil }
            guard let id = value.int, id >= 0, id < count else {
                throw fail("\(key) = \(value) is not a token id (vocabulary has \(count) tokens)")
            }
            return id
        }
        func flag(_ key: String, default value: Bool) -> Bool { metadata[key]?.bool ?? value }

        var tokenIds: [String: Int32] = [:]
        tokenIds.reserveCapacity(count)
        // Later duplicates win, as in llama.cpp.
        for (id, text) in tokenTexts.enumerated() { tokenIds[text] = Int32(id) }

        let textModel: TextModel
        let merges: MergeTable
        let isSentencePiece: Bool
        switch modelName {
        case "gpt2":
            isSentencePiece = false
            let preName = metadata["tokenizer.ggml.pre"]?.string ?? "default"
            guard let preTokenizer = PreTokenizer(ggufName: preName) else {
                throw fail("unsupported tokenizer.ggml.pre '\(preName)'")
            }
            guard let mergeLines = metadata["tokenizer.ggml.merges"]?.stringArray else {
                throw fail("missing tokenizer.ggml.merges (required for a gpt2 tokenizer)")
            }
            var pairs: [(String, String)] = []
            pairs.reserveCapacity(mergeLines.count)
            for (index, line) in mergeLines.enumerated() {
                guard let pair = splitMergeLine(line) else {
                    throw fail("tokenizer.ggml.merges[\(index)] '\(line)' is not two tokens separated by a space")
                }
                pairs.append(pair)
            }
            merges = MergeTable(mergePairs: pairs, tokenIds: tokenIds)
            textModel = .byteLevel(ByteLevelOptions(preTokenizer: preTokenizer, ignoreMerges: preTokenizer.rules == [.llama3]))
        case "llama":
            isSentencePiece = true
            var scores = [Float](repeating: 0, count: count)
            if let value = metadata["tokenizer.ggml.scores"] {
                guard let array = value.floatArray, array.count == count else {
                    throw fail("tokenizer.ggml.scores must be \(count) numbers, one per token")
                }
                scores = array
            }
            merges = MergeTable(scores: scores, tokens: tokenTexts, tokenIds: tokenIds)
            let addSpacePrefix = flag("tokenizer.ggml.add_space_prefix", default: true)
            textModel = .sentencePiece(SentencePieceOptions(
                spacePrefix: addSpacePrefix ? .everyRun : .never, stripsLeadingSpaceOnDecode: addSpacePrefix))
        default:
            throw fail("unsupported tokenizer.ggml.model '\(modelName)' (supported: gpt2, llama)")
        }

        var addedTokens: [AddedToken] = []
        var specialIds: Set<Int> = []
        for (id, type) in types.enumerated() {
            switch GGUFTokenType(rawValue: type) {
            case .control:
                specialIds.insert(id)
                addedTokens.append(AddedToken(id: id, content: tokenTexts[id]))
            case .userDefined, .unknown:
                addedTokens.append(AddedToken(id: id, content: tokenTexts[id]))
            default:
                break
            }
        }

        let endOfTurnIds = try ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"].compactMap(tokenId)
        return Tokenizer(TokenizerDefinition(
            tokens: tokenTexts,
            tokenIds: tokenIds,
            model: textModel,
            merges: merges,
            addedTokens: addedTokens,
            specialIds: specialIds,
            unknownId: try tokenId("tokenizer.ggml.unknown_token_id") ?? tokenIds["<unk>"].map(Int.init),
            bosId: try tokenId("tokenizer.ggml.bos_token_id"),
            eosId: try tokenId("tokenizer.ggml.eos_token_id"),
            addsBos: flag("tokenizer.ggml.add_bos_token", default: isSentencePiece),
            addsEos: flag("tokenizer.ggml.add_eos_token", default: false),
            endOfTurnIds: endOfTurnIds,
            chatTemplate: metadata["tokenizer.chat_template"]?.string ?? fallbackChat?.template,
            chatStopStrings: metadata["tokenizer.chat_template"]?.string == nil ? fallbackChat?.stopStrings ?? [] : []))
    }

    /// Splits a merges entry `"left right"` at its single separating space.
    static func splitMergeLine(_ line: String) -> (String, String)? {
        let parts = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        return (String(parts[0]), String(parts[1]))
    }
}
