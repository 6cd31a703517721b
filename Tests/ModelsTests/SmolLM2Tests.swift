import Formats
import Kernels
import Models
import Testing
import TestSupport

/// The real default model (SmolLM2-135M-Instruct, Q4_1 GGUF) against transformers' float32
/// reference: last-position top-10 logits within 1e-3, every confident prompt-position argmax,
/// and the 32-token greedy continuation token for token.
@Suite struct SmolLM2Tests {
    static let tolerance: Float = 1e-3

    @Test func promptsMatchTransformers() throws {
        let loaded = try ModelLoader.load(path: DefaultModel.path())
        let reference = try Fixtures.json("smollm2-135m/reference.json")
        let prompts = try #require(reference["prompts"] as? [[String: Any]])
        #expect(prompts.count == 6)
        let vocab = loaded.config.vocabSize
        #expect(vocab == 49152)
        for prompt in prompts {
            let name = prompt["name"] as? String ?? "?"
            let ids = try #require(prompt["ids"] as? [Int])
            let cache = loaded.model.makeCache(capacity: ids.count + 40)
            let logits = try loaded.model.forward(tokens: ids, cache: cache, logits: .all)

            // Per-position argmax wherever the reference's top-1/top-2 margin exceeds our error bound.
            let argmax = try #require(prompt["argmax"] as? [Int])
            let margins = try #require(prompt["argmax_margin"] as? [Double])
            for position in ids.indices where margins[position] > 2e-3 {
                let row = logits[position * vocab ..< (position + 1) * vocab]
                #expect(Compare.argmax(row) == argmax[position], "\(name): argmax at position \(position)")
            }

            let last = Array(logits[(ids.count - 1) * vocab ..< ids.count * vocab])
            let top10 = try #require(prompt["last_top10"] as? [[Double]])
            for entry in top10 {
                let id = Int(entry[0])
                let error = abs(last[id] - Float(entry[1]))
                #expect(error <= Self.tolerance, "\(name): logit of token \(id) off by \(error)")
            }

            let greedy = try #require(prompt["greedy"] as? [String: Any])
            let expected = try #require(greedy["ids"] as? [Int])
            var row = last
            var produced: [Int] = []
            for _ in expected.indices {
                let token = Compare.argmax(row[...])
                produced.append(token)
                row = try loaded.model.forward(tokens: [token], cache: cache, logits: .last)
            }
            #expect(produced == expected, "\(name): greedy continuation")
        }
    }
}
