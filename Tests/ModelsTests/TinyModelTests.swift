import Cache
import Engine
import Formats
import Kernels
import Models
import Testing
import TestSupport

/// The tiny random-weight Hugging Face models against transformers' float32 logits, through the
/// paged engine path: every prompt position and every greedy step within 1e-3, greedy tokens
/// identical, and bitwise-identical logits whether prompts run alone, batched together, or with
/// their prefill chunked.
@Suite struct TinyModelTests {
    static let tolerance: Float = 1e-3
    static let pool = WorkerPool()

    struct Prompt {
        let ids: [Int]
        let logits: [Float]
        let greedyIds: [Int]
        let greedyLogits: [Float]
    }

    static func load(_ name: String) throws -> (LoadedModel, [Prompt]) {
        let folder = Fixtures.path("tiny/\(name)")
        let loaded = try ModelLoader.load(path: folder, pool: pool)
        let reference = try SafetensorsFile(path: folder + "/reference.safetensors")
        let prompts = try (0 ..< 3).map { i in
            try Prompt(
                ids: reference.int32s("prompt.\(i).input_ids"), logits: reference.float32s("prompt.\(i).logits"),
                greedyIds: reference.int32s("prompt.\(i).greedy_ids"), greedyLogits: reference.float32s("prompt.\(i).greedy_logits"))
        }
        return (loaded, prompts)
    }

    static func runner(_ loaded: LoadedModel, blockSize: Int = 16, prefixCaching: Bool = false) throws -> ModelRunner {
        ModelRunner(model: loaded.model, cache: try PagedKVCache(
            config: loaded.config, options: KVCacheOptions(memoryBytes: 64 << 20, blockSize: blockSize, prefixCaching: prefixCaching)))
    }

    @Test(arguments: Fixtures.tinyModels)
    func logitsAndGreedyMatchTransformers(name: String) throws {
        let (loaded, prompts) = try Self.load(name)
        let vocab = loaded.config.vocabSize
        let runner = try Self.runner(loaded)
        for (index, prompt) in prompts.enumerated() {
            let id = SequenceID(index)
            try runner.admit(id, prompt: prompt.ids)
            let logits = try runner.prefill(id, chunk: prompt.ids.count, logits: .all)
            let promptError = Compare.maxAbsDifference(logits[...], prompt.logits[...])
            #expect(promptError <= Self.tolerance, "\(name) prompt \(index): max abs logit error \(promptError)")

            var row = Array(logits[(prompt.ids.count - 1) * vocab ..< prompt.ids.count * vocab])
            for step in 0 ..< prompt.greedyIds.count {
                let expectedRow = prompt.greedyLogits[step * vocab ..< (step + 1) * vocab]
                let error = Compare.maxAbsDifference(row[...], expectedRow)
                #expect(error <= Self.tolerance, "\(name) prompt \(index) greedy step \(step): max abs logit error \(error)")
                #expect(Compare.argmax(row[...]) == prompt.greedyIds[step], "\(name) prompt \(index) greedy step \(step)")
                try runner.append(id, token: prompt.greedyIds[step])
                row = try runner.step([(id, 1, .last)])[0]
            }
            try runner.free(id)
        }
    }

    /// The logits of each prompt are bitwise the same alone, batched with the others in one step,
    /// and with the prefill chunked into 1, 7 or 64 tokens, with any block size.
    @Test(arguments: Fixtures.tinyModels)
    func batchAndChunkInvariance(name: String) throws {
        let (loaded, prompts) = try Self.load(name)
        let alone = try prompts.map { prompt -> [Float] in
            let runner = try Self.runner(loaded)
            try runner.admit(0, prompt: prompt.ids)
            return try runner.prefill(0, chunk: prompt.ids.count, logits: .all)
        }
        let batchedRunner = try Self.runner(loaded, blockSize: 8)
        for (i, prompt) in prompts.enumerated() { try batchedRunner.admit(SequenceID(i), prompt: prompt.ids) }
        let batched = try batchedRunner.step(prompts.enumerated().map { (SequenceID($0.offset), $0.element.ids.count, .all) })
        #expect(batched == alone, "\(name): batched prompts differ from prompts alone")

        for chunk in [1, 7, 64] {
            for (i, prompt) in prompts.enumerated() {
                let runner = try Self.runner(loaded, blockSize: chunk == 7 ? 4 : 16)
                try runner.admit(0, prompt: prompt.ids)
                let chunked = try runner.prefill(0, chunk: chunk, logits: .all)
                #expect(chunked == alone[i], "\(name) prompt \(i): prefill in chunks of \(chunk) differs")
            }
        }

        // Mixed step: one sequence decodes while another prefills a chunk.
        let mixed = try Self.runner(loaded)
        try mixed.admit(0, prompt: prompts[0].ids)
        try mixed.admit(1, prompt: prompts[2].ids)
        _ = try mixed.prefill(0, chunk: 100, logits: .none)
        _ = try mixed.step([(SequenceID(1), 10, .none)])
        try mixed.append(0, token: prompts[0].greedyIds[0])
        let outputs = try mixed.step([(SequenceID(0), 1, .last), (SequenceID(1), prompts[2].ids.count - 10, .all)])
        let vocab = loaded.config.vocabSize
        #expect(outputs[1] == Array(alone[2][(10 * vocab)...]), "\(name): chunk continued beside a decode differs")
        let decodeError = Compare.maxAbsDifference(outputs[0][...], prompts[0].greedyLogits[vocab ..< 2 * vocab])
        #expect(decodeError <= Self.tolerance)
    }
}
