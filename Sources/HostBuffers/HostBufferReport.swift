/// `vgpu-backend check-host` output: a table for people, JSON for scripts.
public enum HostBufferReport {
    /// KIND / STATUS / DETAIL, one row per kind.
    public static func table(_ results: [HostBufferProbeResult]) -> String {
        let rows = [["KIND", "STATUS", "DETAIL"]] + results.map { [$0.kind.rawValue, $0.status.name, $0.status.detail] }
        let widths = (0..<2).map { c in rows.map { $0[c].count }.max() ?? 0 }
        return rows.map { row in
            row[0].padding(widths[0]) + "  " + row[1].padding(widths[1]) + "  " + row[2]
        }.joined(separator: "\n") + "\n"
    }

    /// `{"hostBuffers": [{"kind": ..., "status": ..., "dmabuf": ..., "detail": ..., "step"?, "errno"?}], "usable": [...]}`
    public static func json(_ results: [HostBufferProbeResult]) -> String {
        let entries = results.map { r -> String in
            var fields = [
                "\"kind\": \(quote(r.kind.rawValue))",
                "\"status\": \(quote(r.status.name))",
                "\"dmabuf\": \(r.kind.isDMABuf)",
                "\"detail\": \(quote(r.status.detail))",
            ]
            if case let .failed(step, e) = r.status {
                fields.append("\"step\": \(quote(step))")
                fields.append("\"errno\": \(e.rawValue)")
            }
            return "    {" + fields.joined(separator: ", ") + "}"
        }
        let usable = results.filter(\.status.isAvailable).map { quote($0.kind.rawValue) }
        return "{\n  \"hostBuffers\": [\n" + entries.joined(separator: ",\n") + "\n  ],\n  \"usable\": [" + usable.joined(separator: ", ") + "]\n}\n"
    }

    /// A JSON string literal.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}

extension String {
    fileprivate func padding(_ width: Int) -> String { self + String(repeating: " ", count: max(0, width - count)) }
}
