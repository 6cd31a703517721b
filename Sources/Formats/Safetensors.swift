import Foundation

/// One memory-mapped `.safetensors` file: an 8-byte little-endian header length, a JSON header
/// `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the data.
public final class SafetensorsFile: TensorSource, @unchecked Sendable {
    public let path: String
    public let metadata: [String: String]
    public let entries: [String: (type: GGMLType, shape: [Int], range: Range<Int>)]
    /// Tensor names in file order of their data.
    public let tensorNames: [String]
    let file: MappedFile
    let dataStart: Int

    public init(path: String) throws {
        file = try MappedFile(path: path)
        self.path = path
        var reader = ByteReader(file.bytes, path: path)
        let headerLength = try reader.read(UInt64.self, "safetensors header length")
        guard headerLength <= UInt64(file.bytes.count - 8) else {
            throw FormatError(path, "truncated file: safetensors header claims \(headerLength) bytes, file has \(file.bytes.count - 8) after the length")
        }
        let header = try reader.readBytes(Int(headerLength), "safetensors header")
        dataStart = reader.offset
        let dataSize = file.bytes.count - dataStart
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(header), options: [])
        } catch {
            throw FormatError(path, "safetensors header is not valid JSON")
        }
        guard let object = json as? [String: Any] else {
            throw FormatError(path, "safetensors header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        var entries: [String: (type: GGMLType, shape: [Int], range: Range<Int>)] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                for (k, v) in (value as? [String: Any]) ?? [:] { metadata[k] = "\(v)" }
                continue
            }
            guard let info = value as? [String: Any],
                  let dtype = info["dtype"] as? String,
                  let shape = (info["shape"] as? [Any])?.compactMapAll({ ($0 as? NSNumber)?.intValue }),
                  let offsets = (info["data_offsets"] as? [Any])?.compactMapAll({ ($0 as? NSNumber)?.intValue }),
                  offsets.count == 2
            else {
                throw FormatError(path, "tensor '\(name)' has a malformed header entry (needs dtype, shape, data_offsets)")
            }
            guard let type = Self.types[dtype] else {
                throw FormatError(path, "tensor '\(name)' has unsupported dtype \(dtype) (supported: \(Self.types.keys.sorted().joined(separator: ", ")))")
            }
            guard shape.allSatisfy({ $0 >= 0 && $0 <= Int(Int32.max) }) else {
                throw FormatError(path, "tensor '\(name)' has an invalid shape \(shape)")
            }
            let begin = offsets[0], end = offsets[1]
            guard begin >= 0, end >= begin, end <= dataSize else {
                throw FormatError(path, "tensor '\(name)' data_offsets [\(begin), \(end)] lie outside the \(dataSize)-byte data section")
            }
            let elements = shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).partialValue }
            guard let expected = type.byteCount(elements: elements), expected == end - begin else {
                throw FormatError(path, "tensor '\(name)' of dtype \(dtype) and shape \(shape) needs \(elements * type.bytesPerBlock) bytes but data_offsets span \(end - begin)")
            }
            entries[name] = (type, shape, begin ..< end)
        }
        self.metadata = metadata
        self.entries = entries
        self.tensorNames = entries.keys.sorted { entries[$0]!.range.lowerBound < entries[$1]!.range.lowerBound }
    }

    /// Element types by safetensors dtype. `U8` (e.g. the `*_blocks` / `*_scales` of MXFP4
    /// checkpoints) is raw bytes: GGML has no unsigned byte type, so it is tagged `.i8`, which like
    /// every integer type is no weight type; readers take such tensors' `bytes` as they are.
    static let types: [String: GGMLType] = [
        "F32": .f32, "F16": .f16, "BF16": .bf16, "F64": .f64,
        "I8": .i8, "U8": .i8, "I16": .i16, "I32": .i32, "I64": .i64,
    ]

    public var sourcePath: String { path }

    public func tensor(named name: String) -> TensorData? {
        guard let entry = entries[name] else { return nil }
        let bytes = UnsafeRawBufferPointer(rebasing: file.bytes[(dataStart + entry.range.lowerBound) ..< (dataStart + entry.range.upperBound)])
        return TensorData(name: name, type: entry.type, shape: entry.shape, bytes: bytes, path: path, owner: self)
    }
}

/// All `*.safetensors` files of a Hugging Face model folder, seen as one tensor source.
public final class SafetensorsFolder: TensorSource, @unchecked Sendable {
    public let path: String
    public let files: [SafetensorsFile]
    private let index: [String: SafetensorsFile]

    public init(folder: String) throws {
        path = folder
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: folder)
        } catch {
            throw FormatError(folder, "cannot list model folder")
        }
        let shardNames = try Self.shardNames(folder: folder, names: names)
        guard !shardNames.isEmpty else {
            throw FormatError(folder, "no *.safetensors files in model folder")
        }
        files = try shardNames.map { try SafetensorsFile(path: folder + "/" + $0) }
        var index: [String: SafetensorsFile] = [:]
        for file in files {
            for name in file.tensorNames {
                if let other = index[name] {
                    throw FormatError(folder, "tensor '\(name)' appears in both \(other.path) and \(file.path)")
                }
                index[name] = file
            }
        }
        self.index = index
    }

    /// The weight shards: those named by `model.safetensors.index.json` when present, else the
    /// `model*.safetensors` files, else every `*.safetensors` file (sorted).
    static func shardNames(folder: String, names: [String]) throws -> [String] {
        let indexName = "model.safetensors.index.json"
        if names.contains(indexName) {
            let indexPath = folder + "/" + indexName
            guard let data = FileManager.default.contents(atPath: indexPath),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = json["weight_map"] as? [String: Any]
            else {
                throw FormatError(indexPath, "malformed index: expected a JSON object with a weight_map")
            }
            return Set(map.values.compactMap { $0 as? String }).sorted()
        }
        let all = names.filter { $0.hasSuffix(".safetensors") }.sorted()
        let model = all.filter { $0.hasPrefix("model") }
        return model.isEmpty ? all : model
    }

    public var sourcePath: String { path }
    public var tensorNames: [String] { files.flatMap(\.tensorNames) }

    public func tensor(named name: String) -> TensorData? {
        index[name]?.tensor(named: name)
    }
}
