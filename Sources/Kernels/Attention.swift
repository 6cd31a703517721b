#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Causal multi-head attention with grouped K/V heads (GQA/MQA) over one sequence's
/// contiguous K/V history.
public enum Attention {
    /// For each of `tokens` query rows at positions `start ..< start + tokens`:
    /// `out[t, h] = softmax(scale * q[t, h] . k[j, g]) v[j, g]` over `j <= start + t`,
    /// where `g = h / (qHeads / kvHeads)`.
    /// Shapes: `q, out: [tokens, qHeads, headDim]`, `keys, values: [start + tokens, kvHeads, headDim]`.
    /// Uses an online (running max) softmax, so no score matrix is materialized.
    public static func causal(
        q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
        out: UnsafeMutablePointer<Float>,
        tokens: Int, start: Int, qHeads: Int, kvHeads: Int, headDim: Int, scale: Float,
        pool: WorkerPool
    ) {
        let group = qHeads / kvHeads
        let kvStride = kvHeads * headDim
        pool.parallelFor(tokens * qHeads) { range, _ in
            for job in range {
                let t = job / qHeads, h = job % qHeads
                let g = h / group
                let qv = q + (t * qHeads + h) * headDim
                let o = out + (t * qHeads + h) * headDim
                for i in 0 ..< headDim { o[i] = 0 }
                var runningMax = -Float.infinity
                var denominator: Float = 0
                for j in 0 ... (start + t) {
                    let s = Vector.dot(qv, keys + j * kvStride + g * headDim, headDim) * scale
                    if s > runningMax {
                        let correction = expf(runningMax - s)
                        denominator *= correction
                        Vector.scale(o, by: correction, headDim)
                        runningMax = s
                    }
                    let p = expf(s - runningMax)
                    denominator += p
                    Vector.addScaled(values + j * kvStride + g * headDim, p, into: o, headDim)
                }
                Vector.scale(o, by: 1 / denominator, headDim)
            }
        }
    }
}
