import Foundation
import Formats
import Models
import Testing
import TestSupport

/// Bad model files give one-line errors that name the file and the problem.
@Suite struct LoadErrorTests {
    static func llamaMetadata(architecture: String = "llama") -> GGUFBuilder {
        var b = GGUFBuilder()
        b.add("general.architecture", .string(architecture))
        b.add("\(architecture).block_count", .uint32(1))
        b.add("\(architecture).embedding_length", .uint32(32))
        b.add("\(architecture).feed_forward_length", .uint32(64))
        b.add("\(architecture).attention.head_count", .uint32(2))
        b.add("\(architecture).attention.head_count_kv", .uint32(1))
        b.add("\(architecture).context_length", .uint32(128))
        b.add("\(architecture).vocab_size", .uint32(8))
        b.add("tokenizer.ggml.model", .string("gpt2"))
        b.add("tokenizer.ggml.tokens", .array((0 ..< 8).map { .string("t\($0)") }))
        b.add("tokenizer.ggml.merges", .array([]))
        return b
    }

    @Test func missingTensorIsNamed() throws {
        var b = Self.llamaMetadata()
        b.addTensor("token_embd.weight", dims: [32, 8], floats: Array(repeating: 0.1, count: 256))
        let path = try b.write()
        let error = #expect(throws: FormatError.self) { try ModelLoader.load(path: path) }
        #expect(error?.path == path)
        #expect(error?.message.hasPrefix("missing tensor 'blk.0.attn_norm.weight'") == true, "\(error?.description ?? "")")
    }

    @Test func wrongTensorShapeIsNamed() throws {
        var b = Self.llamaMetadata()
        b.addTensor("token_embd.weight", dims: [16, 8], floats: Array(repeating: 0.1, count: 128))
        let path = try b.write()
        let error = #expect(throws: FormatError.self) { try ModelLoader.load(path: path) }
        #expect(error?.message.contains("token_embd.weight") == true, "\(error?.description ?? "")")
    }

    @Test func unsupportedGGUFArchitectureListsSupported() throws {
        let path = try Self.llamaMetadata(architecture: "rwkv6").write()
        let error = #expect(throws: FormatError.self) { try ModelLoader.load(path: path) }
        #expect(error?.description == "\(path): unsupported architecture 'rwkv6' (supported: deepseek2, gemma2, gemma3, gpt-oss, llama, mistral, qwen2, qwen3, qwen3moe)")
    }

    @Test func unsupportedHuggingFaceArchitecture() throws {
        let folder = try TemporaryFiles.folder()
        var config = try Fixtures.json("tiny/llama/config.json")
        config["architectures"] = ["MambaForCausalLM"]
        config["model_type"] = "mamba"
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: folder + "/config.json"))
        let error = #expect(throws: FormatError.self) { try ModelLoader.load(path: folder) }
        #expect(error?.message.hasPrefix("unsupported architecture 'MambaForCausalLM'") == true, "\(error?.description ?? "")")
    }

    @Test func missingHuggingFaceTensor() throws {
        let folder = try TemporaryFiles.folder()
        try FileManager.default.copyItem(atPath: Fixtures.path("tiny/llama/config.json"), toPath: folder + "/config.json")
        // A shard holding only the embeddings.
        let header = #"{"model.embed_tokens.weight": {"dtype": "F32", "shape": [512, 64], "data_offsets": [0, 131072]}}"#
        var data = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: header.utf8)
        data.append(Data(count: 131072))
        try data.write(to: URL(fileURLWithPath: folder + "/model.safetensors"))
        let error = #expect(throws: FormatError.self) { try ModelLoader.load(path: folder) }
        #expect(error?.message == "missing tensor 'model.layers.0.input_layernorm.weight'", "\(error?.description ?? "")")
    }

    @Test func truncatedRealModelFileIsAnError() throws {
        let original = try DefaultModel.path()
        let handle = try #require(FileHandle(forReadingAtPath: original))
        let head = handle.readData(ofLength: 4 << 20)
        let path = try TemporaryFiles.write(head, named: "truncated.gguf")
        let error = #expect(throws: FormatError.self) { try ModelLoader.load(path: path) }
        #expect(error?.path == path)
        #expect(error?.message.contains("truncated") == true, "\(error?.description ?? "")")
    }
}
