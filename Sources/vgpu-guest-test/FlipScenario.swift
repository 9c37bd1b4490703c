// The `flip` scenario: what a compositor does, and what `modetest -v` measures. Two full-screen
// dumb framebuffers (the bars, and the bars reversed) are flipped with DRM_IOCTL_MODE_PAGE_FLIP
// and DRM_MODE_PAGE_FLIP_EVENT; each flip waits for its completion event before the next, for
// vgpu.flip_seconds (default 5). The virtio-gpu driver sends a full-frame TRANSFER_TO_HOST_2D,
// SET_SCANOUT and a fenced RESOURCE_FLUSH per flip and waits for that fence, so the rate is the
// device's round trip for one frame.
import CGuestDRM
import Glibc

func flip(_ device: Device, _ report: Report, _ handshake: Handshake) {
    guard let first = showBars(device, report, "flip") else { return }
    let seconds = Double(kernelParameter("vgpu.flip_seconds") ?? "") ?? 5
    let output = first.output
    guard let other = report.step("flip.dumb2", { try PixelBuffer.dumb(device, width: output.width, height: output.height) }) else { return }
    drawBars(other, reversed: true)
    guard let otherFB = report.step("flip.addfb2", { try other.addFramebuffer() }) else { return }
    let fbs = [first.fb, otherFB]
    var shown = 0          // index into fbs of the framebuffer on screen
    var flips = 0
    var slowest = 0.0
    var failure: String?
    let start = monotonicSeconds()
    var now = start
    while now - start < seconds {
        let next = 1 - shown
        var cmd = drm_mode_crtc_page_flip()
        cmd.crtc_id = output.crtc
        cmd.fb_id = fbs[next]
        cmd.flags = vgpu_drm_mode_page_flip_event()
        cmd.user_data = UInt64(flips)
        let e = device.ioctlErrno(vgpu_drm_ioctl_mode_page_flip(), &cmd)
        if e != 0 { failure = "PAGE_FLIP \(flips): \(errnoName(e))"; break }
        if let why = waitForFlipEvent(device, userData: UInt64(flips)) { failure = why; break }
        shown = next
        flips += 1
        let t = monotonicSeconds()
        slowest = max(slowest, t - now)
        now = t
    }
    let elapsed = now - start
    let rate = elapsed > 0 ? Double(flips) / elapsed : 0
    emit("VGPU-INFO flip width=\(output.width) height=\(output.height) flips=\(flips) seconds=\(format2(elapsed)) final=\(shown == 0 ? "bars" : "reversed") slowest_ms=\(format2(slowest * 1000))")
    if let failure {
        report.fail("flip.rate", "\(failure) after \(flips) flips")
    } else {
        report.check("flip.rate", flips > 0, "flips_per_second=\(Int(rate.rounded())) flips=\(flips) seconds=\(format2(elapsed)) frame=\(output.width)x\(output.height)")
    }
    // The host checks that the last flip is what the display shows (none lost at the end).
    report.check("flip.ack", handshake.ready("flip"), "host looked at the final frame")
    _ = other
}

/// Reads DRM events until the flip completion for `userData` (bounded: 2 s). nil when it came.
private func waitForFlipEvent(_ device: Device, userData: UInt64) -> String? {
    let deadline = monotonicSeconds() + 2
    var buffer = [UInt8](repeating: 0, count: 1024)
    while monotonicSeconds() < deadline {
        var pfd = pollfd(fd: device.fd, events: Int16(POLLIN), revents: 0)
        let r = poll(&pfd, 1, 500)
        if r < 0 && errno == EINTR { continue }
        guard r > 0 else { continue }
        let n = buffer.withUnsafeMutableBytes { read(device.fd, $0.baseAddress!, $0.count) }
        if n < 0 { if errno == EINTR || errno == EAGAIN { continue }; return "read of DRM events: \(errnoName(errno))" }
        var offset = 0
        var done = false
        buffer.withUnsafeBytes { raw in
            // Events are drm_event headers followed by their body, `length` bytes in all.
            while offset + MemoryLayout<drm_event>.size <= n {
                let header = raw.loadUnaligned(fromByteOffset: offset, as: drm_event.self)
                guard header.length >= UInt32(MemoryLayout<drm_event>.size), offset + Int(header.length) <= n else { offset = n; break }
                if header.type == vgpu_drm_event_flip_complete(), Int(header.length) >= MemoryLayout<drm_event_vblank>.size {
                    let event = raw.loadUnaligned(fromByteOffset: offset, as: drm_event_vblank.self)
                    if event.user_data == userData { done = true }
                }
                offset += Int(header.length)
            }
        }
        if done { return nil }
    }
    return "no flip completion event within 2 s"
}

private func format2(_ value: Double) -> String {
    let hundredths = Int((value * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}
