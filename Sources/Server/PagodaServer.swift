import Engine
import Foundation
import Hummingbird
import Logging
import Models
import NIOCore
import ServiceLifecycle
import Synchronization
import Tokenizers

/// Builds the OpenAI-compatible HTTP application around `engine`: `/v1/completions`,
/// `/v1/chat/completions`, `/v1/models`, `/tokenize`, `/detokenize`, `/health` and `/metrics`.
/// Run it with `runService()` (graceful shutdown on SIGINT/SIGTERM), or use `PagodaServer`,
/// which also shuts the engine down afterwards. The application never stops the engine itself,
/// so several applications (tests) can share one engine.
public func makeApplication(engine: InferenceEngine, options: ServerOptions, logger: Logger? = nil) -> some ApplicationProtocol {
    let routes = Routes(engine: engine, options: options)
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: AuthMiddleware(apiKey: options.apiKey))
    router.get("health") { _, _ in Response(status: .ok) }
    router.get("metrics") { _, _ in
        Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: routes.metrics.render())))
    }
    router.get("v1/models") { _, _ in routes.models() }
    router.post("v1/completions") { request, _ in try await routes.generate(request, endpoint: .completion) }
    router.post("v1/chat/completions") { request, _ in try await routes.generate(request, endpoint: .chat) }
    router.post("tokenize") { request, _ in try await routes.tokenize(request) }
    router.post("detokenize") { request, _ in try await routes.detokenize(request) }
    var serverLogger = logger ?? Logger(label: "pagoda.server")
    if logger == nil { serverLogger.logLevel = .warning }
    return Application(
        router: router,
        configuration: .init(address: .hostname(options.host, port: options.port), serverName: "pagoda"),
        logger: serverLogger)
}

/// The OpenAI-compatible server: `run()` serves until SIGINT or SIGTERM, then stops accepting
/// connections, lets in-flight requests finish, and shuts the engine down.
public struct PagodaServer: Sendable {
    public let engine: InferenceEngine
    public let options: ServerOptions

    public init(engine: InferenceEngine, options: ServerOptions) {
        self.engine = engine
        self.options = options
    }

    public func run() async throws {
        defer { engine.shutdown() }
        // Returns once a signal's graceful shutdown has drained the server's connections.
        try await makeApplication(engine: engine, options: options, logger: Logger(label: "pagoda.server")).runService()
    }
}

/// Requires `Authorization: Bearer <apiKey>` on everything but `/health` and `/metrics`.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let apiKey: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let apiKey, request.uri.path != "/health", request.uri.path != "/metrics" else {
            return try await next(request, context)
        }
        guard request.headers[.authorization] == "Bearer \(apiKey)" else {
            throw APIError(.unauthorized, "Incorrect API key provided.", type: "invalid_request_error", code: "invalid_api_key")
        }
        return try await next(request, context)
    }
}

/// Counts admitted generation requests; refuses more than `limit`.
final class AdmissionGate: Sendable {
    private let count = Mutex(0)
    let limit: Int
    private let onChange: @Sendable (Int) -> Void

    init(limit: Int, onChange: @escaping @Sendable (Int) -> Void) {
        self.limit = limit
        self.onChange = onChange
    }

    /// Admits one request, or returns nil when `limit` requests are already admitted. The request
    /// holds its place until the ticket is released, however its response ends (or is dropped).
    func enter() -> Ticket? {
        let admitted: Int? = count.withLock { count in
            guard count < limit else { return nil }
            count += 1
            return count
        }
        guard let admitted else { return nil }
        onChange(admitted)
        return Ticket(gate: self)
    }

    fileprivate func leave() { onChange(count.withLock { $0 -= 1; return $0 }) }

    /// One admitted request's place.
    final class Ticket: Sendable {
        private let gate: AdmissionGate
        fileprivate init(gate: AdmissionGate) { self.gate = gate }
        deinit { gate.leave() }
    }
}

/// The handlers, sharing the engine, the options, the metrics and the admission gate.
struct Routes: Sendable {
    let engine: InferenceEngine
    let options: ServerOptions
    let metrics: ServerMetrics
    let gate: AdmissionGate
    let started = Int(Date().timeIntervalSince1970)

    init(engine: InferenceEngine, options: ServerOptions) {
        self.engine = engine
        self.options = options
        let metrics = ServerMetrics(engine: engine)
        self.metrics = metrics
        gate = AdmissionGate(limit: max(1, options.maxQueue)) { metrics.setInFlight($0) }
    }

    /// The request body decoded as `T`; 413 over `maxBodyBytes`, 400 for malformed JSON or wrong types.
    func decode<T: Decodable>(_ type: T.Type, from request: Request) async throws -> T {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > options.maxBodyBytes {
            throw Self.tooLarge(options.maxBodyBytes)
        }
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: options.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw Self.tooLarge(options.maxBodyBytes)
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
        } catch {
            throw APIError.from(error)
        }
    }

    static func tooLarge(_ limit: Int) -> APIError {
        APIError(.contentTooLarge, "the request body is larger than the server's limit of \(limit) bytes", code: "request_too_large")
    }

    func models() -> Response {
        jsonResponse(.object([
            ("object", "list"),
            ("data", .array([.object([
                ("id", .string(options.servedModelName)),
                ("object", "model"),
                ("created", .int(started)),
                ("owned_by", "pagoda"),
                ("root", .string(engine.loaded.path)),
                ("parent", .null),
                ("max_model_len", .int(engine.loaded.config.contextLength)),
            ])])),
        ]))
    }

    func generate(_ request: Request, endpoint: Endpoint) async throws -> Response {
        let arrival = ContinuousClock.now
        let body = try await decode(GenerationRequest.self, from: request)
        let plan: GenerationPlan
        do {
            plan = try GenerationPlan(body, endpoint: endpoint, engine: engine, options: options)
        } catch {
            throw APIError.from(error)
        }
        guard let ticket = gate.enter() else {
            throw APIError(.tooManyRequests, "the server is busy: \(gate.limit) requests are already running or waiting; retry later",
                           code: "rate_limit_exceeded")
        }
        let outputs = engine.generate(promptIds: plan.promptIds, parameters: plan.parameters)
        var builder = ResponseBuilder(plan: plan, tokenizer: engine.loaded.tokenizer)
        var recorder = LatencyRecorder(metrics: metrics, arrival: arrival)
        if plan.stream {
            return SSEWriter(
                outputs: outputs, builder: builder, recorder: recorder,
                keepAlive: .milliseconds(Int(options.keepAliveSeconds * 1000)), ticket: ticket
            ).response
        }
        defer { withExtendedLifetime(ticket) {} }
        do {
            for try await output in outputs {
                recorder.observe(output)
                _ = builder.absorb(output)
            }
        } catch {
            throw APIError.from(error)
        }
        return jsonResponse(builder.response)
    }

    func tokenize(_ request: Request) async throws -> Response {
        let body = try await decode(TokenizeRequest.self, from: request)
        _ = try checkModel(body.model, options: options)
        guard let tokenizer = engine.loaded.tokenizer else { throw APIError.badRequest("the model has no tokenizer") }
        let tokens: [Int]
        do {
            if let messages = body.messages {
                tokens = try chatPromptIds(messages, addGenerationPrompt: body.addGenerationPrompt ?? true, engine: engine)
            } else if let prompt = body.prompt {
                tokens = tokenizer.encode(prompt, addSpecialTokens: body.addSpecialTokens ?? true)
            } else {
                throw APIError.badRequest("send 'prompt' or 'messages'", param: "prompt")
            }
        } catch {
            throw APIError.from(error)
        }
        return jsonResponse(.object([
            ("count", .int(tokens.count)),
            ("max_model_len", .int(engine.loaded.config.contextLength)),
            ("tokens", .array(tokens.map(JSON.int))),
            ("token_strs", .null),
        ]))
    }

    func detokenize(_ request: Request) async throws -> Response {
        let body = try await decode(DetokenizeRequest.self, from: request)
        _ = try checkModel(body.model, options: options)
        guard let tokenizer = engine.loaded.tokenizer else { throw APIError.badRequest("the model has no tokenizer") }
        if let bad = body.tokens.first(where: { $0 < 0 || $0 >= tokenizer.vocabularySize }) {
            throw APIError.badRequest("token id \(bad) is outside the vocabulary (0..<\(tokenizer.vocabularySize))", param: "tokens")
        }
        return jsonResponse(.object([("prompt", .string(tokenizer.decode(body.tokens)))]))
    }
}
