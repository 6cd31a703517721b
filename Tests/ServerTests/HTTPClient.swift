import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A minimal blocking HTTP/1.1 client over a loopback socket, so tests control the connection
/// (read part of a stream, then drop it).
final class RawConnection: @unchecked Sendable {
    private let fd: Int32
    private var closed = false

    struct Failure: Error, CustomStringConvertible { let description: String }

    /// `timeoutSeconds` only guards against a hung server. It is long because on a 2-core machine
    /// the synchronous numeric tests of other suites can hold both threads of the cooperative pool,
    /// where the server's handlers run, for over a minute (a 30 s timeout failed that way).
    init(port: Int, timeoutSeconds: Int = 300) throws {
        #if canImport(Glibc)
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw Failure(description: "socket() failed") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            Glibc.close(fd)
            throw Failure(description: "connect() to port \(port) failed")
        }
    }

    deinit { close() }

    func send(method: String, path: String, body: String? = nil, headers: [String: String] = [:]) throws {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        let bytes = Array((body ?? "").utf8)
        if body != nil { head += "Content-Type: application/json\r\nContent-Length: \(bytes.count)\r\n" }
        let all = Array((head + "\r\n").utf8) + bytes
        var sent = 0
        while sent < all.count {
            let n = all[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send() failed") }
            sent += n
        }
    }

    /// The next bytes received, or nil at end of stream.
    func receive() throws -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 { throw Failure(description: "recv() failed or timed out (errno \(errno))") }
        return n == 0 ? nil : Array(buffer[0 ..< n])
    }

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }
}

/// A whole HTTP response.
struct HTTPResult {
    let status: Int
    let headers: [String: String]
    let body: [UInt8]

    var text: String { String(decoding: body, as: UTF8.self) }

    func json() throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw RawConnection.Failure(description: "not a JSON object: \(text)")
        }
        return object
    }

    /// The `data:` payloads of an SSE body, in order (`[DONE]` included).
    var events: [String] {
        text.components(separatedBy: "\n\n").compactMap { block in
            block.hasPrefix("data: ") ? String(block.dropFirst(6)) : nil
        }
    }

    /// The JSON objects of an SSE body (without `[DONE]`).
    func eventObjects() throws -> [[String: Any]] {
        try events.filter { $0 != "[DONE]" }.map {
            guard let object = try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] else {
                throw RawConnection.Failure(description: "bad event \($0)")
            }
            return object
        }
    }

    /// Parses a raw response (chunked or not).
    init(raw: [UInt8]) throws {
        let separator = Array("\r\n\r\n".utf8)
        guard let end = (0 ... max(0, raw.count - 4)).first(where: { Array(raw[$0 ..< min($0 + 4, raw.count)]) == separator }) else {
            throw RawConnection.Failure(description: "no header end in \(String(decoding: raw, as: UTF8.self))")
        }
        let lines = String(decoding: raw[0 ..< end], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        status = statusParts.count > 1 ? Int(statusParts[1]) ?? 0 : 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        self.headers = headers
        var rest = Array(raw[(end + 4)...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            var out: [UInt8] = []
            while let lineEnd = (0 ..< max(0, rest.count - 1)).first(where: { rest[$0] == 13 && rest[$0 + 1] == 10 }) {
                let size = Int(String(decoding: rest[0 ..< lineEnd], as: UTF8.self).split(separator: ";")[0], radix: 16) ?? 0
                if size == 0 { break }
                let start = lineEnd + 2
                guard start + size <= rest.count else { break }
                out += rest[start ..< start + size]
                rest = Array(rest[min(rest.count, start + size + 2)...])
            }
            body = out
        } else {
            body = rest
        }
    }
}

/// Runs blocking socket work on a thread of its own. The server's handlers run on the same
/// cooperative pool as the tests (as wide as the machine has cores), so a test blocked in
/// `recv()` on that pool, beside another test busy computing, leaves no thread to answer it.
func offCooperativePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

/// Sends one request and reads the whole response (off the cooperative pool).
func request(_ port: Int, _ method: String, _ path: String, body: String? = nil, headers: [String: String] = [:]) async throws -> HTTPResult {
    try await offCooperativePool { try blockingRequest(port, method, path, body: body, headers: headers) }
}

private func blockingRequest(_ port: Int, _ method: String, _ path: String, body: String?, headers: [String: String]) throws -> HTTPResult {
    let connection = try RawConnection(port: port)
    defer { connection.close() }
    try connection.send(method: method, path: path, body: body, headers: headers)
    var raw: [UInt8] = []
    while let bytes = try connection.receive() { raw += bytes }
    return try HTTPResult(raw: raw)
}

/// JSON text of a request body.
func json(_ object: [String: Any]) -> String {
    String(decoding: (try? JSONSerialization.data(withJSONObject: object)) ?? Data(), as: UTF8.self)
}
