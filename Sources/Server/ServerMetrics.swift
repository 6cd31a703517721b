import Engine
import Foundation
import Prometheus
import Synchronization

/// The Prometheus metrics of `/metrics`, with vLLM-like names. Gauges and counters mirror the
/// engine's counters at scrape time; the latency histograms are recorded by the server as it
/// receives each choice's tokens.
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let engine: InferenceEngine
    private let running: Gauge
    private let waiting: Gauge
    private let kvCacheUsage: Gauge
    private let prefixCacheHitRate: Gauge
    private let inFlight: Gauge
    private let promptTokens: Counter
    private let generationTokens: Counter
    private let preemptions: Counter
    private let finishedRequests: Counter
    let timeToFirstToken: ValueHistogram
    let interTokenLatency: ValueHistogram
    /// Engine totals already added to the counters.
    private let synced = Mutex<(prompt: Int, generated: Int, preemptions: Int, finished: Int)>((0, 0, 0, 0))

    init(engine: InferenceEngine) {
        self.engine = engine
        running = registry.makeGauge(descriptor: Self.name("pagoda:num_requests_running", "Sequences running in the engine."))
        waiting = registry.makeGauge(descriptor: Self.name("pagoda:num_requests_waiting", "Sequences waiting to be scheduled."))
        kvCacheUsage = registry.makeGauge(descriptor: Self.name("pagoda:kv_cache_usage_perc", "Fraction of KV-cache blocks in use (1 is full)."))
        prefixCacheHitRate = registry.makeGauge(descriptor: Self.name("pagoda:prefix_cache_hit_rate", "Prompt tokens served from the prefix cache over prompt tokens looked up."))
        inFlight = registry.makeGauge(descriptor: Self.name("pagoda:num_http_requests_in_flight", "Generation requests admitted by the HTTP server."))
        promptTokens = registry.makeCounter(descriptor: Self.name("pagoda:prompt_tokens_total", "Prompt tokens processed."))
        generationTokens = registry.makeCounter(descriptor: Self.name("pagoda:generation_tokens_total", "Tokens generated."))
        preemptions = registry.makeCounter(descriptor: Self.name("pagoda:num_preemptions_total", "Sequences preempted when the KV cache ran out."))
        finishedRequests = registry.makeCounter(descriptor: Self.name("pagoda:request_success_total", "Choices finished (stopped, length or aborted)."))
        let latencyBuckets = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0]
        timeToFirstToken = registry.makeValueHistogram(
            descriptor: Self.name("pagoda:time_to_first_token_seconds", "Seconds from a request's arrival to each choice's first token, as the server saw it."),
            buckets: latencyBuckets)
        interTokenLatency = registry.makeValueHistogram(
            descriptor: Self.name("pagoda:inter_token_latency_seconds", "Seconds between consecutive tokens of a choice, as the server saw them."),
            buckets: latencyBuckets)
    }

    /// A descriptor for a full metric name (no unit suffix is appended).
    private static func name(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    func setInFlight(_ count: Int) { inFlight.set(Double(count)) }

    /// The exposition text, after bringing gauges and counters up to date with the engine.
    func render() -> [UInt8] {
        let m = engine.metrics
        running.set(Double(m.running))
        waiting.set(Double(m.waiting))
        kvCacheUsage.set(m.kvCacheUsage)
        prefixCacheHitRate.set(m.prefixCacheHitRate)
        synced.withLock { last in
            promptTokens.increment(by: Int64(max(0, m.promptTokens - last.prompt)))
            generationTokens.increment(by: Int64(max(0, m.generatedTokens - last.generated)))
            preemptions.increment(by: Int64(max(0, m.preemptions - last.preemptions)))
            finishedRequests.increment(by: Int64(max(0, m.finishedRequests - last.finished)))
            last = (m.promptTokens, m.generatedTokens, m.preemptions, m.finishedRequests)
        }
        return registry.emitToBuffer()
    }
}

/// Records one request's latencies as its outputs arrive.
struct LatencyRecorder {
    let metrics: ServerMetrics
    let arrival: ContinuousClock.Instant
    private var lastToken: [Int: ContinuousClock.Instant] = [:]

    init(metrics: ServerMetrics, arrival: ContinuousClock.Instant) {
        self.metrics = metrics
        self.arrival = arrival
    }

    mutating func observe(_ output: GenerationOutput) {
        guard !output.tokenIds.isEmpty else { return }
        let now = ContinuousClock.now
        if let last = lastToken[output.index] {
            metrics.interTokenLatency.record((now - last).seconds)
        } else {
            metrics.timeToFirstToken.record((now - arrival).seconds)
        }
        lastToken[output.index] = now
    }
}
