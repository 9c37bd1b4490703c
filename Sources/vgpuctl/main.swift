import ArgumentParser
import ControlProtocol
import Foundation
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// vgpuctl: inspect a running vgpu-backend through its control socket.
@main
struct VGPUCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vgpuctl",
        abstract: "Inspect a running vgpu-backend: resources, UUIDs, host buffers.",
        discussion: "Talks to the backend's control socket (default: the single one under \(ControlSocketLocation.defaultDirectory())).",
        subcommands: [List.self, Show.self, Watch.self, Export.self, Dump.self])

    /// Options given before the subcommand (`vgpuctl --socket P list`) are moved right after it,
    /// where the subcommand parses them (not to the end: `export --exec` takes everything after it).
    static func main() {
        var args = Array(CommandLine.arguments.dropFirst())
        var leading: [String] = []
        while let first = args.first {
            if first == "--socket", args.count >= 2 { leading += args.prefix(2); args.removeFirst(2) }
            else if first.hasPrefix("--socket=") || first == "--json" { leading.append(first); args.removeFirst() }
            else { break }
        }
        if !leading.isEmpty, let sub = args.first { args = [sub] + leading + args.dropFirst() } else { args = leading + args }
        do {
            var command = try parseAsRoot(args)
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

struct Connection: ParsableArguments {
    @Option(name: .long, help: "The backend's control socket (default: the single socket under the default directory).")
    var socket: String?

    @Flag(name: .long, help: "Print JSON (the protocol's result object) instead of a table.")
    var json = false

    func connect() throws -> ControlClient {
        signal(SIGPIPE, SIG_IGN)
        let path = try socket ?? ControlSocketLocation.findSingle()
        return try ControlClient(path: path)
    }
}

/// One-line errors with a non-zero exit for everything the control socket can say.
func fail(_ error: Error) -> Never {
    let text = (error as? ControlClientError)?.description ?? "\(error)"
    FileHandle.standardError.write(Data("vgpuctl: \(text)\n".utf8))
    exit(1)
}

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

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List every device's resources.")
    @OptionGroup var connection: Connection

    func run() {
        do {
            let client = try connection.connect()
            let (result, _) = try client.call(.list)
            let devices = result.devices ?? []
            if connection.json { printJSON(devices); return }
            if devices.isEmpty { print("no devices connected"); return }
            for d in devices {
                print("device \(d.id)  \(d.label)  connected \(age(d.connectedSeconds)) ago  \(d.resources.count) resource\(d.resources.count == 1 ? "" : "s")")
                guard !d.resources.isEmpty else { print(); continue }
                print(table(["ID", "UUID", "FORMAT", "SIZE", "HOST BUFFER", "BACKING", "SCANOUTS", "AGE", "HELD BY"], d.resources.map { r in
                    ["\(r.id)", r.uuid ?? "-", "\(r.format) (\(r.fourcc))", "\(r.width)x\(r.height)",
                     "\(r.hostBuffer.kind) \(bytes(r.hostBuffer.size)) \(r.hostBuffer.coherency)\(r.hostBuffer.shadowReason == nil ? "" : " (shadow)")",
                     r.backingEntries == 0 ? "-" : "\(r.backingEntries) entr\(r.backingEntries == 1 ? "y" : "ies"), \(bytes(r.backingBytes))",
                     r.scanouts.isEmpty ? "-" : r.scanouts.map(String.init).joined(separator: ","), age(r.ageSeconds), holders(r.holders)]
                }))
                print()
            }
        } catch { fail(error) }
    }
}

/// `resolve` holders of a resource: "vgpu-import-device (pid 12)", several joined by "; ".
func holders(_ list: [ResourceHolder]?) -> String {
    guard let list, !list.isEmpty else { return "-" }
    return list.map { "\($0.holder) (pid \($0.pid)\($0.count > 1 ? ", \($0.count) holds" : ""))" }.joined(separator: "; ")
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one resource: DEVICE:ID, ID or UUID.")
    @OptionGroup var connection: Connection
    @Argument(help: "DEVICE:ID, ID (if unique over the devices) or UUID.") var resource: String

    func run() {
        do {
            let client = try connection.connect()
            let (result, _) = try client.call(.show, resource: resource)
            guard let d = result.detail else { fail(ControlClientError.protocolError("reply without a resource")) }
            if connection.json { printJSON(d); return }
            let r = d.resource
            print(table(["FIELD", "VALUE"], [
                ["device", "\(r.device) (\(d.deviceLabel))"], ["resource id", "\(r.id)"], ["uuid", r.uuid ?? "- (not exported)"],
                ["format", "\(r.format), DRM fourcc \(r.fourcc), linear"], ["size", "\(r.width)x\(r.height), stride \(r.stride)"],
                ["host buffer", "\(r.hostBuffer.kind) (\(r.hostBuffer.kind == "memfd" ? "no dmabuf" : "dmabuf")), \(r.hostBuffer.size) bytes, " +
                    (r.hostBuffer.exported ? "exported" : "not exported yet: the host copy")],
                ["coherency", r.hostBuffer.coherency == "zero-copy"
                    ? "zero-copy: the guest's own pages, guest writes show at once"
                    : "on-transfer: the backend's host copy, updated by TRANSFER_TO_HOST_2D"],
                ["pages", r.hostBuffer.source == "guest-ram" ? "guest RAM" : "host copy"],
                ["scanouts", r.scanouts.isEmpty ? "-" : r.scanouts.map(String.init).joined(separator: ",")],
                ["age", age(r.ageSeconds)],
                ["held by", holders(r.holders)],
            ]))
            if let why = r.hostBuffer.shadowReason { print("shadow: \(why)") }
            print()
            print("guest backing (guest physical ranges read by TRANSFER_TO_HOST_2D; not an identity): \(r.backingEntries) entries, \(r.backingBytes) bytes")
            if !d.guestBacking.isEmpty {
                print(table(["#", "GUEST PHYSICAL", "LENGTH"], d.guestBacking.enumerated().map { i, g in ["\(i)", g.guestPhysicalAddress, "\(g.length)"] }))
            }
        } catch { fail(error) }
    }
}

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print resource and device events as they happen (created, uuid-assigned, unref, device-reset, device-connected, device-disconnected).")
    @OptionGroup var connection: Connection

    func run() {
        do {
            let client = try connection.connect()
            _ = try client.call(.watch)
            while let e = try client.nextEvent() {
                if connection.json {
                    FileHandle.standardOutput.write(Data(ControlCodec.encodeLine(e)))
                } else {
                    var line = String(format: "%.3f ", e.time) + e.kind.padding(toLength: 19, withPad: " ", startingAt: 0) + " device \(e.device)"
                    if let r = e.resource { line += " resource \(r)" }
                    if let u = e.uuid { line += " uuid \(u)" }
                    if let n = e.dropped { line += " (\(n) events dropped before this)" }
                    emit(line)
                }
            }
        } catch { fail(error) }
    }
}

/// One line to stdout, unbuffered (watch output is read live through pipes).
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

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
