/// One sequence's key/value history for every layer, float32, `[capacity, kvHeads, headDim]`
/// per layer. (The paged, shared cache of the engine replaces this in batched serving.)
public final class SequenceKVCache: @unchecked Sendable {
    public let layers: Int
    public let capacity: Int
    public let rowSize: Int
    /// Tokens whose K/V are stored.
    public private(set) var count = 0
    let keys: UnsafeMutablePointer<Float>
    let values: UnsafeMutablePointer<Float>

    /// A cache for `capacity` tokens of a model with `layers` layers and `kvHeads * headDim` floats per token.
    public init(layers: Int, capacity: Int, kvHeads: Int, headDim: Int) {
        self.layers = layers
        self.capacity = capacity
        self.rowSize = kvHeads * headDim
        keys = .allocate(capacity: layers * capacity * rowSize)
        values = .allocate(capacity: layers * capacity * rowSize)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    func keys(layer: Int) -> UnsafeMutablePointer<Float> { keys + layer * capacity * rowSize }
    func values(layer: Int) -> UnsafeMutablePointer<Float> { values + layer * capacity * rowSize }

    func advance(by tokens: Int) { count += tokens }

    /// Forgets everything (the buffers are reused).
    public func reset() { count = 0 }
}
