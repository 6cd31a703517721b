import Foundation

/// A failure to parse or render a chat template.
public struct ChatTemplateError: Error, CustomStringConvertible, Sendable {
    /// What went wrong.
    public enum Kind: String, Sendable {
        /// The template's text is not valid Jinja (or uses an unsupported construct); found at load time.
        case syntax
        /// The template called `raise_exception(message)`; `message` is the template's own text.
        case raised
        /// An undefined value was used where jinja2 raises `UndefinedError`.
        case undefined
        /// The immutable sandbox refused an operation (a mutating method, a `_` name).
        case sandbox
        /// A Python-level error inside the template (`TypeError`, `ValueError`, ...).
        case type
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String {
        switch kind {
        case .raised: return message
        default: return "chat template \(kind.rawValue) error: \(message)"
        }
    }
}

/// A parsed Jinja chat template, rendered the way transformers renders chat templates
/// (jinja2 `ImmutableSandboxedEnvironment` with `trim_blocks`, `lstrip_blocks`, loop controls and
/// the `{% generation %}` tag; globals `raise_exception`, `namespace`, `dict`, `range`, `cycler`,
/// `joiner`, `strftime_now`; `tojson` as Python's `json.dumps(ensure_ascii=False)`).
public struct ChatTemplate: Sendable {
    /// The template's source text.
    public let source: String
    let body: [Node]

    /// Parses `source`; a syntax error or unsupported construct throws a `.syntax` error.
    public init(_ source: String) throws {
        self.source = source
        var lexer = Lexer(source)
        let tokens = try lexer.tokenize()
        var parser = Parser(tokens)
        body = try parser.parseTemplate()
    }

    /// Renders with `context` as the top-level variables (in order). `strftime_now` uses `now`
    /// (its year, month, day, hour, minute, second) when given, else the current local time.
    public func render(_ context: [(String, TemplateValue)], now: DateComponents? = nil) throws -> String {
        let renderer = Renderer(now: now ?? Calendar.current.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: Date()))
        for (name, value) in context { renderer.globals.vars[name] = Value(value) }
        return try renderer.renderTemplate(body)
    }

    /// Renders with `context` as the top-level variables.
    public func render(_ context: [String: TemplateValue], now: DateComponents? = nil) throws -> String {
        try render(context.sorted { $0.key < $1.key }, now: now)
    }
}
