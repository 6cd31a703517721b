import Foundation

/// A variable scope: the template level, a loop iteration, a macro call or a `with` block.
final class Scope {
    var vars: [String: Value] = [:]
    let parent: Scope?

    init(parent: Scope?) { self.parent = parent }

    func lookup(_ name: String) -> Value? {
        var scope: Scope? = self
        while let s = scope {
            if let v = s.vars[name] { return v }
            scope = s.parent
        }
        return nil
    }
}

/// jinja2's `loop` variable.
final class LoopObject: TemplateObject {
    let items: [Value]
    let index0: Int
    init(items: [Value], index0: Int) {
        self.items = items
        self.index0 = index0
    }

    override var typeName: String { "LoopContext" }
    override var str: String { "<LoopContext \(index0 + 1)/\(items.count)>" }

    override func attribute(_ name: String) -> Value? {
        let n = items.count
        switch name {
        case "index": return .int(index0 + 1)
        case "index0": return .int(index0)
        case "revindex": return .int(n - index0)
        case "revindex0": return .int(n - index0 - 1)
        case "first": return .bool(index0 == 0)
        case "last": return .bool(index0 == n - 1)
        case "length": return .int(n)
        case "depth": return .int(1)
        case "depth0": return .int(0)
        case "previtem":
            return index0 > 0 ? items[index0 - 1] : .undefined(UndefinedInfo(message: "there is no previous item"))
        case "nextitem":
            return index0 + 1 < n ? items[index0 + 1] : .undefined(UndefinedInfo(message: "there is no next item"))
        case "cycle":
            let i = index0
            return .function(Function("cycle") { args, _ in
                guard !args.positional.isEmpty else { throw ChatTemplateError(.type, "no items for cycling given") }
                return args.positional[i % args.positional.count]
            })
        default: return nil
        }
    }
}

/// Control flow out of a statement list.
enum Flow {
    case normal, breakLoop, continueLoop
}

/// Renders a parsed template: a tree-walking evaluator with jinja2 / Python semantics.
final class Renderer {
    let now: DateComponents
    let globals: Scope
    /// Scopes that hold macros (which refer back to them); cleared after rendering to break cycles.
    var macroScopes: [Scope] = []
    var callDepth = 0

    init(now: DateComponents) {
        self.now = now
        let builtins = Scope(parent: nil)
        globals = Scope(parent: builtins)
        installGlobals(builtins)
    }

    func renderTemplate(_ nodes: [Node]) throws -> String {
        let top = Scope(parent: globals)
        defer {
            for s in macroScopes { s.vars = [:] }
            macroScopes = []
        }
        var out = ""
        _ = try exec(nodes, top, &out)
        return out
    }

    // MARK: Statements

    func exec(_ nodes: [Node], _ scope: Scope, _ out: inout String) throws -> Flow {
        for node in nodes {
            switch node {
            case let .text(s):
                out += s
            case let .output(expr):
                out += try eval(expr, scope).str
            case let .ifBlock(branches, otherwise):
                var taken = false
                for (cond, body) in branches where try eval(cond, scope).truthy {
                    taken = true
                    let flow = try exec(body, scope, &out)
                    if flow != .normal { return flow }
                    break
                }
                if !taken {
                    let flow = try exec(otherwise, scope, &out)
                    if flow != .normal { return flow }
                }
            case let .forLoop(target, iterable, filter, body, otherwise):
                var items = try iterate(try eval(iterable, scope))
                if let filter {
                    items = try items.filter { item in
                        let s = Scope(parent: scope)
                        try assign(target, item, s)
                        return try eval(filter, s).truthy
                    }
                }
                if items.isEmpty {
                    let flow = try exec(otherwise, scope, &out)
                    if flow != .normal { return flow }
                    continue
                }
                for (i, item) in items.enumerated() {
                    let s = Scope(parent: scope)
                    try assign(target, item, s)
                    s.vars["loop"] = .object(LoopObject(items: items, index0: i))
                    if try exec(body, s, &out) == .breakLoop { break }
                }
            case let .set(target, expr):
                try assign(target, try eval(expr, scope), scope)
            case let .setBlock(target, filters, body):
                var captured = ""
                _ = try exec(body, scope, &captured)
                var value = Value.string(captured)
                for f in filters { value = try applyFilter(f, value, scope) }
                try assign(target, value, scope)
            case let .macro(name, params, defaults, body):
                macroScopes.append(scope)
                scope.vars[name] = .function(Function(name) { args, renderer in
                    try renderer.callMacro(name, params, defaults, body, scope, args)
                })
            case let .filterBlock(filters, body):
                var captured = ""
                _ = try exec(body, scope, &captured)
                var value = Value.string(captured)
                for f in filters { value = try applyFilter(f, value, scope) }
                out += value.str
            case let .with(assignments, body):
                let s = Scope(parent: scope)
                for (target, expr) in assignments { try assign(target, try eval(expr, scope), s) }
                let flow = try exec(body, s, &out)
                if flow != .normal { return flow }
            case .breakLoop:
                return .breakLoop
            case .continueLoop:
                return .continueLoop
            }
        }
        return .normal
    }

    func assign(_ target: Target, _ value: Value, _ scope: Scope) throws {
        switch target {
        case let .name(n):
            scope.vars[n] = value
        case let .attribute(ns, attr):
            guard case let .object(o)? = scope.lookup(ns), let namespace = o as? Namespace else {
                throw ChatTemplateError(.type, "cannot assign attribute on non-namespace object")
            }
            namespace.attrs[.string(attr)] = value
        case let .tuple(targets):
            let items = try iterate(value)
            guard items.count == targets.count else {
                throw ChatTemplateError(.type, items.count > targets.count
                    ? "too many values to unpack (expected \(targets.count))"
                    : "not enough values to unpack (expected \(targets.count), got \(items.count))")
            }
            for (t, v) in zip(targets, items) { try assign(t, v, scope) }
        }
    }

    func callMacro(_ name: String, _ params: [String], _ defaults: [Expr?], _ body: [Node], _ definition: Scope, _ args: Arguments) throws -> Value {
        guard callDepth < 200 else { throw ChatTemplateError(.type, "maximum recursion depth exceeded in macro '\(name)'") }
        callDepth += 1
        defer { callDepth -= 1 }
        guard args.positional.count <= params.count else {
            throw ChatTemplateError(.type, "macro '\(name)' takes not more than \(params.count) argument(s)")
        }
        for (k, _) in args.keywords where !params.contains(k) {
            throw ChatTemplateError(.type, "macro '\(name)' takes no keyword argument '\(k)'")
        }
        let s = Scope(parent: definition)
        for (i, p) in params.enumerated() {
            if i < args.positional.count {
                s.vars[p] = args.positional[i]
            } else if let kw = args.keywords.first(where: { $0.0 == p }) {
                s.vars[p] = kw.1
            } else if let d = defaults[i] {
                s.vars[p] = try eval(d, s)
            } else {
                s.vars[p] = .undefined(UndefinedInfo(message: "parameter '\(p)' was not provided"))
            }
        }
        s.vars["varargs"] = .tuple([])
        s.vars["kwargs"] = .dict(PyDict())
        var out = ""
        _ = try exec(body, s, &out)
        return .string(out)
    }

    // MARK: Expressions

    func eval(_ expr: Expr, _ scope: Scope) throws -> Value {
        switch expr {
        case let .constant(c):
            switch c {
            case .none: return .none
            case let .bool(b): return .bool(b)
            case let .int(i): return .int(i)
            case let .double(d): return .double(d)
            case let .string(s): return .string(s)
            }
        case let .name(n):
            return scope.lookup(n) ?? .undefined(.name(n))
        case let .list(items):
            return .list(try items.map { try eval($0, scope) })
        case let .tuple(items):
            return .tuple(try items.map { try eval($0, scope) })
        case let .dict(pairs):
            var d = PyDict()
            for (k, v) in pairs {
                let key = try eval(k, scope)
                guard key.hashKey != nil else { throw ChatTemplateError(.type, "unhashable type: '\(key.typeName)'") }
                d[key] = try eval(v, scope)
            }
            return .dict(d)
        case let .getattr(obj, name):
            return try getattr(try eval(obj, scope), name)
        case let .getitem(obj, key):
            return try getitem(try eval(obj, scope), try eval(key, scope))
        case let .slice(obj, start, stop, step):
            let o = try eval(obj, scope)
            func index(_ e: Expr?) throws -> Int? {
                guard let e else { return nil }
                switch try eval(e, scope) {
                case .none: return nil
                case let .int(i): return i
                case let .bool(b): return b ? 1 : 0
                case let .undefined(info): throw undefinedError(info)
                case let v: throw ChatTemplateError(.type, "slice indices must be integers or None, not \(v.typeName)")
                }
            }
            return try slice(o, try index(start), try index(stop), try index(step))
        case let .call(fn, args, kwargs):
            let callee = try eval(fn, scope)
            let arguments = Arguments(positional: try args.map { try eval($0, scope) },
                                      keywords: try kwargs.map { ($0.0, try eval($0.1, scope)) })
            return try call(callee, arguments)
        case let .filter(value, application):
            return try applyFilter(application, try eval(value, scope), scope)
        case let .test(value, application, negated):
            let v = try eval(value, scope)
            let arguments = Arguments(positional: try application.args.map { try eval($0, scope) },
                                      keywords: try application.kwargs.map { ($0.0, try eval($0.1, scope)) })
            let result = try applyTest(application.name, v, arguments)
            return .bool(negated ? !result : result)
        case let .not(e):
            return .bool(!(try eval(e, scope).truthy))
        case let .negate(e):
            switch try eval(e, scope) {
            case let .int(i): return .int(0 &- i)
            case let .bool(b): return .int(b ? -1 : 0)
            case let .double(d): return .double(-d)
            case let .undefined(info): throw undefinedError(info)
            case let v: throw ChatTemplateError(.type, "bad operand type for unary -: '\(v.typeName)'")
            }
        case let .plus(e):
            switch try eval(e, scope) {
            case let .int(i): return .int(i)
            case let .bool(b): return .int(b ? 1 : 0)
            case let .double(d): return .double(d)
            case let .undefined(info): throw undefinedError(info)
            case let v: throw ChatTemplateError(.type, "bad operand type for unary +: '\(v.typeName)'")
            }
        case let .binary(op, l, r):
            return try binary(op, try eval(l, scope), try eval(r, scope))
        case let .concat(items):
            var s = ""
            for item in items { s += try eval(item, scope).str }
            return .string(s)
        case let .and(l, r):
            let left = try eval(l, scope)
            return left.truthy ? try eval(r, scope) : left
        case let .or(l, r):
            let left = try eval(l, scope)
            return left.truthy ? left : try eval(r, scope)
        case let .compare(first, ops):
            var left = try eval(first, scope)
            for (op, e) in ops {
                let right = try eval(e, scope)
                if !(try compare(op, left, right)) { return .bool(false) }
                left = right
            }
            return .bool(true)
        case let .conditional(test, then, otherwise):
            if try eval(test, scope).truthy { return try eval(then, scope) }
            if let otherwise { return try eval(otherwise, scope) }
            return .undefined(UndefinedInfo(message: "the inline if-expression evaluated to false and no else section was defined."))
        }
    }

    func undefinedError(_ info: UndefinedInfo) -> ChatTemplateError {
        ChatTemplateError(info.isSandbox ? .sandbox : .undefined, info.message)
    }

    func call(_ callee: Value, _ args: Arguments) throws -> Value {
        switch callee {
        case let .function(f): return try f.body(args, self)
        case let .undefined(info): throw undefinedError(info)
        default: throw ChatTemplateError(.type, "'\(callee.typeName)' object is not callable")
        }
    }

    // MARK: Attribute and item access (sandboxed)

    func getattr(_ obj: Value, _ name: String) throws -> Value {
        if case let .undefined(info) = obj { throw undefinedError(info) }
        if name.hasPrefix("_") {
            return .undefined(UndefinedInfo(message: "access to attribute '\(name)' of '\(obj.typeName)' object is unsafe.", isSandbox: true))
        }
        if let m = method(obj, name) { return m }
        switch obj {
        case let .dict(d):
            if let v = d[string: name] { return v }
        case let .object(o):
            if let v = o.attribute(name) { return v }
        default: break
        }
        return .undefined(.attribute(obj, name))
    }

    func getitem(_ obj: Value, _ key: Value) throws -> Value {
        if case let .undefined(info) = obj { throw undefinedError(info) }
        switch obj {
        case let .dict(d):
            if let v = d[key] { return v }
        case let .list(items), let .tuple(items):
            if let i = intIndex(key) {
                let j = i < 0 ? i + items.count : i
                if j >= 0 && j < items.count { return items[j] }
            }
        case let .string(s):
            if let i = intIndex(key) {
                let scalars = Array(s.unicodeScalars)
                let j = i < 0 ? i + scalars.count : i
                if j >= 0 && j < scalars.count { return .string(String(scalars[j])) }
            }
        default: break
        }
        if case let .string(name) = key { return try getattr(obj, name) }
        return .undefined(.element(obj, key))
    }

    func intIndex(_ v: Value) -> Int? {
        switch v {
        case let .int(i): return i
        case let .bool(b): return b ? 1 : 0
        default: return nil
        }
    }

    /// Python slicing of lists, tuples and strings.
    func slice(_ obj: Value, _ start: Int?, _ stop: Int?, _ step: Int?) throws -> Value {
        if case let .undefined(info) = obj { throw undefinedError(info) }
        func indices(_ count: Int) throws -> [Int] {
            let step = step ?? 1
            guard step != 0 else { throw ChatTemplateError(.type, "slice step cannot be zero") }
            let lower = step < 0 ? -1 : 0
            let upper = step < 0 ? count - 1 : count
            func adjust(_ v: Int?, _ def: Int) -> Int {
                guard var v else { return def }
                if v < 0 {
                    v += count
                    if v < lower { v = lower }
                } else if v > upper {
                    v = upper
                }
                return v
            }
            let a = adjust(start, step < 0 ? upper : lower)
            let b = adjust(stop, step < 0 ? lower : upper)
            var result: [Int] = []
            var i = a
            if step > 0 { while i < b { result.append(i); i += step } } else { while i > b { result.append(i); i += step } }
            return result
        }
        switch obj {
        case let .list(items): return .list(try indices(items.count).map { items[$0] })
        case let .tuple(items): return .tuple(try indices(items.count).map { items[$0] })
        case let .string(s):
            let scalars = Array(s.unicodeScalars)
            var view = String.UnicodeScalarView()
            for i in try indices(scalars.count) { view.append(scalars[i]) }
            return .string(String(view))
        default:
            return .undefined(UndefinedInfo(message: "'\(obj.typeName) object' is not sliceable"))
        }
    }

    // MARK: Operators

    /// Python iteration (`for`, `list()`, ...): undefined iterates as empty.
    func iterate(_ v: Value) throws -> [Value] {
        switch v {
        case let .list(items), let .tuple(items): return items
        case let .dict(d): return d.keys
        case let .string(s): return s.unicodeScalars.map { .string(String($0)) }
        case .undefined: return []
        default: throw ChatTemplateError(.type, "'\(v.typeName)' object is not iterable")
        }
    }

    func numeric(_ v: Value) -> Double? {
        switch v {
        case let .int(i): return Double(i)
        case let .bool(b): return b ? 1 : 0
        case let .double(d): return d
        default: return nil
        }
    }

    func exactInt(_ v: Value) -> Int? {
        switch v {
        case let .int(i): return i
        case let .bool(b): return b ? 1 : 0
        default: return nil
        }
    }

    func equals(_ a: Value, _ b: Value) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case let (.string(x), .string(y)): return x.unicodeScalars.elementsEqual(y.unicodeScalars)
        case let (.list(x), .list(y)), let (.tuple(x), .tuple(y)):
            return x.count == y.count && zip(x, y).allSatisfy { equals($0, $1) }
        case let (.dict(x), .dict(y)):
            guard x.count == y.count else { return false }
            for (k, v) in x.pairs {
                guard let w = y[k], equals(v, w) else { return false }
            }
            return true
        case let (.object(x), .object(y)): return x === y
        case let (.function(x), .function(y)): return x === y
        default:
            if let x = numeric(a), let y = numeric(b) {
                if let i = exactInt(a), let j = exactInt(b) { return i == j }
                return x == y
            }
            return false
        }
    }

    /// Python `<`.
    func less(_ a: Value, _ b: Value, _ op: String = "<") throws -> Bool {
        if case let .undefined(info) = a { throw undefinedError(info) }
        if case let .undefined(info) = b { throw undefinedError(info) }
        switch (a, b) {
        case let (.string(x), .string(y)):
            return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars) { $0.value < $1.value }
        case let (.list(x), .list(y)), let (.tuple(x), .tuple(y)):
            for (p, q) in zip(x, y) where !equals(p, q) { return try less(p, q, op) }
            return x.count < y.count
        default:
            if let i = exactInt(a), let j = exactInt(b) { return i < j }
            if let x = numeric(a), let y = numeric(b) { return x < y }
            throw ChatTemplateError(.type, "'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
        }
    }

    func contains(_ container: Value, _ item: Value) throws -> Bool {
        switch container {
        case .undefined: return false
        case let .string(s):
            guard case let .string(sub) = item else {
                if case let .undefined(info) = item { throw undefinedError(info) }
                throw ChatTemplateError(.type, "'in <string>' requires string as left operand, not \(item.typeName)")
            }
            return StringOps.find(Array(s.utf8), Array(sub.utf8), from: 0) != nil
        case let .list(items), let .tuple(items):
            return items.contains { equals($0, item) }
        case let .dict(d):
            guard item.hashKey != nil else { throw ChatTemplateError(.type, "unhashable type: '\(item.typeName)'") }
            return d[item] != nil
        default:
            throw ChatTemplateError(.type, "argument of type '\(container.typeName)' is not iterable")
        }
    }

    func compare(_ op: String, _ a: Value, _ b: Value) throws -> Bool {
        switch op {
        case "==": return equals(a, b)
        case "!=": return !equals(a, b)
        case "<": return try less(a, b, "<")
        case ">": return try less(b, a, ">")
        case "<=":
            let lt = try less(a, b, "<=")
            return lt || equals(a, b)
        case ">=":
            let gt = try less(b, a, ">=")
            return gt || equals(a, b)
        case "in": return try contains(b, a)
        case "notin": return !(try contains(b, a))
        default: throw ChatTemplateError(.syntax, "unknown comparison \(op)")
        }
    }

    func binary(_ op: String, _ a: Value, _ b: Value) throws -> Value {
        if case let .undefined(info) = a { throw undefinedError(info) }
        if case let .undefined(info) = b { throw undefinedError(info) }
        func unsupported() -> ChatTemplateError {
            ChatTemplateError(.type, "unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'")
        }
        func overflow() -> ChatTemplateError { ChatTemplateError(.type, "integer overflow in '\(op)'") }
        let ia = exactInt(a), ib = exactInt(b)
        let da = numeric(a), db = numeric(b)
        switch op {
        case "+":
            switch (a, b) {
            case let (.string(x), .string(y)): return .string(x + y)
            case let (.list(x), .list(y)): return .list(x + y)
            case let (.tuple(x), .tuple(y)): return .tuple(x + y)
            case (.string, _): throw ChatTemplateError(.type, "can only concatenate str (not \"\(b.typeName)\") to str")
            case (.list, _): throw ChatTemplateError(.type, "can only concatenate list (not \"\(b.typeName)\") to list")
            default:
                if let ia, let ib {
                    let (r, o) = ia.addingReportingOverflow(ib)
                    if o { throw overflow() }
                    return .int(r)
                }
                if let da, let db { return .double(da + db) }
                throw unsupported()
            }
        case "-":
            if let ia, let ib {
                let (r, o) = ia.subtractingReportingOverflow(ib)
                if o { throw overflow() }
                return .int(r)
            }
            if let da, let db { return .double(da - db) }
            throw unsupported()
        case "*":
            if let ia, let ib {
                let (r, o) = ia.multipliedReportingOverflow(by: ib)
                if o { throw overflow() }
                return .int(r)
            }
            if let da, let db { return .double(da * db) }
            func repeated(_ n: Int) throws -> Int {
                guard n <= 1_000_000 else { throw ChatTemplateError(.type, "repetition count too large") }
                return max(0, n)
            }
            switch (a, b) {
            case let (.string(s), _) where ib != nil: return .string(String(repeating: s, count: try repeated(ib ?? 0)))
            case let (_, .string(s)) where ia != nil: return .string(String(repeating: s, count: try repeated(ia ?? 0)))
            case let (.list(x), _) where ib != nil: return .list(Array(repeating: x, count: try repeated(ib ?? 0)).flatMap { $0 })
            case let (_, .list(x)) where ia != nil: return .list(Array(repeating: x, count: try repeated(ia ?? 0)).flatMap { $0 })
            default: throw unsupported()
            }
        case "/":
            guard let da, let db else { throw unsupported() }
            guard db != 0 else { throw ChatTemplateError(.type, "division by zero") }
            return .double(da / db)
        case "//":
            if let ia, let ib {
                guard ib != 0 else { throw ChatTemplateError(.type, "integer division or modulo by zero") }
                if ia == Int.min && ib == -1 { throw overflow() }
                var q = ia / ib
                if (ia % ib != 0) && ((ia < 0) != (ib < 0)) { q -= 1 }
                return .int(q)
            }
            guard let da, let db else { throw unsupported() }
            guard db != 0 else { throw ChatTemplateError(.type, "float floor division by zero") }
            return .double((da / db).rounded(.down))
        case "%":
            if case let .string(fmt) = a { return .string(try StringOps.percentFormat(fmt, b)) }
            if let ia, let ib {
                guard ib != 0 else { throw ChatTemplateError(.type, "integer division or modulo by zero") }
                if ib == -1 { return .int(0) }
                var r = ia % ib
                if r != 0 && ((r < 0) != (ib < 0)) { r += ib }
                return .int(r)
            }
            guard let da, let db else { throw unsupported() }
            guard db != 0 else { throw ChatTemplateError(.type, "float modulo") }
            var r = da.truncatingRemainder(dividingBy: db)
            if r != 0 && ((r < 0) != (db < 0)) { r += db }
            return .double(r)
        case "**":
            if let ia, let ib, ib >= 0 {
                var result = 1
                var base = ia
                var e = ib
                while e > 0 {
                    if e & 1 == 1 {
                        let (r, o) = result.multipliedReportingOverflow(by: base)
                        if o { throw overflow() }
                        result = r
                    }
                    e >>= 1
                    if e > 0 {
                        let (r, o) = base.multipliedReportingOverflow(by: base)
                        if o { throw overflow() }
                        base = r
                    }
                }
                return .int(result)
            }
            guard let da, let db else { throw unsupported() }
            return .double(Foundation.pow(da, db))
        default:
            throw ChatTemplateError(.syntax, "unknown operator \(op)")
        }
    }
}
