import ArgumentParser
import Engine
import Foundation
import Server
import Tokenizers

/// `pagoda serve`: the OpenAI-compatible HTTP server over the continuous-batching engine.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, ...).")

    @OptionGroup var options: ModelOptions
    @OptionGroup var cacheOptions: CacheOptions
    @OptionGroup var schedulerOptions: SchedulerFlags

    @Option(help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(help: "Port to listen on.")
    var port: Int = 8000

    @Option(name: .customLong("api-key"), help: "Require this bearer token on every /v1 request.")
    var apiKey: String?

    @Option(name: .customLong("served-model-name"), help: "The model name clients use (default: the model file's name).")
    var servedModelName: String?

    @Option(name: .customLong("max-queue"), help: "Most generation requests admitted at once; more get 429.")
    var maxQueue: Int = 256

    func validate() throws {
        guard (1 ... 65535).contains(port) else { throw ValidationError("--port must be between 1 and 65535, got \(port)") }
        guard maxQueue >= 1 else { throw ValidationError("--max-queue must be at least 1") }
    }

    func run() async throws {
        do {
            let path = try options.resolvedPath()
            let (loaded, tokenizer) = try loadWithTokenizer(options)
            // A template Pagoda cannot render fails here, at load time, not as a wrong prompt later.
            if let source = tokenizer.chatTemplate {
                do {
                    _ = try ChatTemplate(source)
                } catch {
                    throw ValidationError("the model's chat template cannot be used: \(error)")
                }
            }
            let engine = try InferenceEngine(model: loaded, options: EngineOptions(cache: cacheOptions.resolved(), scheduler: schedulerOptions.resolved()))
            let name = servedModelName ?? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
            var serverOptions = ServerOptions()
            serverOptions.host = host
            serverOptions.port = port
            serverOptions.apiKey = apiKey
            serverOptions.servedModelName = name
            serverOptions.maxQueue = maxQueue
            printError("pagoda: serving \(name) on http://\(host):\(port)/v1")
            try await PagodaServer(engine: engine, options: serverOptions).run()
        } catch let error as ValidationError {
            throw error
        } catch {
            printError("pagoda: error: \(error)")
            throw ExitCode.failure
        }
    }
}
