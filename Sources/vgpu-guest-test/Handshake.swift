// The kernel command line (vgpu.* parameters) and the VGPU-READY / VGPU-ACK handshake with the host.
import CGuestDRM
import Glibc

// MARK: Kernel command line and the host handshake

func readFile(_ path: String, limit: Int = 65536) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: limit)
    var total = 0
    while total < limit {
        let n = bytes.withUnsafeMutableBufferPointer { read(fd, $0.baseAddress! + total, limit - total) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        total += n
    }
    return String(decoding: bytes[..<total], as: UTF8.self)
}

func kernelParameter(_ name: String) -> String? {
    guard let cmdline = readFile("/proc/cmdline") else { return nil }
    for word in cmdline.split(whereSeparator: { $0 == " " || $0 == "\n" }) where word.hasPrefix(name + "=") {
        return String(word.dropFirst(name.count + 1))
    }
    return nil
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func sleepMilliseconds(_ ms: Int) { usleep(UInt32(ms * 1000)) }

/// `VGPU-READY tag`, then (with vgpu.ack=1) the host's `VGPU-ACK tag`, else vgpu.settle seconds.
final class Handshake {
    let acknowledge = kernelParameter("vgpu.ack") == "1"
    let timeout = Double(kernelParameter("vgpu.ack_timeout") ?? "") ?? 120
    let settle = Int(kernelParameter("vgpu.settle") ?? "") ?? 2
    private var serial: Int32 = -1
    private var pending: [UInt8] = []

    func ready(_ tag: String) -> Bool {
        emit("VGPU-READY \(tag)")
        guard acknowledge else { sleep(UInt32(settle)); return true }
        if serial < 0 { serial = open("/dev/ttyS0", O_RDONLY | O_NOCTTY | O_CLOEXEC | O_NONBLOCK) }
        guard serial >= 0 else { emit("VGPU-LOG cannot open /dev/ttyS0 for VGPU-ACK: errno \(errno)"); return false }
        let deadline = monotonicSeconds() + timeout
        while monotonicSeconds() < deadline {
            while let newline = pending.firstIndex(of: 10) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                if line.contains("VGPU-ACK \(tag)") { return true }
            }
            var pfd = pollfd(fd: serial, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 500) > 0 {
                var buffer = [UInt8](repeating: 0, count: 256)
                let n = buffer.withUnsafeMutableBufferPointer { read(serial, $0.baseAddress!, 256) }
                if n > 0 { pending += buffer[..<n] }
            }
        }
        emit("VGPU-LOG no VGPU-ACK \(tag) within \(Int(timeout))s")
        return false
    }
}
