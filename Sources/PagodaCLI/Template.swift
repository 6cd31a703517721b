import ArgumentParser
import Foundation
import Tokenizers

/// `pagoda template`: renders a chat template with a JSON context, so templates can be checked
/// against transformers from outside. Exits non-zero with the error message on a template error.
struct Template: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Render a Jinja chat template with a JSON context.")

    @Option(help: "The template file (.jinja).")
    var template: String

    @Option(name: .customLong("context-json"), help: "A JSON object whose keys are the template's top-level variables (key order kept).")
    var contextJSON: String

    @Option(help: "Freeze strftime_now at this date (YYYY-MM-DD), for reproducible output.")
    var date: String?

    func run() throws {
        try reportingErrors {
            guard let source = FileManager.default.contents(atPath: template).map({ String(decoding: $0, as: UTF8.self) }) else {
                throw ValidationError("cannot read template file \(template)")
            }
            guard let data = FileManager.default.contents(atPath: contextJSON) else {
                throw ValidationError("cannot read context file \(contextJSON)")
            }
            guard case .object(let context) = try TemplateValue.parse(jsonData: data) else {
                throw ValidationError("\(contextJSON): the context must be a JSON object")
            }
            var now: DateComponents?
            if let date {
                let parts = date.split(separator: "-").compactMap { Int($0) }
                guard parts.count == 3 else { throw ValidationError("--date must be YYYY-MM-DD, got \(date)") }
                now = DateComponents(year: parts[0], month: parts[1], day: parts[2], hour: 0, minute: 0, second: 0)
            }
            let rendered = try ChatTemplate(source).render(context, now: now)
            FileHandle.standardOutput.write(Data(rendered.utf8))
        }
    }
}
