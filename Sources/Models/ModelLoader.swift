import Foundation
import Formats
import Kernels
import Tokenizers

/// A model ready to run: the forward pass, its tokenizer (when the files carry one) and where it came from.
public struct LoadedModel: Sendable {
    public let model: any CausalLanguageModel
    public let tokenizer: Tokenizer?
    public let path: String
    public var config: ModelConfig { model.config }
}

/// Opens GGUF files and Hugging Face folders (config.json, tokenizer.json, *.safetensors).
public enum ModelLoader {
    /// Loads the model at `path`: a `.gguf` file, or a folder with `config.json`.
    /// `pool` runs the kernels (default: one thread per core); `activations` is the precision of
    /// the matrix products' inputs (`.int8` is lossy, for speed).
    public static func load(path: String, pool: WorkerPool = WorkerPool(), activations: ActivationPrecision = .fp32) throws -> LoadedModel {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw FormatError(path, "no such file or folder")
        }
        if isDirectory.boolValue {
            let configPath = path + "/config.json"
            guard FileManager.default.fileExists(atPath: configPath) else {
                throw FormatError(path, "model folder has no config.json")
            }
            let config = try ModelConfig(huggingFaceConfig: configPath)
            let source = try SafetensorsFolder(folder: path)
            let names = WeightNames(scheme: .huggingFace, source: source, config: config, activations: activations)
            let model = try makeModel(config: config, names: names, pool: pool)
            let hasTokenizer = FileManager.default.fileExists(atPath: path + "/tokenizer.json")
            let tokenizer = hasTokenizer ? try Tokenizer.fromHuggingFace(folder: path) : nil
            return LoadedModel(model: model, tokenizer: tokenizer, path: path)
        }
        let file = try GGUFFile(path: path)
        let config = try ModelConfig(gguf: file)
        let names = WeightNames(scheme: .gguf, source: file, config: config, activations: activations)
        let model = try makeModel(config: config, names: names, pool: pool)
        let tokenizer = try Tokenizer.fromGGUF(file, fallbackChat: ChatFallback.format(for: file, family: config.family))
        return LoadedModel(model: model, tokenizer: tokenizer, path: path)
    }

    static func makeModel(config: ModelConfig, names: WeightNames, pool: WorkerPool) throws -> any CausalLanguageModel {
        try DecoderTransformer(config: config, names: names, pool: pool)
    }
}

/// Chat formats for GGUF files that ship no `tokenizer.chat_template`.
enum ChatFallback {
    /// A plain-text dialogue for base (pretrained) models, which continue text but do not know any
    /// turn tokens: a one-line preamble (or the system message), `User: ...` / `Assistant: ...`
    /// lines, and the reply cut at the next `\nUser:`.
    static let plainDialogue = """
        {%- if messages and messages[0]['role'] == 'system' -%}
            {%- set preamble = messages[0]['content'] | trim -%}
            {%- set loop_messages = messages[1:] -%}
        {%- else -%}
            {%- set preamble = 'The following is a conversation between a user and a helpful assistant.' -%}
            {%- set loop_messages = messages -%}
        {%- endif -%}
        {{- bos_token if bos_token is defined else '' -}}
        {{- preamble + '\\n\\n' -}}
        {%- for message in loop_messages -%}
            {{- ('User: ' if message['role'] == 'user' else 'Assistant: ') + (message['content'] | trim) + '\\n' -}}
        {%- endfor -%}
        {%- if add_generation_prompt -%}
            {{- 'Assistant:' -}}
        {%- endif -%}
        """
    static let plainDialogueStops = ["\nUser:"]

    /// Gemma's turn format for instruction-tuned Gemma files (`general.finetune` "it"), else the
    /// plain dialogue.
    static func format(for file: GGUFFile, family: ModelFamily) -> (template: String, stopStrings: [String]) {
        let finetune = (file["general.finetune"]?.string ?? "").lowercased()
        let words = finetune.split(whereSeparator: { !$0.isLetter && !$0.isNumber })
        let instructionTuned = words.contains("it") || finetune.contains("instruct") || finetune.contains("chat")
        if instructionTuned, family == .gemma2 || family == .gemma3 { return (Gemma.chatTemplate, []) }
        return (plainDialogue, plainDialogueStops)
    }
}
