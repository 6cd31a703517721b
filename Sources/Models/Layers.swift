import Foundation
import Formats
import Kernels

/// Activation buffers for a forward pass, one per role, each grown to the largest step seen and
/// then reused, so steady-state decoding allocates nothing. A slot's contents do not survive a
/// request for a larger size; every user asks for the same size within one step.
final class ForwardWorkspace {
    enum Slot: Int, CaseIterable {
        /// `[T, hidden]` residual stream, normed input, and a block's output.
        case hidden, normed, blockOutput
        /// Attention: projections, attention output.
        case q, k, v, attention
        /// MLP / experts: `[T, intermediate]` gate and up, router logits, gathered rows.
        case gate, up, routerLogits, expertInput, expertOutput, sharedOutput
        /// Latent attention: compressed query, latent K/V, absorbed queries, per-head values.
        case queryDown, latentKV, latentQuery, latentOutput
        /// The second attention output and statistics of an int8 cache's split attention.
        case attentionScratch
    }

    private var buffers: [UnsafeMutablePointer<Float>]
    private var capacities: [Int]
    private var integerBuffer = UnsafeMutablePointer<Int>.allocate(capacity: 1)
    private var integerCapacity = 1

    init() {
        buffers = Slot.allCases.map { _ in .allocate(capacity: 1) }
        capacities = Array(repeating: 1, count: Slot.allCases.count)
    }

    /// `count` floats for `slot` (uninitialized after growth).
    func buffer(_ slot: Slot, _ count: Int) -> UnsafeMutablePointer<Float> {
        let i = slot.rawValue
        if count > capacities[i] {
            buffers[i].deallocate()
            buffers[i] = .allocate(capacity: count)
            capacities[i] = count
        }
        return buffers[i]
    }

    /// Scratch for `LayerCacheView.attend`: `[T, heads, headDim]` plus `4 * T * heads` floats.
    func attentionScratch(tokens: Int, heads: Int, headDim: Int) -> UnsafeMutablePointer<Float> {
        buffer(.attentionScratch, tokens * heads * (headDim + 4))
    }

    /// The cos and sin tables (`[T, rotaryDim / 2]` each) of `rope` at `positions`: computed by the
    /// first layer of a step that asks, then reused by every other layer with the same rotation
    /// (two are kept, for Gemma 3's local and global layers). Each layer had computed its own,
    /// 2 x 32 double-precision cos/sin per token and layer: 0.7% of an int8 serving profile.
    func ropeTables(_ rope: Rope, positions: [Int]) -> (cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) {
        let half = rope.rotaryDim / 2
        if let entry = ropeEntries.first(where: { $0.holds(rope, positions) }) { return (UnsafePointer(entry.cos), UnsafePointer(entry.sin)) }
        let entry: RopeTable
        if ropeEntries.count < 2 {
            entry = RopeTable()
            ropeEntries.append(entry)
        } else {
            // Replace the older entry; the newer one stays first.
            entry = ropeEntries.removeLast()
            ropeEntries.insert(entry, at: 0)
        }
        entry.fill(rope, positions: positions, count: positions.count * half)
        return (UnsafePointer(entry.cos), UnsafePointer(entry.sin))
    }

    private var ropeEntries: [RopeTable] = []

    /// `count` integers of scratch (routing), uninitialized after growth.
    func integers(_ count: Int) -> UnsafeMutablePointer<Int> {
        if count > integerCapacity {
            integerBuffer.deallocate()
            integerBuffer = .allocate(capacity: count)
            integerCapacity = count
        }
        return integerBuffer
    }

    deinit {
        for b in buffers { b.deallocate() }
        integerBuffer.deallocate()
    }
}

/// One rotation's cos/sin tables for a list of positions (`ForwardWorkspace.ropeTables`).
private final class RopeTable {
    private(set) var cos = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    private(set) var sin = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    private var capacity = 1
    private var rope: Rope?
    private var positions: [Int] = []

    func holds(_ rope: Rope, _ positions: [Int]) -> Bool {
        guard let held = self.rope else { return false }
        return held.rotaryDim == rope.rotaryDim && held.attentionFactor == rope.attentionFactor
            && held.inverseFrequencies == rope.inverseFrequencies && self.positions == positions
    }

    func fill(_ rope: Rope, positions: [Int], count: Int) {
        if count > capacity {
            cos.deallocate()
            sin.deallocate()
            cos = .allocate(capacity: count)
            sin = .allocate(capacity: count)
            capacity = count
        }
        let half = rope.rotaryDim / 2
        for (t, position) in positions.enumerated() { rope.angles(position: position, cos: cos + t * half, sin: sin + t * half) }
        self.rope = rope
        self.positions = positions
    }

    deinit {
        cos.deallocate()
        sin.deallocate()
    }
}

/// What every block's forward gets: the step's tokens and positions, the workspace and the pool.
struct StepContext {
    let tokens: Int
    let positions: [Int]
    let workspace: ForwardWorkspace
    let pool: WorkerPool

    /// Runs `work` over rows `0 ..< count` of `width` floats: split between the pool's threads once
    /// there are enough elements to pay for a parallel region (16K; a region costs microseconds),
    /// else in one call on this thread. For row-wise work (norms, residual adds, gated
    /// activations, RoPE), which on one thread left the others waiting: 3-4% of an int8 serving
    /// profile. `work` is a struct the pool takes by address: a closure handed to the pool's
    /// threads cost a heap allocation per region.
    func forRows<Work: RowWork>(_ count: Int, width: Int, _ work: Work) {
        if count > 1 && count * width >= 1 << 14 {
            pool.parallelFor(count, RowsJob(work: work))
        } else if count > 0 {
            work.run(rows: 0 ..< count)
        }
    }
}

/// Row-wise work of a step (`StepContext.forRows`): each row's arithmetic is the same whichever
/// thread runs it.
protocol RowWork {
    func run(rows: Range<Int>)
}

private struct RowsJob<Work: RowWork>: RangeJob {
    let work: Work

    func run(range: Range<Int>, thread: Int) { work.run(rows: range) }
}

/// Between two blocks, for rows of `hidden` floats: `residual += postNorm(blockOutput)` (when
/// `adds`), then `normed = norm(residual)` (when `norm` is given: the next block's input).
struct ResidualRows: RowWork {
    let residual, blockOutput, normed: UnsafeMutablePointer<Float>
    let hidden: Int
    let eps: Float
    let adds: Bool
    let postNorm: [Float]?
    let norm: [Float]?

    func run(rows: Range<Int>) {
        let o = rows.lowerBound * hidden
        if adds {
            if let postNorm { Norm.rms(blockOutput + o, weight: postNorm, eps: eps, into: blockOutput + o, rows: rows.count, n: hidden) }
            Vector.add(blockOutput + o, into: residual + o, rows.count * hidden)
        }
        if let norm { Norm.rms(residual + o, weight: norm, eps: eps, into: normed + o, rows: rows.count, n: hidden) }
    }
}

/// The gated activation of rows of `width` gate and up values, into the gate buffer.
private struct ActivationRows: RowWork {
    let gate, up: UnsafeMutablePointer<Float>
    let width: Int
    let activation: GatedActivation

    func run(rows: Range<Int>) {
        let start = rows.lowerBound * width, count = rows.count * width
        let g = gate + start, u = up + start
        switch activation {
        case .silu: Activation.swiglu(gate: g, up: u, into: g, count)
        case .geluTanh: Activation.geluTanhGated(gate: g, up: u, into: g, count)
        case .clampedSwiglu(let limit, let alpha): Activation.clampedSwiglu(gate: g, up: u, into: g, count, limit: limit, alpha: alpha)
        }
    }
}

/// A gated MLP: `down(act(gate(x)) * up(x))`, with optional biases (GPT-OSS experts).
struct GatedMLP {
    let gate, up, down: WeightMatrix
    let gateBias, upBias, downBias: [Float]?
    let activation: GatedActivation

    init(gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix, activation: GatedActivation,
         gateBias: [Float]? = nil, upBias: [Float]? = nil, downBias: [Float]? = nil) {
        self.gate = gate
        self.up = up
        self.down = down
        self.activation = activation
        self.gateBias = gateBias
        self.upBias = upBias
        self.downBias = downBias
    }

    /// The dense MLP of layer `i` (`ffn_gate/up/down`, or the shared experts with `suffix` `_shexp`).
    init(_ names: WeightNames, layer i: Int, hidden: Int, intermediate: Int, activation: GatedActivation, suffix: String = "") throws {
        self.init(
            gate: try names.matrix("ffn_gate\(suffix).weight", layer: i, rows: intermediate, cols: hidden),
            up: try names.matrix("ffn_up\(suffix).weight", layer: i, rows: intermediate, cols: hidden),
            down: try names.matrix("ffn_down\(suffix).weight", layer: i, rows: hidden, cols: intermediate),
            activation: activation)
    }

    var weights: [WeightMatrix] { [gate, up, down] }

    /// `output[T, hidden] = mlp(input[T, hidden])` for `tokens` rows.
    func forward(_ input: UnsafePointer<Float>, tokens n: Int, into output: UnsafeMutablePointer<Float>, _ ctx: StepContext) {
        let width = gate.rows
        let g = ctx.workspace.buffer(.gate, n * width), u = ctx.workspace.buffer(.up, n * width)
        MatMul.multiply(input, tokens: n, fused: (gate, g), (up, u), pool: ctx.pool)
        if let b = gateBias { for t in 0 ..< n { Vector.add(b, into: g + t * width, width) } }
        if let b = upBias { for t in 0 ..< n { Vector.add(b, into: u + t * width, width) } }
        ctx.forRows(n, width: width, ActivationRows(gate: g, up: u, width: width, activation: activation))
        MatMul.multiply(g, tokens: n, by: down, into: output, pool: ctx.pool)
        if let b = downBias { for t in 0 ..< n { Vector.add(b, into: output + t * down.rows, down.rows) } }
    }
}

/// Multi-head attention with grouped K/V heads over the paged cache: optional Q/K/V/O biases,
/// per-head qk-norm, RoPE, and the layer's kernel options (scale, sliding window, soft-cap, sinks).
struct GroupedQueryAttention {
    let q, k, v, o: WeightMatrix
    let qBias, kBias, vBias, oBias: [Float]?
    let qNorm, kNorm: [Float]?
    let rope: Rope
    let options: AttentionOptions
    let heads, kvHeads, headDim: Int
    let normEps: Float

    init(_ names: WeightNames, layer i: Int, config c: ModelConfig, rope: Rope) throws {
        let qDim = c.headCount * c.headDim, kvDim = c.kvHeadCount * c.headDim
        q = try names.matrix("attn_q.weight", layer: i, rows: qDim, cols: c.hiddenSize)
        k = try names.matrix("attn_k.weight", layer: i, rows: kvDim, cols: c.hiddenSize)
        v = try names.matrix("attn_v.weight", layer: i, rows: kvDim, cols: c.hiddenSize)
        o = try names.matrix("attn_output.weight", layer: i, rows: c.hiddenSize, cols: qDim)
        if c.attentionBias {
            qBias = try names.vector("attn_q.bias", layer: i, count: qDim)
            kBias = try names.vector("attn_k.bias", layer: i, count: kvDim)
            vBias = try names.vector("attn_v.bias", layer: i, count: kvDim)
        } else {
            qBias = nil; kBias = nil; vBias = nil
        }
        oBias = c.outputProjectionBias ? try names.vector("attn_output.bias", layer: i, count: c.hiddenSize) : nil
        if c.qkNorm {
            qNorm = try names.norm("attn_q_norm.weight", layer: i, count: c.headDim)
            kNorm = try names.norm("attn_k_norm.weight", layer: i, count: c.headDim)
        } else {
            qNorm = nil; kNorm = nil
        }
        self.rope = rope
        options = AttentionOptions(
            scale: c.attentionScale ?? 1 / Float(c.headDim).squareRoot(),
            slidingWindow: c.isSliding(layer: i) ? c.slidingWindow : nil,
            logitSoftCap: c.attentionSoftCap,
            sinks: c.attentionSinks ? try names.vector("attn_sinks.weight", layer: i, count: c.headCount) : nil)
        heads = c.headCount
        kvHeads = c.kvHeadCount
        headDim = c.headDim
        normEps = c.rmsNormEps
    }

    var weights: [WeightMatrix] { [q, k, v, o] }

    /// Per token: biases, qk-norm and RoPE of the projected rows (`[T, heads * headDim]` and
    /// `[T, kvHeads * headDim]`), with the step's angle tables (`[T, rotaryDim / 2]`).
    private struct ProjectionRows: RowWork {
        let attention: GroupedQueryAttention
        let q, k, v: UnsafeMutablePointer<Float>
        let cos, sin: UnsafePointer<Float>

        func run(rows: Range<Int>) {
            let a = attention, qDim = a.heads * a.headDim, kvDim = a.kvHeads * a.headDim, half = a.rope.rotaryDim / 2
            for t in rows {
                let qRow = q + t * qDim, kRow = k + t * kvDim, vRow = v + t * kvDim
                if let b = a.qBias { Vector.add(b, into: qRow, qDim) }
                if let b = a.kBias { Vector.add(b, into: kRow, kvDim) }
                if let b = a.vBias { Vector.add(b, into: vRow, kvDim) }
                if let qn = a.qNorm, let kn = a.kNorm {
                    Norm.rms(qRow, weight: qn, eps: a.normEps, into: qRow, rows: a.heads, n: a.headDim)
                    Norm.rms(kRow, weight: kn, eps: a.normEps, into: kRow, rows: a.kvHeads, n: a.headDim)
                }
                a.rope.apply(qRow, heads: a.heads, headDim: a.headDim, cos: cos + t * half, sin: sin + t * half)
                a.rope.apply(kRow, heads: a.kvHeads, headDim: a.headDim, cos: cos + t * half, sin: sin + t * half)
            }
        }
    }

    /// `output[T, hidden]` = attention of `input[T, hidden]` (normed) over the cache layer.
    func forward(_ input: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>,
                 cache: LayerCacheView, _ ctx: StepContext) throws {
        let n = ctx.tokens, w = ctx.workspace
        let qDim = heads * headDim, kvDim = kvHeads * headDim
        let qs = w.buffer(.q, n * qDim), ks = w.buffer(.k, n * kvDim), vs = w.buffer(.v, n * kvDim)
        let angles = w.ropeTables(rope, positions: ctx.positions)
        MatMul.multiply(input, tokens: n, fused: (q, qs), (k, ks), (v, vs), pool: ctx.pool)
        ctx.forRows(n, width: qDim + 2 * kvDim, ProjectionRows(attention: self, q: qs, k: ks, v: vs, cos: angles.cos, sin: angles.sin))
        let attention = w.buffer(.attention, n * qDim)
        try cache.attend(q: qs, keys: ks, values: vs, out: attention, tokens: n, qHeads: heads, options: options,
                         scratch: w.attentionScratch(tokens: n, heads: heads, headDim: headDim), pool: ctx.pool)
        MatMul.multiply(attention, tokens: n, by: o, into: output, pool: ctx.pool)
        if let b = oBias { for t in 0 ..< n { Vector.add(b, into: output + t * o.rows, o.rows) } }
    }
}
