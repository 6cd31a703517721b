import Foundation
import Formats

/// Paths and readers for the reference fixtures copied into `Tests/Fixtures`.
public enum Fixtures {
    /// `Tests/Fixtures`, found from this source file's location so a fresh clone tests itself.
    public static let directory: String = {
        let here = URL(fileURLWithPath: #filePath)
        return here.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures").path
    }()

    public static func path(_ relative: String) -> String { directory + "/" + relative }

    /// The names of the tiny random-weight models this project tests against.
    public static let tinyDenseModels = ["llama", "llama_rope_llama3", "qwen2", "qwen3"]
    /// Tiny models of the other families: sliding windows, soft-caps, experts, latent attention, sinks.
    public static let tinyFamilyModels = ["gemma2", "gemma3", "mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss"]
    public static let tinyModels = tinyDenseModels + tinyFamilyModels

    /// Parses a JSON fixture file.
    public static func json(_ relative: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path(relative)))
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw FormatError(relative, "fixture is not a JSON object")
        }
        return object
    }
}

/// Typed reads of reference tensors.
public extension SafetensorsFile {
    func int32s(_ name: String) throws -> [Int] {
        guard let t = tensor(named: name), t.type == .i32 else { throw FormatError(path, "no I32 tensor \(name)") }
        return (0 ..< t.elementCount).map { Int(t.bytes.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
    }

    func float32s(_ name: String) throws -> [Float] {
        guard let t = tensor(named: name), t.type == .f32 else { throw FormatError(path, "no F32 tensor \(name)") }
        return (0 ..< t.elementCount).map { t.bytes.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
    }
}

/// Comparison helpers for logits.
public enum Compare {
    public static func maxAbsDifference(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Float {
        precondition(a.count == b.count, "length mismatch \(a.count) vs \(b.count)")
        return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }

    public static func argmax(_ values: ArraySlice<Float>) -> Int {
        var best = values.startIndex
        for i in values.indices where values[i] > values[best] { best = i }
        return best - values.startIndex
    }
}
