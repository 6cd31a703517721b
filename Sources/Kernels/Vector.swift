#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Small vector primitives over float32 buffers used by every kernel.
public enum Vector {
    @inline(__always)
    static func load16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
    }

    @inline(__always)
    static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    @inline(__always)
    static func store16(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
    }

    /// `sum_i a[i] * b[i]`.
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc0 = SIMD16<Float>(), acc1 = SIMD16<Float>()
        var i = 0
        while i + 32 <= n {
            acc0 += load16(a + i) * load16(b + i)
            acc1 += load16(a + i + 16) * load16(b + i + 16)
            i += 32
        }
        if i + 16 <= n {
            acc0 += load16(a + i) * load16(b + i)
            i += 16
        }
        var sum = (acc0 + acc1).sum()
        while i < n {
            sum += a[i] * b[i]
            i += 1
        }
        return sum
    }

    /// `y[i] += alpha * x[i]`.
    @inline(__always)
    public static func addScaled(_ x: UnsafePointer<Float>, _ alpha: Float, into y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        let a = SIMD16<Float>(repeating: alpha)
        while i + 16 <= n {
            store16(load16(y + i) + a * load16(x + i), y + i)
            i += 16
        }
        while i < n {
            y[i] += alpha * x[i]
            i += 1
        }
    }

    /// `y[i] += x[i]`.
    @inline(__always)
    public static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i + 16 <= n {
            store16(load16(y + i) + load16(x + i), y + i)
            i += 16
        }
        while i < n {
            y[i] += x[i]
            i += 1
        }
    }

    /// `x[i] *= alpha`.
    @inline(__always)
    public static func scale(_ x: UnsafeMutablePointer<Float>, by alpha: Float, _ n: Int) {
        for i in 0 ..< n { x[i] *= alpha }
    }
}

/// Normalization layers.
public enum Norm {
    /// RMSNorm of each of `rows` rows of length `n`: `y = x / sqrt(mean(x^2) + eps) * weight`
    /// (as transformers computes it in float32). `input` and `output` may be the same buffer.
    public static func rms(
        _ input: UnsafePointer<Float>, weight: UnsafePointer<Float>, eps: Float,
        into output: UnsafeMutablePointer<Float>, rows: Int, n: Int
    ) {
        for r in 0 ..< rows {
            let x = input + r * n
            let y = output + r * n
            let meanSquare = Vector.dot(x, x, n) / Float(n)
            let inverse = 1 / (meanSquare + eps).squareRoot()
            for i in 0 ..< n { y[i] = weight[i] * (x[i] * inverse) }
        }
    }
}

/// Activations.
public enum Activation {
    /// SwiGLU: `out[i] = silu(gate[i]) * up[i]`, with `silu(x) = x / (1 + exp(-x))`.
    /// Sixteen lanes at a time with the attention kernel's `exp16` (within an ulp or two of `expf`).
    public static func swiglu(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i + 16 <= n {
            let g = Vector.load16(gate + i)
            Vector.store16(g / (1 + exp16(-g)) * Vector.load16(up + i), out + i)
            i += 16
        }
        if i < n {
            // The tail goes through the same vector formula, so an element's result never depends
            // on where it falls in the buffer (batch invariance).
            var g = SIMD16<Float>(), u = SIMD16<Float>()
            for lane in 0 ..< n - i {
                g[lane] = gate[i + lane]
                u[lane] = up[i + lane]
            }
            let y = g / (1 + exp16(-g)) * u
            for lane in 0 ..< n - i { out[i + lane] = y[lane] }
        }
    }

    /// GeGLU with the tanh approximation of GELU (PyTorch `gelu(approximate="tanh")`, Gemma):
    /// `out[i] = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) * up[i]`.
    public static func geluTanhGated(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, _ n: Int) {
        let c: Float = 0.7978845608028654
        for i in 0 ..< n {
            let g = gate[i]
            out[i] = 0.5 * g * (1 + tanhf(c * (g + 0.044715 * g * g * g))) * up[i]
        }
    }

    /// GPT-OSS's clamped SwiGLU: `g = min(gate, limit)`, `u = clamp(up, -limit, limit)`,
    /// `out = (u + 1) * g * sigmoid(alpha * g)`.
    public static func clampedSwiglu(
        gate: UnsafePointer<Float>, up: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, _ n: Int,
        limit: Float, alpha: Float
    ) {
        for i in 0 ..< n {
            let g = min(gate[i], limit)
            let u = max(-limit, min(up[i], limit))
            out[i] = (u + 1) * (g / (1 + expf(-alpha * g)))
        }
    }

    /// Soft-capping `x = cap * tanh(x / cap)` in place (Gemma's final logits).
    public static func softCap(_ x: UnsafeMutablePointer<Float>, cap: Float, _ n: Int) {
        for i in 0 ..< n { x[i] = cap * tanhf(x[i] / cap) }
    }
}

/// The vector arithmetic of token sampling (`Engine.Sampler`): a draw over the whole vocabulary
/// needs every token's unnormalized probability twice (for the total, then for the pick), and
/// scalar `expf` over a 49k vocabulary took ~0.3 ms per token on a 2-core Zen 1.
public enum SamplingMath {
    /// Sixteen unnormalized probabilities: lane j is `exp(-(maxLogit - x[j]) * inverseTemperature)`
    /// (the attention kernels' `exp16`, within an ulp or two of `expf`) for the `count` (1...16)
    /// logits at `x`; lanes from `count` on, NaN weights and weights below `minimum` give 0. The
    /// top token (x = maxLogit) weighs exactly 1 at any normal temperature.
    public static func weights16(_ x: UnsafePointer<Float>, count: Int, maxLogit: Float, inverseTemperature: Float,
                                 minimum: Float = 0) -> SIMD16<Float> {
        var logits = SIMD16<Float>(repeating: -.infinity)
        if count >= 16 {
            logits = Vector.load16(x)
        } else {
            for lane in 0 ..< count { logits[lane] = x[lane] }
        }
        let scaled = (SIMD16(repeating: maxLogit) - logits) * inverseTemperature
        // NaN weights (NaN logits, or 0 * inf at a subnormal temperature) differ from themselves.
        let w = exp16(-scaled)
        return w.replacing(with: 0, where: w .!= w).replacing(with: 0, where: w .< minimum)
    }

    /// The sum of the sixteen lanes as one fixed tree, the same for every call.
    public static func sum16(_ v: SIMD16<Float>) -> Float { treeSum(v) }

    /// Index of the largest of the `count` values at `x`: the first one on ties, NaN never
    /// counted, 0 when every value is -inf or NaN (what a scalar scan keeping the first strictly
    /// larger value gives). Sixteen lanes at a time in four independent running maxima (a greedy
    /// step scans the whole vocabulary per sequence on the engine thread: ~20 µs scalar for
    /// 49k logits), then the first index holding the maximum.
    public static func argmax(_ x: UnsafePointer<Float>, count: Int) -> Int {
        let none = SIMD16<Float>(repeating: -.infinity)
        var m0 = none, m1 = none, m2 = none, m3 = none
        var i = 0
        // A NaN compares false, so it never replaces a lane's maximum.
        while i + 64 <= count {
            let v0 = Vector.load16(x + i), v1 = Vector.load16(x + i + 16)
            let v2 = Vector.load16(x + i + 32), v3 = Vector.load16(x + i + 48)
            m0.replace(with: v0, where: v0 .> m0)
            m1.replace(with: v1, where: v1 .> m1)
            m2.replace(with: v2, where: v2 .> m2)
            m3.replace(with: v3, where: v3 .> m3)
            i += 64
        }
        while i + 16 <= count {
            let v = Vector.load16(x + i)
            m0.replace(with: v, where: v .> m0)
            i += 16
        }
        m0.replace(with: m1, where: m1 .> m0)
        m2.replace(with: m3, where: m3 .> m2)
        m0.replace(with: m2, where: m2 .> m0)
        var maximum = m0.max()
        while i < count {
            if x[i] > maximum { maximum = x[i] }
            i += 1
        }
        guard maximum > -.infinity else { return 0 }
        var j = 0
        while j + 16 <= count {
            let equal = Vector.load16(x + j) .== maximum
            if any(equal) {
                for lane in 0 ..< 16 where equal[lane] { return j + lane }
            }
            j += 16
        }
        while j < count {
            if x[j] == maximum { return j }
            j += 1
        }
        return 0
    }
}
