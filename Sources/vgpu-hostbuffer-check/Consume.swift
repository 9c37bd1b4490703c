import ArgumentParser
import CShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `vgpu-hostbuffer-check consume`: run by `vgpuctl export UUID --exec ...` with the exported fd
/// inherited (VGPU_FD and the layout in VGPU_*). It maps the fd read-only and answers the parent
/// over stdin/stdout:
///
/// - first, one line `INFO {json}`: handleType, the fd's `exp_name` and `name` from
///   /proc/self/fdinfo, its (st_dev, st_ino), the layout, and whether the mapping worked;
/// - then, per request line: `EXPECT SEED` (the mapping shows `patternBytes(SEED)`) or
///   `EXPECT-NOT SEED` (it does not) gets `OK detail` or `BAD detail`; each read is bracketed by
///   DMA_BUF_IOCTL_SYNC (START|READ, END|READ) when the fd is a dmabuf; `EXIT` ends it.
struct Consume: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The consumer end of `vgpuctl export --exec`: maps VGPU_FD and compares it with test patterns on request.")

    func run() throws {
        let env = ProcessInfo.processInfo.environment
        func int(_ k: String) -> Int { Int(env[k] ?? "") ?? -1 }
        let fd = Int32(int("VGPU_FD"))
        let width = int("VGPU_WIDTH"), height = int("VGPU_HEIGHT"), stride = int("VGPU_STRIDE")
        let offset = int("VGPU_OFFSET"), size = int("VGPU_SIZE")
        var info: [String: Any] = [
            "handleType": env["VGPU_HANDLE_TYPE"] ?? "", "uuid": env["VGPU_UUID"] ?? "", "fourcc": env["VGPU_FOURCC"] ?? "",
            "fd": Int(fd), "width": width, "height": height, "stride": stride, "offset": offset, "size": size,
        ]
        var st = stat()
        if fd >= 0, fstat(fd, &st) == 0 {
            info["dev"] = UInt64(st.st_dev)
            info["ino"] = UInt64(st.st_ino)
        } else {
            info["error"] = "VGPU_FD \(fd) is not an open fd"
        }
        let fdinfo = (try? String(contentsOfFile: "/proc/self/fdinfo/\(fd)", encoding: .utf8)) ?? ""
        for line in fdinfo.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            if parts[0] == "exp_name" { info["expName"] = parts[1] }
            if parts[0] == "name" { info["name"] = parts[1] }
            if parts[0] == "flags" { info["flags"] = parts[1] }
        }
        let isDMABuf = info["expName"] != nil
        var base: UnsafeRawPointer?
        let layoutOK = width > 0 && height > 0 && stride >= width * 4 && offset >= 0 && size >= offset + stride * (height - 1) + width * 4
        if !layoutOK {
            info["error"] = "bad layout \(width)x\(height) stride \(stride) offset \(offset) size \(size)"
        } else if fd >= 0 {
            if let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED {
                base = UnsafeRawPointer(p)
            } else {
                info["error"] = "mmap(PROT_READ, MAP_SHARED) of \(size) bytes: \(String(cString: strerror(errno)))"
            }
        }
        info["mapped"] = base != nil
        let json = (try? JSONSerialization.data(withJSONObject: info, options: [.sortedKeys])) ?? Data("{}".utf8)
        emit("INFO " + String(decoding: json, as: UTF8.self))

        func sync(_ flags: UInt64) -> String? {
            guard isDMABuf else { return nil }
            var s = dma_buf_sync(flags: flags)
            return vgpu_ioctl_ptr(fd, vgpu_DMA_BUF_IOCTL_SYNC(), &s) == 0 ? nil : "DMA_BUF_IOCTL_SYNC: \(String(cString: strerror(errno)))"
        }

        /// Nil when the mapping shows the pattern; else where it first differs.
        func compare(seed: Int) -> (mismatch: String?, syncError: String?) {
            guard let base else { return ("not mapped", nil) }
            let expected = patternBytes(width: width, height: height, seed: seed)
            if let e = sync(vgpu_DMA_BUF_SYNC_START_READ()) { return (nil, e) }
            var mismatch: String?
            expected.withUnsafeBytes { exp in
                for y in 0..<height where mismatch == nil {
                    let row = base + offset + y * stride
                    if memcmp(row, exp.baseAddress! + y * width * 4, width * 4) != 0 {
                        for x in 0..<width {
                            let got = (0..<4).map { row.load(fromByteOffset: x * 4 + $0, as: UInt8.self) }
                            let want = (0..<4).map { exp[(y * width + x) * 4 + $0] }
                            if got != want {
                                mismatch = "pixel (\(x),\(y)) is \(hex(got)), pattern \(seed) has \(hex(want))"
                                break
                            }
                        }
                    }
                }
            }
            if let e = sync(vgpu_DMA_BUF_SYNC_END_READ()) { return (mismatch, e) }
            return (mismatch, nil)
        }

        let how = isDMABuf ? "read-only mapping, reads bracketed by DMA_BUF_IOCTL_SYNC" : "read-only mapping (not a dmabuf: no sync)"
        while let line = readLine() {
            let words = line.split(separator: " ")
            guard let verb = words.first else { continue }
            let seed = words.count > 1 ? Int(words[1]) ?? 0 : 0
            switch verb {
            case "EXPECT":
                let (mismatch, syncError) = compare(seed: seed)
                if let syncError { emit("BAD \(syncError)") } else if let mismatch { emit("BAD \(mismatch)") } else {
                    emit("OK all \(width)x\(height) pixels show pattern \(seed) (\(how))")
                }
            case "EXPECT-NOT":
                let (mismatch, syncError) = compare(seed: seed)
                if let syncError { emit("BAD \(syncError)") } else if let mismatch { emit("OK pattern \(seed) not shown: \(mismatch)") } else {
                    emit("BAD the mapping already shows pattern \(seed)")
                }
            case "EXIT":
                return
            default:
                emit("BAD unknown request \(line)")
            }
        }
    }
}

func hex(_ bytes: [UInt8]) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}
