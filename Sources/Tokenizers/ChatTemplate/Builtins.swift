import Foundation

/// Names of the filters and tests this interpreter knows (an unknown one is a load-time syntax error, as in jinja2).
enum Builtins {
    static let filterNames: Set<String> = [
        "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "first",
        "float", "forceescape", "format", "indent", "int", "items", "join", "last", "length", "list", "lower", "map",
        "max", "min", "pprint", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr",
        "sort", "string", "sum", "title", "tojson", "trim", "truncate", "unique", "upper", "wordcount",
    ]

    static let testNames: Set<String> = [
        "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "==", "escaped", "even", "false", "filter",
        "float", "ge", ">=", "gt", ">", "greaterthan", "in", "integer", "iterable", "le", "<=", "lower", "lt", "<",
        "lessthan", "mapping", "ne", "!=", "none", "number", "odd", "sameas", "sequence", "string", "test", "true",
        "undefined", "upper",
    ]

    static let stringMethods: Set<String> = [
        "capitalize", "casefold", "center", "count", "endswith", "find", "format", "index", "isalnum", "isalpha",
        "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "join", "ljust", "lower",
        "lstrip", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition",
        "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "upper", "zfill",
    ]

    /// Methods the immutable sandbox refuses (they mutate their receiver).
    static let unsafeListMethods: Set<String> = ["append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"]
    static let unsafeDictMethods: Set<String> = ["clear", "pop", "popitem", "setdefault", "update"]
}

extension Renderer {
    // MARK: Globals

    func installGlobals(_ scope: Scope) {
        func define(_ name: String, _ body: @escaping (Arguments, Renderer) throws -> Value) {
            scope.vars[name] = .function(Function(name, body))
        }
        define("raise_exception") { args, _ in
            let message = args.positional.first?.str ?? args.keywords.first?.1.str ?? ""
            throw ChatTemplateError(.raised, message)
        }
        define("range") { args, r in
            guard args.keywords.isEmpty else { throw ChatTemplateError(.type, "range() takes no keyword arguments") }
            var ints: [Int] = []
            for v in args.positional {
                if case let .undefined(info) = v { throw r.undefinedError(info) }
                guard let i = r.exactInt(v) else { throw ChatTemplateError(.type, "'\(v.typeName)' object cannot be interpreted as an integer") }
                ints.append(i)
            }
            var start = 0, stop = 0, step = 1
            switch ints.count {
            case 1: stop = ints[0]
            case 2: start = ints[0]; stop = ints[1]
            case 3: start = ints[0]; stop = ints[1]; step = ints[2]
            default: throw ChatTemplateError(.type, "range expected 1 to 3 arguments, got \(ints.count)")
            }
            guard step != 0 else { throw ChatTemplateError(.type, "range() arg 3 must not be zero") }
            let count = step > 0 ? max(0, (stop - start + step - 1) / step) : max(0, (start - stop - step - 1) / -step)
            guard count <= 100_000 else { throw ChatTemplateError(.sandbox, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).") }
            return .list((0 ..< count).map { .int(start + $0 * step) })
        }
        define("dict") { args, r in
            var d = PyDict()
            if let first = args.positional.first {
                switch first {
                case let .dict(source): d = source
                default:
                    for item in try r.iterate(first) {
                        let pair = try r.iterate(item)
                        guard pair.count == 2 else { throw ChatTemplateError(.type, "dictionary update sequence element has length \(pair.count); 2 is required") }
                        guard pair[0].hashKey != nil else { throw ChatTemplateError(.type, "unhashable type: '\(pair[0].typeName)'") }
                        d[pair[0]] = pair[1]
                    }
                }
            }
            for (k, v) in args.keywords { d[.string(k)] = v }
            return .dict(d)
        }
        define("namespace") { args, _ in
            let ns = Namespace()
            if let first = args.positional.first {
                guard case let .dict(source) = first else { throw ChatTemplateError(.type, "namespace() argument must be a mapping") }
                ns.attrs = source
            }
            for (k, v) in args.keywords { ns.attrs[.string(k)] = v }
            return .object(ns)
        }
        define("strftime_now") { args, r in
            guard let format = args.positional.first else { throw ChatTemplateError(.type, "strftime_now() missing argument 'format'") }
            return .string(StringOps.strftime(format.str, r.now))
        }
        define("joiner") { args, _ in
            let bound = try args.bind("joiner", ["sep"], defaults: ["sep": .string(", ")])
            let sep = bound["sep"]?.str ?? ", "
            let state = Namespace()
            return .function(Function("joiner") { _, _ in
                if state.attrs[string: "used"] != nil { return .string(sep) }
                state.attrs[.string("used")] = .bool(true)
                return .string("")
            })
        }
        define("cycler") { args, _ in .object(Cycler(args.positional)) }
    }

    // MARK: Methods

    /// A bound method of `obj` named `name`, a sandbox-refused undefined, or nil.
    func method(_ obj: Value, _ name: String) -> Value? {
        func bound(_ body: @escaping (Arguments, Renderer) throws -> Value) -> Value { .function(Function(name, body)) }
        func unsafe() -> Value {
            .undefined(UndefinedInfo(message: "access to attribute '\(name)' of '\(obj.typeName)' object is unsafe.", isSandbox: true))
        }
        switch obj {
        case let .string(s):
            guard Builtins.stringMethods.contains(name) else { return nil }
            return bound { args, r in try r.stringMethod(s, name, args) }
        case let .dict(d):
            if Builtins.unsafeDictMethods.contains(name) { return unsafe() }
            switch name {
            case "get":
                return bound { args, _ in
                    let b = try args.bind("get", ["key", "default"], defaults: ["default": .none])
                    guard let key = b["key"] else { throw ChatTemplateError(.type, "get expected at least 1 argument, got 0") }
                    guard key.hashKey != nil else { throw ChatTemplateError(.type, "unhashable type: '\(key.typeName)'") }
                    return d[key] ?? b["default"] ?? .none
                }
            case "items": return bound { _, _ in .list(d.pairs.map { .tuple([$0.0, $0.1]) }) }
            case "keys": return bound { _, _ in .list(d.keys) }
            case "values": return bound { _, _ in .list(d.values) }
            case "copy": return bound { _, _ in .dict(d) }
            default: return nil
            }
        case let .list(items), let .tuple(items):
            if case .list = obj, Builtins.unsafeListMethods.contains(name) { return unsafe() }
            switch name {
            case "count": return bound { args, r in .int(items.filter { r.equals($0, args.positional.first ?? .none) }.count) }
            case "index":
                return bound { args, r in
                    let target = args.positional.first ?? .none
                    guard let i = items.firstIndex(where: { r.equals($0, target) }) else {
                        throw ChatTemplateError(.type, "\(target.repr) is not in list")
                    }
                    return .int(i)
                }
            case "copy": return bound { _, _ in obj }
            default: return nil
            }
        case let .object(o as Cycler):
            switch name {
            case "next": return bound { _, _ in o.next() }
            case "reset": return bound { _, _ in o.position = 0; return .none }
            case "current": return o.items.isEmpty ? .none : o.items[o.position]
            default: return nil
            }
        default:
            return nil
        }
    }

    func stringMethod(_ s: String, _ name: String, _ args: Arguments) throws -> Value {
        let p = args.positional
        func str(_ i: Int) throws -> String? {
            guard i < p.count else { return nil }
            switch p[i] {
            case let .string(v): return v
            case .none: return nil
            case let .undefined(info): throw undefinedError(info)
            default: throw ChatTemplateError(.type, "\(name)() argument must be str, not \(p[i].typeName)")
            }
        }
        func int(_ i: Int, _ def: Int) throws -> Int {
            guard i < p.count else {
                if let kw = args.keywords.first(where: { $0.0 == "maxsplit" || $0.0 == "count" || $0.0 == "width" }) {
                    return exactInt(kw.1) ?? def
                }
                return def
            }
            guard let v = exactInt(p[i]) else { throw ChatTemplateError(.type, "'\(p[i].typeName)' object cannot be interpreted as an integer") }
            return v
        }
        let scalars = Array(s.unicodeScalars)
        switch name {
        case "strip": return .string(StringOps.strip(s, try str(0), left: true, right: true))
        case "lstrip": return .string(StringOps.strip(s, try str(0), left: true, right: false))
        case "rstrip": return .string(StringOps.strip(s, try str(0), left: false, right: true))
        case "split", "rsplit":
            let sep = try str(0) ?? args.keywords.first(where: { $0.0 == "sep" }).flatMap { if case let .string(v) = $0.1 { return v } else { return nil } }
            let parts = try StringOps.split(s, sep, maxsplit: try int(1, -1), fromRight: name == "rsplit")
            return .list(parts.map { .string($0) })
        case "splitlines":
            return .list(StringOps.splitlines(s, keepends: p.first?.truthy ?? false).map { .string($0) })
        case "startswith", "endswith":
            guard let first = p.first else { throw ChatTemplateError(.type, "\(name)() takes at least 1 argument (0 given)") }
            var candidates: [String] = []
            switch first {
            case let .string(v): candidates = [v]
            case let .tuple(items):
                for item in items {
                    guard case let .string(v) = item else { throw ChatTemplateError(.type, "tuple for \(name) must only contain str") }
                    candidates.append(v)
                }
            default: throw ChatTemplateError(.type, "\(name) first arg must be str or a tuple of str, not \(first.typeName)")
            }
            let bytes = Array(s.utf8)
            return .bool(candidates.contains { c in
                let cb = Array(c.utf8)
                return name == "startswith" ? bytes.starts(with: cb) : bytes.reversed().starts(with: cb.reversed())
            })
        case "replace":
            guard let old = try str(0), let new = try str(1) else { throw ChatTemplateError(.type, "replace() takes at least 2 arguments") }
            return .string(StringOps.replace(s, old, new, count: try int(2, -1)))
        case "find", "index", "rfind", "rindex":
            guard let sub = try str(0) else { throw ChatTemplateError(.type, "\(name)() takes at least 1 argument") }
            let r = StringOps.scalarIndex(s, of: sub, last: name.hasPrefix("r"))
            if r == nil, name.hasSuffix("index") { throw ChatTemplateError(.type, "substring not found") }
            return .int(r ?? -1)
        case "count":
            guard let sub = try str(0) else { throw ChatTemplateError(.type, "count() takes at least 1 argument") }
            return .int(StringOps.count(s, sub))
        case "upper": return .string(s.uppercased())
        case "lower", "casefold": return .string(s.lowercased())
        case "title": return .string(StringOps.pythonTitle(s))
        case "capitalize": return .string(StringOps.capitalize(s))
        case "swapcase":
            return .string(String(s.map { c in c.isUppercase ? Character(c.lowercased()) : c.isLowercase ? Character(c.uppercased()) : c }))
        case "isdigit", "isdecimal", "isnumeric":
            return .bool(!scalars.isEmpty && scalars.allSatisfy { $0.properties.numericType != nil })
        case "isalpha": return .bool(!scalars.isEmpty && scalars.allSatisfy { $0.properties.isAlphabetic })
        case "isalnum": return .bool(!scalars.isEmpty && scalars.allSatisfy { $0.properties.isAlphabetic || $0.properties.numericType != nil })
        case "isspace": return .bool(!scalars.isEmpty && scalars.allSatisfy(isPythonSpace))
        case "isupper": return .bool(s.contains { $0.isCased } && !s.contains { $0.isLowercase })
        case "islower": return .bool(s.contains { $0.isCased } && !s.contains { $0.isUppercase })
        case "istitle": return .bool(!s.isEmpty && StringOps.pythonTitle(s) == s && s.contains { $0.isCased })
        case "join":
            guard let first = p.first else { throw ChatTemplateError(.type, "join() takes exactly one argument (0 given)") }
            var parts: [String] = []
            for (i, item) in try iterate(first).enumerated() {
                guard case let .string(v) = item else { throw ChatTemplateError(.type, "sequence item \(i): expected str instance, \(item.typeName) found") }
                parts.append(v)
            }
            return .string(parts.joined(separator: s))
        case "center", "ljust", "rjust":
            let width = try int(0, 0)
            let fill = try str(1) ?? " "
            return .string(StringOps.pad(s, width, fill, mode: name))
        case "zfill":
            let width = try int(0, 0)
            guard scalars.count < width else { return .string(s) }
            let pad = String(repeating: "0", count: width - scalars.count)
            if let f = scalars.first, f == "-" || f == "+" { return .string(String(f) + pad + String(String.UnicodeScalarView(scalars.dropFirst()))) }
            return .string(pad + s)
        case "partition", "rpartition":
            guard let sep = try str(0), !sep.isEmpty else { throw ChatTemplateError(.type, "empty separator") }
            let parts = try StringOps.split(s, sep, maxsplit: 1, fromRight: name == "rpartition")
            if parts.count == 2 { return .tuple([.string(parts[0]), .string(sep), .string(parts[1])]) }
            return name == "partition" ? .tuple([.string(s), .string(""), .string("")]) : .tuple([.string(""), .string(""), .string(s)])
        case "removeprefix":
            let pre = try str(0) ?? ""
            return .string(Array(s.utf8).starts(with: Array(pre.utf8)) ? String(decoding: Array(s.utf8).dropFirst(pre.utf8.count), as: UTF8.self) : s)
        case "removesuffix":
            let suf = try str(0) ?? ""
            let b = Array(s.utf8)
            return .string(!suf.isEmpty && b.reversed().starts(with: Array(suf.utf8).reversed()) ? String(decoding: b.dropLast(suf.utf8.count), as: UTF8.self) : s)
        case "format":
            return .string(try StringOps.braceFormat(s, args))
        default:
            throw ChatTemplateError(.type, "'str' object has no attribute '\(name)'")
        }
    }

    // MARK: Filters

    func applyFilter(_ app: Application, _ value: Value, _ scope: Scope) throws -> Value {
        let arguments = Arguments(positional: try app.args.map { try eval($0, scope) },
                                  keywords: try app.kwargs.map { ($0.0, try eval($0.1, scope)) })
        return try filter(app.name, value, arguments)
    }

    /// jinja2's `make_attrgetter`: dotted path, integer parts as indices, each step via getitem.
    func attribute(_ item: Value, _ path: Value) throws -> Value {
        guard case let .string(p) = path else { return try getitem(item, path) }
        var v = item
        for part in p.split(separator: ".", omittingEmptySubsequences: false) {
            if let i = Int(part) { v = try getitem(v, .int(i)) } else { v = try getitem(v, .string(String(part))) }
        }
        return v
    }

    func length(_ v: Value) throws -> Int {
        switch v {
        case let .string(s): return s.unicodeScalars.count
        case let .list(a), let .tuple(a): return a.count
        case let .dict(d): return d.count
        case .undefined: return 0
        case let .object(o as Namespace): return o.attrs.count
        default: throw ChatTemplateError(.type, "object of type '\(v.typeName)' has no len()")
        }
    }

    /// The sort key jinja2 uses: lowercased strings unless case-sensitive.
    func sortKey(_ v: Value, caseSensitive: Bool) -> Value {
        if !caseSensitive, case let .string(s) = v { return .string(s.lowercased()) }
        return v
    }

    func filter(_ name: String, _ value: Value, _ args: Arguments) throws -> Value {
        func b(_ names: [String], _ defaults: [String: Value] = [:]) throws -> [String: Value] {
            try args.bind(name, names, defaults: defaults)
        }
        switch name {
        case "abs":
            switch value {
            case let .int(i): return .int(i == Int.min ? i : abs(i))
            case let .bool(v): return .int(v ? 1 : 0)
            case let .double(d): return .double(abs(d))
            case let .undefined(info): throw undefinedError(info)
            default: throw ChatTemplateError(.type, "bad operand type for abs(): '\(value.typeName)'")
            }
        case "attr":
            let a = try b(["name"])
            if case let .undefined(info) = value { throw undefinedError(info) }
            let attrName = a["name"]?.str ?? ""
            if attrName.hasPrefix("_") {
                return .undefined(UndefinedInfo(message: "access to attribute '\(attrName)' of '\(value.typeName)' object is unsafe.", isSandbox: true))
            }
            if let m = method(value, attrName) { return m }
            if case let .object(o) = value, let v = o.attribute(attrName) { return v }
            return .undefined(.attribute(value, attrName))
        case "batch":
            let a = try b(["linecount", "fill_with"], ["fill_with": .none])
            guard let n = a["linecount"].flatMap(exactInt), n > 0 else { throw ChatTemplateError(.type, "batch() needs a positive line count") }
            let items = try iterate(value)
            var out: [Value] = []
            var i = 0
            while i < items.count {
                var chunk = Array(items[i ..< min(i + n, items.count)])
                if chunk.count < n, let fill = a["fill_with"], !(fill.hashKey == HashKey.none) {
                    chunk += Array(repeating: fill, count: n - chunk.count)
                }
                out.append(.list(chunk))
                i += n
            }
            return .list(out)
        case "capitalize": return .string(StringOps.capitalize(value.str))
        case "center":
            let a = try b(["width"], ["width": .int(80)])
            return .string(StringOps.pad(value.str, exactInt(a["width"] ?? .int(80)) ?? 80, " ", mode: "center"))
        case "count", "length": return .int(try length(value))
        case "d", "default":
            let a = try b(["default_value", "boolean"], ["default_value": .string(""), "boolean": .bool(false)])
            if value.isUndefined || ((a["boolean"]?.truthy ?? false) && !value.truthy) { return a["default_value"] ?? .string("") }
            return value
        case "dictsort":
            let a = try b(["case_sensitive", "by", "reverse"], ["case_sensitive": .bool(false), "by": .string("key"), "reverse": .bool(false)])
            guard case let .dict(d) = value else {
                if case let .undefined(info) = value { throw undefinedError(info) }
                throw ChatTemplateError(.type, "dictsort requires a mapping")
            }
            let caseSensitive = a["case_sensitive"]?.truthy ?? false
            let pos: Int
            switch a["by"]?.str ?? "key" {
            case "key": pos = 0
            case "value": pos = 1
            default: throw ChatTemplateError(.type, "You can only sort by either \"key\" or \"value\"")
            }
            var pairs = d.pairs
            try pairs.sort { x, y in
                let kx = sortKey(pos == 0 ? x.0 : x.1, caseSensitive: caseSensitive)
                let ky = sortKey(pos == 0 ? y.0 : y.1, caseSensitive: caseSensitive)
                return try less(kx, ky)
            }
            if a["reverse"]?.truthy ?? false { pairs.reverse() }
            return .list(pairs.map { .tuple([$0.0, $0.1]) })
        case "e", "escape", "forceescape":
            return .string(StringOps.htmlEscape(value.str))
        case "first":
            if case let .undefined(info) = value { throw undefinedError(info) }
            return try iterate(value).first ?? .undefined(UndefinedInfo(message: "No first item, sequence was empty."))
        case "last":
            if case let .undefined(info) = value { throw undefinedError(info) }
            return try iterate(value).last ?? .undefined(UndefinedInfo(message: "No last item, sequence was empty."))
        case "float":
            let a = try b(["default"], ["default": .double(0)])
            switch value {
            case let .int(i): return .double(Double(i))
            case let .bool(v): return .double(v ? 1 : 0)
            case let .double(d): return .double(d)
            case let .string(s):
                if let d = Double(s.trimmingCharacters(in: .whitespaces)) { return .double(d) }
                return a["default"] ?? .double(0)
            default: return a["default"] ?? .double(0)
            }
        case "format":
            let arg: Value = args.positional.count == 1 ? args.positional[0] : .tuple(args.positional)
            return .string(try StringOps.percentFormat(value.str, args.keywords.isEmpty ? arg : .dict(PyDict(args.keywords))))
        case "indent":
            let a = try b(["width", "first", "blank"], ["width": .int(4), "first": .bool(false), "blank": .bool(false)])
            let indention: String
            if case let .string(w) = a["width"] { indention = w } else { indention = String(repeating: " ", count: max(0, exactInt(a["width"] ?? .int(4)) ?? 4)) }
            let s = value.str + "\n"
            var lines = StringOps.splitlines(s, keepends: false)
            var rv: String
            if a["blank"]?.truthy ?? false {
                rv = lines.joined(separator: "\n" + indention)
            } else {
                rv = lines.isEmpty ? "" : lines.removeFirst()
                if !lines.isEmpty { rv += "\n" + lines.map { $0.isEmpty ? $0 : indention + $0 }.joined(separator: "\n") }
            }
            if a["first"]?.truthy ?? false { rv = indention + rv }
            return .string(rv)
        case "int":
            let a = try b(["default", "base"], ["default": .int(0), "base": .int(10)])
            let def = a["default"] ?? .int(0)
            switch value {
            case let .int(i): return .int(i)
            case let .bool(v): return .int(v ? 1 : 0)
            case let .double(d): return d.isFinite && abs(d) < 9.2e18 ? .int(Int(d)) : def
            case let .string(s):
                let t = s.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "_", with: "")
                if let i = Int(t, radix: exactInt(a["base"] ?? .int(10)) ?? 10) { return .int(i) }
                if let d = Double(t), d.isFinite, abs(d) < 9.2e18 { return .int(Int(d)) }
                return def
            default: return def
            }
        case "items":
            switch value {
            case .undefined: return .list([])
            case let .dict(d): return .list(d.pairs.map { .tuple([$0.0, $0.1]) })
            default: throw ChatTemplateError(.type, "Can only get item pairs from a mapping.")
            }
        case "join":
            let a = try b(["d", "attribute"], ["d": .string(""), "attribute": .none])
            var items = try iterate(value)
            if let attr = a["attribute"], attr.hashKey != HashKey.none { items = try items.map { try attribute($0, attr) } }
            return .string(items.map(\.str).joined(separator: a["d"]?.str ?? ""))
        case "list": return .list(try iterate(value))
        case "lower": return .string(value.str.lowercased())
        case "upper": return .string(value.str.uppercased())
        case "map":
            let items = try iterate(value)
            if let attr = args.keywords.first(where: { $0.0 == "attribute" })?.1 {
                let def = args.keywords.first(where: { $0.0 == "default" })?.1
                return .list(try items.map { item in
                    let v = try attribute(item, attr)
                    if v.isUndefined, let def { return def }
                    return v
                })
            }
            guard let filterName = args.positional.first?.str, Builtins.filterNames.contains(filterName) else {
                throw ChatTemplateError(.type, "map(): no filter named '\(args.positional.first?.str ?? "")'")
            }
            let rest = Arguments(positional: Array(args.positional.dropFirst()), keywords: args.keywords)
            return .list(try items.map { try filter(filterName, $0, rest) })
        case "max", "min":
            let a = try b(["case_sensitive", "attribute"], ["case_sensitive": .bool(false), "attribute": .none])
            let items = try iterate(value)
            guard !items.isEmpty else { return .undefined(UndefinedInfo(message: "No aggregated item, sequence was empty.")) }
            let cs = a["case_sensitive"]?.truthy ?? false
            let attr = a["attribute"] ?? .none
            func key(_ v: Value) throws -> Value { sortKey(attr.hashKey == HashKey.none ? v : try attribute(v, attr), caseSensitive: cs) }
            var best = items[0]
            for item in items.dropFirst() {
                let better = name == "max" ? try less(try key(best), try key(item)) : try less(try key(item), try key(best))
                if better { best = item }
            }
            return best
        case "pprint": return .string(value.repr)
        case "reject", "select", "rejectattr", "selectattr":
            let items = try iterate(value)
            let byAttr = name.hasSuffix("attr")
            var rest = args.positional
            var attr: Value?
            if byAttr {
                guard !rest.isEmpty else { throw ChatTemplateError(.type, "\(name)() missing attribute argument") }
                attr = rest.removeFirst()
            }
            let testName = rest.isEmpty ? nil : rest.removeFirst().str
            if let testName, !Builtins.testNames.contains(testName) { throw ChatTemplateError(.type, "No test named '\(testName)'") }
            let testArgs = Arguments(positional: rest, keywords: args.keywords)
            let keep = name.hasPrefix("select")
            return .list(try items.filter { item in
                let v = try attr.map { try attribute(item, $0) } ?? item
                let result = try testName.map { try applyTest($0, v, testArgs) } ?? v.truthy
                return result == keep
            })
        case "replace":
            let a = try b(["old", "new", "count"], ["count": .none])
            let count = a["count"].flatMap(exactInt) ?? -1
            return .string(StringOps.replace(value.str, a["old"]?.str ?? "", a["new"]?.str ?? "", count: count))
        case "reverse":
            switch value {
            case let .string(s): return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed())))
            default: return .list(try iterate(value).reversed())
            }
        case "round":
            let a = try b(["precision", "method"], ["precision": .int(0), "method": .string("common")])
            let precision = exactInt(a["precision"] ?? .int(0)) ?? 0
            guard let x = numeric(value) else {
                if case let .undefined(info) = value { throw undefinedError(info) }
                throw ChatTemplateError(.type, "type \(value.typeName) doesn't define __round__ method")
            }
            let scale = Foundation.pow(10.0, Double(precision))
            switch a["method"]?.str ?? "common" {
            case "common":
                if case .int = value, precision >= 0 { return value }
                return .double((x * scale).rounded(.toNearestOrEven) / scale)
            case "ceil": return .double((x * scale).rounded(.up) / scale)
            case "floor": return .double((x * scale).rounded(.down) / scale)
            default: throw ChatTemplateError(.type, "method must be common, ceil or floor")
            }
        case "safe": return value
        case "sort":
            let a = try b(["reverse", "case_sensitive", "attribute"], ["reverse": .bool(false), "case_sensitive": .bool(false), "attribute": .none])
            var items = try iterate(value)
            let cs = a["case_sensitive"]?.truthy ?? false
            let attr = a["attribute"] ?? .none
            func key(_ v: Value) throws -> Value { sortKey(attr.hashKey == HashKey.none ? v : try attribute(v, attr), caseSensitive: cs) }
            let reverse = a["reverse"]?.truthy ?? false
            try items.sort { x, y in reverse ? try less(try key(y), try key(x)) : try less(try key(x), try key(y)) }
            return .list(items)
        case "string": return .string(value.str)
        case "sum":
            let a = try b(["attribute", "start"], ["attribute": .none, "start": .int(0)])
            var total = a["start"] ?? .int(0)
            let attr = a["attribute"] ?? .none
            for item in try iterate(value) {
                total = try binary("+", total, attr.hashKey == HashKey.none ? item : try attribute(item, attr))
            }
            return total
        case "title": return .string(StringOps.jinjaTitle(value.str))
        case "tojson":
            let a = try b(["ensure_ascii", "indent", "separators", "sort_keys"],
                          ["ensure_ascii": .bool(false), "indent": .none, "separators": .none, "sort_keys": .bool(false)])
            var indent: String?
            switch a["indent"] ?? .none {
            case .none: indent = nil
            case let .string(s): indent = s
            case let v:
                guard let n = exactInt(v) else { throw ChatTemplateError(.type, "tojson indent must be an int or a string") }
                indent = String(repeating: " ", count: max(0, n))
            }
            var separators: (String, String)?
            if let sep = a["separators"], sep.hashKey != HashKey.none {
                let parts = try iterate(sep)
                guard parts.count == 2 else { throw ChatTemplateError(.type, "tojson separators must be a pair") }
                separators = (parts[0].str, parts[1].str)
            }
            var text = try jsonDumps(value, indent: indent, separators: separators, sortKeys: a["sort_keys"]?.truthy ?? false)
            if a["ensure_ascii"]?.truthy ?? false { text = StringOps.asciiEscape(text) }
            return .string(text)
        case "trim":
            let a = try b(["chars"], ["chars": .none])
            var chars: String?
            if case let .string(c) = a["chars"] { chars = c }
            return .string(StringOps.strip(value.str, chars, left: true, right: true))
        case "truncate":
            let a = try b(["length", "killwords", "end", "leeway"], ["length": .int(255), "killwords": .bool(false), "end": .string("..."), "leeway": .int(5)])
            let s = Array(value.str.unicodeScalars)
            let len = exactInt(a["length"] ?? .int(255)) ?? 255
            let end = a["end"]?.str ?? "..."
            let leeway = exactInt(a["leeway"] ?? .int(5)) ?? 5
            if s.count <= len + leeway { return .string(value.str) }
            let cut = String(String.UnicodeScalarView(s.prefix(max(0, len - end.unicodeScalars.count))))
            if a["killwords"]?.truthy ?? false { return .string(cut + end) }
            let parts = try StringOps.split(cut, " ", maxsplit: 1, fromRight: true)
            return .string((parts.first ?? "") + end)
        case "unique":
            let a = try b(["case_sensitive", "attribute"], ["case_sensitive": .bool(false), "attribute": .none])
            let cs = a["case_sensitive"]?.truthy ?? false
            let attr = a["attribute"] ?? .none
            var seen: [Value] = []
            var out: [Value] = []
            for item in try iterate(value) {
                let k = sortKey(attr.hashKey == HashKey.none ? item : try attribute(item, attr), caseSensitive: cs)
                if !seen.contains(where: { equals($0, k) }) { seen.append(k); out.append(item) }
            }
            return .list(out)
        case "wordcount":
            return .int(value.str.unicodeScalars.split { !($0.properties.isAlphabetic || $0.properties.numericType != nil || $0 == "_") }.count)
        default:
            throw ChatTemplateError(.syntax, "No filter named '\(name)'.")
        }
    }

    // MARK: Tests

    func applyTest(_ name: String, _ value: Value, _ args: Arguments) throws -> Bool {
        func arg() throws -> Value {
            guard let v = args.positional.first ?? args.keywords.first?.1 else { throw ChatTemplateError(.type, "test '\(name)' needs an argument") }
            return v
        }
        switch name {
        case "boolean": if case .bool = value { return true } else { return false }
        case "callable": if case .function = value { return true } else { return false }
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "divisibleby":
            guard let x = exactInt(value), let y = exactInt(try arg()) else { throw ChatTemplateError(.type, "divisibleby needs integers") }
            guard y != 0 else { throw ChatTemplateError(.type, "integer division or modulo by zero") }
            return x % y == 0
        case "eq", "equalto", "==": return equals(value, try arg())
        case "ne", "!=": return !equals(value, try arg())
        case "lt", "<", "lessthan": return try less(value, try arg())
        case "gt", ">", "greaterthan": return try less(try arg(), value)
        case "le", "<=": return try compare("<=", value, try arg())
        case "ge", ">=": return try compare(">=", value, try arg())
        case "escaped": return false
        case "even", "odd":
            guard let x = exactInt(value) else {
                if case let .undefined(info) = value { throw undefinedError(info) }
                throw ChatTemplateError(.type, "not all arguments converted during string formatting")
            }
            return (x % 2 == 0) == (name == "even")
        case "false": if case .bool(false) = value { return true } else { return false }
        case "true": if case .bool(true) = value { return true } else { return false }
        case "filter": return Builtins.filterNames.contains(value.str)
        case "test": return Builtins.testNames.contains(value.str)
        case "float": if case .double = value { return true } else { return false }
        case "integer": if case .int = value { return true } else { return false }
        case "number":
            switch value {
            case .int, .double, .bool: return true
            default: return false
            }
        case "in": return try contains(try arg(), value)
        case "iterable", "sequence":
            switch value {
            case .string, .list, .tuple, .dict, .undefined: return true
            default: return false
            }
        case "mapping": if case .dict = value { return true } else { return false }
        case "none": if case .none = value { return true } else { return false }
        case "string": if case .string = value { return true } else { return false }
        case "lower":
            let s = value.str
            return s.contains { $0.isCased } && !s.contains { $0.isUppercase }
        case "upper":
            let s = value.str
            return s.contains { $0.isCased } && !s.contains { $0.isLowercase }
        case "sameas":
            let other = try arg()
            switch (value, other) {
            case (.none, .none): return true
            case let (.bool(x), .bool(y)): return x == y
            case let (.object(x), .object(y)): return x === y
            case let (.function(x), .function(y)): return x === y
            case (.int, .int), (.string, .string): return equals(value, other)
            default: return false
            }
        default:
            throw ChatTemplateError(.syntax, "No test named '\(name)'.")
        }
    }
}

/// jinja2's `cycler(*items)`.
final class Cycler: TemplateObject {
    let items: [Value]
    var position = 0
    init(_ items: [Value]) { self.items = items }
    override var typeName: String { "Cycler" }
    func next() -> Value {
        guard !items.isEmpty else { return .none }
        let v = items[position]
        position = (position + 1) % items.count
        return v
    }
}

// MARK: - Python string operations

enum StringOps {
    /// Byte offset of `needle` in `hay` at or after `from`.
    static func find(_ hay: [UInt8], _ needle: [UInt8], from: Int) -> Int? {
        if needle.isEmpty { return from <= hay.count ? from : nil }
        guard hay.count >= needle.count else { return nil }
        var i = from
        let last = hay.count - needle.count
        let first = needle[0]
        while i <= last {
            if hay[i] == first {
                var j = 1
                while j < needle.count, hay[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i }
            }
            i += 1
        }
        return nil
    }

    static func rfind(_ hay: [UInt8], _ needle: [UInt8], before end: Int) -> Int? {
        var i = end - needle.count
        while i >= 0 {
            if hay[i ..< i + needle.count].elementsEqual(needle) { return i }
            i -= 1
        }
        return nil
    }

    /// Index in code points of the first (or last) occurrence of `sub`.
    static func scalarIndex(_ s: String, of sub: String, last: Bool) -> Int? {
        let hay = Array(s.utf8)
        let needle = Array(sub.utf8)
        guard let byte = last ? rfind(hay, needle, before: hay.count) : find(hay, needle, from: 0) else { return nil }
        return hay[0 ..< byte].filter { $0 & 0xC0 != 0x80 }.count
    }

    static func count(_ s: String, _ sub: String) -> Int {
        if sub.isEmpty { return s.unicodeScalars.count + 1 }
        let hay = Array(s.utf8), needle = Array(sub.utf8)
        var n = 0
        var i = 0
        while let j = find(hay, needle, from: i) { n += 1; i = j + needle.count }
        return n
    }

    static func strip(_ s: String, _ chars: String?, left: Bool, right: Bool) -> String {
        let scalars = Array(s.unicodeScalars)
        let set = chars.map { Set($0.unicodeScalars) }
        func strippable(_ u: Unicode.Scalar) -> Bool { set.map { $0.contains(u) } ?? isPythonSpace(u) }
        var a = 0, b = scalars.count
        if left { while a < b, strippable(scalars[a]) { a += 1 } }
        if right { while b > a, strippable(scalars[b - 1]) { b -= 1 } }
        return String(String.UnicodeScalarView(scalars[a ..< b]))
    }

    static func split(_ s: String, _ sep: String?, maxsplit: Int, fromRight: Bool) throws -> [String] {
        guard let sep else {
            // Whitespace splitting: runs of whitespace, no empty strings.
            let scalars = Array(s.unicodeScalars)
            var words: [(Int, Int)] = []
            var i = 0
            while i < scalars.count {
                while i < scalars.count, isPythonSpace(scalars[i]) { i += 1 }
                if i == scalars.count { break }
                let start = i
                while i < scalars.count, !isPythonSpace(scalars[i]) { i += 1 }
                words.append((start, i))
            }
            func text(_ a: Int, _ b: Int) -> String { String(String.UnicodeScalarView(scalars[a ..< b])) }
            guard maxsplit >= 0, words.count > maxsplit + 1 else { return words.map { text($0.0, $0.1) } }
            if maxsplit == 0 { return [strip(s, nil, left: !fromRight, right: fromRight)] }
            if fromRight {
                let keep = words.suffix(maxsplit)
                let head = strip(text(0, words[words.count - maxsplit - 1].1), nil, left: true, right: false)
                return [head] + keep.map { text($0.0, $0.1) }
            }
            let keep = words.prefix(maxsplit)
            let tail = strip(text(words[maxsplit].0, scalars.count), nil, left: false, right: true)
            return keep.map { text($0.0, $0.1) } + [tail]
        }
        guard !sep.isEmpty else { throw ChatTemplateError(.type, "empty separator") }
        let hay = Array(s.utf8), needle = Array(sep.utf8)
        var cuts: [Int] = []
        if fromRight {
            var end = hay.count
            while maxsplit < 0 || cuts.count < maxsplit, let j = rfind(hay, needle, before: end) { cuts.insert(j, at: 0); end = j }
        } else {
            var i = 0
            while maxsplit < 0 || cuts.count < maxsplit, let j = find(hay, needle, from: i) { cuts.append(j); i = j + needle.count }
        }
        var parts: [String] = []
        var start = 0
        for c in cuts {
            parts.append(String(decoding: hay[start ..< c], as: UTF8.self))
            start = c + needle.count
        }
        parts.append(String(decoding: hay[start...], as: UTF8.self))
        return parts
    }

    static func splitlines(_ s: String, keepends: Bool) -> [String] {
        let scalars = Array(s.unicodeScalars)
        var lines: [String] = []
        var start = 0
        var i = 0
        while i < scalars.count {
            let u = scalars[i]
            var end = -1
            switch u.value {
            case 0x0D:
                end = (i + 1 < scalars.count && scalars[i + 1] == "\n") ? i + 2 : i + 1
            case 0x0A, 0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029:
                end = i + 1
            default: break
            }
            if end >= 0 {
                lines.append(String(String.UnicodeScalarView(scalars[start ..< (keepends ? end : i)])))
                start = end
                i = end
            } else {
                i += 1
            }
        }
        if start < scalars.count { lines.append(String(String.UnicodeScalarView(scalars[start...]))) }
        return lines
    }

    static func replace(_ s: String, _ old: String, _ new: String, count: Int) -> String {
        if old.isEmpty {
            var out = ""
            var n = 0
            for u in s.unicodeScalars {
                if count < 0 || n < count { out += new; n += 1 }
                out.unicodeScalars.append(u)
            }
            if count < 0 || n < count { out += new }
            return out
        }
        let hay = Array(s.utf8), needle = Array(old.utf8)
        var out: [UInt8] = []
        var i = 0
        var n = 0
        while count < 0 || n < count, let j = find(hay, needle, from: i) {
            out += hay[i ..< j]
            out += Array(new.utf8)
            i = j + needle.count
            n += 1
        }
        out += hay[i...]
        return String(decoding: out, as: UTF8.self)
    }

    static func capitalize(_ s: String) -> String {
        guard let first = s.first else { return s }
        return first.uppercased() + s.dropFirst().lowercased()
    }

    /// Python's `str.title()`.
    static func pythonTitle(_ s: String) -> String {
        var out = ""
        var previousCased = false
        for c in s {
            if c.isCased || c.isLetter {
                out += previousCased ? c.lowercased() : c.uppercased()
                previousCased = true
            } else {
                out.append(c)
                previousCased = false
            }
        }
        return out
    }

    /// jinja2's `title` filter: capitalize each word after whitespace, `-`, `(`, `{`, `[`, `<`.
    static func jinjaTitle(_ s: String) -> String {
        var out = ""
        var atStart = true
        for c in s {
            if c.isWhitespace || "-({[<".contains(c) {
                out.append(c)
                atStart = true
            } else if atStart {
                out += c.uppercased()
                atStart = false
            } else {
                out += c.lowercased()
            }
        }
        return out
    }

    static func pad(_ s: String, _ width: Int, _ fill: String, mode: String) -> String {
        let n = s.unicodeScalars.count
        guard width > n else { return s }
        let total = width - n
        switch mode {
        case "ljust": return s + String(repeating: fill, count: total)
        case "rjust": return String(repeating: fill, count: total) + s
        default:
            let left = total / 2 + (total & width & 1)
            return String(repeating: fill, count: left) + s + String(repeating: fill, count: total - left)
        }
    }

    static func htmlEscape(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            switch u {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&#34;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }

    /// Escapes non-ASCII as `\uXXXX` (surrogate pairs above the BMP), as `json.dumps(ensure_ascii=True)`.
    static func asciiEscape(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            if u.value < 0x80 { out.unicodeScalars.append(u); continue }
            for unit in String(u).utf16 { out += String(format: "\\u%04x", unit) }
        }
        return out
    }

    /// Python's `fmt % args` for `%s %r %d %i %f %%` (with optional width/precision).
    static func percentFormat(_ fmt: String, _ args: Value) throws -> String {
        var positional: [Value]
        var mapping: PyDict?
        switch args {
        case let .tuple(items): positional = items
        case let .dict(d): positional = [args]; mapping = d
        default: positional = [args]
        }
        var out = ""
        let scalars = Array(fmt.unicodeScalars)
        var i = 0
        var next = 0
        while i < scalars.count {
            let c = scalars[i]
            guard c == "%" else { out.unicodeScalars.append(c); i += 1; continue }
            i += 1
            guard i < scalars.count else { throw ChatTemplateError(.type, "incomplete format") }
            var value: Value?
            if scalars[i] == "(" {
                guard let close = scalars[i...].firstIndex(of: ")") else { throw ChatTemplateError(.type, "incomplete format key") }
                let key = String(String.UnicodeScalarView(scalars[(i + 1) ..< close]))
                guard let mapping, let v = mapping[string: key] else { throw ChatTemplateError(.type, "format requires a mapping with key '\(key)'") }
                value = v
                i = close + 1
            }
            var spec = ""
            while i < scalars.count, "-+ 0#.0123456789".unicodeScalars.contains(scalars[i]) { spec.unicodeScalars.append(scalars[i]); i += 1 }
            guard i < scalars.count else { throw ChatTemplateError(.type, "incomplete format") }
            let conv = scalars[i]
            i += 1
            if conv == "%" { out += "%"; continue }
            if value == nil {
                guard next < positional.count else { throw ChatTemplateError(.type, "not enough arguments for format string") }
                value = positional[next]
                next += 1
            }
            let v = value ?? .none
            switch conv {
            case "s": out += applyWidth(v.str, spec)
            case "r", "a": out += applyWidth(v.repr, spec)
            case "d", "i":
                guard let d = (v.hashKey).flatMap({ if case let .number(x) = $0 { return x } else { return nil } }) else {
                    throw ChatTemplateError(.type, "%\(conv) format: a real number is required, not \(v.typeName)")
                }
                out += applyWidth(String(Int(d.rounded(.towardZero))), spec)
            case "f", "F", "e", "g":
                guard let d = (v.hashKey).flatMap({ if case let .number(x) = $0 { return x } else { return nil } }) else {
                    throw ChatTemplateError(.type, "must be real number, not \(v.typeName)")
                }
                out += String(format: "%" + spec + String(conv), d)
            default:
                throw ChatTemplateError(.type, "unsupported format character '\(conv)'")
            }
        }
        return out
    }

    private static func applyWidth(_ s: String, _ spec: String) -> String {
        let left = spec.hasPrefix("-")
        let digits = spec.filter { $0.isNumber && $0 != "." }
        guard let width = Int(digits.prefix { _ in true }), !spec.contains(".") else { return s }
        return pad(s, width, " ", mode: left ? "ljust" : "rjust")
    }

    /// Python's `str.format` for `{}`, `{0}`, `{name}` and attribute-free fields (no format specs beyond none).
    static func braceFormat(_ fmt: String, _ args: Arguments) throws -> String {
        let scalars = Array(fmt.unicodeScalars)
        var out = ""
        var i = 0
        var auto = 0
        while i < scalars.count {
            let c = scalars[i]
            if c == "{" {
                if i + 1 < scalars.count, scalars[i + 1] == "{" { out += "{"; i += 2; continue }
                guard let close = scalars[i...].firstIndex(of: "}") else { throw ChatTemplateError(.type, "Single '{' encountered in format string") }
                let field = String(String.UnicodeScalarView(scalars[(i + 1) ..< close]))
                guard !field.contains(":"), !field.contains("!") else { throw ChatTemplateError(.type, "format specs in str.format are not supported") }
                let value: Value?
                if field.isEmpty {
                    value = auto < args.positional.count ? args.positional[auto] : nil
                    auto += 1
                } else if let n = Int(field) {
                    value = n < args.positional.count ? args.positional[n] : nil
                } else {
                    value = args.keywords.first { $0.0 == field }?.1
                }
                guard let value else { throw ChatTemplateError(.type, "Replacement index \(field) out of range for positional args tuple") }
                out += value.str
                i = close + 1
            } else if c == "}" {
                if i + 1 < scalars.count, scalars[i + 1] == "}" { out += "}"; i += 2; continue }
                throw ChatTemplateError(.type, "Single '}' encountered in format string")
            } else {
                out.unicodeScalars.append(c)
                i += 1
            }
        }
        return out
    }

    // MARK: strftime

    static let monthNames = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
    static let dayNames = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

    /// Python's `datetime.strftime` in the C locale for a naive date-time.
    static func strftime(_ format: String, _ now: DateComponents) -> String {
        let year = now.year ?? 1970, month = max(1, min(12, now.month ?? 1)), day = now.day ?? 1
        let hour = now.hour ?? 0, minute = now.minute ?? 0, second = now.second ?? 0
        // Day of week (0 = Monday) and day of year.
        let t = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4]
        let y = month < 3 ? year - 1 : year
        let sundayBased = (y + y / 4 - y / 100 + y / 400 + t[month - 1] + day) % 7  // 0 = Sunday
        let weekday = (sundayBased + 6) % 7
        let isLeap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
        let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334]
        let yday = cumulative[month - 1] + day + (isLeap && month > 2 ? 1 : 0)
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        var out = ""
        let scalars = Array(format.unicodeScalars)
        var i = 0
        while i < scalars.count {
            let c = scalars[i]
            guard c == "%", i + 1 < scalars.count else { out.unicodeScalars.append(c); i += 1; continue }
            var spec = scalars[i + 1]
            var noPad = false
            if spec == "-", i + 2 < scalars.count { noPad = true; spec = scalars[i + 2]; i += 1 }
            i += 2
            func num(_ v: Int, _ width: Int = 2) -> String {
                noPad ? "\(v)" : String(repeating: "0", count: max(0, width - "\(v)".count)) + "\(v)"
            }
            switch spec {
            case "Y": out += "\(year)"
            case "y": out += num(year % 100)
            case "m": out += num(month)
            case "d": out += num(day)
            case "e": out += noPad ? "\(day)" : (day < 10 ? " \(day)" : "\(day)")
            case "H": out += num(hour)
            case "I": out += num(hour % 12 == 0 ? 12 : hour % 12)
            case "M": out += num(minute)
            case "S": out += num(second)
            case "p": out += hour < 12 ? "AM" : "PM"
            case "B": out += monthNames[month - 1]
            case "b", "h": out += String(monthNames[month - 1].prefix(3))
            case "A": out += dayNames[weekday]
            case "a": out += String(dayNames[weekday].prefix(3))
            case "j": out += num(yday, 3)
            case "w": out += "\((weekday + 1) % 7)"
            case "u": out += "\(weekday + 1)"
            case "f": out += "000000"
            case "D": out += two(month) + "/" + two(day) + "/" + two(year % 100)
            case "F": out += "\(year)-" + two(month) + "-" + two(day)
            case "T": out += two(hour) + ":" + two(minute) + ":" + two(second)
            case "c": out += String(dayNames[weekday].prefix(3)) + " " + String(monthNames[month - 1].prefix(3)) + " " + (day < 10 ? " \(day)" : "\(day)") + " " + two(hour) + ":" + two(minute) + ":" + two(second) + " \(year)"
            case "x": out += two(month) + "/" + two(day) + "/" + two(year % 100)
            case "X": out += two(hour) + ":" + two(minute) + ":" + two(second)
            case "z", "Z": break
            case "%": out += "%"
            default: out += "%"; out.unicodeScalars.append(spec)
            }
        }
        return out
    }
}
