import Formats

/// A weight matrix `[rows, cols]` (rows = output features, cols = input features) in its stored
/// type (float or GGML-quantized), read in place from the memory-mapped model file.
public struct WeightMatrix: @unchecked Sendable {
    public let name: String
    public let type: GGMLType
    public let rows: Int
    public let cols: Int
    public let base: UnsafeRawPointer
    public let rowBytes: Int
    /// Keeps the memory mapping (or an owned buffer) alive.
    let owner: AnyObject

    /// Wraps a 2-D tensor; throws if its type cannot be computed with or the bytes do not fit.
    public init(_ tensor: TensorData) throws {
        guard tensor.type.isSupportedWeightType else {
            throw FormatError(tensor.path, "tensor '\(tensor.name)' has type \(tensor.type), which is not supported for weights")
        }
        guard tensor.shape.count == 2 || (tensor.shape.count > 2 && tensor.shape.dropLast().dropFirst().allSatisfy { $0 == 1 }) else {
            throw FormatError(tensor.path, "tensor '\(tensor.name)' should be a matrix but has shape \(tensor.shape)")
        }
        let rows = tensor.shape.dropLast().reduce(1, *)
        let cols = tensor.shape.last ?? 0
        guard let rowBytes = tensor.type.byteCount(elements: cols), rowBytes * rows == tensor.bytes.count,
              let base = tensor.bytes.baseAddress
        else {
            throw FormatError(tensor.path, "tensor '\(tensor.name)' of type \(tensor.type) and shape \(tensor.shape) has \(tensor.bytes.count) bytes, which does not match")
        }
        self.name = tensor.name
        self.type = tensor.type
        self.rows = rows
        self.cols = cols
        self.base = base
        self.rowBytes = rowBytes
        self.owner = tensor.owner
    }

    /// Pointer to the stored bytes of row `row`.
    @inline(__always)
    public func rowPointer(_ row: Int) -> UnsafeRawPointer { base + row * rowBytes }

    /// Writes row `row` as `cols` floats to `destination`.
    @inline(__always)
    public func dequantizeRow(_ row: Int, into destination: UnsafeMutablePointer<Float>) {
        Dequantize.row(type, from: rowPointer(row), to: destination, count: cols)
    }
}

extension TensorData {
    /// The tensor converted to float32 (for small tensors: norms, biases).
    public func floats() throws -> [Float] {
        guard type.isSupportedWeightType, let base = bytes.baseAddress else {
            throw FormatError(path, "tensor '\(name)' has type \(type), which cannot be read as floats")
        }
        let count = elementCount
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if let out = buffer.baseAddress, count > 0 {
                Dequantize.row(type, from: base, to: out, count: count)
            }
            initialized = count
        }
    }
}
