/// Identifies one sequence (request) in the cache; the engine picks the values.
public struct SequenceID: Hashable, Sendable, Comparable, ExpressibleByIntegerLiteral, CustomStringConvertible {
    public let rawValue: Int
    public init(_ rawValue: Int) { self.rawValue = rawValue }
    public init(integerLiteral value: Int) { rawValue = value }
    public static func < (lhs: SequenceID, rhs: SequenceID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "#\(rawValue)" }
}

/// One KV cache group: layers that share an attention pattern and therefore one block pool and
/// one block table per sequence. Full-attention layers form one group; sliding-window layers with
/// window W form another, where blocks that left the window are given back.
public struct CacheGroupSpec: Hashable, Sendable {
    /// Model layer indices stored in this group's blocks (the K/V storage has one slab per layer).
    public var layers: [Int]
    /// Window W of sliding-window attention (a query at i sees keys j with i - W < j <= i), or nil
    /// for full attention.
    public var slidingWindow: Int?
    /// Blocks in this group's pool.
    public var blockCount: Int

    /// A group with an explicit block budget.
    public init(layers: [Int], slidingWindow: Int? = nil, blockCount: Int) {
        self.layers = layers
        self.slidingWindow = slidingWindow
        self.blockCount = blockCount
    }

    /// A group given a memory budget: as many blocks as `byteBudget / bytesPerBlock`.
    public init(layers: [Int], slidingWindow: Int? = nil, byteBudget: Int, bytesPerBlock: Int) {
        self.init(layers: layers, slidingWindow: slidingWindow,
                  blockCount: bytesPerBlock > 0 ? byteBudget / bytesPerBlock : 0)
    }

    /// Bytes one block takes across a group's layers: K and V, each `[blockSize, kvHeads, headDim]`
    /// per layer.
    public static func bytesPerBlock(layerCount: Int, blockSize: Int, kvHeads: Int, headDim: Int,
                                     bytesPerElement: Int) -> Int {
        2 * layerCount * blockSize * kvHeads * headDim * bytesPerElement
    }
}
