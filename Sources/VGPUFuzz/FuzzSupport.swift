import CShims
import Logging
import VhostUser
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// The fuzz targets (issue 11 §1). Each takes one input and must never trap, hang or leak:
/// libFuzzer with AddressSanitizer (`scripts/fuzz`) finds the inputs that do; the plain build's
/// `vgpu-fuzz replay` runs the seed corpora and every crash found as a regression test.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case gpu, queue, vhostUser = "vhost-user", display, control, virgl, importer

    /// Runs one input. Targets set themselves up on first use.
    public func run(_ data: UnsafeRawBufferPointer) {
        switch self {
        case .gpu: GPUFuzz.run(data)
        case .queue: QueueFuzz.run(data)
        case .vhostUser: VhostUserFuzz.run(data)
        case .display: DisplayFuzz.run(data)
        case .control: ControlFuzz.run(data)
        case .virgl: VirglFuzz.run(data)
        case .importer: ImportFuzz.run(data)
        }
    }
}

/// A logger that drops everything (the targets log every refusal).
func quietLogger() -> Logger {
    var l = Logger(label: "fuzz")
    l.logLevel = .critical
    return l
}

/// Reads numbers and bytes off the input; past its end every read gives zeros, so every
/// input is a complete program.
struct FuzzInput {
    let data: UnsafeRawBufferPointer
    var offset = 0
    init(_ data: UnsafeRawBufferPointer) { self.data = data }
    var atEnd: Bool { offset >= data.count }
    var remaining: Int { max(0, data.count - offset) }

    mutating func u8() -> UInt8 {
        guard offset < data.count else { return 0 }
        defer { offset += 1 }
        return data[offset]
    }
    mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }
    mutating func bytes(_ n: Int) -> [UInt8] {
        let k = min(n, remaining)
        defer { offset += k }
        return k == 0 ? [] : Array(data[offset..<(offset + k)])
    }
    mutating func rest() -> [UInt8] { bytes(remaining) }
}

/// Guest RAM for in-process targets: one sealed memfd region at guest address 0 (mapped once).
final class FuzzRAM: @unchecked Sendable {
    let size: Int
    let memory: GuestMemory
    let base: UnsafeMutableRawPointer

    init(size: Int) {
        let fd = vgpu_memfd_create("vgpu-fuzz-ram", UInt32(MFD_CLOEXEC | MFD_ALLOW_SEALING))
        precondition(fd >= 0 && ftruncate(fd, off_t(size)) == 0, "fuzz RAM")
        _ = vgpu_memfd_add_seals(fd, vgpu_F_SEAL_SHRINK() | vgpu_F_SEAL_GROW())
        let mapping = try! SharedFileMapping(file: OwnedFileDescriptor(fd), length: size)
        base = mapping.base
        self.size = size
        let region = GuestMemoryRegion(guestStart: GuestPhysicalAddress(0), size: UInt64(size),
                                       frontendStart: FrontendVirtualAddress(0), fileOffset: 0,
                                       hostBase: mapping.base, mapping: mapping, fileDescriptor: fd)
        memory = try! GuestMemory(regions: [region])
    }

    /// Copies `bytes` to guest address `at` (clipped to RAM).
    func write(_ bytes: [UInt8], at: Int) {
        guard at < size else { return }
        let n = min(bytes.count, size - at)
        bytes.withUnsafeBytes { (base + at).copyMemory(from: $0.baseAddress!, byteCount: n) }
    }

    func zero(_ at: Int, _ count: Int) {
        guard at < size else { return }
        memset(base + at, 0, min(count, size - at))
    }
}

/// A chain for a request of `request` bytes and a response buffer, laid out as the input says:
/// plain, the request split over two descriptors, the response first (writable before
/// readable), or descriptors at addresses the input chooses (outside RAM, overlapping).
func fuzzChain(_ input: inout FuzzInput, layout: UInt8, ram: FuzzRAM, requestAt: UInt64, requestLength: Int,
               responseAt: UInt64, responseLength: UInt32) -> DescriptorChain {
    let req = GuestPhysicalAddress(requestAt), resp = GuestPhysicalAddress(responseAt)
    let len = UInt32(requestLength)
    var d: [Descriptor]
    switch layout % 6 {
    case 0:
        d = [Descriptor(address: req, length: len, isWritable: false), Descriptor(address: resp, length: responseLength, isWritable: true)]
    case 1:
        let cut = len == 0 ? 0 : UInt32(input.u16()) % len
        d = [Descriptor(address: req, length: cut, isWritable: false),
             Descriptor(address: GuestPhysicalAddress(requestAt + UInt64(cut)), length: len - cut, isWritable: false),
             Descriptor(address: resp, length: responseLength, isWritable: true)]
    case 2:
        d = [Descriptor(address: resp, length: responseLength, isWritable: true), Descriptor(address: req, length: len, isWritable: false)]
    case 3:
        d = [Descriptor(address: GuestPhysicalAddress(input.u64()), length: input.u32(), isWritable: false),
             Descriptor(address: GuestPhysicalAddress(input.u64()), length: input.u32(), isWritable: true)]
    case 4:
        d = [Descriptor(address: req, length: len, isWritable: false)]   // no room for a response
    default:
        d = [Descriptor(address: req, length: len, isWritable: false),
             Descriptor(address: resp, length: UInt32(input.u8()), isWritable: true)]   // a short response
    }
    return DescriptorChain(head: UInt16(layout), descriptors: d)
}
