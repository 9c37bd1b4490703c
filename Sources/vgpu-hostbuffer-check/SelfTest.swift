import ArgumentParser
import CShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `vgpu-hostbuffer-check consumer-self-test` (hidden): the consumer against a udmabuf this program
/// makes itself over a sealed memfd, without vgpu-backend or vgpuctl: proves the consumer's
/// fdinfo, mapping and DMA_BUF_IOCTL_SYNC handling on a real dmabuf, handed over as an fd opened
/// anew read-only through /proc/self/fd (as the control protocol documents for export) when the
/// kernel allows that, else as a dup. Prints VGPU-LOG lines only (it checks the checker).
struct ConsumerSelfTest: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "consumer-self-test", shouldDisplay: false)

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let log = { (s: String) in emit("VGPU-LOG self-test: \(s)") }
        let (w, h) = (Checks.width, Checks.height)
        let size = Checks.frameBytes
        let memfd = vgpu_memfd_create("self-test", UInt32(MFD_CLOEXEC | MFD_ALLOW_SEALING))
        guard memfd >= 0, ftruncate(memfd, off_t(size)) == 0, vgpu_memfd_add_seals(memfd, vgpu_F_SEAL_SHRINK()) == 0 else {
            log("memfd: \(String(cString: strerror(errno)))"); throw ExitCode(1)
        }
        guard let mem = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0), mem != MAP_FAILED else {
            log("mmap memfd: \(String(cString: strerror(errno)))"); throw ExitCode(1)
        }
        patternBytes(width: w, height: h, seed: 7).withUnsafeBytes { mem.copyMemory(from: $0.baseAddress!, byteCount: size) }
        let dev = open("/dev/udmabuf", O_RDWR | O_CLOEXEC)
        var create = udmabuf_create(memfd: UInt32(memfd), flags: UInt32(UDMABUF_FLAGS_CLOEXEC), offset: 0, size: UInt64(size))
        let dmabuf = dev >= 0 ? vgpu_ioctl_ptr(dev, vgpu_UDMABUF_CREATE(), &create) : -1
        guard dmabuf >= 0 else { log("UDMABUF_CREATE: \(String(cString: strerror(errno)))"); throw ExitCode(1) }
        _ = "vgpu:self-test".withCString { vgpu_ioctl_ptr(dmabuf, vgpu_DMA_BUF_SET_NAME(), UnsafeMutableRawPointer(mutating: $0)) }
        var handed = open("/proc/self/fd/\(dmabuf)", O_RDONLY)
        if handed < 0 {
            log("re-opening a udmabuf through /proc/self/fd/N O_RDONLY fails: \(String(cString: strerror(errno))); handing over a dup")
            handed = dup(dmabuf)
        } else {
            log("re-opening a udmabuf through /proc/self/fd/N O_RDONLY works")
        }
        for (k, v) in [("VGPU_FD", "\(handed)"), ("VGPU_HANDLE_TYPE", "dmabuf"), ("VGPU_WIDTH", "\(w)"), ("VGPU_HEIGHT", "\(h)"),
                       ("VGPU_STRIDE", "\(w * 4)"), ("VGPU_OFFSET", "0"), ("VGPU_SIZE", "\(size)"), ("VGPU_UUID", "self-test")] {
            setenv(k, v, 1)
        }
        let input = try makePipe(), output = try makePipe()
        let child = try Child(ownExecutable(), ["consume"], stdin: input.read, stdout: output.write, stderr: 2)
        close(input.read); close(output.write); close(handed)
        let reader = LineReader(fd: output.read)
        log("consumer said: \(reader.next(timeout: 30) ?? "nothing")")
        func ask(_ r: String) -> String { _ = writeAll(input.write, r + "\n"); return reader.next(timeout: 30) ?? "no reply" }
        log("EXPECT 7: \(ask("EXPECT 7"))")
        patternBytes(width: w, height: h, seed: 8).withUnsafeBytes { mem.copyMemory(from: $0.baseAddress!, byteCount: size) }
        log("memfd rewritten with pattern 8; EXPECT 8: \(ask("EXPECT 8"))")
        log("EXPECT-NOT 7: \(ask("EXPECT-NOT 7"))")
        _ = writeAll(input.write, "EXIT\n")
        log("consumer exit status \(child.wait(timeout: 10).map(String.init) ?? "still running")")

        // What the other exporters call themselves in fdinfo (what the heap and drm checks expect).
        func expName(_ fd: Int32) -> String {
            let text = (try? String(contentsOfFile: "/proc/self/fdinfo/\(fd)", encoding: .utf8)) ?? ""
            return text.split(separator: "\n").first { $0.hasPrefix("exp_name") }.map(String.init) ?? "no exp_name"
        }
        let heap = open("/dev/dma_heap/system", O_RDONLY | O_CLOEXEC)
        var alloc = dma_heap_allocation_data()
        alloc.len = UInt64(size)
        alloc.fd_flags = vgpu_dmabuf_fd_flags()
        if heap >= 0, vgpu_ioctl_ptr(heap, vgpu_DMA_HEAP_IOCTL_ALLOC(), &alloc) == 0 {
            log("dma-heap system dmabuf: \(expName(Int32(bitPattern: alloc.fd)))")
        } else {
            log("dma-heap: \(String(cString: strerror(errno)))")
        }
        let card = open("/dev/dri/card0", O_RDWR | O_CLOEXEC)
        var dumb = drm_mode_create_dumb()
        dumb.width = UInt32(w); dumb.height = UInt32(h); dumb.bpp = 32
        var prime = drm_prime_handle()
        if card >= 0, vgpu_ioctl_ptr(card, vgpu_DRM_IOCTL_MODE_CREATE_DUMB(), &dumb) == 0 {
            prime.handle = dumb.handle
            prime.flags = vgpu_dmabuf_fd_flags()
            if vgpu_ioctl_ptr(card, vgpu_DRM_IOCTL_PRIME_HANDLE_TO_FD(), &prime) == 0 {
                log("card0 dumb buffer \(w)x\(h) pitch \(dumb.pitch) PRIME dmabuf: \(expName(prime.fd)); reopen O_RDONLY: "
                    + (open("/proc/self/fd/\(prime.fd)", O_RDONLY) >= 0 ? "works" : String(cString: strerror(errno))))
            } else {
                log("PRIME_HANDLE_TO_FD: \(String(cString: strerror(errno)))")
            }
        } else {
            log("card0 CREATE_DUMB: \(String(cString: strerror(errno)))")
        }
    }
}
