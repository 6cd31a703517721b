import Formats

/// Dense products of float32 activations with weight matrices of any stored type.
public enum MatMul {
    /// Rows of the weight matrix decoded together; each activation row is read once per tile.
    static let rowTile = 4

    /// `output[t, r] = sum_c input[t, c] * weight[r, c]` for `tokens` rows of input
    /// (`input: [tokens, weight.cols]`, `output: [tokens, outputStride]`, written at column offset 0).
    /// Weight rows are split between the pool's threads; each tile of rows is decoded to float32
    /// once and reused for every token, so prefill costs one decode of the weights per step.
    public static func multiply(
        _ input: UnsafePointer<Float>, tokens: Int,
        by weight: WeightMatrix,
        into output: UnsafeMutablePointer<Float>, outputStride: Int? = nil,
        pool: WorkerPool
    ) {
        let cols = weight.cols
        let stride = outputStride ?? weight.rows
        let tiles = (weight.rows + rowTile - 1) / rowTile
        let isFloat = weight.type == .f32
        pool.parallelFor(tiles) { tileRange, threadIndex in
            let decoded = isFloat ? nil : pool.scratch(thread: threadIndex, count: rowTile * cols)
            for tile in tileRange {
                let firstRow = tile * rowTile
                let rowCount = min(rowTile, weight.rows - firstRow)
                let rows: UnsafePointer<Float>
                if let decoded {
                    for r in 0 ..< rowCount {
                        weight.dequantizeRow(firstRow + r, into: decoded + r * cols)
                    }
                    rows = UnsafePointer(decoded)
                } else {
                    rows = weight.base.assumingMemoryBound(to: Float.self) + firstRow * cols
                }
                for t in 0 ..< tokens {
                    let x = input + t * cols
                    let y = output + t * stride + firstRow
                    if rowCount == rowTile {
                        dot4(x, rows, cols, y)
                    } else {
                        for r in 0 ..< rowCount {
                            y[r] = Vector.dot(x, rows + r * cols, cols)
                        }
                    }
                }
            }
        }
    }

    /// Four dot products of `x` with four consecutive rows (stride `n`), written to `y[0..<4]`.
    @inline(__always)
    static func dot4(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
        let w0 = w, w1 = w + n, w2 = w + 2 * n, w3 = w + 3 * n
        var i = 0
        while i + 16 <= n {
            let xv = Vector.load16(x + i)
            a0 += xv * Vector.load16(w0 + i)
            a1 += xv * Vector.load16(w1 + i)
            a2 += xv * Vector.load16(w2 + i)
            a3 += xv * Vector.load16(w3 + i)
            i += 16
        }
        var s0 = a0.sum(), s1 = a1.sum(), s2 = a2.sum(), s3 = a3.sum()
        while i < n {
            s0 += x[i] * w0[i]
            s1 += x[i] * w1[i]
            s2 += x[i] * w2[i]
            s3 += x[i] * w3[i]
            i += 1
        }
        y[0] = s0
        y[1] = s1
        y[2] = s2
        y[3] = s3
    }
}
