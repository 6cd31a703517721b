import Engine
import Foundation
import Models
import Server
import Testing
import TestSupport

/// A folder with the tiny random Qwen2 fixture, a byte-level tokenizer of 260 tokens and
/// Gemma 2's chat template (which raises on a system message).
func tinyModelWithRaisingTemplate() throws -> String {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pagoda-server-tiny-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    for file in ["config.json", "model.safetensors"] {
        try FileManager.default.copyItem(atPath: Fixtures.path("tiny/qwen2/" + file), toPath: folder + "/" + file)
    }
    try FileManager.default.copyItem(
        atPath: Fixtures.path("chat_templates/google-gemma-2-2b-it.jinja"), toPath: folder + "/chat_template.jinja")
    // GPT-2's byte-to-character table: printable bytes map to themselves, the rest to U+0100 on.
    var vocab: [String: Int] = [:]
    var next = 0
    for byte in 0 ..< 256 {
        let printable = (33 ... 126).contains(byte) || (161 ... 172).contains(byte) || (174 ... 255).contains(byte)
        let scalar = printable ? byte : 256 + next
        if !printable { next += 1 }
        vocab[String(Character(Unicode.Scalar(UInt32(scalar))!))] = byte
    }
    let specials = ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]
    let tokenizer: [String: Any] = [
        "model": ["type": "BPE", "vocab": vocab, "merges": [String]()],
        "added_tokens": specials.enumerated().map { ["id": 256 + $0.offset, "content": $0.element, "special": true] },
        "pre_tokenizer": ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true],
        "decoder": ["type": "ByteLevel"],
    ]
    try JSONSerialization.data(withJSONObject: tokenizer).write(to: URL(fileURLWithPath: folder + "/tokenizer.json"))
    try JSONSerialization.data(withJSONObject: ["bos_token": "<bos>", "eos_token": "<eos>"])
        .write(to: URL(fileURLWithPath: folder + "/tokenizer_config.json"))
    return folder
}

extension ServerTests {
    @Test func templateRaiseIsABadRequest() async throws {
        let folder = try tinyModelWithRaisingTemplate()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let engine = try InferenceEngine(
            model: ModelLoader.load(path: folder), options: EngineOptions(cache: KVCacheOptions(memoryBytes: 4 << 20)))
        defer { engine.shutdown() }
        try await withServer(ServerOptions(servedModelName: "tiny"), engine: engine) { port in
            let raised = try await request(port, "POST", "/v1/chat/completions", body: json([
                "messages": [["role": "system", "content": "Be brief."], ["role": "user", "content": "Hi"]], "max_tokens": 2,
            ]))
            #expect(raised.status == 400)
            #expect(try errorObject(raised)["message"] as? String == "System role not supported")

            // The same conversation without the system message renders and generates.
            let fine = try await request(port, "POST", "/v1/chat/completions", body: json([
                "messages": [["role": "user", "content": "Hi"]], "max_tokens": 2, "temperature": 0, "ignore_eos": true,
            ]))
            #expect(fine.status == 200, "\(fine.text)")
            #expect((try fine.json()["usage"] as? [String: Int])?["completion_tokens"] == 2)
        }
    }
}
