import Foundation

/// A JSON-like value a chat template sees: the variables of the render context.
/// Objects keep their key order (it is the dict order the template sees, e.g. in `tojson`).
public indirect enum TemplateValue: Sendable, Equatable {
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([TemplateValue])
    case object([(String, TemplateValue)])

    public static func == (lhs: TemplateValue, rhs: TemplateValue) -> Bool {
        switch (lhs, rhs) {
        case (.none, .none): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.int(a), .int(b)): return a == b
        case let (.double(a), .double(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// Converts the output of `JSONSerialization` (dictionaries lose their key order there, so
    /// their keys are sorted here; use `parse(jsonData:)` where order matters).
    public init(json: Any) {
        switch json {
        case is NSNull: self = .none
        case let s as String: self = .string(s)
        case let b as Bool where type(of: json) == Bool.self: self = .bool(b)
        case let n as NSNumber:
            let code = String(cString: n.objCType)
            if code == "c" || code == "B" {
                self = .bool(n.boolValue)
            } else if code == "d" || code == "f" {
                self = .double(n.doubleValue)
            } else {
                self = .int(n.intValue)
            }
        case let i as Int: self = .int(i)
        case let d as Double: self = .double(d)
        case let a as [Any]: self = .array(a.map { TemplateValue(json: $0) })
        case let o as [String: Any]:
            self = .object(o.keys.sorted().map { ($0, TemplateValue(json: o[$0] as Any)) })
        default: self = .none
        }
    }

    /// Parses JSON text keeping object key order. Integers without fraction or exponent become `.int`.
    public static func parse(jsonData: Data) throws -> TemplateValue {
        var parser = JSONParser(bytes: [UInt8](jsonData))
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.pos == parser.bytes.count else { throw parser.error("trailing characters") }
        return value
    }

    /// Parses JSON text keeping object key order.
    public static func parse(json: String) throws -> TemplateValue {
        try parse(jsonData: Data(json.utf8))
    }
}

/// A minimal order-preserving JSON parser.
private struct JSONParser {
    let bytes: [UInt8]
    var pos = 0

    func error(_ message: String) -> ChatTemplateError {
        ChatTemplateError(.type, "invalid JSON at byte \(pos): \(message)")
    }

    mutating func skipWhitespace() {
        while pos < bytes.count, bytes[pos] == 0x20 || bytes[pos] == 0x0A || bytes[pos] == 0x0D || bytes[pos] == 0x09 { pos += 1 }
    }

    mutating func expect(_ literal: String) throws {
        for b in literal.utf8 {
            guard pos < bytes.count, bytes[pos] == b else { throw error("expected \(literal)") }
            pos += 1
        }
    }

    mutating func parseValue(depth: Int) throws -> TemplateValue {
        guard depth < 512 else { throw error("nesting too deep") }
        guard pos < bytes.count else { throw error("unexpected end") }
        switch bytes[pos] {
        case UInt8(ascii: "{"):
            pos += 1
            var members: [(String, TemplateValue)] = []
            skipWhitespace()
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
            while true {
                skipWhitespace()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { throw error("expected key") }
                let key = try parseString()
                skipWhitespace()
                try expect(":")
                skipWhitespace()
                let value = try parseValue(depth: depth + 1)
                if let i = members.firstIndex(where: { $0.0 == key }) { members[i].1 = value } else { members.append((key, value)) }
                skipWhitespace()
                guard pos < bytes.count else { throw error("unexpected end") }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
                throw error("expected , or }")
            }
        case UInt8(ascii: "["):
            pos += 1
            var items: [TemplateValue] = []
            skipWhitespace()
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
            while true {
                skipWhitespace()
                items.append(try parseValue(depth: depth + 1))
                skipWhitespace()
                guard pos < bytes.count else { throw error("unexpected end") }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
                throw error("expected , or ]")
            }
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .none
        default: return try parseNumber()
        }
    }

    mutating func parseNumber() throws -> TemplateValue {
        let start = pos
        var isInteger = true
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "-") { pos += 1 }
        while pos < bytes.count {
            let b = bytes[pos]
            if b >= 0x30 && b <= 0x39 { pos += 1 } else if b == UInt8(ascii: ".") || b == UInt8(ascii: "e") || b == UInt8(ascii: "E") || b == UInt8(ascii: "+") || b == UInt8(ascii: "-") {
                isInteger = false; pos += 1
            } else { break }
        }
        let text = String(decoding: bytes[start ..< pos], as: UTF8.self)
        if isInteger, let i = Int(text) { return .int(i) }
        guard !text.isEmpty, text != "-", let d = Double(text) else { throw error("invalid number") }
        return .double(d)
    }

    mutating func parseHex4() throws -> UInt32 {
        guard pos + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[pos ..< pos + 4], as: UTF8.self), radix: 16) else {
            throw error("bad \\u escape")
        }
        pos += 4
        return v
    }

    mutating func parseString() throws -> String {
        pos += 1  // opening quote
        var out: [UInt8] = []
        while true {
            guard pos < bytes.count else { throw error("unterminated string") }
            let b = bytes[pos]
            pos += 1
            if b == UInt8(ascii: "\"") { break }
            if b != UInt8(ascii: "\\") { out.append(b); continue }
            guard pos < bytes.count else { throw error("unterminated string") }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var code = try parseHex4()
                if code >= 0xD800 && code < 0xDC00, pos + 6 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") {
                    let save = pos
                    pos += 2
                    let low = try parseHex4()
                    if low >= 0xDC00 && low < 0xE000 {
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        pos = save
                    }
                }
                let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            default: throw error("bad escape")
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

// MARK: - Runtime values

/// Where an undefined value came from, for its error message.
struct UndefinedInfo {
    var message: String
    var isSandbox = false

    static func name(_ name: String) -> UndefinedInfo { UndefinedInfo(message: "'\(name)' is undefined") }
    static func attribute(_ obj: Value, _ name: String) -> UndefinedInfo {
        UndefinedInfo(message: "'\(obj.typeName) object' has no attribute '\(name)'")
    }
    static func element(_ obj: Value, _ key: Value) -> UndefinedInfo {
        UndefinedInfo(message: "'\(obj.typeName) object' has no element \(key.repr)")
    }
}

/// A hashable view of dict keys (Python semantics: `1 == 1.0 == True`).
enum HashKey: Hashable {
    case none
    case number(Double)
    case string(String)
    case tuple([HashKey])
    case other(ObjectIdentifier)
}

/// An insertion-ordered dict.
struct PyDict {
    private(set) var keys: [Value] = []
    private(set) var values: [Value] = []
    private var index: [HashKey: Int] = [:]

    init() {}
    init(_ pairs: [(String, Value)]) {
        for (k, v) in pairs { self[.string(k)] = v }
    }

    var count: Int { keys.count }
    var pairs: [(Value, Value)] { Array(zip(keys, values)) }

    subscript(key: Value) -> Value? {
        get { key.hashKey.flatMap { index[$0] }.map { values[$0] } }
        set {
            guard let hk = key.hashKey else { return }
            if let i = index[hk] {
                if let newValue { values[i] = newValue } else {
                    keys.remove(at: i); values.remove(at: i)
                    index = [:]
                    for (j, k) in keys.enumerated() { if let h = k.hashKey { index[h] = j } }
                }
            } else if let newValue {
                index[hk] = keys.count
                keys.append(key)
                values.append(newValue)
            }
        }
    }

    subscript(string key: String) -> Value? { self[.string(key)] }
}

/// A jinja2 namespace / other attribute-bearing runtime objects.
class TemplateObject {
    var typeName: String { "object" }
    func attribute(_ name: String) -> Value? { nil }
    var str: String { "<\(typeName) object>" }
}

/// `namespace(...)`: the one mutable object a template may assign attributes of.
final class Namespace: TemplateObject {
    var attrs = PyDict()
    override var typeName: String { "Namespace" }
    override func attribute(_ name: String) -> Value? { attrs[string: name] }
    override var str: String { "<Namespace \(Value.dict(attrs).repr)>" }
}

/// Arguments of a call: positional then keyword.
struct Arguments {
    var positional: [Value] = []
    var keywords: [(String, Value)] = []

    /// Binds to parameter names (Python style); unknown keywords or too many positionals throw.
    func bind(_ function: String, _ names: [String], defaults: [String: Value] = [:]) throws -> [String: Value] {
        guard positional.count <= names.count else {
            throw ChatTemplateError(.type, "\(function)() takes at most \(names.count) arguments (\(positional.count) given)")
        }
        var result: [String: Value] = [:]
        for (i, v) in positional.enumerated() { result[names[i]] = v }
        for (k, v) in keywords {
            guard names.contains(k) else { throw ChatTemplateError(.type, "\(function)() got an unexpected keyword argument '\(k)'") }
            guard result[k] == nil else { throw ChatTemplateError(.type, "\(function)() got multiple values for argument '\(k)'") }
            result[k] = v
        }
        for (k, v) in defaults where result[k] == nil { result[k] = v }
        return result
    }
}

/// A callable: a macro, a global function, or a bound method.
final class Function {
    let name: String
    let body: (Arguments, Renderer) throws -> Value
    init(_ name: String, _ body: @escaping (Arguments, Renderer) throws -> Value) {
        self.name = name
        self.body = body
    }
}

/// A value as the evaluator sees it: Python's types plus jinja2's `Undefined`.
indirect enum Value {
    case undefined(UndefinedInfo)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([Value])
    case tuple([Value])
    case dict(PyDict)
    case object(TemplateObject)
    case function(Function)

    init(_ t: TemplateValue) {
        switch t {
        case .none: self = .none
        case let .bool(b): self = .bool(b)
        case let .int(i): self = .int(i)
        case let .double(d): self = .double(d)
        case let .string(s): self = .string(s)
        case let .array(a): self = .list(a.map(Value.init))
        case let .object(o): self = .dict(PyDict(o.map { ($0.0, Value($0.1)) }))
        }
    }

    var isUndefined: Bool { if case .undefined = self { return true } else { return false } }

    /// Python's type name, as in error messages.
    var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .list: return "list"
        case .tuple: return "tuple"
        case .dict: return "dict"
        case let .object(o): return o.typeName
        case .function: return "function"
        }
    }

    /// Python truthiness (undefined is false).
    var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case let .bool(b): return b
        case let .int(i): return i != 0
        case let .double(d): return d != 0
        case let .string(s): return !s.isEmpty
        case let .list(a), let .tuple(a): return !a.isEmpty
        case let .dict(d): return d.count > 0
        case .object, .function: return true
        }
    }

    var hashKey: HashKey? {
        switch self {
        case .none: return HashKey.none
        case let .bool(b): return .number(b ? 1 : 0)
        case let .int(i): return .number(Double(i))
        case let .double(d): return .number(d)
        case let .string(s): return .string(s)
        case let .tuple(a):
            var keys: [HashKey] = []
            for v in a { guard let k = v.hashKey else { return nil }; keys.append(k) }
            return .tuple(keys)
        case let .object(o): return .other(ObjectIdentifier(o))
        case let .function(f): return .other(ObjectIdentifier(f))
        case .undefined, .list, .dict: return nil
        }
    }

    /// Python `str()`; undefined prints as "".
    var str: String {
        switch self {
        case .undefined: return ""
        case let .string(s): return s
        case let .object(o): return o.str
        default: return repr
        }
    }

    /// Python `repr()`.
    var repr: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "None"
        case let .bool(b): return b ? "True" : "False"
        case let .int(i): return String(i)
        case let .double(d): return pythonFloatRepr(d)
        case let .string(s): return pythonStringRepr(s)
        case let .list(a): return "[" + a.map(\.repr).joined(separator: ", ") + "]"
        case let .tuple(a): return a.count == 1 ? "(" + a[0].repr + ",)" : "(" + a.map(\.repr).joined(separator: ", ") + ")"
        case let .dict(d): return "{" + d.pairs.map { $0.0.repr + ": " + $0.1.repr }.joined(separator: ", ") + "}"
        case let .object(o): return o.str
        case let .function(f): return "<function \(f.name)>"
        }
    }
}

// MARK: - Python formatting helpers

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for 1e-4 <= |x| < 1e16.
func pythonFloatRepr(_ d: Double) -> String {
    if d.isNaN { return "nan" }
    if d.isInfinite { return d < 0 ? "-inf" : "inf" }
    if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
    // Swift's description gives the shortest round-trip digits; re-layout them Python's way.
    var text = "\(abs(d))"
    var exponent = 0
    if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
        exponent = Int(text[text.index(after: e)...]) ?? 0
        text = String(text[..<e])
    }
    var intPart = text
    var fracPart = ""
    if let dot = text.firstIndex(of: ".") {
        intPart = String(text[..<dot])
        fracPart = String(text[text.index(after: dot)...])
    }
    var digits = intPart + fracPart
    var pointPos = intPart.count + exponent  // decimal point after this many digits
    while digits.count > 1, digits.first == "0" { digits.removeFirst(); pointPos -= 1 }
    while digits.count > 1, digits.last == "0" { digits.removeLast() }
    let sci = pointPos - 1  // scientific exponent
    var out: String
    if sci >= 16 || sci < -4 {
        out = String(digits.prefix(1))
        if digits.count > 1 { out += "." + digits.dropFirst() }
        out += "e" + (sci < 0 ? "-" : "+") + (abs(sci) < 10 ? "0" : "") + String(abs(sci))
    } else if pointPos <= 0 {
        out = "0." + String(repeating: "0", count: -pointPos) + digits
    } else if pointPos >= digits.count {
        out = digits + String(repeating: "0", count: pointPos - digits.count) + ".0"
    } else {
        out = String(digits.prefix(pointPos)) + "." + digits.dropFirst(pointPos)
    }
    return d < 0 ? "-" + out : out
}

/// Python's `str.isprintable()` for one character.
func isPythonPrintable(_ s: Unicode.Scalar) -> Bool {
    if s == " " { return true }
    switch s.properties.generalCategory {
    case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator, .spaceSeparator: return false
    default: return true
    }
}

/// Python's `repr(str)`.
func pythonStringRepr(_ s: String) -> String {
    let quote: Character = (s.contains("'") && !s.contains("\"")) ? "\"" : "'"
    var out = String(quote)
    for u in s.unicodeScalars {
        switch u {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if Character(u) == quote { out += "\\" + String(quote) } else if !isPythonPrintable(u) {
                let v = u.value
                if v < 0x100 { out += String(format: "\\x%02x", v) } else if v < 0x10000 { out += String(format: "\\u%04x", v) } else { out += String(format: "\\U%08x", v) }
            } else { out.unicodeScalars.append(u) }
        }
    }
    out.append(quote)
    return out
}

/// Python's `str.isspace()` for one character (what `str.strip()` removes).
func isPythonSpace(_ u: Unicode.Scalar) -> Bool {
    switch u.value {
    case 0x09 ... 0x0D, 0x1C ... 0x1F, 0x20, 0x85, 0xA0, 0x1680, 0x2000 ... 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: return true
    default: return false
    }
}

/// `text` as a JSON string literal, as Python's `json.dumps(text, ensure_ascii=False)` writes it:
/// quotes, backslashes and control characters escaped, everything else as is.
public func jsonStringLiteral(_ text: String) -> String {
    var out = "\""
    for u in text.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\u{08}": out += "\\b"
        case "\u{0C}": out += "\\f"
        default:
            if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sortKeys)`.
func jsonDumps(_ value: Value, indent: String?, separators: (String, String)?, sortKeys: Bool) throws -> String {
    let itemSep = separators?.0 ?? (indent == nil ? ", " : ",")
    let keySep = separators?.1 ?? ": "
    var out = ""
    func encodeString(_ s: String) { out += jsonStringLiteral(s) }
    func keyString(_ k: Value) throws -> String {
        switch k {
        case let .string(s): return s
        case .none: return "null"
        case let .bool(b): return b ? "true" : "false"
        case let .int(i): return String(i)
        case let .double(d): return pythonFloatRepr(d)
        default: throw ChatTemplateError(.type, "keys must be str, int, float, bool or None, not \(k.typeName)")
        }
    }
    func encode(_ v: Value, _ level: Int) throws {
        guard level < 256 else { throw ChatTemplateError(.type, "tojson: nesting too deep") }
        switch v {
        case .none: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .int(i): out += String(i)
        case let .double(d):
            if d.isNaN { out += "NaN" } else if d.isInfinite { out += d < 0 ? "-Infinity" : "Infinity" } else { out += pythonFloatRepr(d) }
        case let .string(s): encodeString(s)
        case let .list(a), let .tuple(a):
            if a.isEmpty { out += "[]"; return }
            out += "["
            for (i, item) in a.enumerated() {
                if i > 0 { out += itemSep }
                if let indent { out += "\n" + String(repeating: indent, count: level + 1) }
                try encode(item, level + 1)
            }
            if let indent { out += "\n" + String(repeating: indent, count: level) }
            out += "]"
        case let .dict(d):
            if d.count == 0 { out += "{}"; return }
            out += "{"
            var pairs = try d.pairs.map { (try keyString($0.0), $0.1) }
            if sortKeys { pairs.sort { Array($0.0.unicodeScalars).lexicographicallyPrecedes(Array($1.0.unicodeScalars)) { $0.value < $1.value } } }
            for (i, (k, item)) in pairs.enumerated() {
                if i > 0 { out += itemSep }
                if let indent { out += "\n" + String(repeating: indent, count: level + 1) }
                encodeString(k)
                out += keySep
                try encode(item, level + 1)
            }
            if let indent { out += "\n" + String(repeating: indent, count: level) }
            out += "}"
        case .undefined: throw ChatTemplateError(.type, "Object of type Undefined is not JSON serializable")
        default: throw ChatTemplateError(.type, "Object of type \(v.typeName) is not JSON serializable")
        }
    }
    try encode(value, 0)
    return out
}
