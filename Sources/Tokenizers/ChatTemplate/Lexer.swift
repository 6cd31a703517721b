/// Tokens of a template: text between tags, tag delimiters and expression tokens.
enum TokenKind: Equatable, Sendable {
    case data(String)
    case variableBegin, variableEnd
    case blockBegin, blockEnd
    case name(String)
    case string(String)
    case integer(Int)
    case float(Double)
    case op(String)
    case eof
}

struct Token: Sendable {
    let kind: TokenKind
    let line: Int
}

/// jinja2's lexer with `trim_blocks=True`, `lstrip_blocks=True`, `keep_trailing_newline=False`.
struct Lexer {
    let src: [Unicode.Scalar]
    var pos = 0
    var tokens: [Token] = []
    var lineStarting = true
    let trimBlocks = true
    let lstripBlocks = true

    init(_ source: String) {
        // Normalize \r\n and \r to \n; drop one trailing newline.
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(source.unicodeScalars.count)
        var previousCR = false
        for u in source.unicodeScalars {
            if u == "\r" { scalars.append("\n"); previousCR = true; continue }
            if u == "\n" && previousCR { previousCR = false; continue }
            previousCR = false
            scalars.append(u)
        }
        if scalars.last == "\n" { scalars.removeLast() }
        src = scalars
        for (i, u) in scalars.enumerated() where u == "\n" { lineStarts.append(i + 1) }
    }

    /// Offsets at which lines start, for line numbers in tokens and errors.
    private var lineStarts: [Int] = [0]

    private func line(at index: Int) -> Int {
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= index { lo = mid } else { hi = mid - 1 }
        }
        return lo + 1
    }

    private func error(_ message: String, at index: Int? = nil) -> ChatTemplateError {
        ChatTemplateError(.syntax, "\(message) (line \(line(at: index ?? pos)))")
    }

    private func matches(_ literal: String, at index: Int) -> Bool {
        var i = index
        for u in literal.unicodeScalars {
            guard i < src.count, src[i] == u else { return false }
            i += 1
        }
        return true
    }

    private func skipSpaces(from index: Int) -> Int {
        var i = index
        while i < src.count, isPythonSpace(src[i]) { i += 1 }
        return i
    }

    private mutating func emit(_ kind: TokenKind, at index: Int) {
        tokens.append(Token(kind: kind, line: line(at: index)))
    }

    /// Applies `-` stripping or lstrip_blocks to the text before a tag.
    private func stripText(_ text: ArraySlice<Unicode.Scalar>, sign: Unicode.Scalar?, isVariable: Bool) -> ArraySlice<Unicode.Scalar> {
        if sign == "-" {
            var end = text.endIndex
            while end > text.startIndex, isPythonSpace(text[end - 1]) { end -= 1 }
            return text[text.startIndex ..< end]
        }
        if sign != "+", lstripBlocks, !isVariable {
            var lPos = text.startIndex
            if let nl = text.lastIndex(of: "\n") { lPos = nl + 1 }
            if lPos > text.startIndex || lineStarting {
                let rest = text[lPos...]
                if !rest.isEmpty, rest.allSatisfy(isPythonSpace) { return text[text.startIndex ..< lPos] }
            }
        }
        return text
    }

    mutating func tokenize() throws -> [Token] {
        while pos < src.count {
            // Find the next tag opener.
            var i = pos
            var found = false
            while i + 1 < src.count {
                if src[i] == "{", src[i + 1] == "{" || src[i + 1] == "%" || src[i + 1] == "#" { found = true; break }
                i += 1
            }
            guard found else {
                emit(.data(String(String.UnicodeScalarView(src[pos...]))), at: pos)
                pos = src.count
                break
            }
            let kind = src[i + 1]
            var afterOpener = i + 2
            var sign: Unicode.Scalar?
            if afterOpener < src.count, src[afterOpener] == "-" || src[afterOpener] == "+" {
                sign = src[afterOpener]
                afterOpener += 1
            }
            // {% raw %}
            if kind == "%" {
                var j = skipSpaces(from: afterOpener)
                if matches("raw", at: j) {
                    j = skipSpaces(from: j + 3)
                    var rawStart: Int?
                    if matches("-%}", at: j) { rawStart = skipSpaces(from: j + 3) } else if matches("%}", at: j) { rawStart = j + 2 }
                    if let rawStart {
                        let text = stripText(src[pos ..< i], sign: sign, isVariable: false)
                        if !text.isEmpty { emit(.data(String(String.UnicodeScalarView(text))), at: pos) }
                        lineStarting = false
                        try lexRaw(from: rawStart)
                        continue
                    }
                }
            }
            let text = stripText(src[pos ..< i], sign: sign, isVariable: kind == "{")
            if !text.isEmpty { emit(.data(String(String.UnicodeScalarView(text))), at: pos) }
            pos = afterOpener
            lineStarting = false
            switch kind {
            case "#": try lexComment(start: i)
            case "%": try lexTag(isBlock: true, start: i)
            default: try lexTag(isBlock: false, start: i)
            }
            lineStarting = pos > 0 && src[pos - 1] == "\n"
        }
        tokens.append(Token(kind: .eof, line: line(at: src.count)))
        return tokens
    }

    private mutating func lexComment(start: Int) throws {
        var k = pos
        while k < src.count {
            if (src[k] == "-" || src[k] == "+"), matches("#}", at: k + 1) {
                pos = src[k] == "-" ? skipSpaces(from: k + 3) : k + 3
                return
            }
            if matches("#}", at: k) {
                pos = k + 2
                if trimBlocks, pos < src.count, src[pos] == "\n" { pos += 1 }
                return
            }
            k += 1
        }
        throw error("Missing end of comment tag", at: start)
    }

    private mutating func lexRaw(from start: Int) throws {
        var k = start
        while k < src.count {
            if src[k] == "{", k + 1 < src.count, src[k + 1] == "%" {
                var j = k + 2
                var sign: Unicode.Scalar?
                if j < src.count, src[j] == "-" || src[j] == "+" { sign = src[j]; j += 1 }
                j = skipSpaces(from: j)
                if matches("endraw", at: j) {
                    j = skipSpaces(from: j + 6)
                    var end: Int?
                    if matches("+%}", at: j) { end = j + 3 } else if matches("-%}", at: j) { end = skipSpaces(from: j + 3) } else if matches("%}", at: j) {
                        var e = j + 2
                        if trimBlocks, e < src.count, src[e] == "\n" { e += 1 }
                        end = e
                    }
                    if let end {
                        let text = stripText(src[start ..< k], sign: sign, isVariable: false)
                        if !text.isEmpty { emit(.data(String(String.UnicodeScalarView(text))), at: start) }
                        pos = end
                        lineStarting = src[pos - 1] == "\n"
                        return
                    }
                }
            }
            k += 1
        }
        throw error("Missing end of raw directive", at: start)
    }

    private mutating func lexTag(isBlock: Bool, start: Int) throws {
        emit(isBlock ? .blockBegin : .variableBegin, at: start)
        var brackets: [Unicode.Scalar] = []
        while true {
            guard pos < src.count else { throw error("unexpected end of template, expected '\(isBlock ? "%}" : "}}")'", at: start) }
            if brackets.isEmpty {
                if isBlock {
                    if matches("+%}", at: pos) { emit(.blockEnd, at: pos); pos += 3; return }
                    if matches("-%}", at: pos) { emit(.blockEnd, at: pos); pos = skipSpaces(from: pos + 3); return }
                    if matches("%}", at: pos) {
                        emit(.blockEnd, at: pos)
                        pos += 2
                        if trimBlocks, pos < src.count, src[pos] == "\n" { pos += 1 }
                        return
                    }
                } else {
                    if matches("-}}", at: pos) { emit(.variableEnd, at: pos); pos = skipSpaces(from: pos + 3); return }
                    if matches("}}", at: pos) { emit(.variableEnd, at: pos); pos += 2; return }
                }
            }
            let c = src[pos]
            if isPythonSpace(c) { pos += 1; continue }
            if c.properties.numericType != nil, ("0" ... "9").contains(c) { try lexNumber(); continue }
            if c == "_" || ("a" ... "z").contains(c) || ("A" ... "Z").contains(c) {
                let s = pos
                while pos < src.count, src[pos] == "_" || ("a" ... "z").contains(src[pos]) || ("A" ... "Z").contains(src[pos]) || ("0" ... "9").contains(src[pos]) { pos += 1 }
                emit(.name(String(String.UnicodeScalarView(src[s ..< pos]))), at: s)
                continue
            }
            if c == "'" || c == "\"" { try lexString(); continue }
            // Operators, longest first.
            let s = pos
            for op in ["//", "**", "==", "!=", "<=", ">="] where matches(op, at: pos) {
                emit(.op(op), at: s)
                pos += 2
                break
            }
            if pos != s { continue }
            let singles: Set<Unicode.Scalar> = ["+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}", "<", ">", "=", ".", ":", "|", ",", ";"]
            guard singles.contains(c) else { throw error("unexpected char '\(c)'") }
            switch c {
            case "(": brackets.append(")")
            case "[": brackets.append("]")
            case "{": brackets.append("}")
            case ")", "]", "}":
                guard let expected = brackets.popLast() else { throw error("unexpected '\(c)'") }
                guard expected == c else { throw error("unexpected '\(c)', expected '\(expected)'") }
            default: break
            }
            emit(.op(String(c)), at: s)
            pos += 1
        }
    }

    private func isDigit(_ i: Int) -> Bool { i < src.count && ("0" ... "9").contains(src[i]) }

    private mutating func lexNumber() throws {
        let s = pos
        func digits() -> String {
            var out = ""
            while pos < src.count {
                if ("0" ... "9").contains(src[pos]) { out.unicodeScalars.append(src[pos]); pos += 1 } else if src[pos] == "_", isDigit(pos + 1), !out.isEmpty { pos += 1 } else { break }
            }
            return out
        }
        // 0x / 0o / 0b
        if src[pos] == "0", pos + 1 < src.count, "xXoObB".unicodeScalars.contains(src[pos + 1]) {
            let radix: Int = ("xX".unicodeScalars.contains(src[pos + 1])) ? 16 : ("oO".unicodeScalars.contains(src[pos + 1]) ? 8 : 2)
            pos += 2
            var text = ""
            while pos < src.count, src[pos] == "_" || src[pos].properties.isASCIIHexDigit { if src[pos] != "_" { text.unicodeScalars.append(src[pos]) }; pos += 1 }
            guard let v = Int(text, radix: radix) else { throw error("invalid number literal") }
            emit(.integer(v), at: s)
            return
        }
        var text = digits()
        var isFloat = false
        let precededByDot = s > 0 && src[s - 1] == "."
        if !precededByDot {
            if pos < src.count, src[pos] == ".", isDigit(pos + 1) {
                pos += 1
                text += "." + digits()
                isFloat = true
            }
            if pos < src.count, src[pos] == "e" || src[pos] == "E" {
                var j = pos + 1
                if j < src.count, src[j] == "+" || src[j] == "-" { j += 1 }
                if isDigit(j) {
                    let sign = src[pos + 1] == "-" ? "-" : ""
                    pos = j
                    text += "e" + sign + digits()
                    isFloat = true
                }
            }
        }
        if isFloat {
            guard let d = Double(text) else { throw error("invalid number literal") }
            emit(.float(d), at: s)
        } else {
            guard let v = Int(text) else { throw error("integer literal too large") }
            emit(.integer(v), at: s)
        }
    }

    private mutating func lexString() throws {
        let s = pos
        let quote = src[pos]
        pos += 1
        var out = String.UnicodeScalarView()
        while true {
            guard pos < src.count else { throw error("unterminated string", at: s) }
            let c = src[pos]
            pos += 1
            if c == quote { break }
            if c != "\\" { out.append(c); continue }
            guard pos < src.count else { throw error("unterminated string", at: s) }
            let e = src[pos]
            pos += 1
            func hex(_ n: Int) -> Unicode.Scalar? {
                guard pos + n <= src.count, let v = UInt32(String(String.UnicodeScalarView(src[pos ..< pos + n])), radix: 16) else { return nil }
                guard let u = Unicode.Scalar(v) else { return nil }
                pos += n
                return u
            }
            switch e {
            case "\n": break
            case "\\": out.append("\\")
            case "'": out.append("'")
            case "\"": out.append("\"")
            case "a": out.append("\u{07}")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "v": out.append("\u{0B}")
            case "x": guard let u = hex(2) else { throw error("invalid \\x escape", at: s) }; out.append(u)
            case "u": guard let u = hex(4) else { throw error("invalid \\u escape", at: s) }; out.append(u)
            case "U": guard let u = hex(8) else { throw error("invalid \\U escape", at: s) }; out.append(u)
            case "0" ... "7":
                var v = e.value - 0x30
                var n = 1
                while n < 3, pos < src.count, ("0" ... "7").contains(src[pos]) { v = v * 8 + src[pos].value - 0x30; pos += 1; n += 1 }
                out.append(Unicode.Scalar(v) ?? "\u{FFFD}")
            default:
                out.append("\\")
                out.append(e)
            }
        }
        emit(.string(String(out)), at: s)
    }
}
