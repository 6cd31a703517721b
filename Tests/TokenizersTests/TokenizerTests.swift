import Foundation
import Formats
import Testing
import TestSupport
import Tokenizers

// Expected values in ReferenceData.swift were computed with Hugging Face `tokenizers` 0.23.3:
// split patterns with `pre_tokenizers.Split(Regex(p), "isolated").pre_tokenize_str(s)`, the
// SentencePiece cases with `Tokenizer.from_file(json).encode(s)` / `.decode(ids,
// skip_special_tokens=False)` on the tokenizer.json that `sentencePieceTokenizerJSON()` builds.

// MARK: - SmolLM2 (real GGUF) against the transformers / llama.cpp reference

@Suite struct SmolLMTokenizerTests {
    @Test func tokenizerCasesEncodeAndRoundTrip() throws {
        let tokenizer = try Shared.smolLM.get()
        let reference = try Shared.reference.get()
        #expect(reference.tokenizerCases.count == 20)
        for item in reference.tokenizerCases {
            #expect(tokenizer.encode(item.text) == item.ids, "encode \(item.text.debugDescription)")
            let decoded = tokenizer.decode(item.ids)
            #expect(Array(decoded.unicodeScalars) == Array(item.decoded.unicodeScalars), "decode \(item.text.debugDescription)")
        }
    }

    @Test func promptsEncode() throws {
        let tokenizer = try Shared.smolLM.get()
        let reference = try Shared.reference.get()
        #expect(reference.prompts.count == 6)
        for prompt in reference.prompts {
            #expect(tokenizer.encode(prompt.text, addSpecialTokens: prompt.addSpecialTokens) == prompt.ids, "prompt \(prompt.name)")
            #expect(Array(tokenizer.decode(prompt.ids).unicodeScalars) == Array(prompt.text.unicodeScalars), "prompt \(prompt.name)")
        }
    }

    /// We follow llama.cpp and SmolLM2's own tokenizer.json (digits split individually first).
    @Test func knownDivergencesFollowLlamaCpp() throws {
        let tokenizer = try Shared.smolLM.get()
        let reference = try Shared.reference.get()
        #expect(!reference.tokenizerKnownDivergences.cases.isEmpty)
        for item in reference.tokenizerKnownDivergences.cases {
            #expect(tokenizer.encode(item.text) == item.idsDigitSplitLlamacpp, "encode \(item.text.debugDescription)")
            #expect(tokenizer.decode(item.idsDigitSplitLlamacpp) == item.text)
        }
    }

    @Test func metadata() throws {
        let tokenizer = try Shared.smolLM.get()
        let reference = try Shared.reference.get()
        #expect(tokenizer.vocabularySize == 49152)
        #expect(tokenizer.addsBos == reference.tokenizer.addsBos)
        #expect(tokenizer.bosTokenId == reference.tokenizer.bosTokenId)
        #expect(tokenizer.eosTokenId == reference.tokenizer.eosTokenId)
        #expect(tokenizer.stopTokenIds == [0, 2]) // <|im_end|> (EOS) and <|endoftext|>
        #expect(tokenizer.chatTemplate == reference.chatTemplate)
        #expect(tokenizer.tokenText(1) == "<|im_start|>")
        #expect(tokenizer.tokenText(49152) == nil)
        #expect(tokenizer.tokenText(-1) == nil)
        #expect(tokenizer.isSpecial(1) && tokenizer.isSpecial(2))
        #expect(!tokenizer.isSpecial(17))
        #expect(tokenizer.encode("hello", addSpecialTokens: true) == tokenizer.encode("hello", addSpecialTokens: false))
        #expect(tokenizer.decode([1, -5, 99999, 2]) == "<|im_start|><|im_end|>")
    }

    @Test func encodingIsFast() throws {
        let tokenizer = try Shared.smolLM.get()
        let reference = try Shared.reference.get()
        let long = try #require(reference.prompts.first { $0.name == "long" })
        _ = tokenizer.encode(long.text)
        let rounds = 50
        let clock = ContinuousClock()
        let elapsed = clock.measure {
            for _ in 0 ..< rounds { _ = tokenizer.encode(long.text) }
        }
        let perToken = elapsed / (rounds * long.ids.count)
        print("encode: \(elapsed / rounds) per \(long.ids.count)-token prompt, \(perToken) per token")
        #expect(perToken < .microseconds(50))
    }
}

// MARK: - tokenizer.json path (built from the SmolLM2 GGUF vocabulary)

@Suite struct HuggingFaceTokenizerTests {
    /// SmolLM2's real tokenizer.json layout: Digits(individual) + ByteLevel, ByteLevel decoder.
    static func smolLMFolder() throws -> String {
        let file = try Shared.smolLMFile.get()
        let tokens = try #require(file.metadata["tokenizer.ggml.tokens"]?.stringArray)
        let types = try #require(file.metadata["tokenizer.ggml.token_type"]?.intArray)
        let merges = try #require(file.metadata["tokenizer.ggml.merges"]?.stringArray)
        var vocab: [String: Int] = [:]
        for (id, token) in tokens.enumerated() { vocab[token] = id }
        let added: [[String: Any]] = types.enumerated().filter { $0.element == 3 }.map { id, _ in
            ["id": id, "content": tokens[id], "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true]
        }
        let json: [String: Any] = [
            "version": "1.0",
            "added_tokens": added,
            "normalizer": NSNull(),
            "pre_tokenizer": ["type": "Sequence", "pretokenizers": [
                ["type": "Digits", "individual_digits": true],
                ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
            ]],
            "post_processor": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true],
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false,
                      "vocab": vocab, "merges": merges],
        ]
        let config: [String: Any] = [
            "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
            "chat_template": [["name": "default", "template": "{{ messages }}"], ["name": "tool_use", "template": "x"]],
        ]
        return try writeHuggingFaceFolder(tokenizer: json, config: config)
    }

    @Test func matchesTheGGUFTokenizer() throws {
        let tokenizer = try Tokenizer.fromHuggingFace(folder: Self.smolLMFolder())
        let gguf = try Shared.smolLM.get()
        let reference = try Shared.reference.get()
        for (text, ids) in reference.allEncodings {
            #expect(tokenizer.encode(text) == ids, "encode \(text.debugDescription)")
            #expect(tokenizer.decode(ids) == gguf.decode(ids))
        }
        #expect(tokenizer.vocabularySize == gguf.vocabularySize)
        #expect(tokenizer.bosTokenId == 1 && tokenizer.eosTokenId == 2)
        #expect(!tokenizer.addsBos)
        #expect(tokenizer.stopTokenIds == gguf.stopTokenIds)
        #expect(tokenizer.chatTemplate == "{{ messages }}")
        #expect(tokenizer.isSpecial(0) && !tokenizer.isSpecial(100))
    }
}

// MARK: - Split patterns

@Suite struct PreTokenizerTests {
    /// A byte-level tokenizer.json with the 256 byte tokens and the given pre-tokenizer.
    static func byteLevelFolder(preTokenizer: Any) throws -> String {
        let vocab = Dictionary(uniqueKeysWithValues: byteCharacterVocabulary().enumerated().map { ($1, $0) })
        return try writeHuggingFaceFolder(tokenizer: [
            "pre_tokenizer": preTokenizer,
            "decoder": ["type": "ByteLevel"],
            "model": ["type": "BPE", "vocab": vocab, "merges": [String]()],
        ] as [String: Any])
    }

    static func splitThenByteLevel(_ pattern: String) -> Any {
        ["type": "Sequence", "pretokenizers": [
            ["type": "Split", "pattern": ["Regex": pattern], "behavior": "Isolated", "invert": false],
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false],
        ]]
    }

    static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    static func check(_ tokenizer: Tokenizer, _ pattern: String) throws {
        let expected = try #require(preTokenizerExpected[pattern])
        for (text, pieces) in zip(preTokenizerInputs, expected) {
            let actual = tokenizer.preTokenize(text)
            #expect(actual.map { Array($0.unicodeScalars) } == pieces.map { Array($0.unicodeScalars) },
                    "\(pattern) \(text.debugDescription): \(actual)")
            // Without merges every byte is a token and decoding restores the text.
            let ids = tokenizer.encode(text)
            #expect(ids.count == text.utf8.count)
            #expect(tokenizer.decode(ids) == text)
        }
    }

    @Test(arguments: ["gpt2", "llama3", "qwen2", "smollm"])
    func fromTokenizerJSON(pattern: String) throws {
        let preTokenizer: Any = switch pattern {
        case "gpt2": ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true]
        case "llama3": Self.splitThenByteLevel(Self.llama3Pattern)
        case "qwen2": Self.splitThenByteLevel(Self.qwen2Pattern)
        default: ["type": "Sequence", "pretokenizers": [
            ["type": "Digits", "individual_digits": true],
            ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true],
        ]]
        }
        try Self.check(Tokenizer.fromHuggingFace(folder: Self.byteLevelFolder(preTokenizer: preTokenizer)), pattern)
    }

    @Test(arguments: [("gpt2", "gpt2"), ("gpt2", "default"), ("llama3", "llama-bpe"), ("llama3", "llama3"),
                      ("qwen2", "qwen2"), ("smollm", "smollm"), ("smollm", "starcoder")])
    func fromGGUFPreName(pattern: String, ggufName: String) throws {
        var writer = GGUFMetadataWriter()
        writer.set("tokenizer.ggml.model", .string("gpt2"))
        writer.set("tokenizer.ggml.pre", .string(ggufName))
        writer.set("tokenizer.ggml.tokens", .strings(byteCharacterVocabulary()))
        writer.set("tokenizer.ggml.merges", .strings([]))
        try Self.check(writer.tokenizer(), pattern)
    }

    /// 300 random strings of tricky characters, pieces computed offline with HF `tokenizers`
    /// (`Tests/Fixtures/tokenizers/pretokenizer_fuzz.json`, same pre-tokenizers as `preTokenizerExpected`).
    @Test(arguments: ["gpt2", "llama3", "qwen2", "smollm"])
    func randomStringsMatchHuggingFace(pattern: String) throws {
        struct Fuzz: Decodable { let strings: [String]; let pieces: [String: [[String]]] }
        let fuzz = try JSONDecoder().decode(Fuzz.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("tokenizers/pretokenizer_fuzz.json"))))
        let expected = try #require(fuzz.pieces[pattern])
        var writer = GGUFMetadataWriter()
        writer.set("tokenizer.ggml.model", .string("gpt2"))
        writer.set("tokenizer.ggml.pre", .string(pattern == "llama3" ? "llama-bpe" : pattern))
        writer.set("tokenizer.ggml.tokens", .strings(byteCharacterVocabulary()))
        writer.set("tokenizer.ggml.merges", .strings([]))
        let tokenizer = try writer.tokenizer()
        var mismatches = 0
        for (text, pieces) in zip(fuzz.strings, expected) {
            let actual = tokenizer.preTokenize(text)
            if actual.map({ Array($0.unicodeScalars) }) != pieces.map({ Array($0.unicodeScalars) }) {
                mismatches += 1
                Issue.record("\(pattern) \(text.debugDescription): \(actual.map(\.debugDescription)) != \(pieces.map(\.debugDescription))")
            }
        }
        #expect(mismatches == 0)
    }

    @Test func llama3IgnoresMergesForWholeTokens() throws {
        // "ab" is a token but no merge builds it: llama3 takes a whole-token piece as is.
        var tokens = byteCharacterVocabulary()
        tokens.append("ab")
        var writer = GGUFMetadataWriter()
        writer.set("tokenizer.ggml.model", .string("gpt2"))
        writer.set("tokenizer.ggml.tokens", .strings(tokens))
        writer.set("tokenizer.ggml.merges", .strings([]))
        writer.set("tokenizer.ggml.pre", .string("llama-bpe"))
        #expect(try writer.tokenizer().encode("ab") == [256])
        writer.set("tokenizer.ggml.pre", .string("gpt2"))
        #expect(try writer.tokenizer().encode("ab").count == 2)
    }
}

// MARK: - SentencePiece-style BPE

@Suite struct SentencePieceTests {
    /// Llama-2 style tokenizer.json for the vocabulary in ReferenceData.swift.
    static func tokenizerJSON() -> [String: Any] {
        let tokens = sentencePieceVocabulary()
        let vocab = Dictionary(uniqueKeysWithValues: tokens.enumerated().map { ($1, $0) })
        let added: [[String: Any]] = ["<unk>", "<s>", "</s>"].enumerated().map { id, content in
            ["id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true]
        }
        return [
            "added_tokens": added,
            "normalizer": ["type": "Sequence", "normalizers": [
                ["type": "Prepend", "prepend": "\u{2581}"],
                ["type": "Replace", "pattern": ["String": " "], "content": "\u{2581}"],
            ]],
            "pre_tokenizer": NSNull(),
            "post_processor": ["type": "TemplateProcessing",
                               "single": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                               "special_tokens": ["<s>": ["id": "<s>", "ids": [1], "tokens": ["<s>"]]]],
            "decoder": ["type": "Sequence", "decoders": [
                ["type": "Replace", "pattern": ["String": "\u{2581}"], "content": " "],
                ["type": "ByteFallback"], ["type": "Fuse"],
                ["type": "Strip", "content": " ", "start": 1, "stop": 0],
            ]],
            "model": ["type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
                      "vocab": vocab, "merges": sentencePieceMerges.map { "\($0) \($1)" }],
        ]
    }

    /// The same vocabulary as a llama.cpp SPM GGUF: merge results scored by merge order.
    static func ggufTokenizer() throws -> Tokenizer {
        let tokens = sentencePieceVocabulary()
        var scores = [Float](repeating: -1000, count: tokens.count)
        for (rank, (left, right)) in sentencePieceMerges.enumerated() {
            if let id = tokens.firstIndex(of: left + right), scores[id] == -1000 { scores[id] = -Float(rank) }
        }
        let types = tokens.indices.map { id -> Int32 in id == 0 ? 2 : id < 3 ? 3 : id < 259 ? 6 : 1 }
        var writer = GGUFMetadataWriter()
        writer.set("tokenizer.ggml.model", .string("llama"))
        writer.set("tokenizer.ggml.tokens", .strings(tokens))
        writer.set("tokenizer.ggml.scores", .floats(scores))
        writer.set("tokenizer.ggml.token_type", .int32s(types))
        writer.set("tokenizer.ggml.bos_token_id", .uint32(1))
        writer.set("tokenizer.ggml.eos_token_id", .uint32(2))
        writer.set("tokenizer.ggml.unknown_token_id", .uint32(0))
        return try writer.tokenizer()
    }

    static func check(_ tokenizer: Tokenizer) {
        #expect(tokenizer.addsBos && tokenizer.bosTokenId == 1)
        for item in sentencePieceCases {
            #expect(tokenizer.encode(item.text) == item.ids, "encode \(item.text.debugDescription)")
            #expect(tokenizer.encode(item.text, addSpecialTokens: false) == item.idsNoSpecial, "\(item.text.debugDescription)")
            #expect(tokenizer.decode(item.ids) == item.decoded, "decode \(item.text.debugDescription)")
            #expect(tokenizer.decode(item.idsNoSpecial) == item.decodedNoSpecial, "decode \(item.text.debugDescription)")
        }
        // An emoji outside the vocabulary falls back to its four UTF-8 byte tokens.
        #expect(tokenizer.encode("😀", addSpecialTokens: false) == [259, 3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80])
        #expect(tokenizer.tokenText(259) == "\u{2581}")
    }

    @Test func fromTokenizerJSON() throws {
        let tokenizer = try Tokenizer.fromHuggingFace(folder: writeHuggingFaceFolder(tokenizer: Self.tokenizerJSON()))
        Self.check(tokenizer)
        #expect(tokenizer.eosTokenId == nil) // only tokenizer_config.json names EOS
        #expect(tokenizer.stopTokenIds == [2]) // </s> is special
        #expect(tokenizer.preTokenize("hi you<s>x") == ["\u{2581}hi\u{2581}you", "<s>", "\u{2581}x"])
    }

    @Test func fromGGUFScores() throws {
        let tokenizer = try Self.ggufTokenizer()
        Self.check(tokenizer)
        #expect(tokenizer.eosTokenId == 2 && tokenizer.stopTokenIds == [2])
        #expect(tokenizer.isSpecial(1) && !tokenizer.isSpecial(0) && !tokenizer.isSpecial(3))
    }

    @Test func addBosFromConfigOverridesTemplate() throws {
        let folder = try writeHuggingFaceFolder(tokenizer: Self.tokenizerJSON(),
                                                config: ["add_bos_token": false, "bos_token": ["content": "<s>"], "eos_token": "</s>",
                                                         "chat_template": "{{ bos_token }}"])
        let tokenizer = try Tokenizer.fromHuggingFace(folder: folder)
        #expect(!tokenizer.addsBos)
        #expect(tokenizer.bosTokenId == 1 && tokenizer.eosTokenId == 2)
        #expect(tokenizer.encode("hello world") == [281, 286])
        #expect(tokenizer.chatTemplate == "{{ bos_token }}")
    }

    /// Added tokens with lstrip/rstrip absorb the whitespace around them (ids from HF `tokenizers`).
    @Test func addedTokenStripsSurroundingSpace() throws {
        var json = Self.tokenizerJSON()
        var added = try #require(json["added_tokens"] as? [[String: Any]])
        added.append(["id": 293, "content": "<mask>", "single_word": false, "lstrip": true, "rstrip": true,
                      "normalized": false, "special": true])
        json["added_tokens"] = added
        let tokenizer = try Tokenizer.fromHuggingFace(folder: writeHuggingFaceFolder(tokenizer: json))
        #expect(tokenizer.vocabularySize == 294)
        for text in ["hello <mask> world", "hello<mask>world", "hello  <mask>  world"] {
            #expect(tokenizer.encode(text, addSpecialTokens: false) == [281, 293, 286], "\(text.debugDescription)")
        }
    }

    @Test func metaspaceFirstPrependScheme() throws {
        var json = Self.tokenizerJSON()
        json["normalizer"] = NSNull()
        json["pre_tokenizer"] = ["type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false]
        json["decoder"] = ["type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false]
        let tokenizer = try Tokenizer.fromHuggingFace(folder: writeHuggingFaceFolder(tokenizer: json))
        // Only the run at the start of the input gets the prefix.
        #expect(tokenizer.encode("hello</s>hello", addSpecialTokens: false) == [281, 2, 260, 279, 263])
        #expect(tokenizer.decode([281, 286]) == "hello world")
    }
}

// MARK: - Streaming

@Suite struct StreamingDecoderTests {
    static func stream(_ tokenizer: Tokenizer, _ ids: [Int]) -> (chunks: [String], text: String) {
        var decoder = tokenizer.makeStreamingDecoder()
        var chunks = ids.map { decoder.push($0) }
        chunks.append(decoder.finish())
        return (chunks, chunks.joined())
    }

    @Test func smolLMCasesStreamWithoutBrokenCharacters() throws {
        let tokenizer = try Shared.smolLM.get()
        let reference = try Shared.reference.get()
        var heldBack = 0
        for (text, ids) in reference.allEncodings {
            let (chunks, joined) = Self.stream(tokenizer, ids)
            #expect(Array(joined.unicodeScalars) == Array(tokenizer.decode(ids).unicodeScalars), "\(text.debugDescription)")
            for chunk in chunks { #expect(!chunk.unicodeScalars.contains("\u{FFFD}"), "\(text.debugDescription)") }
            heldBack += zip(ids, chunks).filter { $1.isEmpty }.count
        }
        #expect(heldBack > 0) // emoji and CJK cases split characters across byte tokens
    }

    @Test func sentencePieceByteFallbackStreams() throws {
        let tokenizer = try SentencePieceTests.ggufTokenizer()
        let ids = tokenizer.encode("héllo 😀! 語x")
        let (chunks, joined) = Self.stream(tokenizer, ids)
        #expect(joined == tokenizer.decode(ids))
        #expect(joined == "<s> héllo 😀! 語x")
        #expect(chunks.filter(\.isEmpty).count >= 3)
        for chunk in chunks { #expect(!chunk.unicodeScalars.contains("\u{FFFD}")) }
    }

    @Test func incompleteTailIsFlushedByFinish() throws {
        let tokenizer = try SentencePieceTests.ggufTokenizer()
        var decoder = tokenizer.makeStreamingDecoder()
        #expect(decoder.push(3 + 0xF0) == "")
        #expect(decoder.push(3 + 0x9F) == "")
        #expect(decoder.finish() == "\u{FFFD}")
        // After finish the decoder starts over (the first token's prefix space is stripped again).
        #expect(decoder.push(281) == "hello")
    }
}

// MARK: - Errors

@Suite struct TokenizerErrorTests {
    static func expectFormatError(_ expectedFragment: String, pathSuffix: String? = nil,
                                  _ body: () throws -> Tokenizer) {
        do {
            _ = try body()
            Issue.record("expected a FormatError containing '\(expectedFragment)'")
        } catch let error as FormatError {
            #expect(error.message.contains(expectedFragment), "\(error)")
            #expect(!error.description.contains("\n"))
            if let pathSuffix { #expect(error.path.hasSuffix(pathSuffix), "\(error)") }
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func ggufWithoutTokens() {
        var writer = GGUFMetadataWriter()
        writer.set("tokenizer.ggml.model", .string("gpt2"))
        Self.expectFormatError("tokenizer.ggml.tokens", pathSuffix: ".gguf") { try writer.tokenizer() }
    }

    @Test func ggufWithoutModel() {
        Self.expectFormatError("tokenizer.ggml.model") { try GGUFMetadataWriter().tokenizer() }
    }

    @Test func ggufUnknownModelAndPre() {
        var writer = GGUFMetadataWriter()
        writer.set("tokenizer.ggml.model", .string("bert"))
        writer.set("tokenizer.ggml.tokens", .strings(["a", "b"]))
        Self.expectFormatError("unsupported tokenizer.ggml.model 'bert'") { try writer.tokenizer() }

        var gpt2 = GGUFMetadataWriter()
        gpt2.set("tokenizer.ggml.model", .string("gpt2"))
        gpt2.set("tokenizer.ggml.tokens", .strings(byteCharacterVocabulary()))
        gpt2.set("tokenizer.ggml.merges", .strings([]))
        gpt2.set("tokenizer.ggml.pre", .string("mystery"))
        Self.expectFormatError("tokenizer.ggml.pre 'mystery'") { try gpt2.tokenizer() }
    }

    @Test func ggufBadArrays() {
        var writer = GGUFMetadataWriter()
        writer.set("tokenizer.ggml.model", .string("llama"))
        writer.set("tokenizer.ggml.tokens", .strings(["a", "b"]))
        writer.set("tokenizer.ggml.scores", .floats([0]))
        Self.expectFormatError("tokenizer.ggml.scores") { try writer.tokenizer() }

        var bos = GGUFMetadataWriter()
        bos.set("tokenizer.ggml.model", .string("llama"))
        bos.set("tokenizer.ggml.tokens", .strings(["a", "b"]))
        bos.set("tokenizer.ggml.bos_token_id", .uint32(7))
        Self.expectFormatError("tokenizer.ggml.bos_token_id") { try bos.tokenizer() }
    }

    @Test func malformedTokenizerJSON() throws {
        let folder = try TemporaryFiles.folder()
        try Data("{ \"model\": ".utf8).write(to: URL(fileURLWithPath: folder + "/tokenizer.json"))
        Self.expectFormatError("malformed tokenizer.json", pathSuffix: "tokenizer.json") {
            try Tokenizer.fromHuggingFace(folder: folder)
        }
        let noVocab = try writeHuggingFaceFolder(tokenizer: ["model": ["type": "BPE", "merges": [String]()]])
        Self.expectFormatError("model.vocab", pathSuffix: "tokenizer.json") { try Tokenizer.fromHuggingFace(folder: noVocab) }
    }

    @Test func missingOrUnsupportedTokenizerJSON() throws {
        let empty = try TemporaryFiles.folder()
        Self.expectFormatError("cannot read tokenizer.json", pathSuffix: "tokenizer.json") {
            try Tokenizer.fromHuggingFace(folder: empty)
        }
        let wordPiece = try writeHuggingFaceFolder(tokenizer: ["model": ["type": "WordPiece", "vocab": ["a": 0]]])
        Self.expectFormatError("WordPiece") { try Tokenizer.fromHuggingFace(folder: wordPiece) }
        let unknownSplit = try PreTokenizerTests.byteLevelFolder(preTokenizer: PreTokenizerTests.splitThenByteLevel(#"\w+"#))
        Self.expectFormatError("Split pattern") { try Tokenizer.fromHuggingFace(folder: unknownSplit) }
    }
}
