/// One metadata value of a GGUF file (every GGUF value type, arrays included).
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16)
    case uint32(UInt32), int32(Int32), uint64(UInt64), int64(Int64)
    case float32(Float), float64(Double), bool(Bool), string(String)
    case array([GGUFValue])

    /// Any integer value as `Int` (nil for non-integers or values out of range).
    public var int: Int? {
        switch self {
        case .uint8(let v): Int(v)
        case .int8(let v): Int(v)
        case .uint16(let v): Int(v)
        case .int16(let v): Int(v)
        case .uint32(let v): Int(v)
        case .int32(let v): Int(v)
        case .uint64(let v): Int(exactly: v)
        case .int64(let v): Int(v)
        case .bool(let v): v ? 1 : 0
        default: nil
        }
    }

    /// Any numeric value as `Double`.
    public var double: Double? {
        switch self {
        case .float32(let v): Double(v)
        case .float64(let v): v
        default: int.map(Double.init)
        }
    }

    public var float: Float? { double.map(Float.init) }

    public var bool: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    public var string: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    public var array: [GGUFValue]? {
        if case .array(let v) = self { return v }
        return nil
    }

    public var stringArray: [String]? { array?.compactMapAll(\.string) }
    public var intArray: [Int]? { array?.compactMapAll(\.int) }
    public var floatArray: [Float]? { array?.compactMapAll(\.float) }
}

extension Array {
    /// Maps every element, or returns nil if any element maps to nil.
    func compactMapAll<T>(_ transform: (Element) -> T?) -> [T]? {
        var out: [T] = []
        out.reserveCapacity(count)
        for element in self {
            guard let value = transform(element) else { return nil }
            out.append(value)
        }
        return out
    }
}

/// Where one tensor lives in a GGUF file. `dims` are in GGML order: `dims[0]` is the innermost
/// (contiguous) dimension, so a `[out, in]` matrix has `dims == [in, out]`.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    public let dims: [Int]
    public let type: GGMLType
    /// Offset from the start of the tensor data section.
    public let offset: Int
    public let byteCount: Int

    public var elementCount: Int { dims.reduce(1, *) }
}

/// A parsed, memory-mapped GGUF file (versions 2 and 3): metadata, tensor directory and tensor data.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    public let tensorsByName: [String: GGUFTensorInfo]
    public let alignment: Int
    /// Absolute file offset of the tensor data section.
    public let dataOffset: Int
    let file: MappedFile

    static let magic: UInt32 = 0x4655_4747 // "GGUF" little-endian

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    init(file: MappedFile) throws {
        self.file = file
        self.path = file.path
        var reader = ByteReader(file.bytes, path: file.path)
        let magic = try reader.read(UInt32.self, "GGUF magic")
        guard magic == Self.magic else {
            throw FormatError(path, "not a GGUF file (bad magic 0x\(String(magic, radix: 16)))")
        }
        version = try reader.read(UInt32.self, "GGUF version")
        guard version == 2 || version == 3 else {
            throw FormatError(path, "unsupported GGUF version \(version) (supported: 2, 3)")
        }
        let tensorCount = try reader.read(UInt64.self, "tensor count")
        let kvCount = try reader.read(UInt64.self, "metadata count")
        // Each entry takes at least a few bytes, so counts beyond the file size are corrupt.
        guard tensorCount <= UInt64(file.bytes.count), kvCount <= UInt64(file.bytes.count) else {
            throw FormatError(path, "corrupt header: \(tensorCount) tensors, \(kvCount) metadata entries in a \(file.bytes.count)-byte file")
        }
        var metadata: [String: GGUFValue] = [:]
        for _ in 0 ..< Int(kvCount) {
            let key = try Self.readString(&reader, "metadata key")
            let rawType = try reader.read(UInt32.self, "type of metadata '\(key)'")
            metadata[key] = try Self.readValue(&reader, rawType: rawType, key: key, depth: 0)
        }
        self.metadata = metadata
        if let align = metadata["general.alignment"] {
            guard let a = align.int, a > 0, a & (a - 1) == 0 else {
                throw FormatError(path, "general.alignment must be a positive power of two, found \(align)")
            }
            alignment = a
        } else {
            alignment = 32
        }

        var infos: [(name: String, dims: [Int], type: UInt32, offset: UInt64)] = []
        for index in 0 ..< Int(tensorCount) {
            let name = try Self.readString(&reader, "name of tensor \(index)")
            let nDims = try reader.read(UInt32.self, "dimension count of tensor '\(name)'")
            guard nDims >= 1, nDims <= 8 else {
                throw FormatError(path, "tensor '\(name)' has \(nDims) dimensions (1...8 allowed)")
            }
            var dims: [Int] = []
            for _ in 0 ..< Int(nDims) {
                let d = try reader.read(UInt64.self, "dimensions of tensor '\(name)'")
                guard d <= UInt64(Int32.max) else {
                    throw FormatError(path, "tensor '\(name)' has an impossible dimension \(d)")
                }
                dims.append(Int(d))
            }
            let type = try reader.read(UInt32.self, "type of tensor '\(name)'")
            let offset = try reader.read(UInt64.self, "offset of tensor '\(name)'")
            infos.append((name, dims, type, offset))
        }
        let headerEnd = reader.offset
        let dataStart = (headerEnd + alignment - 1) / alignment * alignment
        dataOffset = dataStart
        let dataSize = file.bytes.count - min(dataStart, file.bytes.count)

        var tensors: [GGUFTensorInfo] = []
        var byName: [String: GGUFTensorInfo] = [:]
        for info in infos {
            guard let type = GGMLType(rawValue: info.type) else {
                throw FormatError(path, "tensor '\(info.name)' has unknown tensor type \(info.type)")
            }
            let (elements, overflow) = info.dims.reduce((1, false)) { acc, d in
                let r = acc.0.multipliedReportingOverflow(by: d)
                return (r.partialValue, acc.1 || r.overflow)
            }
            guard !overflow, let bytes = type.byteCount(elements: elements), info.dims[0] % type.blockSize == 0 else {
                throw FormatError(path, "tensor '\(info.name)' of type \(type) has shape \(info.dims), not a whole number of \(type.blockSize)-element blocks per row")
            }
            guard info.offset % UInt64(alignment) == 0 else {
                throw FormatError(path, "tensor '\(info.name)' offset \(info.offset) is not aligned to \(alignment)")
            }
            guard info.offset <= UInt64(dataSize), UInt64(dataSize) - info.offset >= UInt64(bytes) else {
                throw FormatError(path, "truncated file: tensor '\(info.name)' needs bytes \(info.offset)..<\(info.offset + UInt64(bytes)) of the data section, which has \(dataSize)")
            }
            guard byName[info.name] == nil else {
                throw FormatError(path, "duplicate tensor name '\(info.name)'")
            }
            let t = GGUFTensorInfo(name: info.name, dims: info.dims, type: type, offset: Int(info.offset), byteCount: bytes)
            tensors.append(t)
            byName[info.name] = t
        }
        self.tensors = tensors
        self.tensorsByName = byName
    }

    /// The raw bytes of a tensor, inside the memory mapping (valid while this object lives).
    public func data(of tensor: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[(dataOffset + tensor.offset) ..< (dataOffset + tensor.offset + tensor.byteCount)])
    }

    /// The file's mapping, for callers that keep tensor pointers and must keep the file alive.
    public var mapping: MappedFile { file }

    public subscript(key: String) -> GGUFValue? { metadata[key] }

    private static func readString(_ reader: inout ByteReader, _ what: @autoclosure () -> String) throws -> String {
        let length = try reader.read(UInt64.self, "length of \(what())")
        guard length <= UInt64(reader.bytes.count) else {
            throw FormatError(reader.path, "truncated file: \(what()) claims \(length) bytes at offset \(reader.offset), file has \(reader.bytes.count)")
        }
        let raw = try reader.readBytes(Int(length), what())
        // Invalid UTF-8 is repaired (replacement characters) rather than rejected: some
        // vocabularies hold partial byte sequences that only ever get re-encoded to bytes.
        return String(decoding: raw, as: UTF8.self)
    }

    private static func readValue(_ reader: inout ByteReader, rawType: UInt32, key: String, depth: Int) throws -> GGUFValue {
        // Built only when an error needs it: arrays call this once per element (a whole vocabulary).
        func what() -> String { "value of metadata '\(key)'" }
        switch rawType {
        case 0: return .uint8(try reader.read(UInt8.self, what()))
        case 1: return .int8(try reader.read(Int8.self, what()))
        case 2: return .uint16(try reader.read(UInt16.self, what()))
        case 3: return .int16(try reader.read(Int16.self, what()))
        case 4: return .uint32(try reader.read(UInt32.self, what()))
        case 5: return .int32(try reader.read(Int32.self, what()))
        case 6: return .float32(try reader.readFloat(what()))
        case 7:
            let b = try reader.read(UInt8.self, what())
            guard b <= 1 else { throw FormatError(reader.path, "metadata '\(key)': bool value \(b) is neither 0 nor 1") }
            return .bool(b == 1)
        case 8: return .string(try readString(&reader, what()))
        case 9:
            guard depth < 4 else { throw FormatError(reader.path, "metadata '\(key)': arrays nested too deeply") }
            let elementType = try reader.read(UInt32.self, "array type of metadata '\(key)'")
            let count = try reader.read(UInt64.self, "array length of metadata '\(key)'")
            guard count <= UInt64(reader.bytes.count - reader.offset) else {
                throw FormatError(reader.path, "truncated file: metadata '\(key)' claims \(count) array elements at offset \(reader.offset)")
            }
            var values: [GGUFValue] = []
            values.reserveCapacity(Int(count))
            for _ in 0 ..< Int(count) {
                values.append(try readValue(&reader, rawType: elementType, key: key, depth: depth + 1))
            }
            return .array(values)
        case 10: return .uint64(try reader.read(UInt64.self, what()))
        case 11: return .int64(try reader.read(Int64.self, what()))
        case 12: return .float64(try reader.readDouble(what()))
        default:
            throw FormatError(reader.path, "metadata '\(key)' has unknown value type \(rawType)")
        }
    }
}
