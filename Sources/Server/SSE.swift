import Engine
import Foundation
import Hummingbird

/// The one writer of Server-Sent Events: `data: {json}` per chunk, `: keep-alive` comments while no
/// chunk was written for `keepAlive`, an error event if the engine fails, the usage chunk when asked
/// for, then `data: [DONE]`. A failed write (the client went away) cancels the engine stream, which
/// aborts the request.
struct SSEWriter: Sendable {
    let outputs: AsyncThrowingStream<GenerationOutput, Error>
    let builder: ResponseBuilder
    let recorder: LatencyRecorder
    let keepAlive: Duration
    /// The request's place in the admission gate, held until the stream ends or is dropped.
    let ticket: AdmissionGate.Ticket

    private enum Event: Sendable {
        case output(GenerationOutput)
        case failed(any Error)
        case finished
        case tick
    }

    static func event(_ json: JSON) -> ByteBuffer {
        var bytes = Array("data: ".utf8)
        json.write(into: &bytes)
        bytes += Array("\n\n".utf8)
        return ByteBuffer(bytes: bytes)
    }

    static let keepAliveComment = ByteBuffer(string: ": keep-alive\n\n")
    static let done = ByteBuffer(string: "data: [DONE]\n\n")

    var response: Response {
        let body = ResponseBody { writer in
            defer { withExtendedLifetime(ticket) {} }
            try await write(to: &writer)
            try await writer.finish(nil)
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", .connection: "keep-alive"],
            body: body)
    }

    private func write(to writer: inout any ResponseBodyWriter) async throws {
        var builder = builder
        var recorder = recorder
        let (events, continuation) = AsyncStream<Event>.makeStream()
        let outputs = outputs
        let keepAlive = keepAlive
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await output in outputs { continuation.yield(.output(output)) }
                    continuation.yield(.finished)
                } catch {
                    continuation.yield(.failed(error))
                }
                continuation.finish()
            }
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: keepAlive / 2)
                    continuation.yield(.tick)
                }
            }
            // Admitted: the first event goes out now (the role chunk for chat, a comment otherwise).
            try await writer.write(builder.initialChunk.map(Self.event) ?? Self.keepAliveComment)
            var lastWrite = ContinuousClock.now
            events: for await event in events {
                switch event {
                case .output(let output):
                    recorder.observe(output)
                    if let chunk = builder.absorb(output) {
                        try await writer.write(Self.event(chunk))
                        lastWrite = .now
                    }
                case .tick:
                    if ContinuousClock.now - lastWrite >= keepAlive {
                        try await writer.write(Self.keepAliveComment)
                        lastWrite = .now
                    }
                case .failed(let error):
                    try await writer.write(Self.event(APIError.from(error).json))
                    break events
                case .finished:
                    break events
                }
            }
            if builder.plan.includeUsage { try await writer.write(Self.event(builder.usageChunk)) }
            try await writer.write(Self.done)
            group.cancelAll()
        }
    }
}
