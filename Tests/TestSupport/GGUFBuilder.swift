import Foundation
import Formats

/// Writes small GGUF files for tests: any metadata (every value type) and raw tensor bytes.
public struct GGUFBuilder {
    public var version: UInt32 = 3
    public var alignment = 32
    public var metadata: [(String, GGUFValue)] = []
    public var tensors: [(name: String, dims: [Int], type: UInt32, data: [UInt8])] = []

    public init(version: UInt32 = 3) { self.version = version }

    public mutating func add(_ key: String, _ value: GGUFValue) { metadata.append((key, value)) }

    /// Adds a tensor with GGML-order `dims` (innermost first) and its raw bytes.
    public mutating func addTensor(_ name: String, dims: [Int], type: UInt32, data: [UInt8]) {
        tensors.append((name, dims, type, data))
    }

    /// Adds a float32 tensor.
    public mutating func addTensor(_ name: String, dims: [Int], floats: [Float]) {
        addTensor(name, dims: dims, type: GGMLType.f32.rawValue, data: floats.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) })
    }

    public func bytes() -> [UInt8] {
        var out: [UInt8] = []
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func putString(_ s: String) { put(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
        func typeCode(_ v: GGUFValue) -> UInt32 {
            switch v {
            case .uint8: 0
            case .int8: 1
            case .uint16: 2
            case .int16: 3
            case .uint32: 4
            case .int32: 5
            case .float32: 6
            case .bool: 7
            case .string: 8
            case .array: 9
            case .uint64: 10
            case .int64: 11
            case .float64: 12
            }
        }
        func putValue(_ v: GGUFValue) {
            switch v {
            case .uint8(let x): put(x)
            case .int8(let x): put(x)
            case .uint16(let x): put(x)
            case .int16(let x): put(x)
            case .uint32(let x): put(x)
            case .int32(let x): put(x)
            case .float32(let x): put(x.bitPattern)
            case .bool(let x): put(UInt8(x ? 1 : 0))
            case .string(let x): putString(x)
            case .array(let xs):
                put(xs.first.map(typeCode) ?? 4)
                put(UInt64(xs.count))
                xs.forEach(putValue)
            case .uint64(let x): put(x)
            case .int64(let x): put(x)
            case .float64(let x): put(x.bitPattern)
            }
        }
        put(UInt32(0x4655_4747))
        put(version)
        put(UInt64(tensors.count))
        put(UInt64(metadata.count))
        for (key, value) in metadata {
            putString(key)
            put(typeCode(value))
            putValue(value)
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            offsets.append(offset)
            offset += (t.data.count + alignment - 1) / alignment * alignment
        }
        for (t, o) in zip(tensors, offsets) {
            putString(t.name)
            put(UInt32(t.dims.count))
            t.dims.forEach { put(UInt64($0)) }
            put(t.type)
            put(UInt64(o))
        }
        while out.count % alignment != 0 { out.append(0) }
        for t in tensors {
            out.append(contentsOf: t.data)
            while out.count % alignment != 0 { out.append(0) }
        }
        return out
    }

    /// Writes the file to a fresh temporary path and returns it.
    public func write(named name: String = "model.gguf") throws -> String {
        try TemporaryFiles.write(Data(bytes()), named: name)
    }
}

/// Temporary files and folders for tests, all inside one folder per test process that is removed
/// when the process exits (a test run used to leave ~150 folders in the temporary directory).
public enum TemporaryFiles {
    /// This process's folder: named, and its removal at exit registered, on first use; `folder()`
    /// creates it with the first subfolder.
    private static let root: String = {
        let path = NSTemporaryDirectory() + "pagoda-tests-\(getpid())-" + UUID().uuidString
        atexit { TemporaryFiles.removeRoot() }
        return path
    }()

    private static func removeRoot() {
        try? FileManager.default.removeItem(atPath: root)
    }

    /// A fresh empty folder.
    public static func folder() throws -> String {
        let path = root + "/" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    public static func write(_ data: Data, named name: String) throws -> String {
        let path = try folder() + "/" + name
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }
}
