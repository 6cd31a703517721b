/// Coarse Unicode class of one scalar, as the split patterns see it (`\p{L}`, `\p{N}`, `\s`).
enum ScalarKind: UInt8, Sendable {
    case letter, number, whitespace, other

    init(_ scalar: Unicode.Scalar) {
        let v = scalar.value
        if v < 0x80 {
            switch v {
            case 0x41 ... 0x5A, 0x61 ... 0x7A: self = .letter
            case 0x30 ... 0x39: self = .number
            case 0x09 ... 0x0D, 0x20: self = .whitespace
            default: self = .other
            }
            return
        }
        if scalar.properties.isWhitespace { self = .whitespace; return }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            self = .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            self = .number
        default:
            self = .other
        }
    }
}

/// One stage of pre-tokenization: a split pattern, implemented as a hand-written scanner with the
/// exact semantics of the regular expression it stands for (llama.cpp's `llama-vocab.cpp`).
enum SplitRule: Sendable, Equatable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case llama3
    /// The llama3 pattern with `\p{N}` (one number scalar per piece) instead of `\p{N}{1,3}`.
    case qwen2
    /// `\p{N}`: every number scalar is its own piece (HF `Digits(individual_digits=true)`).
    case individualNumbers
    /// `\p{N}+`: runs of number scalars are pieces (HF `Digits(individual_digits=false)`).
    case numberRuns
}

/// A sequence of split rules applied one after the other; each rule splits the pieces the
/// previous one produced (as llama.cpp's regex list and HF's `Sequence` pre-tokenizer do).
struct PreTokenizer: Sendable, Equatable {
    var rules: [SplitRule]

    /// The pre-tokenizer named by GGUF `tokenizer.ggml.pre`, or nil for an unknown name.
    /// `deepseek-llm` and `deepseek-v3` use longer regex lists in llama.cpp; they map to the
    /// nearest pattern here (gpt2, llama3), which agrees on ordinary text.
    init?(ggufName name: String) {
        switch name {
        case "default", "gpt2", "gpt-2", "phi-2", "roberta-bpe", "olmo", "mpt", "jina-es", "jina-de",
             "jina-v2-es", "jina-v2-de", "jina-v2-code", "gigachat", "deepseek-llm", "poro-chat",
             "viking", "bloom", "stablelm2":
            rules = [.gpt2]
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "deepseek-v3", "falcon-h1":
            rules = [.llama3]
        case "qwen2", "deepseek-r1-qwen", "megrez", "stablelm2-zephyr":
            rules = [.qwen2]
        case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b":
            rules = [.individualNumbers, .gpt2]
        default:
            return nil
        }
    }

    init(rules: [SplitRule]) { self.rules = rules }

    /// Splits `range` of `kinds` (the `ScalarKind` of each scalar of `scalars`) into pieces.
    func split(_ scalars: [Unicode.Scalar], _ kinds: [ScalarKind], _ range: Range<Int>) -> [Range<Int>] {
        var pieces = [range]
        var next: [Range<Int>] = []
        for rule in rules {
            next.removeAll(keepingCapacity: true)
            for piece in pieces where !piece.isEmpty {
                rule.split(scalars, kinds, piece, into: &next)
            }
            swap(&pieces, &next)
        }
        return pieces
    }
}

extension SplitRule {
    func split(_ s: [Unicode.Scalar], _ k: [ScalarKind], _ range: Range<Int>, into out: inout [Range<Int>]) {
        switch self {
        case .gpt2: scanGPT2(s, k, range, &out)
        case .llama3: scanLlama3(s, k, range, maxNumberRun: 3, &out)
        case .qwen2: scanLlama3(s, k, range, maxNumberRun: 1, &out)
        case .individualNumbers: scanNumbers(k, range, individual: true, &out)
        case .numberRuns: scanNumbers(k, range, individual: false, &out)
        }
    }

    /// Length of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) starting at `i`, or 0.
    private func contractionLength(_ s: [Unicode.Scalar], _ i: Int, _ end: Int, caseInsensitive: Bool) -> Int {
        guard s[i] == "'", i + 1 < end else { return 0 }
        func lower(_ j: Int) -> UInt32 {
            let v = s[j].value
            return caseInsensitive && v >= 0x41 && v <= 0x5A ? v | 0x20 : v
        }
        switch lower(i + 1) {
        case 0x73, 0x74, 0x6D, 0x64: return 2 // s t m d
        case 0x72, 0x76: // r v -> re ve
            return i + 2 < end && lower(i + 2) == 0x65 ? 3 : 0
        case 0x6C: // l -> ll
            return i + 2 < end && lower(i + 2) == 0x6C ? 3 : 0
        default: return 0
        }
    }

    /// End of the run of `kind` starting at `i`.
    private func runEnd(_ k: [ScalarKind], from i: Int, _ end: Int, _ kind: ScalarKind) -> Int {
        var j = i
        while j < end && k[j] == kind { j += 1 }
        return j
    }

    /// `\s+(?!\S)|\s+` at a whitespace scalar: a run that reaches the end of the piece is taken
    /// whole; a longer run followed by a non-space leaves its last scalar for the next piece.
    private func whitespaceRunEnd(_ k: [ScalarKind], from i: Int, _ end: Int) -> Int {
        let e = runEnd(k, from: i, end, .whitespace)
        return e == end || e - i == 1 ? e : e - 1
    }

    private func scanGPT2(_ s: [Unicode.Scalar], _ k: [ScalarKind], _ range: Range<Int>, _ out: inout [Range<Int>]) {
        var i = range.lowerBound
        let end = range.upperBound
        while i < end {
            var e = contractionLength(s, i, end, caseInsensitive: false)
            if e > 0 {
                e += i
            } else {
                // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
                let j = s[i] == " " && i + 1 < end && k[i + 1] != .whitespace ? i + 1 : i
                switch k[j] {
                case .letter, .number, .other: e = runEnd(k, from: j, end, k[j])
                case .whitespace: e = whitespaceRunEnd(k, from: i, end)
                }
            }
            out.append(i ..< e)
            i = e
        }
    }

    private func scanLlama3(_ s: [Unicode.Scalar], _ k: [ScalarKind], _ range: Range<Int>, maxNumberRun: Int,
                            _ out: inout [Range<Int>]) {
        var i = range.lowerBound
        let end = range.upperBound
        while i < end {
            defer { i = out[out.count - 1].upperBound }
            let c = s[i].value
            let isNewline = c == 0x0A || c == 0x0D
            let contraction = contractionLength(s, i, end, caseInsensitive: true)
            if contraction > 0 { out.append(i ..< i + contraction); continue }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if k[i] == .letter { out.append(i ..< runEnd(k, from: i, end, .letter)); continue }
            if k[i] != .number, !isNewline, i + 1 < end, k[i + 1] == .letter {
                out.append(i ..< runEnd(k, from: i + 1, end, .letter)); continue
            }
            // `\p{N}{1,maxNumberRun}`
            if k[i] == .number {
                out.append(i ..< min(runEnd(k, from: i, end, .number), i + maxNumberRun)); continue
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let j = c == 0x20 && i + 1 < end && k[i + 1] == .other ? i + 1 : i
            if k[j] == .other {
                var e = runEnd(k, from: j, end, .other)
                while e < end && (s[e].value == 0x0A || s[e].value == 0x0D) { e += 1 }
                out.append(i ..< e); continue
            }
            // `\s*[\r\n]+`: the whitespace run up to and including its last newline.
            let whitespaceEnd = runEnd(k, from: i, end, .whitespace)
            var lastNewline = whitespaceEnd - 1
            while lastNewline >= i && s[lastNewline].value != 0x0A && s[lastNewline].value != 0x0D { lastNewline -= 1 }
            if lastNewline >= i { out.append(i ..< lastNewline + 1); continue }
            // `\s+(?!\S)|\s+`
            out.append(i ..< whitespaceRunEnd(k, from: i, end))
        }
    }

    private func scanNumbers(_ k: [ScalarKind], _ range: Range<Int>, individual: Bool, _ out: inout [Range<Int>]) {
        var i = range.lowerBound
        let end = range.upperBound
        while i < end {
            var e = i + 1
            if k[i] == .number {
                if !individual { e = runEnd(k, from: i, end, .number) }
            } else {
                while e < end && k[e] != .number { e += 1 }
            }
            out.append(i ..< e)
            i = e
        }
    }
}
