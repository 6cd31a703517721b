import Foundation
import Formats
import Testing
import TestSupport

@Suite struct GGUFTests {
    static let everyValueType: [(String, GGUFValue)] = [
        ("t.u8", .uint8(200)), ("t.i8", .int8(-5)), ("t.u16", .uint16(60000)), ("t.i16", .int16(-30000)),
        ("t.u32", .uint32(4_000_000_000)), ("t.i32", .int32(-2_000_000_000)), ("t.f32", .float32(1.5)),
        ("t.bool", .bool(true)), ("t.string", .string("héllo ✓")), ("t.u64", .uint64(1 << 40)),
        ("t.i64", .int64(-(1 << 40))), ("t.f64", .float64(2.25)),
        ("t.array.strings", .array([.string("a"), .string(""), .string("ç")])),
        ("t.array.ints", .array([.int32(1), .int32(-2), .int32(3)])),
        ("t.array.nested", .array([.array([.uint8(1)]), .array([.uint8(2), .uint8(3)])])),
    ]

    @Test(arguments: [UInt32(2), 3])
    func readsEveryMetadataTypeAndTensors(version: UInt32) throws {
        var builder = GGUFBuilder(version: version)
        for (k, v) in Self.everyValueType { builder.add(k, v) }
        builder.addTensor("a", dims: [4, 2], floats: [0, 1, 2, 3, 4, 5, 6, 7])
        builder.addTensor("b", dims: [3], floats: [-1, -2, -3])
        let file = try GGUFFile(path: try builder.write())
        #expect(file.version == version)
        for (k, v) in Self.everyValueType { #expect(file[k] == v, "\(k)") }
        #expect(file["t.array.strings"]?.stringArray == ["a", "", "ç"])
        #expect(file["t.array.ints"]?.intArray == [1, -2, 3])
        #expect(file.tensors.map(\.name) == ["a", "b"])
        let a = try #require(file.tensor(named: "a"))
        #expect(a.shape == [2, 4])
        #expect(a.type == .f32)
        #expect(a.bytes.loadUnaligned(fromByteOffset: 4 * 5, as: Float.self) == 5)
        let b = try #require(file.tensor(named: "b"))
        #expect(b.bytes.loadUnaligned(fromByteOffset: 8, as: Float.self) == -3)
        #expect(Int(bitPattern: b.bytes.baseAddress) % 32 == 0)
    }

    @Test func honoursCustomAlignment() throws {
        var builder = GGUFBuilder()
        builder.alignment = 64
        builder.add("general.alignment", .uint32(64))
        builder.addTensor("x", dims: [3], floats: [1, 2, 3])
        builder.addTensor("y", dims: [2], floats: [4, 5])
        let file = try GGUFFile(path: try builder.write())
        #expect(file.alignment == 64)
        #expect(file.tensorsByName["y"]?.offset == 64)
        #expect(file.tensor(named: "y")?.bytes.loadUnaligned(fromByteOffset: 4, as: Float.self) == 5)
    }

    @Test func truncatedFileNamesFileAndProblem() throws {
        var builder = GGUFBuilder()
        builder.add("general.architecture", .string("llama"))
        builder.addTensor("w", dims: [8], floats: Array(repeating: 1, count: 8))
        let full = builder.bytes()
        for cut in [3, 20, full.count / 2, full.count - 4] {
            let path = try TemporaryFiles.write(Data(full[0 ..< cut]), named: "cut.gguf")
            let error = #expect(throws: FormatError.self) { try GGUFFile(path: path) }
            #expect(error?.path == path)
            #expect(error?.message.contains("truncated") == true, "\(error?.description ?? "")")
        }
    }

    @Test func unknownTensorTypeIsAnError() throws {
        var builder = GGUFBuilder()
        builder.addTensor("w", dims: [32], type: 99, data: Array(repeating: 0, count: 64))
        let path = try builder.write()
        let error = #expect(throws: FormatError.self) { try GGUFFile(path: path) }
        #expect(error?.description == "\(path): tensor 'w' has unknown tensor type 99")
    }

    @Test func badMagicAndVersion() throws {
        let notGGUF = try TemporaryFiles.write(Data("hello world, not a model".utf8), named: "x.gguf")
        #expect(throws: FormatError.self) { try GGUFFile(path: notGGUF) }
        let v1 = try GGUFBuilder(version: 1).write()
        let error = #expect(throws: FormatError.self) { try GGUFFile(path: v1) }
        #expect(error?.message.contains("version 1") == true)
        #expect(throws: FormatError.self) { try GGUFFile(path: "/nonexistent/model.gguf") }
    }
}

@Suite struct SafetensorsTests {
    /// A safetensors file with the given header JSON and `dataBytes` zero bytes of data.
    static func file(header: String, dataBytes: Int) throws -> String {
        var data = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: header.utf8)
        data.append(Data(count: dataBytes))
        return try TemporaryFiles.write(data, named: "model.safetensors")
    }

    @Test func readsTensors() throws {
        let path = try Self.file(header: #"{"__metadata__": {"format": "pt"}, "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, "b": {"dtype": "BF16", "shape": [4], "data_offsets": [16, 24]}}"#, dataBytes: 24)
        let file = try SafetensorsFile(path: path)
        #expect(file.metadata["format"] == "pt")
        #expect(file.tensorNames == ["a", "b"])
        #expect(file.tensor(named: "a")?.shape == [2, 2])
        #expect(file.tensor(named: "b")?.type == .bf16)
    }

    @Test func headerThatLiesAboutOffsetsIsAnError() throws {
        let path = try Self.file(header: #"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}"#, dataBytes: 16)
        let error = #expect(throws: FormatError.self) { try SafetensorsFile(path: path) }
        #expect(error?.path == path)
        #expect(error?.message.contains("outside") == true, "\(error?.description ?? "")")
        let wrongSize = try Self.file(header: #"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}"#, dataBytes: 16)
        #expect(throws: FormatError.self) { try SafetensorsFile(path: wrongSize) }
        let badLength = try TemporaryFiles.write(Data([255, 255, 0, 0, 0, 0, 0, 0, 123]), named: "x.safetensors")
        #expect(throws: FormatError.self) { try SafetensorsFile(path: badLength) }
        let badJSON = try Self.file(header: "{not json", dataBytes: 0)
        #expect(throws: FormatError.self) { try SafetensorsFile(path: badJSON) }
    }
}
