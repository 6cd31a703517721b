import Cache
import Models

/// Limits of one engine step.
public struct SchedulerOptions: Sendable, Equatable {
    /// Most sequences in one step.
    public var maxNumSeqs: Int
    /// Most tokens (prefill chunks plus decodes) in one step.
    public var maxNumBatchedTokens: Int

    public init(maxNumSeqs: Int = 64, maxNumBatchedTokens: Int = 512) {
        self.maxNumSeqs = maxNumSeqs
        self.maxNumBatchedTokens = maxNumBatchedTokens
    }
}

/// A request's state inside the engine: its tokens so far, its sampler and its output progress.
final class ScheduledSequence {
    let id: SequenceID
    let priority: Int
    let arrival: Int
    /// Prompt tokens (as submitted).
    let promptCount: Int
    /// Prompt plus generated tokens.
    var tokens: [Int]
    var generated: Int { tokens.count - promptCount }
    /// Whether the runner currently holds it (admitted, possibly mid-prefill).
    var isAdmitted = false

    init(id: SequenceID, prompt: [Int], priority: Int, arrival: Int) {
        self.id = id
        self.priority = priority
        self.arrival = arrival
        promptCount = prompt.count
        tokens = prompt
    }
}

/// One step's plan: which sequences compute how many tokens, and which want logits.
struct StepPlan {
    var items: [(sequence: ScheduledSequence, count: Int, wantsLogits: Bool)] = []
    var preempted: [ScheduledSequence] = []
}

/// Continuous batching (vLLM's scheduler, simplified): each step first gives every running sequence
/// its next tokens (decodes, and continuing chunked prefills), then admits waiting requests in
/// priority/arrival order while the token budget, the sequence cap and the KV pool allow, splitting
/// prompts that do not fit into chunks. When the pool runs out, the most recently admitted running
/// sequence is preempted: its blocks are freed and it waits to be recomputed (prefix cache hits make
/// that cheap), resuming exactly where it was.
final class Scheduler {
    let runner: ModelRunner
    let options: SchedulerOptions
    private(set) var waiting: [ScheduledSequence] = []
    private(set) var running: [ScheduledSequence] = []
    /// Sequences preempted over the engine's life.
    private(set) var preemptions = 0

    init(runner: ModelRunner, options: SchedulerOptions) {
        self.runner = runner
        self.options = options
    }

    var hasWork: Bool { !waiting.isEmpty || !running.isEmpty }

    func add(_ sequence: ScheduledSequence) {
        let index = waiting.firstIndex { Self.runsBefore(sequence, $0) } ?? waiting.count
        waiting.insert(sequence, at: index)
    }

    /// Higher priority first, then first come first served.
    static func runsBefore(_ a: ScheduledSequence, _ b: ScheduledSequence) -> Bool {
        a.priority != b.priority ? a.priority > b.priority : a.arrival < b.arrival
    }

    /// Removes a sequence wherever it is, freeing its blocks.
    func remove(_ sequence: ScheduledSequence) throws {
        waiting.removeAll { $0 === sequence }
        running.removeAll { $0 === sequence }
        if sequence.isAdmitted {
            try runner.free(sequence.id)
            sequence.isAdmitted = false
        }
    }

    /// Plans the next step.
    func schedule() throws -> StepPlan {
        var plan = StepPlan()
        var budget = options.maxNumBatchedTokens
        var scheduled: [ScheduledSequence] = []

        // Running sequences first, oldest first.
        var index = 0
        while index < running.count, budget > 0 {
            let sequence = running[index]
            let pending = try runner.pendingTokens(sequence.id)
            let count = min(pending, budget)
            var fits = try runner.reserve(sequence.id, count: count)
            while !fits {
                // Preempt the newest running sequence not yet scheduled (possibly this one).
                guard let victim = running.last(where: { candidate in !scheduled.contains { $0 === candidate } }) else { break }
                try preempt(victim)
                plan.preempted.append(victim)
                if victim === sequence { break }
                fits = try runner.reserve(sequence.id, count: count)
            }
            if running.contains(where: { $0 === sequence }) {
                if !fits { break }
                plan.items.append((sequence, count, count == pending))
                scheduled.append(sequence)
                budget -= count
                index += 1
            }
        }

        // Then waiting requests, while room remains and nothing had to be preempted.
        while plan.preempted.isEmpty, budget > 0, running.count < options.maxNumSeqs, let sequence = waiting.first {
            let cached = try runner.admit(sequence.id, prompt: sequence.tokens)
            let pending = sequence.tokens.count - cached
            let count = min(pending, budget)
            guard try runner.reserve(sequence.id, count: count) else {
                try runner.free(sequence.id)
                break
            }
            sequence.isAdmitted = true
            waiting.removeFirst()
            running.append(sequence)
            plan.items.append((sequence, count, count == pending))
            budget -= count
        }
        return plan
    }

    private func preempt(_ sequence: ScheduledSequence) throws {
        try runner.free(sequence.id)
        sequence.isAdmitted = false
        running.removeAll { $0 === sequence }
        // Preempted requests go back to the front of their priority class.
        let index = waiting.firstIndex { $0.priority < sequence.priority || ($0.priority == sequence.priority && $0.arrival > sequence.arrival) } ?? waiting.count
        waiting.insert(sequence, at: index)
        preemptions += 1
    }

    /// Marks a running sequence finished and frees its blocks.
    func finish(_ sequence: ScheduledSequence) throws {
        try remove(sequence)
    }
}
