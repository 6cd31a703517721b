import Foundation
import Formats

extension Tokenizer {
    /// Loads a Hugging Face tokenizer folder: `tokenizer.json` (a BPE model, byte-level or
    /// SentencePiece-style with byte fallback) plus, when present, `tokenizer_config.json`
    /// (BOS/EOS, `add_bos_token`, chat template) and `chat_template.jinja`.
    public static func fromHuggingFace(folder: String) throws -> Tokenizer {
        let tokenizerPath = (folder as NSString).appendingPathComponent("tokenizer.json")
        let configPath = (folder as NSString).appendingPathComponent("tokenizer_config.json")
        let root = try readJSONObject(tokenizerPath, what: "tokenizer.json")
        let config = FileManager.default.fileExists(atPath: configPath)
            ? try readJSONObject(configPath, what: "tokenizer_config.json") : [:]
        let loader = HuggingFaceLoader(path: tokenizerPath, root: root, config: config)
        var definition = try loader.definition()
        let templatePath = (folder as NSString).appendingPathComponent("chat_template.jinja")
        if definition.chatTemplate == nil, let template = try? String(contentsOfFile: templatePath, encoding: .utf8) {
            definition.chatTemplate = template
        }
        return Tokenizer(definition)
    }

    private static func readJSONObject(_ path: String, what: String) throws -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FormatError(path, "cannot read \(what)")
        }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw FormatError(path, "malformed \(what): not valid JSON")
        }
        guard let object = parsed as? [String: Any] else {
            throw FormatError(path, "malformed \(what): the top level is not an object")
        }
        return object
    }
}

/// Reads the parts of tokenizer.json (and tokenizer_config.json) that this engine supports and
/// rejects the rest with a message naming the unsupported component.
private struct HuggingFaceLoader {
    /// Ids beyond this are corrupt (the largest real vocabularies have a few hundred thousand).
    static let maxTokenId = 1 << 24

    let path: String
    let root: [String: Any]
    let config: [String: Any]

    func fail(_ message: String) -> FormatError { FormatError(path, "malformed tokenizer.json: \(message)") }
    func unsupported(_ message: String) -> FormatError { FormatError(path, "unsupported tokenizer.json: \(message)") }

    /// A component as a list: `Sequence` components are flattened, null is empty.
    func components(_ value: Any?, listKey: String) throws -> [[String: Any]] {
        guard let value, !(value is NSNull) else { return [] }
        guard let object = value as? [String: Any], let type = object["type"] as? String else {
            throw fail("a component has no type")
        }
        if type == "Sequence" {
            guard let items = object[listKey] as? [Any] else { throw fail("Sequence without '\(listKey)'") }
            return try items.flatMap { try components($0, listKey: listKey) }
        }
        return [object]
    }

    func definition() throws -> TokenizerDefinition {
        guard let model = root["model"] as? [String: Any] else { throw fail("no 'model' object") }
        let modelType = model["type"] as? String ?? "BPE"
        guard modelType == "BPE" else { throw unsupported("model type '\(modelType)' (only BPE is supported)") }
        guard let vocab = model["vocab"] as? [String: Any] else { throw fail("model.vocab is not an object") }

        var tokenIds: [String: Int32] = [:]
        tokenIds.reserveCapacity(vocab.count)
        for (text, value) in vocab {
            guard let id = (value as? NSNumber)?.intValue, id >= 0, id < Self.maxTokenId else {
                throw fail("vocab entry '\(text)' has no valid id")
            }
            tokenIds[text] = Int32(id)
        }
        var addedTokens: [AddedToken] = []
        var specialIds: Set<Int> = []
        for (index, item) in (root["added_tokens"] as? [Any] ?? []).enumerated() {
            guard let object = item as? [String: Any], let id = (object["id"] as? NSNumber)?.intValue,
                  id >= 0, id < Self.maxTokenId, let content = object["content"] as? String else {
                throw fail("added_tokens[\(index)] needs an id and a content")
            }
            tokenIds[content] = Int32(id)
            addedTokens.append(AddedToken(id: id, content: content,
                                          absorbsSpaceBefore: object["lstrip"] as? Bool ?? false,
                                          absorbsSpaceAfter: object["rstrip"] as? Bool ?? false))
            if object["special"] as? Bool ?? false { specialIds.insert(id) }
        }
        let size = (tokenIds.values.max().map { Int($0) + 1 }) ?? 0
        guard size > 0 else { throw fail("the vocabulary is empty") }
        var tokens = [String?](repeating: nil, count: size)
        for (text, id) in tokenIds where tokens[Int(id)] == nil || vocab[text] == nil { tokens[Int(id)] = text }

        let mergePairs = try readMerges(model["merges"])
        let merges = MergeTable(mergePairs: mergePairs, tokenIds: tokenIds)
        let (textModel, normalizesNFC) = try textModel(model: model)

        let bos = try specialTokenId(configKey: "bos_token", tokenIds: tokenIds)
        let eos = try specialTokenId(configKey: "eos_token", tokenIds: tokenIds)
        let templatePrefix = try postProcessorPrefix(tokenIds: tokenIds)
        let bosId = bos ?? templatePrefix
        let addsBos = config["add_bos_token"] as? Bool ?? (templatePrefix != nil && templatePrefix == bosId)

        var unknownId: Int?
        if let unk = model["unk_token"] as? String { unknownId = tokenIds[unk].map(Int.init) }

        return TokenizerDefinition(
            tokens: tokens, tokenIds: tokenIds, model: textModel, merges: merges,
            addedTokens: addedTokens, specialIds: specialIds, unknownId: unknownId,
            bosId: bosId, eosId: eos, addsBos: addsBos,
            addsEos: config["add_eos_token"] as? Bool ?? false,
            chatTemplate: try chatTemplate(), normalizesNFC: normalizesNFC)
    }

    /// `merges` as `["a b", ...]` (older files) or `[["a", "b"], ...]` (newer files).
    func readMerges(_ value: Any?) throws -> [(String, String)] {
        guard let list = value as? [Any] else {
            if value == nil || value is NSNull { return [] }
            throw fail("model.merges is not a list")
        }
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(list.count)
        for (index, item) in list.enumerated() {
            if let line = item as? String, let pair = Tokenizer.splitMergeLine(line) {
                pairs.append(pair)
            } else if let parts = item as? [String], parts.count == 2 {
                pairs.append((parts[0], parts[1]))
            } else {
                throw fail("model.merges[\(index)] is not a pair of tokens")
            }
        }
        return pairs
    }

    /// Byte-level or SentencePiece style, from the normalizer, pre-tokenizer and decoder.
    func textModel(model: [String: Any]) throws -> (TextModel, normalizesNFC: Bool) {
        var normalizesNFC = false
        var prependsSpace = false
        var replacesSpaces = false
        for normalizer in try components(root["normalizer"], listKey: "normalizers") {
            switch normalizer["type"] as? String {
            case "NFC": normalizesNFC = true
            case "Prepend":
                guard normalizer["prepend"] as? String == "\u{2581}" else { throw unsupported("Prepend normalizer other than '▁'") }
                prependsSpace = true
            case "Replace":
                let pattern = (normalizer["pattern"] as? [String: Any])?["String"] as? String
                guard pattern == " ", normalizer["content"] as? String == "\u{2581}" else {
                    throw unsupported("Replace normalizer other than ' ' → '▁'")
                }
                replacesSpaces = true
            case let other: throw unsupported("normalizer '\(other ?? "?")'")
            }
        }

        var rules: [SplitRule] = []
        var byteLevel = false
        var addPrefixSpace = false
        var metaspace: [String: Any]?
        for pre in try components(root["pre_tokenizer"], listKey: "pretokenizers") {
            switch pre["type"] as? String {
            case "ByteLevel":
                byteLevel = true
                addPrefixSpace = pre["add_prefix_space"] as? Bool ?? false
                if pre["use_regex"] as? Bool ?? true { rules.append(.gpt2) }
            case "Digits":
                rules.append(pre["individual_digits"] as? Bool ?? false ? .individualNumbers : .numberRuns)
            case "Split":
                rules.append(try splitRule(pre))
            case "Metaspace":
                metaspace = pre
            case let other: throw unsupported("pre-tokenizer '\(other ?? "?")'")
            }
        }
        let decoders = try components(root["decoder"], listKey: "decoders")
        if !byteLevel, metaspace == nil, decoders.contains(where: { $0["type"] as? String == "ByteLevel" }) {
            byteLevel = true
        }

        if byteLevel {
            guard metaspace == nil, !replacesSpaces, !prependsSpace else {
                throw unsupported("ByteLevel mixed with SentencePiece-style space handling")
            }
            return (.byteLevel(ByteLevelOptions(preTokenizer: PreTokenizer(rules: rules), addPrefixSpace: addPrefixSpace,
                                                ignoreMerges: model["ignore_merges"] as? Bool ?? false)), normalizesNFC)
        }
        guard rules.isEmpty else { throw unsupported("split pre-tokenizers without ByteLevel") }
        guard metaspace != nil || replacesSpaces || model["byte_fallback"] as? Bool == true else {
            throw unsupported("neither a ByteLevel nor a SentencePiece-style (▁) BPE tokenizer")
        }
        var spacePrefix: SentencePieceOptions.SpacePrefix = prependsSpace ? .everyRun : .never
        var splitAtSpaces = false
        if let metaspace {
            guard metaspace["replacement"] as? String ?? "\u{2581}" == "\u{2581}" else {
                throw unsupported("Metaspace replacement other than '▁'")
            }
            splitAtSpaces = metaspace["split"] as? Bool ?? true
            switch metaspace["prepend_scheme"] as? String {
            case "always": spacePrefix = .everyRun
            case "first": spacePrefix = .firstRun
            case "never": spacePrefix = .never
            default: spacePrefix = metaspace["add_prefix_space"] as? Bool ?? true ? .everyRun : .never
            }
        }
        let strips = decoders.contains { decoder in
            switch decoder["type"] as? String {
            case "Strip": (decoder["start"] as? Int ?? 0) > 0
            case "Metaspace": decoder["prepend_scheme"] as? String != "never" && decoder["add_prefix_space"] as? Bool != false
            default: false
            }
        }
        return (.sentencePiece(SentencePieceOptions(spacePrefix: spacePrefix, splitAtSpaces: splitAtSpaces,
                                                    stripsLeadingSpaceOnDecode: strips)), normalizesNFC)
    }

    /// Known split regexes, mapped to their scanners.
    static let knownPatterns: [String: SplitRule] = {
        let contractionsInsensitive = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
        let contractionsExpanded = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
        let llamaTail = #"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        let qwenTail = #"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        return [
            #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#: .gpt2,
            contractionsInsensitive + llamaTail: .llama3,
            contractionsExpanded + llamaTail: .llama3,
            contractionsInsensitive + qwenTail: .qwen2,
            contractionsExpanded + qwenTail: .qwen2,
            #"\p{N}"#: .individualNumbers,
            #"\p{N}+"#: .numberRuns,
        ]
    }()

    func splitRule(_ split: [String: Any]) throws -> SplitRule {
        guard let pattern = (split["pattern"] as? [String: Any])?["Regex"] as? String else {
            throw unsupported("Split pre-tokenizer without a Regex pattern")
        }
        guard let rule = Self.knownPatterns[pattern] else {
            throw unsupported("Split pattern \(pattern) is not one of the known (gpt2, llama3, qwen2) patterns")
        }
        guard split["behavior"] as? String ?? "Isolated" == "Isolated", split["invert"] as? Bool != true else {
            throw unsupported("Split behavior other than Isolated")
        }
        return rule
    }

    /// The id of `bos_token`/`eos_token` in tokenizer_config.json (a string or `{content: ...}`).
    func specialTokenId(configKey: String, tokenIds: [String: Int32]) throws -> Int? {
        let value = config[configKey]
        let text = value as? String ?? (value as? [String: Any])?["content"] as? String
        guard let text else { return nil }
        guard let id = tokenIds[text] else {
            throw FormatError(path, "tokenizer_config.json \(configKey) '\(text)' is not in the vocabulary")
        }
        return Int(id)
    }

    /// The special token a TemplateProcessing post-processor puts before a single sequence.
    func postProcessorPrefix(tokenIds: [String: Int32]) throws -> Int? {
        for processor in try components(root["post_processor"], listKey: "processors")
        where processor["type"] as? String == "TemplateProcessing" {
            guard let single = processor["single"] as? [Any],
                  let first = single.first as? [String: Any],
                  let special = first["SpecialToken"] as? [String: Any],
                  let name = special["id"] as? String else { return nil }
            if let entry = (processor["special_tokens"] as? [String: Any])?[name] as? [String: Any],
               let id = (entry["ids"] as? [Any])?.first as? NSNumber {
                return id.intValue
            }
            return tokenIds[name].map(Int.init)
        }
        return nil
    }

    /// tokenizer_config.json `chat_template`: a string, or a list of `{name, template}` whose
    /// `default` entry is used.
    func chatTemplate() throws -> String? {
        switch config["chat_template"] {
        case let text as String: return text
        case let list as [Any]:
            let entries = list.compactMap { $0 as? [String: Any] }
            let chosen = entries.first { $0["name"] as? String == "default" } ?? entries.first
            return chosen?["template"] as? String
        default: return nil
        }
    }
}
