/// How the OpenAI-compatible server listens and what it admits.
public struct ServerOptions: Sendable {
    /// Address to bind, e.g. "127.0.0.1" or "0.0.0.0".
    public var host: String
    /// TCP port (0 picks a free one).
    public var port: Int
    /// When set, every `/v1`, `/tokenize` and `/detokenize` request must send `Authorization: Bearer <apiKey>`.
    public var apiKey: String?
    /// The model name clients pass as `model` and `/v1/models` lists.
    public var servedModelName: String
    /// Generation requests admitted at once (running or waiting); more are refused with 429.
    public var maxQueue: Int
    /// Largest request body accepted; larger ones are refused with 413.
    public var maxBodyBytes: Int
    /// Seconds of silence after which a stream gets an SSE comment (`: keep-alive`).
    public var keepAliveSeconds: Double

    public init(
        host: String = "127.0.0.1", port: Int = 8000, apiKey: String? = nil, servedModelName: String = "pagoda",
        maxQueue: Int = 256, maxBodyBytes: Int = 16 << 20, keepAliveSeconds: Double = 5
    ) {
        self.host = host
        self.port = port
        self.apiKey = apiKey
        self.servedModelName = servedModelName
        self.maxQueue = maxQueue
        self.maxBodyBytes = maxBodyBytes
        self.keepAliveSeconds = keepAliveSeconds
    }
}
