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
    /// `pool` runs the kernels (default: one thread per core).
    public static func load(path: String, pool: WorkerPool = WorkerPool()) throws -> LoadedModel {
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
            let model = try makeModel(config: config, names: WeightNames(scheme: .huggingFace, source: source, config: config), pool: pool)
            let hasTokenizer = FileManager.default.fileExists(atPath: path + "/tokenizer.json")
            let tokenizer = hasTokenizer ? try Tokenizer.fromHuggingFace(folder: path) : nil
            return LoadedModel(model: model, tokenizer: tokenizer, path: path)
        }
        let file = try GGUFFile(path: path)
        let config = try ModelConfig(gguf: file)
        let model = try makeModel(config: config, names: WeightNames(scheme: .gguf, source: file, config: config), pool: pool)
        let tokenizer = try Tokenizer.fromGGUF(file, fallbackChatTemplate: config.family.defaultChatTemplate)
        return LoadedModel(model: model, tokenizer: tokenizer, path: path)
    }

    static func makeModel(config: ModelConfig, names: WeightNames, pool: WorkerPool) throws -> any CausalLanguageModel {
        try DecoderTransformer(config: config, names: names, pool: pool)
    }
}
