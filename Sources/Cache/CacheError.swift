/// Why a cache operation was refused. Every case names the values involved so a log line is
/// enough to see what went wrong.
public enum CacheError: Error, Equatable, CustomStringConvertible {
    /// The sequence was never admitted, or was already freed.
    case unknownSequence(SequenceID)
    /// `admit` was called for a sequence that is still live (free it first).
    case sequenceAlreadyAdmitted(SequenceID)
    /// `admit` was called with no prompt tokens: at least one token must be computed.
    case emptyPrompt(SequenceID)
    /// The prompt needs more blocks in a group than that group's whole pool holds.
    case promptTooLong(tokens: Int, group: Int, blocksNeeded: Int, blockCount: Int)
    /// A pool was asked for more blocks than are free (cached free blocks included).
    case outOfBlocks(requested: Int, free: Int)
    /// `commit` named more tokens than the block table has slots for (call `allocateSlots` first).
    case commitBeyondAllocatedSlots(SequenceID, tokens: Int, slots: Int)
    /// `commit` named fewer tokens than are already computed; full blocks may be cached, so a
    /// sequence never rewinds (free and re-admit it instead).
    case commitRewinds(SequenceID, tokens: Int, computed: Int)
    /// A configuration value or argument is out of range.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .unknownSequence(let id):
            return "unknown sequence \(id): it was never admitted or was already freed"
        case .sequenceAlreadyAdmitted(let id):
            return "sequence \(id) is already admitted; free it before admitting it again"
        case .emptyPrompt(let id):
            return "sequence \(id) has an empty prompt; at least one token must be computed"
        case .promptTooLong(let tokens, let group, let needed, let count):
            return "a prompt of \(tokens) tokens needs \(needed) blocks in KV cache group \(group), "
                + "but that group only has \(count) blocks"
        case .outOfBlocks(let requested, let free):
            return "out of KV cache blocks: \(requested) requested, \(free) free"
        case .commitBeyondAllocatedSlots(let id, let tokens, let slots):
            return "sequence \(id): cannot commit \(tokens) tokens, its block table has only \(slots) slots "
                + "(call allocateSlots first)"
        case .commitRewinds(let id, let tokens, let computed):
            return "sequence \(id): cannot commit \(tokens) tokens, \(computed) are already computed "
                + "(a sequence never rewinds; free and re-admit it)"
        case .invalidArgument(let message):
            return "invalid KV cache argument: \(message)"
        }
    }
}
