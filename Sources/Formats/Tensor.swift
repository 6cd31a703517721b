/// A tensor stored in a model file: element type, row-major shape (outermost first, so a
/// `[out, in]` weight matrix has `shape == [out, in]`), and its bytes inside a memory mapping.
/// `owner` keeps the mapping alive as long as the view is used.
public struct TensorData: @unchecked Sendable {
    public let name: String
    public let type: GGMLType
    public let shape: [Int]
    public let bytes: UnsafeRawBufferPointer
    /// The file the bytes live in, for error messages.
    public let path: String
    public let owner: AnyObject

    public init(name: String, type: GGMLType, shape: [Int], bytes: UnsafeRawBufferPointer, path: String, owner: AnyObject) {
        self.name = name
        self.type = type
        self.shape = shape
        self.bytes = bytes
        self.path = path
        self.owner = owner
    }

    public var elementCount: Int { shape.reduce(1, *) }
}

/// Anything that holds named tensors: a GGUF file, one safetensors file, or a folder of them.
public protocol TensorSource: Sendable {
    /// A short description for error messages (the file or folder path).
    var sourcePath: String { get }
    var tensorNames: [String] { get }
    func tensor(named name: String) -> TensorData?
}

extension GGUFFile: TensorSource {
    public var sourcePath: String { path }
    public var tensorNames: [String] { tensors.map(\.name) }

    public func tensor(named name: String) -> TensorData? {
        guard let info = tensorsByName[name] else { return nil }
        return TensorData(name: name, type: info.type, shape: info.dims.reversed(), bytes: data(of: info), path: path, owner: self)
    }
}
