import ArgumentParser
import Cache
import Engine
import Formats
import Foundation
import Kernels
import Models
import Tokenizers

enum DefaultModelPath {
    static func resolve() throws -> String {
        try DefaultModel.path(log: printError)
    }
}

/// Loads the model and insists on a tokenizer (needed to turn text into ids and back).
func loadWithTokenizer(_ options: ModelOptions) throws -> (LoadedModel, Tokenizer) {
    let loaded = try ModelLoader.load(path: options.resolvedPath(), pool: WorkerPool(threads: options.threads ?? WorkerPool.availableCores), activations: options.activationOptions.precision)
    guard let tokenizer = loaded.tokenizer else {
        throw FormatError(loaded.path, "the model has no tokenizer (tokenizer.json or GGUF tokenizer metadata)")
    }
    return (loaded, tokenizer)
}

struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text from a prompt, streaming it to stdout (speed goes to stderr); or run every line of a file as its own request.")

    @OptionGroup var options: ModelOptions
    @OptionGroup var cacheOptions: CacheOptions
    @OptionGroup var schedulerOptions: SchedulerFlags

    @Option(help: "The prompt text.")
    var prompt: String = "Once upon a time"

    @Option(name: .customLong("prompts-file"), help: "Submit every line of this file as its own request, all at once.")
    var promptsFile: String?

    @Flag(help: "With --prompts-file: print one JSON object per finished request.")
    var json = false

    @Option(name: .customLong("max-tokens"), help: "Most tokens to generate.")
    var maxTokens: Int = 128

    @Option(help: "Sampling temperature (0 = greedy).")
    var temperature: Float = 0

    @Option(name: .customLong("top-k"), help: "Sample only among the K most likely tokens (0 = all).")
    var topK: Int = 0

    @Option(name: .customLong("top-p"), help: "Sample only among the most likely tokens that reach this total probability.")
    var topP: Float = 1

    @Option(help: "Random seed, for reproducible sampling.")
    var seed: UInt64?

    @Flag(name: .customLong("ignore-eos"), help: "Keep generating past end-of-sequence tokens.")
    var ignoreEOS = false

    func validate() throws {
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1, got \(maxTokens)") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be a finite number >= 0") }
        guard topK >= 0 else { throw ValidationError("--top-k must be at least 0") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
    }

    var parameters: GenerationParameters {
        GenerationParameters(
            sampling: SamplingParameters(temperature: temperature, topK: topK, topP: topP, seed: seed),
            maxTokens: maxTokens, ignoreEOS: ignoreEOS)
    }

    func run() async throws {
        do {
            let (loaded, _) = try loadWithTokenizer(options)
            let engine = try InferenceEngine(model: loaded, options: EngineOptions(cache: cacheOptions.resolved(), scheduler: schedulerOptions.resolved()))
            defer { engine.shutdown() }
            if let promptsFile {
                try await runFile(promptsFile, engine: engine)
            } else {
                try await runOne(engine: engine)
            }
        } catch let error as ValidationError {
            throw error
        } catch {
            printError("pagoda: error: \(error)")
            throw ExitCode.failure
        }
    }

    func runOne(engine: InferenceEngine) async throws {
        let out = FileHandle.standardOutput
        out.write(Data(prompt.utf8))
        let promptTokens = try engine.encode(prompt).count
        let clock = ContinuousClock()
        let start = clock.now
        var firstToken: ContinuousClock.Instant?
        var generated = 0
        var finish = FinishReason.length
        for try await output in engine.generate(prompt: prompt, parameters: parameters) {
            if !output.tokenIds.isEmpty, firstToken == nil { firstToken = clock.now }
            generated += output.tokenIds.count
            if !output.textDelta.isEmpty { out.write(Data(output.textDelta.utf8)) }
            if let reason = output.finishReason { finish = reason }
        }
        out.write(Data("\n".utf8))
        let end = clock.now
        let prefill = ((firstToken ?? end) - start).seconds
        let decode = (end - (firstToken ?? end)).seconds
        printError(String(
            format: "pagoda: prompt %d tokens at %.1f tok/s, generated %d tokens at %.1f tok/s (%@)",
            promptTokens, prefill > 0 ? Double(promptTokens) / prefill : 0, generated,
            decode > 0 ? Double(max(0, generated - 1)) / decode : 0, finish.rawValue))
    }

    func runFile(_ path: String, engine: InferenceEngine) async throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("--prompts-file: cannot read \(path)")
        }
        let prompts = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            .map(String.init).filter { !$0.isEmpty }
        let clock = ContinuousClock()
        let start = clock.now
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for (index, prompt) in prompts.enumerated() {
                let stream = engine.generate(prompt: prompt, parameters: parameters)
                group.addTask {
                    var text = "", ids: [Int] = [], finish = FinishReason.length
                    for try await output in stream {
                        text += output.textDelta
                        ids += output.tokenIds
                        if let reason = output.finishReason { finish = reason }
                    }
                    if json {
                        print("{\"index\": \(index), \"text\": \(jsonStringLiteral(text)), \"token_ids\": [\(ids.map(String.init).joined(separator: ", "))], \"finish_reason\": \"\(finish.rawValue)\"}")
                    } else {
                        print("[\(index)] \(prompt)\(text)")
                    }
                    return ids.count
                }
            }
            return try await group.reduce(0, +)
        }
        let seconds = (clock.now - start).seconds
        printError(String(format: "pagoda: %d requests, %d tokens generated in %.2f s (%.1f tok/s)", prompts.count, total, seconds, seconds > 0 ? Double(total) / seconds : 0))
    }
}

struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print, for every input position, the argmax next token and the top-K logits.")

    @OptionGroup var options: ModelOptions
    @OptionGroup var cacheOptions: CacheOptions

    @Option(name: .customLong("prefill-chunk"), help: "Feed the input in chunks of N tokens, one engine step each (default: all at once).")
    var prefillChunk: Int?

    @Option(help: "Comma-separated token ids, e.g. 1,2,3.")
    var tokens: String?

    @Option(help: "Text to tokenize and score instead of --tokens.")
    var text: String?

    @Option(help: "How many (id, logit) pairs to print per position.")
    var top: Int = 5

    @Flag(help: "Print JSON: {\"positions\": [{\"argmax\": 42, \"top\": [[42, 17.25], ...]}, ...]}.")
    var json = false

    func validate() throws {
        guard (tokens == nil) != (text == nil) else { throw ValidationError("give exactly one of --tokens or --text") }
        guard top >= 1 else { throw ValidationError("--top must be at least 1") }
        if let prefillChunk, prefillChunk < 1 { throw ValidationError("--prefill-chunk must be at least 1") }
    }

    func run() throws {
        try reportingErrors {
            let loaded = try ModelLoader.load(path: options.resolvedPath(), pool: WorkerPool(threads: options.threads ?? WorkerPool.availableCores), activations: options.activationOptions.precision)
            let ids: [Int]
            if let tokens {
                ids = try tokens.split(separator: ",").map { part in
                    guard let id = Int(part.trimmingCharacters(in: .whitespaces)) else {
                        throw ValidationError("--tokens: '\(part)' is not an integer token id")
                    }
                    return id
                }
            } else {
                guard let tokenizer = loaded.tokenizer else {
                    throw FormatError(loaded.path, "the model has no tokenizer; use --tokens")
                }
                ids = tokenizer.encode(text ?? "", addSpecialTokens: true)
            }
            guard !ids.isEmpty else { throw ValidationError("no tokens to score") }
            guard ids.count <= loaded.config.contextLength else {
                throw GenerationError.promptTooLong(tokens: ids.count, context: loaded.config.contextLength)
            }
            let logits = try scoreLogits(loaded, ids: ids)
            let vocab = loaded.config.vocabSize
            let k = min(top, vocab)
            var positions: [String] = []
            for position in ids.indices {
                let row = logits[position * vocab ..< (position + 1) * vocab]
                let best = topEntries(row, k)
                if json {
                    let pairs = best.map { "[\($0.id), \(jsonNumber($0.logit))]" }.joined(separator: ", ")
                    positions.append("{\"argmax\": \(best[0].id), \"top\": [\(pairs)]}")
                } else {
                    let pairs = best.map { "\($0.id):\($0.logit)" }.joined(separator: " ")
                    print("\(position)\ttoken \(ids[position])\targmax \(best[0].id)\t\(pairs)")
                }
            }
            if json { print("{\"positions\": [\(positions.joined(separator: ", "))]}") }
        }
    }

    /// Logits `[ids.count, vocab]` through the paged engine path, in chunks of `--prefill-chunk`.
    /// Without --kv-cache-memory the pool is sized to hold exactly this sequence.
    func scoreLogits(_ loaded: LoadedModel, ids: [Int]) throws -> [Float] {
        var cacheConfig = cacheOptions.resolved()
        cacheConfig.maxSequences = 1
        cacheConfig.maxStepTokens = prefillChunk ?? ids.count
        if cacheOptions.kvCacheMemory == nil {
            cacheConfig.memoryBytes = PagedKVCache.memoryToHold(tokens: ids.count, config: loaded.config, options: cacheConfig)
        }
        let runner = ModelRunner(model: loaded.model, cache: try PagedKVCache(config: loaded.config, options: cacheConfig))
        try runner.admit(SequenceID(0), prompt: ids)
        return try runner.prefill(SequenceID(0), chunk: prefillChunk ?? ids.count, logits: .all)
    }

    /// The `k` largest logits of a row, descending (ties by lower id first).
    func topEntries(_ row: ArraySlice<Float>, _ k: Int) -> [(id: Int, logit: Float)] {
        var best: [(id: Int, logit: Float)] = []
        for (offset, value) in row.enumerated() where best.count < k || value > best[best.count - 1].logit {
            let position = best.firstIndex { value > $0.logit } ?? best.count
            best.insert((offset, value), at: position)
            if best.count > k { best.removeLast() }
        }
        return best
    }
}

/// A float as a JSON number (non-finite values, which JSON cannot hold, become null).
func jsonNumber(_ value: Float) -> String {
    value.isFinite ? "\(value)" : "null"
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the token ids of a text.")

    @OptionGroup var options: ModelOptions

    @Option(help: "The text to tokenize.")
    var text: String

    @Flag(name: .customLong("no-special"), help: "Do not add BOS or other special tokens.")
    var noSpecial = false

    @Flag(help: "Print JSON: {\"ids\": [...]}.")
    var json = false

    func run() throws {
        try reportingErrors {
            let path = try options.resolvedPath()
            let tokenizer: Tokenizer
            if path.hasSuffix(".gguf") {
                tokenizer = try Tokenizer.fromGGUF(GGUFFile(path: path))
            } else {
                tokenizer = try Tokenizer.fromHuggingFace(folder: path)
            }
            let ids = tokenizer.encode(text, addSpecialTokens: !noSpecial)
            if json {
                print("{\"ids\": [\(ids.map(String.init).joined(separator: ", "))]}")
            } else {
                for id in ids {
                    print("\(id)\t\(tokenizer.tokenText(id).map { String(reflecting: $0) } ?? "?")")
                }
            }
        }
    }
}
