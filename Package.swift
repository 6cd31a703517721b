// swift-tools-version: 6.1
import Foundation
import PackageDescription

/// Release builds of the numeric modules skip overflow and bounds checks in hot loops;
/// every index that comes from a file is validated before it reaches them.
/// On x86-64 the kernels are compiled for the building CPU (AVX-512 / AVX2 where present), as
/// llama.cpp does by default; set PAGODA_PORTABLE=1 to build a binary for any x86-64 CPU.
/// Portable x86-64 builds may lack F16C, so they widen float16 with integer code (`PAGODA_PORTABLE`).
let portable = ProcessInfo.processInfo.environment["PAGODA_PORTABLE"] == "1"

let hostCPUFlags: [String] = {
    #if arch(x86_64)
    if portable { return [] }
    return ["-Xcc", "-march=native"]
    #else
    return []
    #endif
}()

/// Whether the building CPU has AVX-512 (32 vector registers of 16 floats): the matmul kernels
/// choose their register tiles by it (`PAGODA_AVX512`).
let hostHasAVX512: Bool = {
    #if arch(x86_64) && os(Linux)
    guard !portable, let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
    else { return false }
    return flags.split(separator: " ").contains("avx512f")
    #else
    return false
    #endif
}()

let numericSettings: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo"] + hostCPUFlags, .when(configuration: .release)),
] + (portable ? [.define("PAGODA_PORTABLE")] : []) + (hostHasAVX512 ? [.define("PAGODA_AVX512")] : [])

let package = Package(
    name: "Pagoda",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Pagoda", targets: ["Formats", "Tokenizers", "Kernels", "Cache", "Models", "Engine", "Server"]),
        .executable(name: "pagoda", targets: ["PagodaCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        .target(name: "HalfConversion"),
        .target(name: "LaneShuffles"),
        .target(name: "Formats", dependencies: ["HalfConversion", "LaneShuffles"], swiftSettings: numericSettings),
        .target(name: "Tokenizers", dependencies: ["Formats"]),
        .target(name: "Cache"),
        .target(name: "Int8Dot", cSettings: [.unsafeFlags(["-O3"] + hostCPUFlags.filter { $0 != "-Xcc" })]),
        .target(name: "Kernels", dependencies: ["Formats", "Int8Dot", "LaneShuffles"], swiftSettings: numericSettings),
        .target(name: "Models", dependencies: ["Formats", "Kernels", "Cache", "Tokenizers"], swiftSettings: numericSettings),
        .target(name: "Engine", dependencies: ["Models", "Cache", "Tokenizers", "Kernels"]),
        .target(
            name: "Server",
            dependencies: [
                "Engine", "Models", "Tokenizers",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "PagodaCLI",
            dependencies: ["Server", "Engine", "Models", "Cache", "Kernels", "Tokenizers", "Formats",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .target(name: "TestSupport", dependencies: ["Formats"], path: "Tests/TestSupport"),
        .testTarget(name: "ServerTests", dependencies: [
            "Server", "Engine", "Models", "Tokenizers", "Formats", "TestSupport",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "Models", "Cache", "Kernels", "Tokenizers", "Formats", "TestSupport"]),
        .testTarget(name: "CacheTests", dependencies: ["Cache", "Kernels"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "Formats", "TestSupport"]),
        .testTarget(name: "FormatsTests", dependencies: ["Formats", "TestSupport"], exclude: []),
        .testTarget(name: "TokenizersTests", dependencies: ["Tokenizers", "Formats", "TestSupport"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "Formats", "Kernels", "Cache", "Engine", "Tokenizers", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
