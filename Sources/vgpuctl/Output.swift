import ControlProtocol
import Foundation

// How vgpuctl prints: tables, sizes, ages, JSON, live lines.

func printJSON<T: Encodable>(_ value: T) {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: (try? e.encode(value)) ?? Data(), as: UTF8.self))
}

func bytes(_ n: some BinaryInteger) -> String {
    let v = Double(n)
    if v >= 1_048_576 { return String(format: "%.1f MiB", v / 1_048_576) }
    if v >= 1024 { return String(format: "%.1f KiB", v / 1024) }
    return "\(n) B"
}

func age(_ s: Double) -> String {
    if s < 60 { return String(format: "%.0fs", s) }
    if s < 3600 { return "\(Int(s) / 60)m\(Int(s) % 60)s" }
    return "\(Int(s) / 3600)h\(Int(s) % 3600 / 60)m"
}

/// Left-aligned columns.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { i, c in i == row.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }.joined(separator: "\n")
}

/// `resolve` holders of a resource: "vgpu-import-device (pid 12)", several joined by "; ".
func holders(_ list: [ResourceHolder]?) -> String {
    guard let list, !list.isEmpty else { return "-" }
    return list.map { "\($0.holder) (pid \($0.pid)\($0.count > 1 ? ", \($0.count) holds" : ""))" }.joined(separator: "; ")
}

/// One line to stdout, unbuffered (watch output is read live through pipes).
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
