// MARK: - AST

/// A literal constant.
enum Constant: Sendable {
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
}

/// A filter or test application: `name(args, key=value)`.
struct Application: Sendable {
    let name: String
    let args: [Expr]
    let kwargs: [(String, Expr)]
}

/// Expressions (jinja2's precedence: condexpr < or < and < not < compare < +,- < ~ < *,/,//,% < ** < unary < filter/test < postfix).
indirect enum Expr: Sendable {
    case constant(Constant)
    case name(String)
    case list([Expr])
    case tuple([Expr])
    case dict([(Expr, Expr)])
    case getattr(Expr, String)
    case getitem(Expr, Expr)
    case slice(Expr, Expr?, Expr?, Expr?)
    case call(Expr, [Expr], [(String, Expr)])
    case filter(Expr, Application)
    case test(Expr, Application, negated: Bool)
    case not(Expr)
    case negate(Expr)
    case plus(Expr)
    case binary(String, Expr, Expr)
    case concat([Expr])
    case and(Expr, Expr)
    case or(Expr, Expr)
    case compare(Expr, [(String, Expr)])
    case conditional(test: Expr, then: Expr, otherwise: Expr?)
}

/// Assignment targets of `set`, `for` and `with`.
indirect enum Target: Sendable {
    case name(String)
    case attribute(String, String)  // ns.attr
    case tuple([Target])
}

/// Template statements.
indirect enum Node: Sendable {
    case text(String)
    case output(Expr)
    case ifBlock([(Expr, [Node])], otherwise: [Node])
    case forLoop(target: Target, iterable: Expr, filter: Expr?, body: [Node], otherwise: [Node])
    case set(Target, Expr)
    case setBlock(Target, filters: [Application], body: [Node])
    case macro(name: String, params: [String], defaults: [Expr?], body: [Node])
    case filterBlock([Application], body: [Node])
    case with([(Target, Expr)], body: [Node])
    case breakLoop
    case continueLoop
}

// MARK: - Parser

/// Recursive-descent parser following jinja2's `Parser`.
struct Parser {
    let tokens: [Token]
    var index = 0

    init(_ tokens: [Token]) { self.tokens = tokens }

    var current: Token { tokens[min(index, tokens.count - 1)] }
    var peek: Token { tokens[min(index + 1, tokens.count - 1)] }

    mutating func advance() { if index < tokens.count - 1 { index += 1 } }

    func error(_ message: String, _ token: Token? = nil) -> ChatTemplateError {
        ChatTemplateError(.syntax, "\(message) (line \((token ?? current).line))")
    }

    func describe(_ kind: TokenKind) -> String {
        switch kind {
        case let .data(s): return "template data \(pythonStringRepr(String(s.prefix(20))))"
        case .variableBegin: return "'{{'"
        case .variableEnd: return "'}}'"
        case .blockBegin: return "'{%'"
        case .blockEnd: return "'%}'"
        case let .name(n): return "'\(n)'"
        case let .string(s): return pythonStringRepr(s)
        case let .integer(i): return String(i)
        case let .float(d): return pythonFloatRepr(d)
        case let .op(o): return "'\(o)'"
        case .eof: return "end of template"
        }
    }

    func isOp(_ op: String) -> Bool { current.kind == .op(op) }
    func isName(_ name: String) -> Bool { current.kind == .name(name) }

    mutating func skipOp(_ op: String) -> Bool {
        if isOp(op) { advance(); return true }
        return false
    }

    mutating func skipName(_ name: String) -> Bool {
        if isName(name) { advance(); return true }
        return false
    }

    mutating func expectOp(_ op: String) throws {
        guard skipOp(op) else { throw error("expected '\(op)', got \(describe(current.kind))") }
    }

    mutating func expectName(_ name: String) throws {
        guard skipName(name) else { throw error("expected '\(name)', got \(describe(current.kind))") }
    }

    mutating func expectBlockEnd() throws {
        guard current.kind == .blockEnd else { throw error("expected end of statement block, got \(describe(current.kind))") }
        advance()
    }

    mutating func expectIdentifier() throws -> String {
        guard case let .name(n) = current.kind else { throw error("expected a name, got \(describe(current.kind))") }
        advance()
        return n
    }

    // MARK: Statements

    mutating func parseTemplate() throws -> [Node] {
        let (nodes, end) = try subparse([])
        if let end { throw error("unexpected '\(end)'") }
        return nodes
    }

    /// Parses nodes until a block tag named in `ends` (left unconsumed, at its name) or end of input.
    mutating func subparse(_ ends: Set<String>) throws -> ([Node], String?) {
        var nodes: [Node] = []
        while true {
            switch current.kind {
            case let .data(s):
                nodes.append(.text(s))
                advance()
            case .variableBegin:
                advance()
                let expr = try parseTuple()
                guard current.kind == .variableEnd else { throw error("expected end of print statement, got \(describe(current.kind))") }
                advance()
                nodes.append(.output(expr))
            case .blockBegin:
                advance()
                guard case let .name(tag) = current.kind else { throw error("tag name expected") }
                if ends.contains(tag) { return (nodes, tag) }
                nodes.append(contentsOf: try parseStatement(tag))
            case .eof:
                if !ends.isEmpty {
                    throw error("unexpected end of template; expected one of: " + ends.sorted().joined(separator: ", "))
                }
                return (nodes, nil)
            default:
                throw error("unexpected \(describe(current.kind))")
            }
        }
    }

    /// Parses a body up to one of `ends`, consuming the end tag's name; returns the name.
    mutating func body(_ ends: Set<String>) throws -> ([Node], String) {
        let (nodes, end) = try subparse(ends)
        guard let end else { throw error("unexpected end of template") }
        advance()  // the end tag's name
        return (nodes, end)
    }

    mutating func parseStatement(_ tag: String) throws -> [Node] {
        let tagToken = current
        advance()
        switch tag {
        case "if":
            var branches: [(Expr, [Node])] = []
            var cond = try parseTuple(withCondexpr: false)
            try expectBlockEnd()
            while true {
                let (nodes, end) = try body(["elif", "else", "endif"])
                branches.append((cond, nodes))
                if end == "elif" {
                    cond = try parseTuple(withCondexpr: false)
                    try expectBlockEnd()
                    continue
                }
                if end == "else" {
                    try expectBlockEnd()
                    let (otherwise, _) = try body(["endif"])
                    try expectBlockEnd()
                    return [.ifBlock(branches, otherwise: otherwise)]
                }
                try expectBlockEnd()
                return [.ifBlock(branches, otherwise: [])]
            }
        case "for":
            let target = try parseAssignTarget(extraEnds: ["in"])
            try expectName("in")
            let iterable = try parseTuple(withCondexpr: false, extraEnds: ["recursive"])
            var filter: Expr?
            if skipName("if") { filter = try parseExpression() }
            if isName("recursive") { throw error("recursive for loops are not supported") }
            try expectBlockEnd()
            let (nodes, end) = try body(["endfor", "else"])
            var otherwise: [Node] = []
            if end == "else" {
                try expectBlockEnd()
                (otherwise, _) = try body(["endfor"])
            }
            try expectBlockEnd()
            return [.forLoop(target: target, iterable: iterable, filter: filter, body: nodes, otherwise: otherwise)]
        case "set":
            let target = try parseAssignTarget(withNamespace: true)
            if skipOp("=") {
                let value = try parseTuple()
                try expectBlockEnd()
                return [.set(target, value)]
            }
            var filters: [Application] = []
            while skipOp("|") { filters.append(try parseFilterApplication()) }
            try expectBlockEnd()
            let (nodes, _) = try body(["endset"])
            try expectBlockEnd()
            return [.setBlock(target, filters: filters, body: nodes)]
        case "macro":
            let name = try expectIdentifier()
            var params: [String] = []
            var defaults: [Expr?] = []
            try expectOp("(")
            while !isOp(")") {
                if !params.isEmpty { try expectOp(",") }
                if isOp(")") { break }
                let param = try expectIdentifier()
                if param.hasPrefix("_") { throw error("names starting with an underscore are not allowed") }
                params.append(param)
                if skipOp("=") {
                    defaults.append(try parseExpression())
                } else {
                    if defaults.contains(where: { $0 != nil }) { throw error("non-default argument follows default argument") }
                    defaults.append(nil)
                }
            }
            try expectOp(")")
            try expectBlockEnd()
            let (nodes, _) = try body(["endmacro"])
            if case .name = current.kind { advance() }  // optional `endmacro name`
            try expectBlockEnd()
            return [.macro(name: name, params: params, defaults: defaults, body: nodes)]
        case "filter":
            var filters: [Application] = [try parseFilterApplication()]
            while skipOp("|") { filters.append(try parseFilterApplication()) }
            try expectBlockEnd()
            let (nodes, _) = try body(["endfilter"])
            try expectBlockEnd()
            return [.filterBlock(filters, body: nodes)]
        case "with":
            var assignments: [(Target, Expr)] = []
            while current.kind != .blockEnd {
                if !assignments.isEmpty { try expectOp(",") }
                let target = try parseAssignTarget()
                try expectOp("=")
                assignments.append((target, try parseExpression()))
            }
            try expectBlockEnd()
            let (nodes, _) = try body(["endwith"])
            try expectBlockEnd()
            return [.with(assignments, body: nodes)]
        case "generation":
            // transformers' {% generation %} tag: renders its body unchanged.
            try expectBlockEnd()
            let (nodes, _) = try body(["endgeneration"])
            try expectBlockEnd()
            return nodes
        case "break", "continue":
            try expectBlockEnd()
            return [tag == "break" ? .breakLoop : .continueLoop]
        default:
            throw error("unsupported or unknown tag '\(tag)'", tagToken)
        }
    }

    mutating func parseAssignTarget(extraEnds: Set<String> = [], withNamespace: Bool = false) throws -> Target {
        if withNamespace, case let .name(ns) = current.kind, peek.kind == .op(".") {
            advance(); advance()
            let attr = try expectIdentifier()
            if attr.hasPrefix("_") { throw error("names starting with an underscore are not allowed") }
            return .attribute(ns, attr)
        }
        var names: [Target] = []
        var isTuple = false
        while true {
            if !names.isEmpty { try expectOp(",") }
            if case let .name(n) = current.kind, extraEnds.contains(n) { break }
            if current.kind == .blockEnd || isOp("=") { break }
            if skipOp("(") {
                names.append(try parseAssignTarget(extraEnds: extraEnds))
                try expectOp(")")
            } else {
                let n = try expectIdentifier()
                if ["true", "false", "none", "True", "False", "None"].contains(n) { throw error("can't assign to '\(n)'") }
                names.append(.name(n))
            }
            if isOp(",") { isTuple = true } else { break }
        }
        guard !names.isEmpty else { throw error("expected an assignment target") }
        return isTuple ? .tuple(names) : names[0]
    }

    // MARK: Expressions

    func isTupleEnd(_ extraEnds: Set<String>) -> Bool {
        switch current.kind {
        case .variableEnd, .blockEnd, .op(")"), .eof: return true
        case let .name(n): return extraEnds.contains(n)
        default: return false
        }
    }

    mutating func parseTuple(simplified: Bool = false, withCondexpr: Bool = true, extraEnds: Set<String> = [], explicitParentheses: Bool = false) throws -> Expr {
        var items: [Expr] = []
        var isTuple = false
        while true {
            if !items.isEmpty { try expectOp(",") }
            if isTupleEnd(extraEnds) { break }
            if simplified {
                items.append(try parsePostfix(parsePrimary()))
            } else {
                items.append(try parseExpression(withCondexpr: withCondexpr))
            }
            if isOp(",") { isTuple = true } else { break }
        }
        if !isTuple {
            if let first = items.first { return first }
            if !explicitParentheses { throw error("expected an expression, got \(describe(current.kind))") }
        }
        return .tuple(items)
    }

    mutating func parseExpression(withCondexpr: Bool = true) throws -> Expr {
        withCondexpr ? try parseCondexpr() : try parseOr()
    }

    mutating func parseCondexpr() throws -> Expr {
        var expr = try parseOr()
        while skipName("if") {
            let test = try parseOr()
            var otherwise: Expr?
            if skipName("else") { otherwise = try parseCondexpr() }
            expr = .conditional(test: test, then: expr, otherwise: otherwise)
        }
        return expr
    }

    mutating func parseOr() throws -> Expr {
        var left = try parseAnd()
        while skipName("or") { left = .or(left, try parseAnd()) }
        return left
    }

    mutating func parseAnd() throws -> Expr {
        var left = try parseNot()
        while skipName("and") { left = .and(left, try parseNot()) }
        return left
    }

    mutating func parseNot() throws -> Expr {
        if skipName("not") { return .not(try parseNot()) }
        return try parseCompare()
    }

    mutating func parseCompare() throws -> Expr {
        let left = try parseMath1()
        var ops: [(String, Expr)] = []
        while true {
            if case let .op(o) = current.kind, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
                advance()
                ops.append((o, try parseMath1()))
            } else if skipName("in") {
                ops.append(("in", try parseMath1()))
            } else if isName("not"), peek.kind == .name("in") {
                advance(); advance()
                ops.append(("notin", try parseMath1()))
            } else {
                break
            }
        }
        return ops.isEmpty ? left : .compare(left, ops)
    }

    mutating func parseMath1() throws -> Expr {
        var left = try parseConcat()
        while case let .op(o) = current.kind, o == "+" || o == "-" {
            advance()
            left = .binary(o, left, try parseConcat())
        }
        return left
    }

    mutating func parseConcat() throws -> Expr {
        var items = [try parseMath2()]
        while skipOp("~") { items.append(try parseMath2()) }
        return items.count == 1 ? items[0] : .concat(items)
    }

    mutating func parseMath2() throws -> Expr {
        var left = try parsePow()
        while case let .op(o) = current.kind, ["*", "/", "//", "%"].contains(o) {
            advance()
            left = .binary(o, left, try parsePow())
        }
        return left
    }

    mutating func parsePow() throws -> Expr {
        var left = try parseUnary()
        while skipOp("**") { left = .binary("**", left, try parseUnary()) }
        return left
    }

    mutating func parseUnary(withFilter: Bool = true) throws -> Expr {
        var node: Expr
        if skipOp("-") {
            node = .negate(try parseUnary(withFilter: false))
        } else if skipOp("+") {
            node = .plus(try parseUnary(withFilter: false))
        } else {
            node = try parsePrimary()
        }
        node = try parsePostfix(node)
        if withFilter { node = try parseFilterExpr(node) }
        return node
    }

    mutating func parsePrimary() throws -> Expr {
        let token = current
        switch token.kind {
        case let .name(n):
            advance()
            switch n {
            case "true", "True": return .constant(.bool(true))
            case "false", "False": return .constant(.bool(false))
            case "none", "None": return .constant(.none)
            default: return .name(n)
            }
        case let .string(s):
            advance()
            var text = s
            while case let .string(more) = current.kind { text += more; advance() }
            return .constant(.string(text))
        case let .integer(i):
            advance()
            return .constant(.int(i))
        case let .float(d):
            advance()
            return .constant(.double(d))
        case .op("("):
            advance()
            let node = try parseTuple(explicitParentheses: true)
            try expectOp(")")
            return node
        case .op("["):
            advance()
            var items: [Expr] = []
            while !isOp("]") {
                if !items.isEmpty { try expectOp(",") }
                if isOp("]") { break }
                items.append(try parseExpression())
            }
            try expectOp("]")
            return .list(items)
        case .op("{"):
            advance()
            var items: [(Expr, Expr)] = []
            while !isOp("}") {
                if !items.isEmpty { try expectOp(",") }
                if isOp("}") { break }
                let key = try parseExpression()
                try expectOp(":")
                items.append((key, try parseExpression()))
            }
            try expectOp("}")
            return .dict(items)
        default:
            throw error("unexpected \(describe(token.kind))")
        }
    }

    mutating func parsePostfix(_ start: Expr) throws -> Expr {
        var node = start
        while true {
            if isOp(".") {
                advance()
                switch current.kind {
                case let .name(n): advance(); node = .getattr(node, n)
                case let .integer(i): advance(); node = .getitem(node, .constant(.int(i)))
                default: throw error("expected name or number after '.'")
                }
            } else if isOp("[") {
                advance()
                var args: [Expr] = []
                var slice: (Expr?, Expr?, Expr?)?
                while !isOp("]") {
                    if !args.isEmpty || slice != nil { try expectOp(",") }
                    if slice != nil { throw error("tuple subscripts with slices are not supported") }
                    let (expr, sl) = try parseSubscribed()
                    if let sl {
                        if !args.isEmpty { throw error("tuple subscripts with slices are not supported") }
                        slice = sl
                    } else if let expr {
                        args.append(expr)
                    }
                }
                try expectOp("]")
                if let slice {
                    node = .slice(node, slice.0, slice.1, slice.2)
                } else if args.count == 1 {
                    node = .getitem(node, args[0])
                } else if args.isEmpty {
                    throw error("expected a subscript")
                } else {
                    node = .getitem(node, .tuple(args))
                }
            } else if isOp("(") {
                node = try parseCall(node)
            } else {
                return node
            }
        }
    }

    mutating func parseSubscribed() throws -> (Expr?, (Expr?, Expr?, Expr?)?) {
        var start: Expr?
        if !isOp(":") {
            let node = try parseExpression()
            if !isOp(":") { return (node, nil) }
            start = node
        }
        advance()  // ':'
        var stop: Expr?
        if !isOp(":"), !isOp("]"), !isOp(",") { stop = try parseExpression() }
        var step: Expr?
        if skipOp(":") {
            if !isOp("]"), !isOp(",") { step = try parseExpression() }
        }
        return (nil, (start, stop, step))
    }

    mutating func parseCallArgs() throws -> ([Expr], [(String, Expr)]) {
        try expectOp("(")
        var args: [Expr] = []
        var kwargs: [(String, Expr)] = []
        var first = true
        while !isOp(")") {
            if !first { try expectOp(",") }
            first = false
            if isOp(")") { break }
            if isOp("*") || isOp("**") { throw error("*args and **kwargs in calls are not supported") }
            if case let .name(n) = current.kind, peek.kind == .op("=") {
                advance(); advance()
                kwargs.append((n, try parseExpression()))
            } else {
                if !kwargs.isEmpty { throw error("positional argument follows keyword argument") }
                args.append(try parseExpression())
            }
        }
        try expectOp(")")
        return (args, kwargs)
    }

    mutating func parseCall(_ node: Expr) throws -> Expr {
        let (args, kwargs) = try parseCallArgs()
        return .call(node, args, kwargs)
    }

    mutating func parseDottedName() throws -> String {
        var name = try expectIdentifier()
        while isOp("."), case .name = peek.kind {
            advance()
            name += "." + (try expectIdentifier())
        }
        return name
    }

    mutating func parseFilterApplication() throws -> Application {
        let nameToken = current
        let name = try parseDottedName()
        guard Builtins.filterNames.contains(name) else { throw error("No filter named '\(name)'.", nameToken) }
        var args: [Expr] = []
        var kwargs: [(String, Expr)] = []
        if isOp("(") { (args, kwargs) = try parseCallArgs() }
        return Application(name: name, args: args, kwargs: kwargs)
    }

    mutating func parseFilterExpr(_ start: Expr) throws -> Expr {
        var node = start
        while true {
            if skipOp("|") {
                node = .filter(node, try parseFilterApplication())
            } else if isName("is") {
                advance()
                let negated = skipName("not")
                let nameToken = current
                let name = try parseDottedName()
                guard Builtins.testNames.contains(name) else { throw error("No test named '\(name)'.", nameToken) }
                var args: [Expr] = []
                var kwargs: [(String, Expr)] = []
                if isOp("(") {
                    (args, kwargs) = try parseCallArgs()
                } else {
                    var takesArg = false
                    switch current.kind {
                    case let .name(n): takesArg = !["else", "or", "and"].contains(n)
                        if n == "is" { throw error("You cannot chain multiple tests with is") }
                    case .string, .integer, .float, .op("("), .op("["), .op("{"): takesArg = true
                    default: break
                    }
                    if takesArg { args = [try parsePostfix(parsePrimary())] }
                }
                node = .test(node, Application(name: name, args: args, kwargs: kwargs), negated: negated)
            } else if isOp("(") {
                node = try parseCall(node)
            } else {
                return node
            }
        }
    }
}
