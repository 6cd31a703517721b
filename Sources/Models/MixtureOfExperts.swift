import Foundation
import Formats
import Kernels

/// Hugging Face names of Mixtral's sparse block (`w1` = gate, `w3` = up, `w2` = down).
enum MixtralNames {
    static let huggingFace: [String: String] = [
        "ffn_gate_inp.weight": "block_sparse_moe.gate.weight",
        "ffn_gate_exps.weight": "block_sparse_moe.experts.%d.w1.weight",
        "ffn_up_exps.weight": "block_sparse_moe.experts.%d.w3.weight",
        "ffn_down_exps.weight": "block_sparse_moe.experts.%d.w2.weight",
    ]
}

/// A mixture-of-experts MLP (Mixtral, Qwen3-MoE, DeepSeek, GPT-OSS): a router picks `k` experts
/// per token; each active expert then runs once per step over all the tokens routed to it
/// (gathered into one matrix, so its weights are read once per step, not once per token), and each
/// token's output is the weighted sum of its experts' outputs, added in ascending expert order
/// (plus the shared experts' MLP, if any). A token's result does not depend on the other tokens of
/// the step: the matmul kernels are batch-invariant and the summation order is per token.
struct MixtureOfExperts {
    let config: MoEConfig
    /// `[experts, hidden]` router and its optional bias.
    let router: WeightMatrix
    let routerBias: [Float]?
    /// DeepSeek V3's `e_score_correction_bias`: shifts the choice, not the weights.
    let correctionBias: [Float]?
    let experts: [GatedMLP]
    let shared: GatedMLP?

    init(config: MoEConfig, router: WeightMatrix, routerBias: [Float]?, correctionBias: [Float]?, experts: [GatedMLP], shared: GatedMLP?) {
        self.config = config
        self.router = router
        self.routerBias = routerBias
        self.correctionBias = correctionBias
        self.experts = experts
        self.shared = shared
    }

    /// Loads layer `i`'s router and experts by their GGUF roles (stacked or per-expert tensors).
    init(_ names: WeightNames, layer i: Int, config c: ModelConfig, moe: MoEConfig) throws {
        let hidden = c.hiddenSize, width = moe.expertIntermediateSize
        let experts: [GatedMLP]
        if c.family == .gptOss && names.scheme == .huggingFace {
            experts = try GptOss.huggingFaceExperts(names, layer: i, config: c, moe: moe)
        } else {
            let gates = try names.expertMatrices("ffn_gate_exps.weight", layer: i, count: moe.experts, rows: width, cols: hidden)
            let ups = try names.expertMatrices("ffn_up_exps.weight", layer: i, count: moe.experts, rows: width, cols: hidden)
            let downs = try names.expertMatrices("ffn_down_exps.weight", layer: i, count: moe.experts, rows: hidden, cols: width)
            func biases(_ role: String, _ length: Int) throws -> [[Float]?] {
                moe.biases ? try names.expertVectors(role, layer: i, count: moe.experts, length: length) : Array(repeating: nil, count: moe.experts)
            }
            let gateBiases = try biases("ffn_gate_exps.bias", width), upBiases = try biases("ffn_up_exps.bias", width)
            let downBiases = try biases("ffn_down_exps.bias", hidden)
            experts = (0 ..< moe.experts).map {
                GatedMLP(gate: gates[$0], up: ups[$0], down: downs[$0], activation: c.activation,
                         gateBias: gateBiases[$0], upBias: upBiases[$0], downBias: downBiases[$0])
            }
        }
        let shared = moe.sharedIntermediateSize > 0
            ? try GatedMLP(names, layer: i, hidden: hidden, intermediate: moe.sharedIntermediateSize, activation: c.activation, suffix: "_shexp")
            : nil
        self.init(
            config: moe, router: try names.matrix("ffn_gate_inp.weight", layer: i, rows: moe.experts, cols: hidden),
            routerBias: moe.biases ? try names.vector("ffn_gate_inp.bias", layer: i, count: moe.experts) : nil,
            correctionBias: try names.optionalVector("exp_probs_b.bias", layer: i, count: moe.experts),
            experts: experts, shared: shared)
    }

    var weights: [WeightMatrix] { [router] + experts.flatMap(\.weights) + (shared?.weights ?? []) }

    /// Bytes a decode step reads: the router, `expertsPerToken` experts and the shared MLP.
    var streamedBytes: Int {
        let expertBytes = experts.first.map { $0.weights.reduce(0) { $0 + $1.rows * $1.rowBytes } } ?? 0
        return router.rows * router.rowBytes + config.expertsPerToken * expertBytes
            + (shared?.weights.reduce(0) { $0 + $1.rows * $1.rowBytes } ?? 0)
    }

    /// Picks token `t`'s experts from its router logits: writes `k` expert ids (ascending) and weights.
    func route(_ logits: UnsafeMutablePointer<Float>, chosen: UnsafeMutablePointer<Int>, weights: UnsafeMutablePointer<Float>) {
        let e = config.experts, k = config.expertsPerToken
        // Top-k of `scores` by value (ties: lower id first), written into `chosen`.
        func topK(_ scores: (Int) -> Float, _ count: Int, _ k: Int, into out: UnsafeMutablePointer<Int>) {
            for slot in 0 ..< k {
                var best = -1
                var bestScore = -Float.infinity
                for i in 0 ..< count {
                    var taken = false
                    for s in 0 ..< slot where out[s] == i { taken = true }
                    if taken { continue }
                    let s = scores(i)
                    if best < 0 || s > bestScore { best = i; bestScore = s }
                }
                out[slot] = best
            }
        }
        switch config.routing {
        case .softmaxTopK(let renormalize):
            var maximum = -Float.infinity
            for i in 0 ..< e { maximum = max(maximum, logits[i]) }
            var sum: Float = 0
            for i in 0 ..< e { logits[i] = expf(logits[i] - maximum); sum += logits[i] }
            for i in 0 ..< e { logits[i] /= sum }
            topK({ logits[$0] }, e, k, into: chosen)
            var total: Float = 0
            for s in 0 ..< k { weights[s] = logits[chosen[s]]; total += weights[s] }
            if renormalize { for s in 0 ..< k { weights[s] /= total } }
        case .topKSoftmax:
            topK({ logits[$0] }, e, k, into: chosen)
            let maximum = logits[chosen[0]]
            var total: Float = 0
            for s in 0 ..< k { weights[s] = expf(logits[chosen[s]] - maximum); total += weights[s] }
            for s in 0 ..< k { weights[s] /= total }
        case .grouped(let sigmoid, let groups, let kept, let renormalize):
            // logits become scores; the choice adds the correction bias, groups score the sum of
            // their two best, experts of dropped groups choose with 0 (as transformers does).
            if sigmoid {
                for i in 0 ..< e { logits[i] = 1 / (1 + expf(-logits[i])) }
            } else {
                var maximum = -Float.infinity
                for i in 0 ..< e { maximum = max(maximum, logits[i]) }
                var sum: Float = 0
                for i in 0 ..< e { logits[i] = expf(logits[i] - maximum); sum += logits[i] }
                for i in 0 ..< e { logits[i] /= sum }
            }
            let choice: (Int) -> Float = { i in logits[i] + (correctionBias?[i] ?? 0) }
            let size = e / groups
            var groupScores = [Float](repeating: 0, count: groups)
            for g in 0 ..< groups where groups > 1 {
                var first = -Float.infinity, second = -Float.infinity
                for i in g * size ..< (g + 1) * size {
                    let s = choice(i)
                    if s > first { second = first; first = s } else if s > second { second = s }
                }
                groupScores[g] = first + second
            }
            var keptGroups = [Int](repeating: 0, count: kept)
            keptGroups.withUnsafeMutableBufferPointer { topK({ groupScores[$0] }, groups, kept, into: $0.baseAddress.unsafelyUnwrapped) }
            topK({ i in keptGroups.contains(i / size) ? choice(i) : 0 }, e, k, into: chosen)
            var total: Float = 0
            for s in 0 ..< k { weights[s] = logits[chosen[s]]; total += weights[s] }
            if renormalize { for s in 0 ..< k { weights[s] /= total + 1e-20 } }
        }
        if config.routedScale != 1 { for s in 0 ..< k { weights[s] *= config.routedScale } }
        // Ascending expert order fixes each token's summation order.
        for a in 0 ..< k {
            for b in a + 1 ..< k where chosen[b] < chosen[a] {
                chosen.swapAt(a, b, weights)
            }
        }
    }

    /// `output[T, hidden]` = the mixture applied to `input[T, hidden]`.
    func forward(_ input: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>, _ ctx: StepContext) {
        let n = ctx.tokens, w = ctx.workspace
        let e = config.experts, k = config.expertsPerToken, hidden = router.cols
        let logits = w.buffer(.routerLogits, n * (e + k))
        MatMul.multiply(input, tokens: n, by: router, into: logits, pool: ctx.pool)
        // Per token: k chosen ids, then per expert the list of (token, slot) it serves.
        let integers = w.integers(n * k + n * k + e + 1)
        let chosen = integers, members = integers + n * k, starts = integers + 2 * n * k
        let routeWeights = logits + n * e
        for t in 0 ..< n {
            let row = logits + t * e
            if let b = routerBias { Vector.add(b, into: row, e) }
            route(row, chosen: chosen + t * k, weights: routeWeights + t * k)
        }
        // Counting sort of (token, slot) pairs by expert, tokens ascending within an expert.
        for i in 0 ... e { starts[i] = 0 }
        for i in 0 ..< n * k { starts[chosen[i] + 1] += 1 }
        for i in 0 ..< e { starts[i + 1] += starts[i] }
        var fill = [Int](repeating: 0, count: e)
        for i in 0 ..< n * k {
            let expert = chosen[i]
            members[starts[expert] + fill[expert]] = i
            fill[expert] += 1
        }

        output.update(repeating: 0, count: n * hidden)
        let gathered = w.buffer(.expertInput, n * hidden), expertOut = w.buffer(.expertOutput, n * hidden)
        // Experts in ascending order: each token receives its contributions in ascending expert order.
        for expert in 0 ..< e where starts[expert + 1] > starts[expert] {
            let count = starts[expert + 1] - starts[expert]
            for r in 0 ..< count {
                let token = members[starts[expert] + r] / k
                (gathered + r * hidden).update(from: input + token * hidden, count: hidden)
            }
            experts[expert].forward(gathered, tokens: count, into: expertOut, StepContext(tokens: count, positions: [], workspace: w, pool: ctx.pool))
            for r in 0 ..< count {
                let pair = members[starts[expert] + r]
                Vector.addScaled(expertOut + r * hidden, routeWeights[pair], into: output + (pair / k) * hidden, hidden)
            }
        }
        if let shared {
            let sharedOut = w.buffer(.sharedOutput, n * hidden)
            shared.forward(input, tokens: n, into: sharedOut, ctx)
            Vector.add(sharedOut, into: output, n * hidden)
        }
    }

    static func configureHuggingFace(_ c: inout ModelConfig, _ json: HuggingFaceJSON) throws {
        guard let experts = json.optionalInt("num_local_experts") ?? json.optionalInt("num_experts"),
              let perToken = json.optionalInt("num_experts_per_tok")
        else { throw FormatError(json.path, "a mixture-of-experts config needs num_local_experts (or num_experts) and num_experts_per_tok") }
        if c.family == .mixtral {
            c.moe = MoEConfig(experts: experts, expertsPerToken: perToken, expertIntermediateSize: c.intermediateSize,
                              routing: .softmaxTopK(renormalize: true))
        } else {
            var moe = MoEConfig(experts: experts, expertsPerToken: perToken,
                                expertIntermediateSize: json.optionalInt("moe_intermediate_size") ?? c.intermediateSize,
                                routing: .softmaxTopK(renormalize: json.bool("norm_topk_prob") ?? false))
            // Qwen3-MoE: layers listed in mlp_only_layers, and those off the sparse step, are dense.
            let step = max(1, json.optionalInt("decoder_sparse_step") ?? 1)
            let dense = Set((json.object["mlp_only_layers"] as? [NSNumber] ?? []).map(\.intValue))
            moe.denseLayers = (0 ..< c.layerCount).filter { dense.contains($0) || ($0 + 1) % step != 0 }
            c.moe = moe
        }
    }

    /// llama.cpp renormalizes the top-k weights of both families and makes every layer sparse.
    static func configureGGUF(_ c: inout ModelConfig, _ metadata: GGUFMetadata) throws {
        let experts = try metadata.int("expert_count"), perToken = try metadata.int("expert_used_count")
        c.moe = MoEConfig(experts: experts, expertsPerToken: perToken,
                          expertIntermediateSize: metadata.optionalInt("expert_feed_forward_length") ?? c.intermediateSize,
                          routing: .softmaxTopK(renormalize: true))
        if c.intermediateSize == 0 { c.intermediateSize = c.moe?.expertIntermediateSize ?? 0 }
    }
}

extension UnsafeMutablePointer where Pointee == Int {
    /// Swaps entries `a` and `b` here and in the parallel `weights` array.
    fileprivate func swapAt(_ a: Int, _ b: Int, _ weights: UnsafeMutablePointer<Float>) {
        let id = self[a]; self[a] = self[b]; self[b] = id
        let w = weights[a]; weights[a] = weights[b]; weights[b] = w
    }
}
