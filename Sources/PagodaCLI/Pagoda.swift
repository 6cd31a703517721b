import ArgumentParser
import Foundation

/// The `pagoda` command line: run, score and tokenize with open-weight models.
@main
struct Pagoda: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pagoda",
        abstract: "An LLM inference engine: GGUF and Hugging Face models on CPU.",
        subcommands: [Generate.self, Score.self, Tokenize.self]
    )
}

/// Options every model-running command shares.
struct ModelOptions: ParsableArguments {
    @Option(help: "A .gguf file or a Hugging Face model folder (default: SmolLM2-135M-Instruct Q4_1, fetched on first use).")
    var model: String?

    @Option(help: "Worker threads for the kernels (default: one per core).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 || threads > 1024 {
            throw ValidationError("--threads must be between 1 and 1024, got \(threads)")
        }
    }

    /// The model path, fetching the default model when none was given.
    func resolvedPath() throws -> String {
        if let model { return model }
        return try DefaultModelPath.resolve()
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
