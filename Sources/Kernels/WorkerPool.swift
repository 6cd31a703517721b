#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A persistent pool of worker threads for the numeric kernels. `run` hands one closure to every
/// thread (the caller's thread takes index 0) and returns when all are done. Workers poll briefly
/// before sleeping, so the ~10 parallel regions per layer of a decode step cost microseconds,
/// not thread wake-ups.
public final class WorkerPool: @unchecked Sendable {
    /// Number of threads taking part in each `run`, the calling thread included.
    public let threadCount: Int
    private let shared: SharedState
    private var workerThreads: [pthread_t] = []
    /// Serializes callers: one parallel region at a time.
    private var callerLock = pthread_mutex_t()
    /// Per-thread scratch buffers, grown on demand (never per token once warm): floats for the
    /// kernels, bytes for int8 activations, so one region may use both.
    private let floatScratch: ScratchBuffers
    private let byteBuffers: ScratchBuffers

    /// A pool of `threads` threads (default: every core this process may use).
    public init(threads: Int = WorkerPool.availableCores) {
        threadCount = max(1, threads)
        shared = SharedState()
        pthread_mutex_init(&callerLock, nil)
        floatScratch = ScratchBuffers(threads: threadCount)
        byteBuffers = ScratchBuffers(threads: threadCount)
        for index in 1 ..< threadCount {
            let context = Unmanaged.passRetained(WorkerContext(shared: shared, index: index)).toOpaque()
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { raw in
                guard let raw else { return nil }
                let context = Unmanaged<WorkerContext>.fromOpaque(raw).takeRetainedValue()
                context.shared.workerLoop(index: context.index)
                return nil
            }, context)
            if rc == 0 {
                workerThreads.append(thread)
            } else {
                Unmanaged<WorkerContext>.fromOpaque(context).release()
            }
        }
        shared.workerCount = workerThreads.count
    }

    deinit {
        shared.stop()
        for thread in workerThreads { pthread_join(thread, nil) }
        pthread_mutex_destroy(&callerLock)
    }

    /// The number of cores this process may run on.
    public static var availableCores: Int {
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// Runs `body(threadIndex)` once on each of the pool's threads and waits for all of them.
    /// Callers on different threads take turns; `body` must not call `run` itself.
    public func run(_ body: (Int) -> Void) {
        holdingCallerLock {
            if workerThreads.isEmpty {
                body(0)
                return
            }
            withoutActuallyEscaping(body) { escaping in
                shared.dispatch(escaping)
            }
        }
    }

    /// Runs `job.run(thread:)` once on each of the pool's threads and waits for all of them, like
    /// `run(_:)` but without a closure: the job is passed by address, so a parallel region
    /// allocates nothing (the hot kernels use this; a closure handed to other threads is boxed).
    public func run<Job: ParallelJob>(_ job: Job) {
        holdingCallerLock {
            if workerThreads.isEmpty {
                job.run(thread: 0)
                return
            }
            withUnsafePointer(to: job) { pointer in
                shared.dispatch(context: UnsafeRawPointer(pointer), type: Job.self)
            }
        }
    }

    /// Runs `body` holding the caller lock. Every region, and every part run on the caller's
    /// thread alone, goes through here: thread 0's scratch is then never in use by two callers
    /// at once (the tests share one pool between parallel tests).
    @inline(__always)
    private func holdingCallerLock(_ body: () -> Void) {
        pthread_mutex_lock(&callerLock)
        defer { pthread_mutex_unlock(&callerLock) }
        body()
    }

    /// Splits `0..<count` into one contiguous range per thread and runs `job.run(range:thread:)`
    /// on each non-empty one, allocating nothing.
    public func parallelFor<Job: RangeJob>(_ count: Int, _ job: Job) {
        if count <= 0 { return }
        let parts = min(threadCount, count)
        if parts == 1 {
            holdingCallerLock { job.run(range: 0 ..< count, thread: 0) }
            return
        }
        run(RangeSplit(job: job, count: count, parts: parts))
    }

    /// Splits `0..<count` into one contiguous range per thread and runs `body(range, threadIndex)`
    /// on each non-empty one.
    public func parallelFor(_ count: Int, _ body: (Range<Int>, Int) -> Void) {
        if count <= 0 { return }
        let parts = min(threadCount, count)
        if parts == 1 {
            holdingCallerLock { body(0 ..< count, 0) }
            return
        }
        run { index in
            guard index < parts else { return }
            let lower = count * index / parts
            let upper = count * (index + 1) / parts
            if lower < upper { body(lower ..< upper, index) }
        }
    }

    /// A second per-thread scratch buffer, of at least `count` bytes (int8 activations), so a
    /// region may use both.
    public func byteScratch(thread index: Int, count: Int) -> UnsafeMutableRawPointer {
        byteBuffers.buffer(thread: index, bytes: count)
    }

    /// A scratch buffer of at least `count` floats owned by thread `index`, for use inside `run`.
    public func scratch(thread index: Int, count: Int) -> UnsafeMutablePointer<Float> {
        floatScratch.buffer(thread: index, bytes: count * MemoryLayout<Float>.stride).assumingMemoryBound(to: Float.self)
    }
}

/// Work for every thread of a `WorkerPool.run`: `run(thread:)` is called once per thread index.
/// One growable, 64-byte aligned buffer per thread; each is touched only by its own thread.
private final class ScratchBuffers {
    private var buffers: [UnsafeMutableRawPointer?]
    private var sizes: [Int]

    init(threads: Int) {
        buffers = Array(repeating: nil, count: threads)
        sizes = Array(repeating: 0, count: threads)
    }

    deinit { for buffer in buffers { buffer?.deallocate() } }

    /// Thread `index`'s buffer, reallocated (contents dropped) when it holds fewer than `bytes`.
    func buffer(thread index: Int, bytes: Int) -> UnsafeMutableRawPointer {
        if sizes[index] < bytes {
            buffers[index]?.deallocate()
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
            buffers[index] = buffer
            sizes[index] = bytes
            return buffer
        }
        return buffers[index].unsafelyUnwrapped
    }
}

public protocol ParallelJob {
    func run(thread: Int)
}

extension ParallelJob {
    /// Calls the job stored at `context` (dispatched through the job's metatype, so the pool keeps
    /// no closure).
    static func invoke(_ context: UnsafeRawPointer, thread: Int) {
        context.assumingMemoryBound(to: Self.self).pointee.run(thread: thread)
    }
}

/// Work over a range of indices for `WorkerPool.parallelFor`.
public protocol RangeJob {
    func run(range: Range<Int>, thread: Int)
}

/// One contiguous part of `0..<count` per thread.
private struct RangeSplit<Job: RangeJob>: ParallelJob {
    let job: Job
    let count: Int
    let parts: Int

    func run(thread index: Int) {
        guard index < parts else { return }
        let lower = count * index / parts
        let upper = count * (index + 1) / parts
        if lower < upper { job.run(range: lower ..< upper, thread: index) }
    }
}

/// Calls `invoke` on a job type through an existential metatype (no allocation).
private protocol JobInvoker {
    static func call(_ context: UnsafeRawPointer, thread: Int)
}

private enum Invoker<Job: ParallelJob>: JobInvoker {
    static func call(_ context: UnsafeRawPointer, thread: Int) { Job.invoke(context, thread: thread) }
}

/// The state the caller and the workers share; workers keep it alive, not the pool, so dropping
/// the pool stops and joins its threads.
private final class SharedState: @unchecked Sendable {
    let generation = Atomic<Int>(0)
    let remaining = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    var workerCount = 0
    var job: ((Int) -> Void)?
    /// A `ParallelJob` dispatched by address: its storage and its type's invoker.
    var jobContext: UnsafeRawPointer?
    var jobInvoker: (any JobInvoker.Type)?
    var mutex = pthread_mutex_t()
    var wake = pthread_cond_t()
    /// Polls of the generation counter before a worker sleeps (roughly 0.1-1 ms).
    static let spinIterations = 100_000

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
    }

    deinit {
        pthread_mutex_destroy(&mutex)
        pthread_cond_destroy(&wake)
    }

    func dispatch(_ body: @escaping (Int) -> Void) {
        job = body
        remaining.store(workerCount, ordering: .relaxed)
        pthread_mutex_lock(&mutex)
        generation.wrappingAdd(1, ordering: .releasing)
        pthread_cond_broadcast(&wake)
        pthread_mutex_unlock(&mutex)
        body(0)
        waitForWorkers()
        job = nil
    }

    func dispatch<Job: ParallelJob>(context: UnsafeRawPointer, type: Job.Type) {
        jobContext = context
        jobInvoker = Invoker<Job>.self
        remaining.store(workerCount, ordering: .relaxed)
        pthread_mutex_lock(&mutex)
        generation.wrappingAdd(1, ordering: .releasing)
        pthread_cond_broadcast(&wake)
        pthread_mutex_unlock(&mutex)
        Job.invoke(context, thread: 0)
        waitForWorkers()
        jobContext = nil
        jobInvoker = nil
    }

    /// Polls between `sched_yield` calls while waiting (some microseconds). When the pool's
    /// threads share the cores with other busy threads (a server's I/O and request threads), a
    /// worker may be preempted in the middle of a region; pure spinning then kept its core from it
    /// for a whole time slice. Yielding more often put the waits of a lone decode in the kernel's
    /// scheduler (2% of its samples at every 1024 polls).
    static let pollsPerYield = 8192

    /// Waits for every worker to finish the current region, yielding the core now and then.
    private func waitForWorkers() {
        var polls = 0
        while remaining.load(ordering: .acquiring) != 0 {
            polls &+= 1
            if polls % Self.pollsPerYield == 0 { sched_yield() }
        }
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        pthread_mutex_lock(&mutex)
        generation.wrappingAdd(1, ordering: .releasing)
        pthread_cond_broadcast(&wake)
        pthread_mutex_unlock(&mutex)
    }

    func workerLoop(index: Int) {
        // Generation 0 is the state before any dispatch; a worker that starts late still sees
        // the first dispatch as new.
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins % Self.pollsPerYield == 0 { sched_yield() }
                if spins >= Self.spinIterations {
                    pthread_mutex_lock(&mutex)
                    while generation.load(ordering: .acquiring) == seen {
                        pthread_cond_wait(&wake, &mutex)
                    }
                    pthread_mutex_unlock(&mutex)
                }
            }
            seen = generation.load(ordering: .acquiring)
            if stopping.load(ordering: .acquiring) { return }
            if let invoker = jobInvoker, let context = jobContext {
                invoker.call(context, thread: index)
            } else {
                job?(index)
            }
            remaining.subtract(1, ordering: .releasing)
        }
    }
}

private final class WorkerContext {
    let shared: SharedState
    let index: Int
    init(shared: SharedState, index: Int) {
        self.shared = shared
        self.index = index
    }
}
