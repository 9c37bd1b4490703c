// The cross-device import scenarios: buffers exported by the guest's virtio-gpu driver (PRIME,
// ASSIGN_UUID) are imported by a second virtio device through the vgpu_import module
// (/dev/vgpu-import, guest/vgpu-import) by UUID, and the host's answer (device, resource,
// layout, FNV-1a digest of the pixels) is checked against what the guest drew.
import CGuestDRM
import Glibc

// MARK: /dev/vgpu-import

/// The importer module's character device.
final class ImportDevice {
    let fd: Int32

    init(path: String = VGPU_IMPORT_DEVICE_PATH, waitSeconds: Double = 15) throws {
        fd = try openWaiting(path, waitSeconds: waitSeconds, hint: " (is vgpu_import loaded and bound?)")
    }

    deinit { close(fd) }

    /// The answer and 0, or the errno of a refused call.
    private func call(_ request: UInt, _ argument: vgpu_import) -> (vgpu_import, Int32) {
        var argument = argument
        let r = withUnsafeMutablePointer(to: &argument) { vgpu_guest_ioctl(fd, request, UnsafeMutableRawPointer($0)) }
        return (argument, r < 0 ? -r : 0)
    }

    func importFD(_ dmabuf: Int32, flags: UInt32 = 0) -> (vgpu_import, Int32) {
        var a = vgpu_import(); a.fd = dmabuf; a.flags = flags
        return call(vgpu_import_ioctl_import(), a)
    }

    func importUUID(_ uuid: [UInt8]) -> (vgpu_import, Int32) {
        var a = vgpu_import(); a.fd = -1
        withUnsafeMutableBytes(of: &a.uuid) { for i in 0..<16 { $0[i] = uuid[i] } }
        return call(vgpu_import_ioctl_import_uuid(), a)
    }

    func query(_ handle: UInt32) -> (vgpu_import, Int32) {
        var a = vgpu_import(); a.fd = -1; a.handle = handle
        return call(vgpu_import_ioctl_query(), a)
    }

    func release(_ handle: UInt32) -> (vgpu_import, Int32) {
        var a = vgpu_import(); a.fd = -1; a.handle = handle
        return call(vgpu_import_ioctl_release(), a)
    }
}

func importStatusName(_ s: UInt32) -> String {
    switch Int32(s) {
    case VGPU_IMPORT_STATUS_OK: return "ok"
    case VGPU_IMPORT_STATUS_NOT_FOUND: return "not-found"
    case VGPU_IMPORT_STATUS_REVOKED: return "revoked"
    case VGPU_IMPORT_STATUS_UNSUPPORTED: return "unsupported"
    case VGPU_IMPORT_STATUS_ERROR: return "error"
    case VGPU_IMPORT_STATUS_INVALID: return "invalid"
    case VGPU_IMPORT_STATUS_NO_HANDLES: return "no-handles"
    default: return "status\(s)"
    }
}

func importPathName(_ p: UInt32) -> String {
    switch Int32(p) {
    case VGPU_IMPORT_PATH_SHARED_OBJECT: return "shared-object"
    case VGPU_IMPORT_PATH_CONTROL: return "control-socket"
    default: return "none"
    }
}

func importKindName(_ k: UInt32) -> String {
    switch Int32(k) {
    case VGPU_IMPORT_KIND_UDMABUF: return "udmabuf"
    case VGPU_IMPORT_KIND_DMA_HEAP: return "dma-heap"
    case VGPU_IMPORT_KIND_DRM_DUMB: return "drm-dumb"
    case VGPU_IMPORT_KIND_MEMFD: return "memfd"
    case VGPU_IMPORT_KIND_GL_TEXTURE: return "gl-texture"
    default: return "unknown"
    }
}

func importCoherencyName(_ c: UInt32) -> String {
    switch Int32(c) {
    case VGPU_IMPORT_COHERENCY_ZERO_COPY: return "zero-copy"
    case VGPU_IMPORT_COHERENCY_ON_TRANSFER: return "on-transfer"
    case VGPU_IMPORT_COHERENCY_ON_FLUSH: return "on-flush"
    default: return "unknown"
    }
}

func uuidString(_ a: vgpu_import) -> String {
    withUnsafeBytes(of: a.uuid) { b in
        let hex = b.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }
        return [0..<4, 4..<6, 6..<8, 8..<10, 10..<16].map { hex[$0].joined() }.joined(separator: "-")
    }
}

func uuidBytes(_ a: vgpu_import) -> [UInt8] { withUnsafeBytes(of: a.uuid) { Array($0) } }

/// What the host said about a buffer, in one line.
func describe(_ a: vgpu_import) -> String {
    "status=\(importStatusName(a.status)) handle=\(a.handle) device=\(a.device) resource=\(a.resource_id) "
        + "\(a.width)x\(a.height) stride=\(a.stride) fourcc=0x\(String(a.fourcc, radix: 16)) size=\(a.size) "
        + "kind=\(importKindName(a.host_kind)) coherency=\(importCoherencyName(a.coherency)) path=\(importPathName(a.path)) so_status=\(a.shared_object_status) "
        + "digest=\(String(a.digest, radix: 16)) device_us=\(a.device_ns / 1000) round_trip_us=\(a.round_trip_ns / 1000)"
}

// MARK: Exported buffers

/// A dumb buffer the guest drew a pattern into, transferred to the host and exported by PRIME.
final class ExportedBuffer {
    let device: Device
    var buffer: PixelBuffer?
    let handle: UInt32
    let width: Int, height: Int
    private(set) var primeFD: Int32
    let resourceID: UInt32
    private(set) var digest: UInt64 = 0

    init(_ device: Device, width: Int, height: Int, seed: UInt32) throws {
        self.device = device
        let buffer = try PixelBuffer.dumb(device, width: width, height: height)
        self.buffer = buffer
        handle = buffer.handle
        self.width = width; self.height = height
        var prime = drm_prime_handle(handle: buffer.handle, flags: UInt32(O_CLOEXEC | O_RDWR), fd: -1)
        var e = device.ioctlErrno(vgpu_drm_ioctl_prime_handle_to_fd(), &prime)
        if e == EINVAL || e == EACCES || e == EPERM {  // older kernels refuse O_RDWR
            prime = drm_prime_handle(handle: buffer.handle, flags: UInt32(O_CLOEXEC), fd: -1)
            e = device.ioctlErrno(vgpu_drm_ioctl_prime_handle_to_fd(), &prime)
        }
        guard e == 0 else { throw IoctlError(what: "PRIME_HANDLE_TO_FD", errno: e) }
        primeFD = prime.fd
        var info = drm_virtgpu_resource_info(); info.bo_handle = buffer.handle
        try device.ioctl("VIRTGPU_RESOURCE_INFO", vgpu_virtgpu_ioctl_resource_info(), &info)
        resourceID = info.res_handle
        try draw(seed: seed)
    }

    /// Draws the pattern for `seed`, transfers the whole buffer to the host (the kernel moves
    /// dumb buffers itself only on a page flip) and waits for it; remembers the digest.
    func draw(seed: UInt32) throws {
        guard let buffer else { throw CheckFailure(message: "buffer already freed") }
        for y in 0..<height {
            let line = (buffer.pixels + y * buffer.pitch).assumingMemoryBound(to: UInt32.self)
            for x in 0..<width {
                line[x] = 0xFF00_0000 | ((UInt32(x) &* 2_654_435_761) ^ (UInt32(y) &* 40503) ^ seed) & 0x00FF_FFFF
            }
        }
        var t = drm_virtgpu_3d_transfer_to_host()
        t.bo_handle = handle
        t.box.x = 0; t.box.y = 0; t.box.z = 0; t.box.w = UInt32(width); t.box.h = UInt32(height); t.box.d = 1
        try device.ioctl("VIRTGPU_TRANSFER_TO_HOST", vgpu_virtgpu_ioctl_transfer_to_host(), &t)
        var wait = drm_virtgpu_3d_wait(handle: handle, flags: 0)
        try device.ioctl("VIRTGPU_WAIT", vgpu_virtgpu_ioctl_wait(), &wait)
        digest = vgpu_guest_fnv1a_rows(buffer.pixels, width * 4, height, buffer.pitch)
    }

    /// Drops every guest reference (mapping, PRIME fd, GEM handle): the driver frees the
    /// resource and sends RESOURCE_UNREF.
    func free() {
        buffer = nil
        if primeFD >= 0 { close(primeFD); primeFD = -1 }
        device.gemClose(handle)
    }

    deinit { if primeFD >= 0 { close(primeFD) } }
}

/// Checks an import answer against the buffer the guest drew.
func checkImported(_ report: Report, _ name: String, _ a: vgpu_import, _ e: Int32, _ b: ExportedBuffer) -> Bool {
    guard e == 0 else { report.fail(name, "ioctl: \(errnoName(e))"); return false }
    var problems: [String] = []
    if a.status != UInt32(VGPU_IMPORT_STATUS_OK) { problems.append("status \(importStatusName(a.status))") }
    if Int(a.width) != b.width || Int(a.height) != b.height { problems.append("size \(a.width)x\(a.height), drew \(b.width)x\(b.height)") }
    if a.fourcc != vgpu_drm_format_xrgb8888() { problems.append("fourcc 0x\(String(a.fourcc, radix: 16)), want XR24") }
    if Int(a.stride) < b.width * 4 { problems.append("stride \(a.stride) < \(b.width * 4)") }
    if a.resource_id != b.resourceID { problems.append("resource \(a.resource_id), RESOURCE_INFO says \(b.resourceID)") }
    if a.digest != b.digest { problems.append("digest \(String(a.digest, radix: 16)), drew \(String(b.digest, radix: 16))") }
    if a.handle == 0 { problems.append("handle 0") }
    report.check(name, problems.isEmpty, problems.isEmpty ? describe(a) : problems.joined(separator: "; ") + " (\(describe(a)))")
    return problems.isEmpty
}

/// Without cross-device sharing (QEMU's C backend: no RESOURCE_UUID) the driver's dma-bufs
/// have no UUID: the import must fail with ENODEV, and the scenario is honestly unsupported.
func importUnsupported(_ device: Device, _ report: Report, _ scenario: String) -> Bool {
    let (cross, pe) = device.getParam(VIRTGPU_PARAM_CROSS_DEVICE)
    if pe == 0 && cross != 0 { return false }
    let detail = "device has no RESOURCE_UUID (cross_device=\(pe == 0 ? String(cross) : errnoName(pe)))"
    if let importer = try? ImportDevice(waitSeconds: 5), let b = try? ExportedBuffer(device, width: 16, height: 16, seed: 1) {
        let (_, e) = importer.importFD(b.primeFD)
        report.check("\(scenario).no_uuid", e == ENODEV, "IMPORT of a dma-buf without UUID: \(e == 0 ? "accepted" : errnoName(e)) (ENODEV expected)")
    }
    report.result("\(scenario).uuid", "unsupported", detail)
    return true
}

func percentile(_ values: [UInt64], _ p: Double) -> UInt64 {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
}

// MARK: Scenarios

/// import: buffers of several sizes (odd ones too) imported by fd; layout and digest must match
/// what the guest drew; the host sees the importer holding them (VGPU-READY import-held);
/// a redraw shows in a QUERY; IMPORT_UUID; the round trip for 1920x1080; RELEASE.
func importScenario(_ device: Device, _ report: Report, _ handshake: Handshake) {
    if importUnsupported(device, report, "import") { return }
    guard let importer = report.step("import.device", { try ImportDevice() }) else { return }
    report.pass("import.device", VGPU_IMPORT_DEVICE_PATH)
    let sizes = [(64, 64), (33, 17), (1, 1), (250, 3), (1920, 1080)]
    var held: [(ExportedBuffer, vgpu_import)] = []
    for (i, (w, h)) in sizes.enumerated() {
        let name = "import.buffer\(i)"
        guard let b = report.step(name, { try ExportedBuffer(device, width: w, height: h, seed: UInt32(0x1234 + i)) }) else { continue }
        let (a, e) = importer.importFD(b.primeFD)
        if checkImported(report, name, a, e, b) {
            held.append((b, a))
            emit("VGPU-INFO import buffer\(i)=\(w)x\(h) resource=\(a.resource_id) device=\(a.device) uuid=\(uuidString(a)) "
                 + "handle=\(a.handle) path=\(importPathName(a.path)) so_status=\(a.shared_object_status) kind=\(importKindName(a.host_kind))")
        }
    }
    guard let (first, firstAnswer) = held.first else { report.fail("import.held", "nothing imported"); return }
    emit("VGPU-INFO import held=\(held.map { "\($0.1.device):\($0.1.resource_id)" }.joined(separator: ",")) so_status=\(firstAnswer.shared_object_status) path=\(importPathName(firstAnswer.path))")
    // The host lists the resources and must see the importer holding each.
    report.check("import.held", handshake.ready("import-held"), "host listed the held resources")

    // A redraw reaches the importer through QUERY (a fresh digest).
    if report.step("import.redraw", { try first.draw(seed: 0xBEEF) }) != nil {
        let (q, e) = importer.query(firstAnswer.handle)
        _ = checkImported(report, "import.query_redrawn", q, e, first)
    }
    // IMPORT_UUID: the same buffer by its UUID alone.
    let (u, ue) = importer.importUUID(uuidBytes(firstAnswer))
    if checkImported(report, "import.by_uuid", u, ue, first) {
        report.check("import.by_uuid_same", u.device == firstAnswer.device && u.handle != firstAnswer.handle,
                     "device \(u.device) (was \(firstAnswer.device)), new handle \(u.handle)")
        _ = importer.release(u.handle)
    }
    // The round trip for a 1920x1080 buffer: UUID -> host fd -> map -> digest -> answer.
    if let (big, bigAnswer) = held.first(where: { $0.0.width == 1920 }) {
        var trips: [UInt64] = [], deviceTimes: [UInt64] = []
        var ok = true
        for _ in 0..<20 {
            let (a, e) = importer.importUUID(uuidBytes(bigAnswer))
            guard e == 0, a.status == UInt32(VGPU_IMPORT_STATUS_OK), a.digest == big.digest else { ok = false; break }
            trips.append(a.round_trip_ns); deviceTimes.append(a.device_ns)
            _ = importer.release(a.handle)
        }
        let us = { (v: UInt64) in String(v / 1000) }
        emit("VGPU-INFO import timing_1920x1080 n=\(trips.count) round_trip_p50_us=\(us(percentile(trips, 0.5))) "
             + "round_trip_p99_us=\(us(percentile(trips, 0.99))) device_p50_us=\(us(percentile(deviceTimes, 0.5))) "
             + "device_p99_us=\(us(percentile(deviceTimes, 0.99)))")
        report.check("import.timing", ok && trips.count == 20,
                     "20 imports of 1920x1080: round trip p50 \(us(percentile(trips, 0.5))) us, p99 \(us(percentile(trips, 0.99))) us (TCG guest)")
    }
    // RELEASE: then the handle is gone.
    var released = 0
    for (_, a) in held {
        let (r, e) = importer.release(a.handle)
        if e == 0 && r.status == UInt32(VGPU_IMPORT_STATUS_OK) { released += 1 }
    }
    report.check("import.release", released == held.count, "\(released) of \(held.count) released")
    let (q, qe) = importer.query(firstAnswer.handle)
    report.check("import.query_released", qe == EINVAL || (qe == 0 && q.status == UInt32(VGPU_IMPORT_STATUS_INVALID)),
                 qe == 0 ? "status \(importStatusName(q.status))" : errnoName(qe))
}

/// import-errors: what must be refused, and a buffer freed after its import is revoked.
func importErrorsScenario(_ device: Device, _ report: Report, _ handshake: Handshake) {
    if importUnsupported(device, report, "import-errors") { return }
    guard let importer = report.step("import-errors.device", { try ImportDevice() }) else { return }

    // A dma-buf that is not a virtio one: a guest udmabuf (6.12 has /dev/udmabuf; 6.1 does not).
    let udmabufDevice = open("/dev/udmabuf", O_RDWR | O_CLOEXEC)
    if udmabufDevice < 0 {
        report.result("import-errors.not_virtio", "unsupported", "no /dev/udmabuf in this guest kernel (\(errnoName(errno)))")
    } else {
        defer { close(udmabufDevice) }
        let memfd = vgpu_guest_sealed_memfd("import-errors", 4096)
        if memfd < 0 {
            report.fail("import-errors.not_virtio", "memfd: \(errnoName(-memfd))")
        } else {
            defer { close(memfd) }
            var create = udmabuf_create(memfd: UInt32(memfd), flags: 0, offset: 0, size: 4096)
            // UDMABUF_CREATE answers with the new dma-buf fd.
            let dmabuf = withUnsafeMutablePointer(to: &create) { vgpu_guest_ioctl_value(udmabufDevice, vgpu_udmabuf_ioctl_create(), UnsafeMutableRawPointer($0)) }
            if dmabuf < 0 {
                report.fail("import-errors.not_virtio", "UDMABUF_CREATE: \(errnoName(-dmabuf))")
            } else {
                let (_, e) = importer.importFD(dmabuf)
                report.check("import-errors.not_virtio", e == EINVAL, "IMPORT of a guest udmabuf: \(e == 0 ? "accepted" : errnoName(e)) (EINVAL expected)")
                close(dmabuf)
            }
        }
    }
    // A closed fd.
    let closed = open("/dev/null", O_RDONLY | O_CLOEXEC)
    close(closed)
    var (_, e) = importer.importFD(closed)
    report.check("import-errors.closed_fd", e == EBADF, "IMPORT of closed fd \(closed): \(e == 0 ? "accepted" : errnoName(e)) (EBADF expected)")
    // An fd that is not a dma-buf.
    let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
    (_, e) = importer.importFD(null)
    close(null)
    report.check("import-errors.not_dmabuf", e == EINVAL, "IMPORT of /dev/null: \(e == 0 ? "accepted" : errnoName(e)) (EINVAL expected)")
    // Flags must be 0.
    if let b = try? ExportedBuffer(device, width: 8, height: 8, seed: 7) {
        (_, e) = importer.importFD(b.primeFD, flags: 1)
        report.check("import-errors.flags", e == EINVAL, "IMPORT with flags=1: \(e == 0 ? "accepted" : errnoName(e)) (EINVAL expected)")
    }
    // An unknown UUID.
    var random = [UInt8](repeating: 0, count: 16)
    let urandom = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
    if urandom >= 0 { _ = random.withUnsafeMutableBytes { read(urandom, $0.baseAddress!, 16) }; close(urandom) }
    random[6] = (random[6] & 0x0F) | 0x40; random[8] = (random[8] & 0x3F) | 0x80
    let (nf, nfe) = importer.importUUID(random)
    report.check("import-errors.unknown_uuid", nfe == 0 && nf.status == UInt32(VGPU_IMPORT_STATUS_NOT_FOUND),
                 nfe == 0 ? "status \(importStatusName(nf.status)) path=\(importPathName(nf.path)) so_status=\(nf.shared_object_status)" : errnoName(nfe))
    // RELEASE of a handle nobody holds.
    let (rel, rele) = importer.release(0xFFFF_FF00)
    report.check("import-errors.release_unknown", rele == EINVAL || (rele == 0 && rel.status == UInt32(VGPU_IMPORT_STATUS_INVALID)),
                 rele == 0 ? "status \(importStatusName(rel.status))" : errnoName(rele))

    // Freed after the import: the next request on the handle says revoked, never stale pixels.
    if let b = report.step("import-errors.revoke_buffer", { try ExportedBuffer(device, width: 48, height: 40, seed: 0x77) }) {
        let (a, ae) = importer.importFD(b.primeFD)
        if checkImported(report, "import-errors.revoke_import", a, ae, b) {
            let digest = b.digest
            b.free()
            let deadline = monotonicSeconds() + 10
            var verdict: (Bool, String)?
            var polls = 0
            while verdict == nil {
                let (q, qe) = importer.query(a.handle)
                polls += 1
                if qe != 0 { verdict = (false, "QUERY: \(errnoName(qe))") }
                else if q.status == UInt32(VGPU_IMPORT_STATUS_REVOKED) { verdict = (true, "revoked after \(polls) queries") }
                else if q.status != UInt32(VGPU_IMPORT_STATUS_OK) { verdict = (false, "status \(importStatusName(q.status))") }
                else if q.digest != digest { verdict = (false, "OK with digest \(String(q.digest, radix: 16)), drew \(String(digest, radix: 16)): stale or foreign pixels") }
                else if monotonicSeconds() > deadline { verdict = (false, "still OK 10 s after the guest freed it") }
                else { sleepMilliseconds(50) }  // RESOURCE_UNREF not processed yet: the buffer is still the one drawn
            }
            report.check("import-errors.revoked", verdict!.0, verdict!.1)
            let (r, re) = importer.release(a.handle)
            report.check("import-errors.release_revoked", re == 0 && (r.status == UInt32(VGPU_IMPORT_STATUS_OK) || r.status == UInt32(VGPU_IMPORT_STATUS_REVOKED)),
                         re == 0 ? "status \(importStatusName(r.status))" : errnoName(re))
        }
    }
    // And the device still serves.
    if let b = report.step("import-errors.after", { try ExportedBuffer(device, width: 20, height: 10, seed: 3) }) {
        let (a, e) = importer.importFD(b.primeFD)
        if checkImported(report, "import-errors.after", a, e, b) { _ = importer.release(a.handle) }
    }
}

/// import-multigpu: two virtio-gpu devices (card0, card1) served by one vgpu-backend; a buffer
/// of each resolves to its own device and resource id.
func importMultiGPUScenario(_ device: Device, _ report: Report, _ handshake: Handshake) {
    if importUnsupported(device, report, "import-multigpu") { return }
    guard let second = report.step("import-multigpu.card1", { try Device(path: "/dev/dri/card1", waitSeconds: 10) }) else { return }
    guard let importer = report.step("import-multigpu.device", { try ImportDevice() }) else { return }
    var answers: [(ExportedBuffer, vgpu_import)] = []
    for (card, dev) in [device, second].enumerated() {
        let name = "import-multigpu.card\(card)"
        guard let b = report.step(name, { try ExportedBuffer(dev, width: 96 + card * 8, height: 64, seed: UInt32(0xA000 + card)) }) else { continue }
        let (a, e) = importer.importFD(b.primeFD)
        if checkImported(report, name, a, e, b) {
            answers.append((b, a))
            emit("VGPU-INFO import-multigpu card\(card)_device=\(a.device) card\(card)_resource=\(a.resource_id) card\(card)_uuid=\(uuidString(a))")
        }
    }
    guard answers.count == 2 else { report.fail("import-multigpu.devices", "\(answers.count) of 2 imported"); return }
    report.check("import-multigpu.devices", answers[0].1.device != answers[1].1.device,
                 "card0 -> device \(answers[0].1.device) resource \(answers[0].1.resource_id); card1 -> device \(answers[1].1.device) resource \(answers[1].1.resource_id)")
    report.check("import-multigpu.held", handshake.ready("import-multigpu"), "host looked both UUIDs up")
    for (_, a) in answers { _ = importer.release(a.handle) }
}

/// import-demo (scripts/demo): the bars on the screen are a dumb buffer; the guest exports that
/// very buffer (PRIME; the driver sends ASSIGN_UUID) and the second device imports it by UUID.
/// The host looks (`VGPU-READY import-demo`: screendump, vgpuctl list and dump) while it is held.
func importDemoScenario(_ device: Device, _ report: Report, _ handshake: Handshake) {
    if importUnsupported(device, report, "import-demo") { return }
    guard let scanout = showBars(device, report, "import-demo") else { return }
    let buffer = scanout.buffer
    let guestDigest = vgpu_guest_fnv1a_rows(buffer.pixels, buffer.width * 4, buffer.height, buffer.pitch)
    var prime = drm_prime_handle(handle: buffer.handle, flags: UInt32(O_CLOEXEC), fd: -1)
    let e = device.ioctlErrno(vgpu_drm_ioctl_prime_handle_to_fd(), &prime)
    guard e == 0 else { report.fail("import-demo.prime", errnoName(e)); return }
    defer { close(prime.fd) }
    guard let importer = report.step("import-demo.device", { try ImportDevice() }) else { return }
    var (a, ie) = importer.importFD(prime.fd)
    // The page flip's transfer is queued before the export's ASSIGN_UUID; still, give a late
    // transfer a moment rather than report a mismatch it would fix.
    var tries = 1
    while ie == 0, a.status == UInt32(VGPU_IMPORT_STATUS_OK), a.digest != guestDigest, tries < 10 {
        sleepMilliseconds(100)
        (a, ie) = importer.query(a.handle)
        tries += 1
    }
    guard ie == 0, a.status == UInt32(VGPU_IMPORT_STATUS_OK) else {
        report.fail("import-demo.import", ie == 0 ? describe(a) : errnoName(ie)); return
    }
    emit("VGPU-INFO import-demo uuid=\(uuidString(a)) device=\(a.device) resource=\(a.resource_id) size=\(a.width)x\(a.height) "
         + "stride=\(a.stride) path=\(importPathName(a.path)) so_status=\(a.shared_object_status) kind=\(importKindName(a.host_kind)) "
         + "coherency=\(importCoherencyName(a.coherency)) host_digest=\(String(a.digest, radix: 16)) guest_digest=\(String(guestDigest, radix: 16)) "
         + "round_trip_us=\(a.round_trip_ns / 1000) device_us=\(a.device_ns / 1000)")
    report.check("import-demo.digest", a.digest == guestDigest,
                 "the importer's FNV-1a of resource \(a.resource_id) \(a.digest == guestDigest ? "equals" : "differs from") the guest's: \(describe(a))")
    report.check("import-demo.ack", handshake.ready("import-demo"), "host looked at the imported buffer")
    _ = importer.release(a.handle)
}
