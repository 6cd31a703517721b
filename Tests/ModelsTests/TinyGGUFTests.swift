import Cache
import Engine
import Foundation
import Formats
import Kernels
import Models
import Testing
import TestSupport

/// The GGUF versions of the tiny fixtures (`Tests/Fixtures/tiny-gguf`, written by `make_gguf.py` the
/// way llama.cpp's convert_hf_to_gguf.py writes them) through the paged engine: each against
/// Pagoda's Hugging Face path on the same weights (every prompt position and greedy step within
/// 1e-4, greedy tokens identical) and, where the GGUF re-encodes the fixture exactly, against
/// transformers' logits (within 1e-3, greedy tokens as transformers chose them).
@Suite struct TinyGGUFTests {
    static let sameWeightsTolerance: Float = 1e-4
    static let transformersTolerance: Float = 1e-3
    static let pool = WorkerPool()

    /// One GGUF fixture and the Hugging Face model it is compared with.
    struct Case: Sendable, CustomTestStringConvertible {
        /// `tiny-gguf/<gguf>.gguf`.
        let gguf: String
        /// The fixture folder `tiny/<folder>` it was converted from.
        let folder: String
        /// JSON object of `config.json` keys to replace so that the Hugging Face path describes the
        /// model llama.cpp reads from the GGUF ("": none, the GGUF is the fixture's model).
        let equivalentConfig: String
        /// Why transformers' reference logits do not apply (nil: they do).
        let differsFromTransformers: String?

        var testDescription: String { gguf }
    }

    static let cases: [Case] = [
        Case(gguf: "llama", folder: "llama", equivalentConfig: "", differsFromTransformers: nil),
        Case(gguf: "mixtral", folder: "mixtral", equivalentConfig: "", differsFromTransformers: nil),
        Case(gguf: "qwen3_moe", folder: "qwen3_moe", equivalentConfig: "", differsFromTransformers: nil),
        Case(gguf: "gemma2", folder: "gemma2", equivalentConfig: "", differsFromTransformers: nil),
        // Converted with the `scoring_func: sigmoid` real DeepSeek-V3 configs carry (transformers'
        // DeepseekV3 ignores the key and always routes with sigmoid scores).
        Case(gguf: "deepseek_v3_sigmoid", folder: "deepseek_v3", equivalentConfig: "", differsFromTransformers: nil),
        // llama.cpp scales Gemma 3 scores by head_dim^-0.5 (32, the fixture's query_pre_attn_scalar is
        // 24) and, with no layer pattern in the file, slides on 5 of every 6 layers: all 4 here (the
        // fixture's layer_types are [S, S, F, S]).
        Case(gguf: "gemma3", folder: "gemma3",
             equivalentConfig: #"{"query_pre_attn_scalar": 32, "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention"]}"#,
             differsFromTransformers: "query_pre_attn_scalar 24 and layer_types [S, S, F, S] have no GGUF encoding"),
        // llama.cpp clamps GPT-OSS experts at 7.0 (the fixture's swiglu_limit is 1.0) and always
        // truncates the YaRN ramp (the fixture sets truncate false).
        Case(gguf: "gpt_oss", folder: "gpt_oss", equivalentConfig: gptOssAsLlamaCppReadsIt,
             differsFromTransformers: "swiglu_limit 1.0 and rope truncate false have no GGUF encoding"),
    ]

    /// The gpt_oss fixture's config as llama.cpp reads its GGUF: clamp 7.0, truncated YaRN ramp.
    static let gptOssAsLlamaCppReadsIt =
        #"{"swiglu_limit": 7.0, "rope_parameters": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 4.0, "original_max_position_embeddings": 64, "rope_theta": 150000.0, "rope_type": "yarn"}}"#

    /// A prompt's logits at every position, then `greedyIds.count` greedy steps: `greedyLogits` row
    /// `s` is the row `greedyIds[s]` is the argmax of (row 0 = the last prompt position).
    struct Run {
        var promptLogits: [Float] = []
        var greedyIds: [Int] = []
        var greedyLogits: [Float] = []
    }

    static func load(_ path: String) throws -> LoadedModel {
        try ModelLoader.load(path: path, pool: pool)
    }

    /// The reference prompts of fixture `folder` (ids, transformers' logits and greedy steps).
    static func referenceRuns(_ folder: String) throws -> (prompts: [[Int]], runs: [Run]) {
        let reference = try SafetensorsFile(path: Fixtures.path("tiny/\(folder)/reference.safetensors"))
        var prompts: [[Int]] = [], runs: [Run] = []
        for i in 0 ..< 3 {
            prompts.append(try reference.int32s("prompt.\(i).input_ids"))
            runs.append(Run(promptLogits: try reference.float32s("prompt.\(i).logits"),
                            greedyIds: try reference.int32s("prompt.\(i).greedy_ids"),
                            greedyLogits: try reference.float32s("prompt.\(i).greedy_logits")))
        }
        return (prompts, runs)
    }

    /// Prefills `prompt` in one step and decodes `steps` greedy tokens through the paged cache.
    static func run(_ loaded: LoadedModel, prompt: [Int], steps: Int) throws -> Run {
        let vocab = loaded.config.vocabSize
        let runner = ModelRunner(model: loaded.model, cache: try PagedKVCache(
            config: loaded.config, options: KVCacheOptions(memoryBytes: 64 << 20, blockSize: 16, prefixCaching: false)))
        try runner.admit(0, prompt: prompt)
        var result = Run()
        result.promptLogits = try runner.prefill(0, chunk: prompt.count, logits: .all)
        var row = Array(result.promptLogits[(prompt.count - 1) * vocab ..< prompt.count * vocab])
        for step in 0 ..< steps {
            let token = Compare.argmax(row[...])
            result.greedyIds.append(token)
            result.greedyLogits += row
            if step + 1 < steps {
                try runner.append(0, token: token)
                row = try runner.step([(SequenceID(0), 1, .last)])[0]
            }
        }
        try runner.free(0)
        return result
    }

    /// Fixture folder `folder` (relative to `Tests/Fixtures`), or a temporary copy (config.json
    /// rewritten with `changes`, weights linked). Returns the folder and whether it is temporary.
    static func huggingFaceFolder(_ folder: String, changes: String) throws -> (path: String, temporary: Bool) {
        let source = Fixtures.path(folder)
        guard !changes.isEmpty else { return (source, false) }
        var config = try Fixtures.json("\(folder)/config.json")
        guard let edits = try JSONSerialization.jsonObject(with: Data(changes.utf8)) as? [String: Any] else {
            throw FormatError(folder, "equivalent config changes are not a JSON object")
        }
        config.merge(edits) { _, new in new }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pagoda-tiny-gguf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: config).write(to: directory.appendingPathComponent("config.json"))
        try FileManager.default.createSymbolicLink(atPath: directory.path + "/model.safetensors", withDestinationPath: source + "/model.safetensors")
        return (directory.path, true)
    }

    static func expectClose(_ a: Run, _ b: Run, tolerance: Float, _ what: String) {
        let promptError = Compare.maxAbsDifference(a.promptLogits[...], b.promptLogits[...])
        #expect(promptError <= tolerance, "\(what): max abs prompt logit error \(promptError)")
        #expect(a.greedyIds == b.greedyIds, "\(what): greedy tokens differ")
        let greedyError = Compare.maxAbsDifference(a.greedyLogits[...], b.greedyLogits[...])
        #expect(greedyError <= tolerance, "\(what): max abs greedy logit error \(greedyError)")
    }

    @Test(arguments: cases)
    func ggufMatchesHuggingFacePath(_ c: Case) throws {
        let gguf = try Self.load(Fixtures.path("tiny-gguf/\(c.gguf).gguf"))
        #expect(gguf.tokenizer != nil)
        let folder = try Self.huggingFaceFolder("tiny/\(c.folder)", changes: c.equivalentConfig)
        defer { if folder.temporary { try? FileManager.default.removeItem(atPath: folder.path) } }
        let huggingFace = try Self.load(folder.path)
        #expect(gguf.config.family == huggingFace.config.family)
        #expect(gguf.config.vocabSize == huggingFace.config.vocabSize)

        let (prompts, references) = try Self.referenceRuns(c.folder)
        for (index, prompt) in prompts.enumerated() {
            let steps = references[index].greedyIds.count
            let fromGGUF = try Self.run(gguf, prompt: prompt, steps: steps)
            let fromFolder = try Self.run(huggingFace, prompt: prompt, steps: steps)
            Self.expectClose(fromGGUF, fromFolder, tolerance: Self.sameWeightsTolerance, "\(c.gguf) prompt \(index) GGUF vs Hugging Face folder")
            // (For gemma3 and gpt_oss, see `differsFromTransformers`.)
            if c.differsFromTransformers == nil {
                Self.expectClose(fromGGUF, references[index], tolerance: Self.transformersTolerance, "\(c.gguf) prompt \(index) GGUF vs transformers")
            }
        }
    }

    /// What llama.cpp reads from the GGUFs of configs it cannot express, as Pagoda reads it.
    @Test func llamaCppConventionsOfInexpressibleConfigs() throws {
        let gemma3 = try Self.load(Fixtures.path("tiny-gguf/gemma3.gguf")).config
        #expect(gemma3.family == .gemma3)
        #expect(gemma3.slidingWindow == 8 && gemma3.slidingLayers == [true, true, true, true])
        #expect(gemma3.attentionScale == 1 / Float(32).squareRoot())
        #expect(gemma3.ropeTheta == 1_000_000 && gemma3.ropeScaling == .linear(factor: 4))
        #expect(gemma3.slidingRope == RopeSettings(theta: 10000))
        #expect(gemma3.finalSoftCap == 10 && gemma3.qkNorm && gemma3.tieEmbeddings)

        let gptOss = try Self.load(Fixtures.path("tiny-gguf/gpt_oss.gguf")).config
        #expect(gptOss.family == .gptOss)
        #expect(gptOss.activation == .clampedSwiglu(limit: 7, alpha: 1.702))
        #expect(gptOss.slidingLayers == [true, false, true, false] && gptOss.slidingWindow == 8)
        guard case .yarn(let factor, let original, _, _, let truncate, let attentionFactor) = gptOss.ropeScaling else {
            Issue.record("gpt_oss.gguf: expected YaRN rope scaling, found \(gptOss.ropeScaling)")
            return
        }
        #expect(factor == 4 && original == 64 && truncate)
        #expect(abs(attentionFactor - Float(0.1 * log(4.0) + 1)) < 1e-6)
    }

    /// The DeepSeek GGUF converted from the fixture as it is: its config has no `scoring_func`, so
    /// the converter writes no `expert_gating_func` and llama.cpp routes with softmax (its DeepSeek V2
    /// default; still with the selection bias and group limits), unlike transformers' DeepseekV3. Logits are therefore not compared; the file must
    /// load with the same latent attention as the Hugging Face config and run through the engine.
    @Test func deepSeekWithoutScoringFunctionRoutesWithSoftmax() throws {
        let plain = try Self.load(Fixtures.path("tiny-gguf/deepseek_v3.gguf"))
        let sigmoid = try Self.load(Fixtures.path("tiny-gguf/deepseek_v3_sigmoid.gguf"))
        let huggingFace = try Self.load(Fixtures.path("tiny/deepseek_v3"))
        #expect(plain.config.moe?.routing == .grouped(sigmoid: false, groups: 4, groupsKept: 2, renormalize: true))
        #expect(sigmoid.config.moe?.routing == .grouped(sigmoid: true, groups: 4, groupsKept: 2, renormalize: true))
        #expect(huggingFace.config.moe?.routing == sigmoid.config.moe?.routing)
        for loaded in [plain, sigmoid] {
            let mla = try #require(loaded.config.mla), expected = try #require(huggingFace.config.mla)
            #expect(mla.queryRank == expected.queryRank && mla.latentRank == expected.latentRank)
            #expect(mla.noPositionDim == expected.noPositionDim && mla.ropeDim == expected.ropeDim && mla.valueDim == expected.valueDim)
            #expect(abs(mla.softmaxScale - expected.softmaxScale) <= 1e-7)
            #expect(loaded.config.moe?.routedScale == 2.5 && loaded.config.moe?.sharedIntermediateSize == 32)
            #expect(loaded.config.moe?.denseLayers == [0])
        }
        let (prompts, _) = try Self.referenceRuns("deepseek_v3")
        for prompt in prompts {
            let run = try Self.run(plain, prompt: prompt, steps: 4)
            #expect(run.promptLogits.allSatisfy(\.isFinite) && run.greedyLogits.allSatisfy(\.isFinite))
            let routedBySigmoid = try Self.run(sigmoid, prompt: prompt, steps: 1)
            #expect(run.promptLogits != routedBySigmoid.promptLogits, "the routing function should change the logits")
        }
    }

    /// GPT-OSS with MXFP4 experts (the gpt_oss fixture's experts quantized by `make_gguf.py`), from
    /// a Hugging Face folder of `*_blocks` / `*_scales` as openai/gpt-oss checkpoints store them:
    /// the same logits, within 1e-4, as the float folder holding the dequantized values, with the
    /// experts kept in MXFP4 (fewer bytes streamed per token).
    @Test func huggingFaceMXFP4MatchesDequantizedFloats() throws {
        let mxfp4 = try Self.load(Fixtures.path("tiny-gguf/gpt_oss_mxfp4"))
        let floats = try Self.load(Fixtures.path("tiny-gguf/gpt_oss_mxfp4_dequantized"))
        #expect(mxfp4.model.streamedWeightBytes < floats.model.streamedWeightBytes)
        try Self.expectSameRuns(mxfp4, floats, "gpt_oss_mxfp4 folder vs dequantized folder")
    }

    /// The GGUF llama.cpp's converter makes of the MXFP4 folder (GGML_TYPE_MXFP4 expert tensors)
    /// against the dequantized float folder read as llama.cpp reads GPT-OSS GGUFs.
    @Test func ggufMXFP4MatchesDequantizedFloats() throws {
        let gguf = try Self.load(Fixtures.path("tiny-gguf/gpt_oss_mxfp4.gguf"))
        let folder = try Self.huggingFaceFolder("tiny-gguf/gpt_oss_mxfp4_dequantized", changes: Self.gptOssAsLlamaCppReadsIt)
        defer { if folder.temporary { try? FileManager.default.removeItem(atPath: folder.path) } }
        let floats = try Self.load(folder.path)
        #expect(gguf.model.streamedWeightBytes < floats.model.streamedWeightBytes)
        try Self.expectSameRuns(gguf, floats, "gpt_oss_mxfp4.gguf vs dequantized folder")
    }

    /// `a` and `b` within 1e-4 on the gpt_oss reference prompts and 12 greedy steps.
    static func expectSameRuns(_ a: LoadedModel, _ b: LoadedModel, _ what: String) throws {
        let (prompts, _) = try referenceRuns("gpt_oss")
        for (index, prompt) in prompts.enumerated() {
            expectClose(try run(a, prompt: prompt, steps: 12), try run(b, prompt: prompt, steps: 12),
                        tolerance: sameWeightsTolerance, "\(what) prompt \(index)")
        }
    }
}
