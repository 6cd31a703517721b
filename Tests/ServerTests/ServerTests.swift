import Engine
import Formats
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Models
import Server
import Testing
import Tokenizers

/// The default model's engine, loaded once for every test.
let sharedEngine: Result<InferenceEngine, any Error> = Result {
    try InferenceEngine(model: ModelLoader.load(path: DefaultModel.path()), options: EngineOptions())
}

func engine() throws -> InferenceEngine { try sharedEngine.get() }

/// Runs a server on a free loopback port for the duration of `body`, then shuts it down gracefully.
func withServer(_ options: ServerOptions = ServerOptions(), engine: InferenceEngine? = nil, _ body: (Int) async throws -> Void) async throws {
    let engine = try engine ?? sharedEngine.get()
    var logger = Logger(label: "pagoda.server.test")
    logger.logLevel = .critical
    for _ in 0 ..< 5 {
        var options = options
        options.host = "127.0.0.1"
        options.port = Int.random(in: 20000 ..< 60000)
        let group = ServiceGroup(configuration: .init(
            services: [makeApplication(engine: engine, options: options, logger: logger)], logger: logger))
        let task = Task { try await group.run() }
        var up = false
        for _ in 0 ..< 200 {
            if (try? RawConnection(port: options.port)) != nil { up = true; break }
            try await Task.sleep(for: .milliseconds(20))
        }
        guard up else {
            await group.triggerGracefulShutdown()
            _ = await task.result
            continue
        }
        let result = await Result { try await body(options.port) }
        await group.triggerGracefulShutdown()
        _ = await task.result
        return try result.get()
    }
    Issue.record("no server could start")
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

/// The engine's own greedy continuation of `ids`.
func greedy(_ ids: [Int], maxTokens: Int) async throws -> (text: String, tokens: [Int], reason: FinishReason?) {
    var text = "", tokens: [Int] = [], reason: FinishReason?
    for try await output in try engine().generate(promptIds: ids, parameters: GenerationParameters(maxTokens: maxTokens)) {
        text += output.textDelta
        tokens += output.tokenIds
        if let r = output.finishReason { reason = r }
    }
    return (text, tokens, reason)
}

/// Waits until the engine is idle: nothing running or waiting and no KV blocks in use.
func waitUntilIdle(seconds: Double = 10) async throws -> EngineMetrics {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    var metrics = try engine().metrics
    while ContinuousClock.now < deadline {
        metrics = try engine().metrics
        if metrics.running == 0 && metrics.waiting == 0 && metrics.kvCacheUsage == 0 { break }
        try await Task.sleep(for: .milliseconds(20))
    }
    return metrics
}

func errorObject(_ result: HTTPResult) throws -> [String: Any] {
    let error = try #require(try result.json()["error"] as? [String: Any])
    #expect(error["message"] is String)
    #expect(error["type"] is String)
    #expect(error.keys.contains("param"))
    #expect(error.keys.contains("code"))
    return error
}

@Suite(.serialized)
struct ServerTests {
    let prompt = "The capital of France is"

    @Test func modelsHealthMetricsTokenize() async throws {
        let engine = try engine()
        try await withServer(ServerOptions(servedModelName: "smol")) { port in
            #expect(try await request(port, "GET", "/health").status == 200)
            let models = try await request(port, "GET", "/v1/models").json()
            #expect(models["object"] as? String == "list")
            let data = try #require(models["data"] as? [[String: Any]])
            #expect(data.first?["id"] as? String == "smol")
            #expect(data.first?["object"] as? String == "model")

            let tokens = try await request(port, "POST", "/tokenize", body: json(["prompt": prompt])).json()
            let ids = try #require(tokens["tokens"] as? [Int])
            #expect(ids == engine.loaded.tokenizer?.encode(prompt, addSpecialTokens: true))
            #expect(tokens["count"] as? Int == ids.count)
            #expect(tokens["max_model_len"] as? Int == engine.loaded.config.contextLength)
            let text = try await request(port, "POST", "/detokenize", body: json(["tokens": ids])).json()
            #expect(text["prompt"] as? String == engine.loaded.tokenizer?.decode(ids))
            let chatTokens = try await request(port, "POST", "/tokenize", body: json(["messages": [["role": "user", "content": "Hi"]]])).json()
            #expect((chatTokens["count"] as? Int ?? 0) > 2)

            // Generate something, then the metrics show it.
            _ = try await request(port, "POST", "/v1/completions", body: json(["prompt": prompt, "max_tokens": 3, "temperature": 0]))
            // The engine adds a step's generated tokens to its counters just after the step, so poll briefly.
            func generatedTokens(_ metrics: HTTPResult) -> Double {
                let line = metrics.text.split(separator: "\n").first { $0.hasPrefix("pagoda:generation_tokens_total ") }
                return line.flatMap { Double($0.split(separator: " ")[1]) } ?? 0
            }
            var metrics = try await request(port, "GET", "/metrics")
            let deadline = ContinuousClock.now + .seconds(20)
            while generatedTokens(metrics) < 3, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
                metrics = try await request(port, "GET", "/metrics")
            }
            #expect(metrics.status == 200)
            for name in ["pagoda:num_requests_running", "pagoda:num_requests_waiting", "pagoda:kv_cache_usage_perc",
                         "pagoda:prefix_cache_hit_rate", "pagoda:time_to_first_token_seconds_bucket",
                         "pagoda:inter_token_latency_seconds_count", "pagoda:prompt_tokens_total",
                         "pagoda:generation_tokens_total", "pagoda:num_preemptions_total"] {
                #expect(metrics.text.contains(name), "missing \(name)")
            }
            #expect(generatedTokens(metrics) >= 3)
        }
    }

    @Test func completionMatchesEngineGreedy() async throws {
        let ids = try #require(try engine().loaded.tokenizer?.encode(prompt, addSpecialTokens: true))
        let reference = try await greedy(ids, maxTokens: 8)
        try await withServer(ServerOptions(servedModelName: "smol")) { port in
            // Text prompt, not streamed.
            let result = try await request(port, "POST", "/v1/completions", body: json([
                "model": "smol", "prompt": prompt, "max_tokens": 8, "temperature": 0,
            ]))
            #expect(result.status == 200)
            let body = try result.json()
            #expect((body["id"] as? String)?.hasPrefix("cmpl-") == true)
            #expect(body["object"] as? String == "text_completion")
            #expect(body["created"] is Int)
            #expect(body["model"] as? String == "smol")
            let choice = try #require((body["choices"] as? [[String: Any]])?.first)
            #expect(choice["text"] as? String == reference.text)
            #expect(choice["finish_reason"] as? String == (reference.reason == .stop ? "stop" : "length"))
            let usage = try #require(body["usage"] as? [String: Int])
            #expect(usage["prompt_tokens"] == ids.count)
            #expect(usage["completion_tokens"] == reference.tokens.count)
            #expect(usage["total_tokens"] == ids.count + reference.tokens.count)

            // Token-id prompt, streamed, with usage.
            let stream = try await request(port, "POST", "/v1/completions", body: json([
                "prompt": ids, "max_tokens": 8, "temperature": 0, "stream": true,
                "stream_options": ["include_usage": true],
            ]))
            #expect(stream.status == 200)
            #expect(stream.headers["content-type"]?.hasPrefix("text/event-stream") == true)
            #expect(stream.events.last == "[DONE]")
            let chunks = try stream.eventObjects()
            let last = try #require(chunks.last)
            #expect((last["choices"] as? [Any])?.isEmpty == true)
            #expect((last["usage"] as? [String: Int])?["completion_tokens"] == reference.tokens.count)
            var text = ""
            var reasons: [String] = []
            for chunk in chunks.dropLast() {
                #expect(chunk["object"] as? String == "text_completion")
                #expect(chunk["usage"] is NSNull)
                for choice in chunk["choices"] as? [[String: Any]] ?? [] {
                    text += choice["text"] as? String ?? ""
                    if let reason = choice["finish_reason"] as? String { reasons.append(reason) }
                }
            }
            #expect(text == reference.text)
            #expect(reasons.count == 1)
        }
    }

    @Test func chatStreamingAndNot() async throws {
        let engine = try engine()
        let messages: [[String: Any]] = [["role": "user", "content": [["type": "text", "text": "Say hello."]]]]
        let ids = try #require(try engine.loaded.tokenizer?.encode(
            engine.loaded.tokenizer?.applyChatTemplate([ChatMessage(role: "user", content: "Say hello.")]) ?? "", addSpecialTokens: false))
        let reference = try await greedy(ids, maxTokens: 10)
        try await withServer { port in
            let body = try await request(port, "POST", "/v1/chat/completions", body: json([
                "messages": messages, "max_completion_tokens": 10, "temperature": 0,
            ])).json()
            #expect((body["id"] as? String)?.hasPrefix("chatcmpl-") == true)
            #expect(body["object"] as? String == "chat.completion")
            let choice = try #require((body["choices"] as? [[String: Any]])?.first)
            let message = try #require(choice["message"] as? [String: Any])
            #expect(message["role"] as? String == "assistant")
            #expect(message["content"] as? String == reference.text)
            #expect((body["usage"] as? [String: Int])?["prompt_tokens"] == ids.count)

            let stream = try await request(port, "POST", "/v1/chat/completions", body: json([
                "messages": messages, "max_tokens": 10, "temperature": 0, "stream": true,
            ]))
            let chunks = try stream.eventObjects()
            #expect(stream.events.last == "[DONE]")
            let first = try #require((chunks.first?["choices"] as? [[String: Any]])?.first)
            #expect((first["delta"] as? [String: Any])?["role"] as? String == "assistant")
            var text = ""
            for chunk in chunks {
                #expect(chunk["object"] as? String == "chat.completion.chunk")
                #expect(chunk["usage"] == nil)
                for choice in chunk["choices"] as? [[String: Any]] ?? [] {
                    text += (choice["delta"] as? [String: Any])?["content"] as? String ?? ""
                }
            }
            #expect(text == reference.text)
            let lastChoice = try #require((chunks.last?["choices"] as? [[String: Any]])?.first)
            #expect(lastChoice["finish_reason"] as? String != nil)
        }
    }

    @Test func severalChoicesAndLogprobs() async throws {
        try await withServer { port in
            let body = try await request(port, "POST", "/v1/completions", body: json([
                "prompt": prompt, "max_tokens": 5, "n": 2, "temperature": 0.8, "seed": 7, "logprobs": 2, "ignore_eos": true,
            ])).json()
            let choices = try #require(body["choices"] as? [[String: Any]])
            #expect(choices.map { $0["index"] as? Int } == [0, 1])
            #expect((body["usage"] as? [String: Int])?["completion_tokens"] == 10)
            for choice in choices {
                let logprobs = try #require(choice["logprobs"] as? [String: Any])
                #expect((logprobs["tokens"] as? [String])?.count == 5)
                #expect((logprobs["token_logprobs"] as? [Double])?.allSatisfy { $0 <= 0 } == true)
                #expect((logprobs["top_logprobs"] as? [[String: Double]])?.allSatisfy { $0.count <= 2 && !$0.isEmpty } == true)
                #expect((logprobs["text_offset"] as? [Int])?.count == 5)
                #expect(choice["finish_reason"] as? String == "length")
            }

            // Chat: logprobs true + top_logprobs, streamed with two choices.
            let stream = try await request(port, "POST", "/v1/chat/completions", body: json([
                "messages": [["role": "user", "content": "Hi"]], "max_tokens": 4, "n": 2, "temperature": 0,
                "logprobs": true, "top_logprobs": 3, "stream": true, "ignore_eos": true,
            ]))
            var perChoice: [Int: Int] = [:]
            for chunk in try stream.eventObjects() {
                for choice in chunk["choices"] as? [[String: Any]] ?? [] {
                    let index = try #require(choice["index"] as? Int)
                    guard let content = (choice["logprobs"] as? [String: Any])?["content"] as? [[String: Any]] else { continue }
                    for entry in content {
                        #expect(entry["token"] is String)
                        #expect(entry["bytes"] is [Int])
                        #expect((entry["top_logprobs"] as? [[String: Any]])?.count == 3)
                    }
                    perChoice[index, default: 0] += content.count
                }
            }
            #expect(perChoice == [0: 4, 1: 4])
        }
        #expect(try await waitUntilIdle().running == 0)
    }

    @Test func errors() async throws {
        let engine = try engine()
        let context = engine.loaded.config.contextLength
        try await withServer(ServerOptions(servedModelName: "smol", maxBodyBytes: 4096)) { port in
            let malformed = try await request(port, "POST", "/v1/completions", body: "{\"prompt\": ")
            #expect(malformed.status == 400)
            _ = try errorObject(malformed)

            let wrongType = try await request(port, "POST", "/v1/completions", body: json(["prompt": prompt, "temperature": "hot"]))
            #expect(wrongType.status == 400)
            #expect(try errorObject(wrongType)["param"] as? String == "temperature")

            let outOfRange = try await request(port, "POST", "/v1/completions", body: json(["prompt": prompt, "top_p": 1.5]))
            #expect(outOfRange.status == 400)
            #expect(try errorObject(outOfRange)["param"] as? String == "top_p")

            let unknownModel = try await request(port, "POST", "/v1/chat/completions", body: json([
                "model": "gpt-9", "messages": [["role": "user", "content": "Hi"]],
            ]))
            #expect(unknownModel.status == 404)
            #expect((try errorObject(unknownModel)["message"] as? String)?.contains("gpt-9") == true)

            let tooLong = try await request(port, "POST", "/v1/completions", body: json(["prompt": prompt, "max_tokens": context]))
            #expect(tooLong.status == 400)
            let message = try #require(try errorObject(tooLong)["message"] as? String)
            #expect(message.contains("\(context)"), "\(message)")
            #expect(message.contains("\(context + 6)") || message.contains("in the completion"), "\(message)")

            let huge = try await request(port, "POST", "/v1/completions", body: json(["prompt": String(repeating: "a ", count: 5000)]))
            #expect(huge.status == 413)
            _ = try errorObject(huge)

            let noMessages = try await request(port, "POST", "/v1/chat/completions", body: json(["messages": []]))
            #expect(noMessages.status == 400)
        }
        try await withServer(ServerOptions(apiKey: "sesame")) { port in
            let body = json(["prompt": prompt, "max_tokens": 1])
            #expect(try await request(port, "POST", "/v1/completions", body: body).status == 401)
            #expect(try await request(port, "POST", "/v1/completions", body: body, headers: ["Authorization": "Bearer wrong"]).status == 401)
            _ = try errorObject(try await request(port, "GET", "/v1/models"))
            #expect(try await request(port, "POST", "/v1/completions", body: body, headers: ["Authorization": "Bearer sesame"]).status == 200)
            #expect(try await request(port, "GET", "/health").status == 200)
        }
    }

    /// One admitted stream fills a queue of one; the next request is refused with 429.
    /// Dropping the stream mid-way aborts it: the engine returns to idle.
    @Test func overloadAndDisconnect() async throws {
        try await withServer(ServerOptions(maxQueue: 1)) { port in
            let prompt = prompt
            let (connection, received) = try await offCooperativePool {
                let connection = try RawConnection(port: port)
                try connection.send(method: "POST", path: "/v1/completions", body: json([
                    "prompt": prompt, "max_tokens": 400, "ignore_eos": true, "temperature": 0, "stream": true,
                ]))
                var received = ""
                while received.components(separatedBy: "data: ").count < 4, let bytes = try connection.receive() {
                    received += String(decoding: bytes, as: UTF8.self)
                }
                return (connection, received)
            }
            #expect(received.hasPrefix("HTTP/1.1 200"))
            #expect(try engine().metrics.running == 1)

            let refused = try await request(port, "POST", "/v1/completions", body: json(["prompt": prompt, "max_tokens": 1]))
            #expect(refused.status == 429)
            _ = try errorObject(refused)

            connection.close()
            let metrics = try await waitUntilIdle()
            #expect(metrics.running == 0)
            #expect(metrics.kvCacheUsage == 0)

            // The slot is free again.
            #expect(try await request(port, "POST", "/v1/completions", body: json(["prompt": prompt, "max_tokens": 1])).status == 200)
        }
    }

    /// A long prefill gets `: keep-alive` comments before its first token.
    @Test func keepAliveDuringPrefill() async throws {
        let vocabulary = try engine().loaded.config.vocabSize
        // A prompt no other test uses, so the prefix cache cannot shorten its prefill.
        var generator = SystemRandomNumberGenerator()
        let ids = (0 ..< 1500).map { _ in Int.random(in: 1000 ..< min(vocabulary, 40000), using: &generator) }
        try await withServer(ServerOptions(keepAliveSeconds: 0.05)) { port in
            let result = try await request(port, "POST", "/v1/completions", body: json([
                "prompt": ids, "max_tokens": 2, "temperature": 0, "stream": true,
            ]))
            let firstData = try #require(result.text.range(of: "data: "))
            let comments = result.text[..<firstData.lowerBound].components(separatedBy: ": keep-alive\n\n").count - 1
            #expect(comments >= 2, "\(comments) keep-alives before the first token")
            #expect(result.events.last == "[DONE]")
        }
    }
}
