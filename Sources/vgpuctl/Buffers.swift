import ArgumentParser
import ControlProtocol
import Foundation
import SystemSupport
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif

// The subcommands that receive a resource's buffer fd: export (by UUID) and dump (to a PNG).

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Receive a resource's host buffer fd by UUID, with its layout.",
        discussion: """
            With --exec, runs CMD with the fd inherited; the environment says VGPU_FD, VGPU_HANDLE_TYPE (dmabuf or memfd), VGPU_KIND, VGPU_COHERENCY, \
            VGPU_FOURCC, VGPU_DRM_FORMAT, VGPU_WIDTH, VGPU_HEIGHT, VGPU_STRIDE, VGPU_OFFSET, VGPU_SIZE, VGPU_MODIFIER, VGPU_UUID.
            """)
    @OptionGroup var connection: Connection
    @Argument(help: "The resource's UUID.") var uuid: String
    @Option(name: .long, parsing: .remaining, help: "Run this command (and its arguments) with the fd inherited.")
    var exec: [String] = []

    func validate() throws {
        guard ResourceUUID(string: uuid) != nil else { throw ValidationError("\"\(uuid)\" is not a UUID (resources are exported by UUID)") }
    }

    func run() {
        do {
            let client = try connection.connect()
            let (result, fd) = try client.call(.export, resource: uuid)
            guard let b = result.buffer, let fd else { fail(ControlClientError.protocolError("export reply without a buffer fd")) }
            if exec.isEmpty {
                if connection.json { printJSON(b) } else {
                    print("received fd \(fd.rawValue): \(b.handleType) (\(b.kind ?? b.handleType), \(b.coherency ?? "on-transfer")), \(b.size) bytes, \(b.width)x\(b.height) \(b.fourcc) stride \(b.stride) offset \(b.offset) modifier \(b.modifier) (LINEAR)")
                    print("(the fd closes when vgpuctl exits; use --exec CMD to hand it to a program)")
                }
                return
            }
            // Hand the fd to CMD: clear close-on-exec, describe it in the environment, exec.
            _ = fcntl(fd.rawValue, F_SETFD, 0)
            let env: [(String, String)] = [
                ("VGPU_FD", "\(fd.rawValue)"), ("VGPU_HANDLE_TYPE", b.handleType), ("VGPU_FOURCC", b.fourcc),
                ("VGPU_DRM_FORMAT", "\(b.drmFormat)"), ("VGPU_WIDTH", "\(b.width)"), ("VGPU_HEIGHT", "\(b.height)"),
                ("VGPU_STRIDE", "\(b.stride)"), ("VGPU_OFFSET", "\(b.offset)"), ("VGPU_SIZE", "\(b.size)"),
                ("VGPU_MODIFIER", "\(b.modifier)"), ("VGPU_UUID", b.uuid ?? ""),
                ("VGPU_KIND", b.kind ?? b.handleType), ("VGPU_COHERENCY", b.coherency ?? "on-transfer"),
            ]
            for (k, v) in env { setenv(k, v, 1) }
            var argv: [UnsafeMutablePointer<CChar>?] = exec.map { strdup($0) } + [nil]
            execvp(exec[0], &argv)
            fail(ControlClientError.protocolError("cannot run \(exec[0]): \(String(cString: strerror(errno)))"))
        } catch { fail(error) }
    }
}

struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a resource's pixels (its host copy) as a PNG.")
    @OptionGroup var connection: Connection
    @Argument(help: "DEVICE:ID, ID or UUID.") var resource: String
    @Argument(help: "Output PNG path.") var output: String

    func run() {
        do {
            let client = try connection.connect()
            let (result, fd) = try client.call(.dump, resource: resource)
            guard let b = result.buffer, let fd else { fail(ControlClientError.protocolError("dump reply without a buffer fd")) }
            guard let offsets = DRMFourCC.rgbByteOffsets(named: b.fourcc) else {
                fail(ControlClientError.protocolError("unexpected format \(b.fourcc)"))
            }
            // The server's numbers are checked against each other and against the fd's real
            // size: mapping or reading past the file's end would kill vgpuctl with SIGBUS.
            var st = stat()
            guard fstat(fd.rawValue, &st) == 0 else { fail(ControlClientError.protocolError("fstat: \(String(cString: strerror(errno)))")) }
            if let reason = b.unreadableReason(fileSize: Int(st.st_size)) {
                fail(ControlClientError.protocolError("unexpected layout: \(reason)"))
            }
            guard let p = mmap(nil, b.size, PROT_READ, MAP_SHARED, fd.rawValue, 0), p != MAP_FAILED else {
                fail(ControlClientError.protocolError("cannot map the buffer: \(String(cString: strerror(errno)))"))
            }
            defer { munmap(p, b.size) }
            let rgb = convertToRGB(UnsafeRawPointer(p) + b.offset, offsets: offsets, width: Int(b.width), height: Int(b.height), stride: b.stride)
            let png = PNG.encodeRGB(width: Int(b.width), height: Int(b.height), rgb: rgb)
            guard FileManager.default.createFile(atPath: output, contents: Data(png)) else {
                fail(ControlClientError.protocolError("cannot write \(output)"))
            }
            if connection.json { printJSON(b) } else { print("wrote \(output): \(b.width)x\(b.height) from \(b.device):\(b.resource) (\(b.format))") }
        } catch { fail(error) }
    }
}
