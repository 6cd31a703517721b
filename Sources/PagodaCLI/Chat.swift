import ArgumentParser
import Dispatch
import Engine
import Foundation
import Tokenizers
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `pagoda chat`: an interactive conversation in the terminal with the model's own chat template.
/// The history is kept and re-rendered each turn; the engine's prefix cache serves the part of the
/// prompt earlier turns already computed. Ctrl-C stops the current reply; at the prompt it leaves
/// (as do Ctrl-D and `/exit`); `/reset` starts a new conversation.
struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Chat with the model in the terminal.")

    @OptionGroup var options: ModelOptions
    @OptionGroup var cacheOptions: CacheOptions
    @OptionGroup var schedulerOptions: SchedulerFlags

    @Option(help: "A system message to start the conversation with.")
    var system: String?

    @Option(name: .customLong("max-tokens"), help: "Most tokens per reply.")
    var maxTokens: Int = 512

    @Option(help: "Sampling temperature (0 = greedy).")
    var temperature: Float = 0.7

    @Option(name: .customLong("top-p"), help: "Nucleus sampling threshold.")
    var topP: Float = 0.95

    @Option(help: "Random seed, for reproducible replies.")
    var seed: UInt64?

    func run() async throws {
        do {
            try await converse()
        } catch {
            printError("pagoda: error: \(error)")
            throw ExitCode.failure
        }
    }

    func converse() async throws {
        let (loaded, tokenizer) = try loadWithTokenizer(options)
        guard tokenizer.chatTemplate != nil else {
            throw ValidationError("the model has no chat template; use `pagoda generate`")
        }
        let engine = try InferenceEngine(model: loaded, options: EngineOptions(cache: cacheOptions.resolved(), scheduler: schedulerOptions.resolved()))
        defer { engine.shutdown() }
        let interrupts = InterruptHandler()
        let parameters = GenerationParameters(
            sampling: SamplingParameters(temperature: temperature, topP: topP, seed: seed), maxTokens: maxTokens,
            stopStrings: tokenizer.chatStopStrings)
        var history: [ChatMessage] = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
        let interactive = isatty(STDIN_FILENO) == 1
        printError("pagoda chat: type a message; /reset starts over, /exit (or Ctrl-D) leaves, Ctrl-C stops a reply.")
        while true {
            if interactive { FileHandle.standardError.write(Data("\n> ".utf8)) }
            guard let line = readLine() else { break }
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty { continue }
            if text == "/exit" || text == "/quit" { break }
            if text == "/reset" {
                history = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
                printError("(new conversation)")
                continue
            }
            history.append(ChatMessage(role: "user", content: text))
            let prompt: String
            do {
                prompt = try tokenizer.applyChatTemplate(history)
            } catch {
                history.removeLast()
                printError("pagoda: \(error)")
                continue
            }
            let ids = tokenizer.encode(prompt, addSpecialTokens: false)
            let stream = engine.generate(promptIds: ids, parameters: parameters)
            let reply = Task { () -> String in
                var reply = ""
                for try await output in stream {
                    reply += output.textDelta
                    FileHandle.standardOutput.write(Data(output.textDelta.utf8))
                }
                return reply
            }
            interrupts.current = reply
            let answer = await (try? reply.value) ?? ""
            let stopped = reply.isCancelled
            interrupts.current = nil
            FileHandle.standardOutput.write(Data((stopped ? " [stopped]\n" : "\n").utf8))
            history.append(ChatMessage(role: "assistant", content: answer.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
    }
}

/// Routes Ctrl-C to the running reply (cancelling its stream, which aborts the request); with no
/// reply running it ends the program.
final class InterruptHandler: @unchecked Sendable {
    private let lock = NSLock()
    private var task: Task<String, Error>?
    private let source: DispatchSourceSignal

    var current: Task<String, Error>? {
        get { lock.withLock { task } }
        set { lock.withLock { task = newValue } }
    }

    init() {
        signal(SIGINT, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler { [weak self] in
            if let task = self?.current {
                task.cancel()
            } else {
                FileHandle.standardError.write(Data("\n".utf8))
                exit(130)
            }
        }
        source.resume()
    }
}
