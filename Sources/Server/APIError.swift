import Engine
import Foundation
import Hummingbird
import Tokenizers

/// An error answered in OpenAI's schema: `{"error": {"message", "type", "param", "code"}}`.
struct APIError: Error, HTTPResponseError, CustomStringConvertible {
    let status: HTTPResponse.Status
    let message: String
    let type: String
    let param: String?
    let code: String?

    init(_ status: HTTPResponse.Status, _ message: String, type: String? = nil, param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type ?? Self.defaultType(status)
        self.param = param
        self.code = code
    }

    var description: String { "\(status.code) \(message)" }

    static func badRequest(_ message: String, param: String? = nil) -> APIError {
        APIError(.badRequest, message, param: param)
    }

    private static func defaultType(_ status: HTTPResponse.Status) -> String {
        switch status.code {
        case 401: "authentication_error"
        case 404: "not_found_error"
        case 429: "rate_limit_error"
        case 500...: "server_error"
        default: "invalid_request_error"
        }
    }

    /// The `error` object, also sent as an SSE event when a stream fails after its headers went out.
    var json: JSON {
        .object([("error", .object([
            ("message", .string(message)),
            ("type", .string(type)),
            ("param", .optional(param)),
            ("code", code.map(JSON.string) ?? .int(status.code)),
        ]))])
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        jsonResponse(json, status: status)
    }

    /// The API error for any error a request can end with.
    static func from(_ error: any Error) -> APIError {
        switch error {
        case let error as APIError:
            return error
        case let error as SamplingParametersError:
            return .badRequest("\(Self.jsonName(ofSamplingParameter: error.parameter)) \(error.message)",
                               param: Self.jsonName(ofSamplingParameter: error.parameter))
        case let error as GenerationError:
            return .badRequest(error.description, param: "prompt")
        case let error as ChatTemplateError:
            return .badRequest(error.description, param: "messages")
        case let error as EngineError:
            switch error {
            case .requestNeverFits: return .badRequest(error.description, param: "max_tokens")
            case .invalidRequest(let why): return .badRequest(why)
            case .stopped: return APIError(.serviceUnavailable, error.description, type: "server_error")
            }
        case let error as DecodingError:
            return decoding(error)
        default:
            return APIError(.internalServerError, "\(error)", type: "server_error")
        }
    }

    private static func jsonName(ofSamplingParameter name: String) -> String {
        var out = ""
        for character in name {
            if character.isUppercase { out += "_" + character.lowercased() } else { out.append(character) }
        }
        return out
    }

    private static func path(_ codingPath: [any CodingKey]) -> String? {
        guard !codingPath.isEmpty else { return nil }
        return codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            .trimmingCharacters(in: CharacterSet(charactersIn: "."))
    }

    private static func decoding(_ error: DecodingError) -> APIError {
        switch error {
        case .typeMismatch(let type, let context):
            let param = path(context.codingPath)
            return .badRequest("\(param ?? "body"): expected \(describe(type)); \(context.debugDescription)", param: param)
        case .valueNotFound(let type, let context):
            let param = path(context.codingPath)
            return .badRequest("\(param ?? "body"): expected \(describe(type)), got null", param: param)
        case .keyNotFound(let key, let context):
            let param = path(context.codingPath + [key])
            return .badRequest("missing required field '\(param ?? key.stringValue)'", param: param)
        case .dataCorrupted(let context):
            let param = path(context.codingPath)
            let underlying = (context.underlyingError as? NSError)?.localizedDescription
            return .badRequest("malformed JSON\(param.map { " at \($0)" } ?? ""): \(underlying ?? context.debugDescription)", param: param)
        @unknown default:
            return .badRequest("malformed request: \(error)")
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is Int64.Type: "an integer"
        case is Double.Type, is Float.Type: "a number"
        case is Bool.Type: "a boolean"
        case is [String: Any].Type: "a JSON object"
        case is [Any].Type: "an array"
        default: "\(type)"
        }
    }
}

/// A JSON response.
func jsonResponse(_ value: JSON, status: HTTPResponse.Status = .ok) -> Response {
    Response(
        status: status,
        headers: [.contentType: "application/json"],
        body: ResponseBody(byteBuffer: ByteBuffer(bytes: value.bytes)))
}
