/// An error in a model file or its companion files. `description` is one line that names the file
/// and the problem, so the CLI and server can print it as is.
public struct FormatError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The file (or folder) the problem was found in.
    public let path: String
    /// What is wrong, in words.
    public let message: String

    public init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
}
