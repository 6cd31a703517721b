import Formats
import Kernels
import Models
import Testing
import TestSupport

/// The tiny random-weight Hugging Face models against transformers' float32 logits:
/// every prompt position and every greedy step within 1e-3, greedy tokens identical.
@Suite struct TinyModelTests {
    static let tolerance: Float = 1e-3
    static let pool = WorkerPool()

    @Test(arguments: Fixtures.tinyDenseModels)
    func logitsAndGreedyMatchTransformers(name: String) throws {
        let folder = Fixtures.path("tiny/\(name)")
        let loaded = try ModelLoader.load(path: folder, pool: Self.pool)
        let reference = try SafetensorsFile(path: folder + "/reference.safetensors")
        let vocab = loaded.config.vocabSize
        for prompt in 0 ..< 3 {
            let ids = try reference.int32s("prompt.\(prompt).input_ids")
            let expected = try reference.float32s("prompt.\(prompt).logits")
            let cache = loaded.model.makeCache(capacity: 256)
            let logits = try loaded.model.forward(tokens: ids, cache: cache, logits: .all)
            let promptError = Compare.maxAbsDifference(logits[...], expected[...])
            #expect(promptError <= Self.tolerance, "\(name) prompt \(prompt): max abs logit error \(promptError)")

            let greedyIds = try reference.int32s("prompt.\(prompt).greedy_ids")
            let greedyLogits = try reference.float32s("prompt.\(prompt).greedy_logits")
            var row = Array(logits[(ids.count - 1) * vocab ..< ids.count * vocab])
            for step in 0 ..< greedyIds.count {
                let expectedRow = greedyLogits[step * vocab ..< (step + 1) * vocab]
                let error = Compare.maxAbsDifference(row[...], expectedRow)
                #expect(error <= Self.tolerance, "\(name) prompt \(prompt) greedy step \(step): max abs logit error \(error)")
                let token = Compare.argmax(row[...])
                #expect(token == greedyIds[step], "\(name) prompt \(prompt) greedy step \(step)")
                row = try loaded.model.forward(tokens: [greedyIds[step]], cache: cache, logits: .last)
            }
        }
    }
}
