#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Rotary position embedding: frequencies (with any scaling already applied) and the pairing
/// convention of the checkpoint's Q/K rows.
public struct Rope: Sendable {
    /// How the rotated dimensions pair up.
    public enum Pairing: Sendable {
        /// `(x[i], x[i + d/2])`: Hugging Face "rotate-half" layout (and GGUF NEOX-style models).
        case halves
        /// `(x[2i], x[2i+1])`: llama.cpp's layout for GGUF llama models (Q/K rows permuted on conversion).
        case adjacent
    }

    /// Rotated dimensions per head (`rotaryDim <= headDim`; the rest pass through).
    public let rotaryDim: Int
    public let pairing: Pairing
    /// `rotaryDim / 2` inverse frequencies.
    public let inverseFrequencies: [Float]
    /// Multiplier on cos/sin (1 except for YaRN-style attention scaling).
    public let attentionFactor: Float

    public init(rotaryDim: Int, pairing: Pairing, inverseFrequencies: [Float], attentionFactor: Float = 1) {
        self.rotaryDim = rotaryDim
        self.pairing = pairing
        self.inverseFrequencies = inverseFrequencies
        self.attentionFactor = attentionFactor
    }

    /// The default inverse frequencies `1 / base^(2i/d)`, computed in float32 as transformers does.
    public static func defaultInverseFrequencies(base: Float, rotaryDim: Int) -> [Float] {
        (0 ..< rotaryDim / 2).map { i in 1 / powf(base, Float(2 * i) / Float(rotaryDim)) }
    }

    /// Llama 3 frequency scaling (transformers' `_compute_llama3_parameters`).
    public static func llama3Scaled(
        _ frequencies: [Float], factor: Float, lowFrequencyFactor: Float, highFrequencyFactor: Float,
        originalContext: Float
    ) -> [Float] {
        let lowWavelength = originalContext / lowFrequencyFactor
        let highWavelength = originalContext / highFrequencyFactor
        return frequencies.map { f in
            let wavelength = 2 * Float.pi / f
            if wavelength < highWavelength { return f }
            if wavelength > lowWavelength { return f / factor }
            let smooth = (originalContext / wavelength - lowFrequencyFactor) / (highFrequencyFactor - lowFrequencyFactor)
            return (1 - smooth) * f / factor + smooth * f
        }
    }

    /// YaRN inverse frequencies (transformers' `_compute_yarn_parameters`): dimensions that rotate
    /// more than `betaFast` times over the original context keep their frequency, those that rotate
    /// fewer than `betaSlow` times are divided by `factor`, with a linear ramp between.
    public static func yarnScaled(
        base: Float, rotaryDim: Int, factor: Float, originalContext: Int, betaFast: Float, betaSlow: Float, truncate: Bool
    ) -> [Float] {
        let dim = Double(rotaryDim)
        func correctionDim(_ rotations: Double) -> Double {
            dim * log(Double(originalContext) / (rotations * 2 * Double.pi)) / (2 * log(Double(base)))
        }
        var low = correctionDim(Double(betaFast)), high = correctionDim(Double(betaSlow))
        if truncate {
            low = low.rounded(.down)
            high = high.rounded(.up)
        }
        low = max(low, 0)
        high = min(high, dim - 1)
        if low == high { high += 0.001 }
        let lowF = Float(low), spanF = Float(high - low)
        return (0 ..< rotaryDim / 2).map { i in
            let positionFrequency = powf(base, Float(2 * i) / Float(rotaryDim))
            let extrapolation = 1 / positionFrequency
            let interpolation = 1 / (factor * positionFrequency)
            let ramp = min(max((Float(i) - lowF) / spanF, 0), 1)
            let extrapolationFactor = 1 - ramp
            return interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor
        }
    }

    /// Fills `cos`/`sin` (each `rotaryDim / 2`) for one position.
    @inline(__always)
    public func angles(position: Int, cos: UnsafeMutablePointer<Float>, sin: UnsafeMutablePointer<Float>) {
        let p = Float(position)
        for i in 0 ..< rotaryDim / 2 {
            let angle = p * inverseFrequencies[i]
            cos[i] = Float(Foundation_cos(Double(angle))) * attentionFactor
            sin[i] = Float(Foundation_sin(Double(angle))) * attentionFactor
        }
    }

    /// Rotates `heads` consecutive vectors of `headDim` in place with precomputed `cos`/`sin`.
    @inline(__always)
    public func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) {
        let half = rotaryDim / 2
        for h in 0 ..< heads {
            let v = x + h * headDim
            switch pairing {
            case .halves:
                for i in 0 ..< half {
                    let a = v[i], b = v[i + half]
                    v[i] = a * cos[i] - b * sin[i]
                    v[i + half] = b * cos[i] + a * sin[i]
                }
            case .adjacent:
                for i in 0 ..< half {
                    let a = v[2 * i], b = v[2 * i + 1]
                    v[2 * i] = a * cos[i] - b * sin[i]
                    v[2 * i + 1] = b * cos[i] + a * sin[i]
                }
            }
        }
    }
}

@inline(__always) private func Foundation_cos(_ x: Double) -> Double { cos(x) }
@inline(__always) private func Foundation_sin(_ x: Double) -> Double { sin(x) }
