// The DRM scenarios: features, modeset, partial, errors, export, virtgpu, cursor, modechange, multihead
// (flip and the import scenarios have files of their own).
import CGuestDRM
import Glibc

// MARK: Scenarios

let paramNames: [(String, Int32)] = [
    ("3d", VIRTGPU_PARAM_3D_FEATURES), ("capset_query_fix", VIRTGPU_PARAM_CAPSET_QUERY_FIX),
    ("resource_blob", VIRTGPU_PARAM_RESOURCE_BLOB), ("host_visible", VIRTGPU_PARAM_HOST_VISIBLE),
    ("cross_device", VIRTGPU_PARAM_CROSS_DEVICE), ("context_init", VIRTGPU_PARAM_CONTEXT_INIT),
    ("supported_capset_ids", VIRTGPU_PARAM_SUPPORTED_CAPSET_IDs),
]

func features(_ device: Device, _ report: Report, _ handshake: Handshake) {
    if let (name, version) = report.step("features.version", { try device.driverName() }) {
        report.check("features.version", name == "virtio_gpu", "driver=\(name) version=\(version)")
    }
    var values: [String] = []
    for (name, param) in paramNames {
        let (value, e) = device.getParam(param)
        if e == 0 {
            report.pass("features.param.\(name)", "value=\(value)")
            values.append("\(name)=\(value)")
        } else {
            // An older kernel without this parameter answers EINVAL: say so, it is not a failure.
            report.result("features.param.\(name)", "unsupported", "errno=\(errnoName(e))")
            values.append("\(name)=unsupported")
        }
    }
    emit("VGPU-INFO features \(values.joined(separator: " "))")
}

func modeset(_ device: Device, _ report: Report, _ handshake: Handshake) {
    guard showBars(device, report, "modeset") != nil else { return }
    report.check("modeset.ack", handshake.ready("modeset"), "host looked at the bars")
}

func partial(_ device: Device, _ report: Report, _ handshake: Handshake) {
    guard let scanout = showBars(device, report, "partial") else { return }
    guard handshake.ready("partial-full") else { report.fail("partial.ack", "no ack for partial-full"); return }
    let w = scanout.buffer.width, h = scanout.buffer.height
    // The damaged rect, and a canary outside it that is written but never reported dirty:
    // the host must show the first and not the second.
    let (rx, ry, rw, rh) = (w / 4, h / 4, w / 3, h / 5)
    let (cx, cy, cw, ch) = (w * 3 / 4, h * 3 / 4, 64, 48)
    scanout.buffer.fill(x: rx, y: ry, width: rw, height: rh, color: 0x204080)
    scanout.buffer.fill(x: cx, y: cy, width: cw, height: ch, color: 0xFF8000)
    emit("VGPU-INFO partial rect=\(rx),\(ry),\(rw),\(rh) color=204080 canary=\(cx),\(cy),\(cw),\(ch)")
    var clip = drm_clip_rect(x1: UInt16(rx), y1: UInt16(ry), x2: UInt16(rx + rw), y2: UInt16(ry + rh))
    let e = withUnsafeMutablePointer(to: &clip) { c -> Int32 in
        var cmd = drm_mode_fb_dirty_cmd(fb_id: scanout.fb, flags: 0, color: 0, num_clips: 1, clips_ptr: UInt64(UInt(bitPattern: c)))
        return device.ioctlErrno(vgpu_drm_ioctl_mode_dirtyfb(), &cmd)
    }
    report.check("partial.dirtyfb", e == 0, e == 0 ? "clip \(rw)x\(rh)+\(rx)+\(ry)" : errnoName(e))
    report.check("partial.ack", handshake.ready("partial-rect"), "host looked at the rect")
}

/// `expectError`: the call must fail (any errno), return promptly, and leave the device working.
func expectError(_ report: Report, _ name: String, _ expected: [Int32] = [], _ call: () -> Int32) {
    let start = monotonicSeconds()
    let e = call()
    let took = Int((monotonicSeconds() - start) * 1000)
    if e == 0 {
        report.fail("errors.\(name)", "accepted (no errno) in \(took) ms")
    } else if !expected.isEmpty && !expected.contains(e) {
        report.fail("errors.\(name)", "errno=\(errnoName(e)), expected \(expected.map(errnoName).joined(separator: "|")) (\(took) ms)")
    } else {
        report.pass("errors.\(name)", "errno=\(errnoName(e)) in \(took) ms")
    }
}

func errors(_ device: Device, _ report: Report, _ handshake: Handshake) {
    let bogus: UInt32 = 0xdead_beef
    expectError(report, "create_dumb_huge", [EINVAL, ENOMEM, ENOSPC, E2BIG]) {
        var c = drm_mode_create_dumb(); c.width = 1 << 20; c.height = 1 << 20; c.bpp = 32
        return device.ioctlErrno(vgpu_drm_ioctl_mode_create_dumb(), &c)
    }
    expectError(report, "create_dumb_overflow", [EINVAL, ENOMEM, ENOSPC, E2BIG]) {
        var c = drm_mode_create_dumb(); c.width = 0xFFFF_FFFF; c.height = 0xFFFF_FFFF; c.bpp = 32
        return device.ioctlErrno(vgpu_drm_ioctl_mode_create_dumb(), &c)
    }
    expectError(report, "create_dumb_zero", [EINVAL]) {
        var c = drm_mode_create_dumb(); c.width = 0; c.height = 64; c.bpp = 32
        return device.ioctlErrno(vgpu_drm_ioctl_mode_create_dumb(), &c)
    }
    expectError(report, "map_dumb_bad_handle", [ENOENT, EINVAL]) {
        var m = drm_mode_map_dumb(); m.handle = bogus
        return device.ioctlErrno(vgpu_drm_ioctl_mode_map_dumb(), &m)
    }
    expectError(report, "gem_close_bad_handle", [EINVAL, ENOENT]) {
        var c = drm_gem_close(handle: bogus, pad: 0)
        return device.ioctlErrno(vgpu_drm_ioctl_gem_close(), &c)
    }
    expectError(report, "addfb2_bad_handle", [ENOENT, EINVAL]) {
        var cmd = drm_mode_fb_cmd2()
        cmd.width = 64; cmd.height = 64; cmd.pixel_format = vgpu_drm_format_xrgb8888()
        cmd.handles = (bogus, 0, 0, 0); cmd.pitches = (256, 0, 0, 0)
        return device.ioctlErrno(vgpu_drm_ioctl_mode_addfb2(), &cmd)
    }
    if let small = report.step("errors.small_dumb", { try PixelBuffer.dumb(device, width: 64, height: 64) }) {
        expectError(report, "addfb2_bad_format", [EINVAL]) {
            var cmd = drm_mode_fb_cmd2()
            cmd.width = 64; cmd.height = 64; cmd.pixel_format = 0x1234_5678
            cmd.handles = (small.handle, 0, 0, 0); cmd.pitches = (UInt32(small.pitch), 0, 0, 0)
            return device.ioctlErrno(vgpu_drm_ioctl_mode_addfb2(), &cmd)
        }
        expectError(report, "addfb2_pitch_too_small", [EINVAL]) {
            var cmd = drm_mode_fb_cmd2()
            cmd.width = 64; cmd.height = 64; cmd.pixel_format = vgpu_drm_format_xrgb8888()
            cmd.handles = (small.handle, 0, 0, 0); cmd.pitches = (16, 0, 0, 0)
            return device.ioctlErrno(vgpu_drm_ioctl_mode_addfb2(), &cmd)
        }
    }
    expectError(report, "setcrtc_bad_fb", [ENOENT, EINVAL]) {
        var cmd = drm_mode_crtc(); cmd.crtc_id = 1; cmd.fb_id = bogus
        return device.ioctlErrno(vgpu_drm_ioctl_mode_setcrtc(), &cmd)
    }
    expectError(report, "dirtyfb_bad_fb", [ENOENT, EINVAL]) {
        var cmd = drm_mode_fb_dirty_cmd(fb_id: bogus, flags: 0, color: 0, num_clips: 0, clips_ptr: 0)
        return device.ioctlErrno(vgpu_drm_ioctl_mode_dirtyfb(), &cmd)
    }
    expectError(report, "prime_export_bad_handle", [ENOENT, EINVAL]) {
        var p = drm_prime_handle(handle: bogus, flags: UInt32(O_CLOEXEC), fd: -1)
        return device.ioctlErrno(vgpu_drm_ioctl_prime_handle_to_fd(), &p)
    }
    expectError(report, "prime_import_bad_fd", [EBADF, EINVAL]) {
        var p = drm_prime_handle(handle: 0, flags: 0, fd: 9999)
        return device.ioctlErrno(vgpu_drm_ioctl_prime_fd_to_handle(), &p)
    }
    expectError(report, "getparam_unknown", [EINVAL]) {
        var value: UInt64 = 0
        return withUnsafeMutablePointer(to: &value) { v in
            var arg = drm_virtgpu_getparam(param: 0x7fff, value: UInt64(UInt(bitPattern: v)))
            return device.ioctlErrno(vgpu_virtgpu_ioctl_getparam(), &arg)
        }
    }
    expectError(report, "resource_create_bad_target", [EINVAL]) {
        var rc = drm_virtgpu_resource_create()
        rc.target = 7; rc.format = 2; rc.width = 64; rc.height = 64; rc.depth = 1; rc.array_size = 1
        rc.size = 64 * 64 * 4; rc.stride = 256
        return device.ioctlErrno(vgpu_virtgpu_ioctl_resource_create(), &rc)
    }
    expectError(report, "transfer_unknown_bo", [ENOENT, EINVAL]) {
        var t = drm_virtgpu_3d_transfer_to_host()
        t.bo_handle = bogus; t.box.w = 16; t.box.h = 16; t.box.d = 1
        return device.ioctlErrno(vgpu_virtgpu_ioctl_transfer_to_host(), &t)
    }
    expectError(report, "wait_unknown_bo", [ENOENT, EINVAL]) {
        var w = drm_virtgpu_3d_wait(handle: bogus, flags: 0)
        return device.ioctlErrno(vgpu_virtgpu_ioctl_wait(), &w)
    }
    expectError(report, "wait_handle_zero", [ENOENT, EINVAL]) {
        var w = drm_virtgpu_3d_wait(handle: 0, flags: 0)
        return device.ioctlErrno(vgpu_virtgpu_ioctl_wait(), &w)
    }
    expectError(report, "resource_info_unknown_bo", [ENOENT, EINVAL]) {
        var i = drm_virtgpu_resource_info(); i.bo_handle = bogus
        return device.ioctlErrno(vgpu_virtgpu_ioctl_resource_info(), &i)
    }
    expectError(report, "cursor_bad_handle", [ENOENT, EINVAL]) {
        var c = drm_mode_cursor(); c.flags = UInt32(DRM_MODE_CURSOR_BO); c.crtc_id = 1
        c.width = 64; c.height = 64; c.handle = bogus
        return device.ioctlErrno(vgpu_drm_ioctl_mode_cursor(), &c)
    }
    // The kernel passes a 2D resource's format to the host unchecked: the host must refuse it
    // (the driver logs the error response); the call itself may succeed. What matters: the
    // fence completes and nothing hangs.
    do {
        var rc = drm_virtgpu_resource_create()
        rc.target = 2; rc.format = 0xFFFF; rc.width = 64; rc.height = 64; rc.depth = 1; rc.array_size = 1
        rc.size = 64 * 64 * 4; rc.stride = 256
        let start = monotonicSeconds()
        let e = device.ioctlErrno(vgpu_virtgpu_ioctl_resource_create(), &rc)
        if e != 0 {
            report.pass("errors.resource_create_bad_format", "errno=\(errnoName(e))")
        } else {
            var w = drm_virtgpu_3d_wait(handle: rc.bo_handle, flags: 0)
            let we = device.ioctlErrno(vgpu_virtgpu_ioctl_wait(), &w)
            let took = Int((monotonicSeconds() - start) * 1000)
            report.check("errors.resource_create_bad_format", we == 0,
                         "created bo \(rc.bo_handle) res \(rc.res_handle) (host refuses it), WAIT \(we == 0 ? "done" : errnoName(we)) after \(took) ms")
            var t = drm_virtgpu_3d_transfer_to_host()
            t.bo_handle = rc.bo_handle; t.box.w = 16; t.box.h = 16; t.box.d = 1
            let te = device.ioctlErrno(vgpu_virtgpu_ioctl_transfer_to_host(), &t)
            var w2 = drm_virtgpu_3d_wait(handle: rc.bo_handle, flags: 0)
            let we2 = device.ioctlErrno(vgpu_virtgpu_ioctl_wait(), &w2)
            report.check("errors.transfer_refused_resource", we2 == 0,
                         "TRANSFER_TO_HOST \(te == 0 ? "queued" : errnoName(te)), WAIT \(we2 == 0 ? "done" : errnoName(we2))")
            device.gemClose(rc.bo_handle)
        }
    }
    // And the device still works: a normal mode set, checked by the host.
    guard showBars(device, report, "errors") != nil else { return }
    report.check("errors.ack", handshake.ready("errors-modeset"), "host looked at the bars after the bad calls")
}

func export(_ device: Device, _ report: Report, _ handshake: Handshake) {
    guard let buffer = report.step("export.dumb", { try PixelBuffer.dumb(device, width: 64, height: 64) }) else { return }
    drawBars(buffer)
    var prime = drm_prime_handle(handle: buffer.handle, flags: UInt32(O_CLOEXEC | O_RDWR), fd: -1)
    var e = device.ioctlErrno(vgpu_drm_ioctl_prime_handle_to_fd(), &prime)
    if e == EINVAL || e == EACCES || e == EPERM {  // older kernels refuse O_RDWR
        prime = drm_prime_handle(handle: buffer.handle, flags: UInt32(O_CLOEXEC), fd: -1)
        e = device.ioctlErrno(vgpu_drm_ioctl_prime_handle_to_fd(), &prime)
    }
    guard e == 0 else { report.fail("export.prime_handle_to_fd", errnoName(e)); return }
    report.pass("export.prime_handle_to_fd", "handle \(buffer.handle) -> dmabuf fd \(prime.fd)")
    defer { close(prime.fd) }
    var back = drm_prime_handle(handle: 0, flags: 0, fd: prime.fd)
    e = device.ioctlErrno(vgpu_drm_ioctl_prime_fd_to_handle(), &back)
    report.check("export.prime_fd_to_handle", e == 0 && back.handle == buffer.handle,
                 e == 0 ? "fd \(prime.fd) -> handle \(back.handle) (exported \(buffer.handle))" : errnoName(e))
    var info = drm_virtgpu_resource_info(); info.bo_handle = buffer.handle
    e = device.ioctlErrno(vgpu_virtgpu_ioctl_resource_info(), &info)
    guard e == 0 else { report.fail("export.resource_info", errnoName(e)); return }
    report.check("export.resource_info", info.res_handle != 0, "resource_id=\(info.res_handle) size=\(info.size)")
    let (crossDevice, pe) = device.getParam(VIRTGPU_PARAM_CROSS_DEVICE)
    let uuid = pe == 0 && crossDevice != 0
    emit("VGPU-INFO export resource_id=\(info.res_handle) cross_device=\(uuid ? 1 : 0)")
    // With cross-device (RESOURCE_UUID negotiated) the export above sent ASSIGN_UUID; without
    // it the driver exports a dmabuf no other device can resolve: say so, honestly.
    report.result("export.uuid", uuid ? "pass" : "unsupported",
                  uuid ? "RESOURCE_UUID negotiated: ASSIGN_UUID sent for resource \(info.res_handle)"
                       : "device has no RESOURCE_UUID (cross_device=\(pe == 0 ? String(crossDevice) : errnoName(pe)))")
    // The exported buffer stays alive while the host looks the resource up (vgpuctl show).
    report.check("export.ack", handshake.ready("export"), "host looked up resource \(info.res_handle)")
}

func virtgpu(_ device: Device, _ report: Report, _ handshake: Handshake) {
    guard let output = report.step("virtgpu.output", { try findOutput(device) }) else { return }
    let w = output.width, h = output.height
    emit("VGPU-INFO virtgpu width=\(w) height=\(h)")
    var rc = drm_virtgpu_resource_create()
    rc.target = 2  // PIPE_TEXTURE_2D
    rc.format = 2  // VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM (= VIRGL_FORMAT_B8G8R8X8_UNORM)
    rc.bind = (1 << 1) | (1 << 18)  // VIRGL_BIND_RENDER_TARGET | VIRGL_BIND_SCANOUT
    rc.width = UInt32(w); rc.height = UInt32(h); rc.depth = 1; rc.array_size = 1
    rc.size = UInt32(w * h * 4); rc.stride = UInt32(w * 4)
    var e = device.ioctlErrno(vgpu_virtgpu_ioctl_resource_create(), &rc)
    guard e == 0 else { report.fail("virtgpu.resource_create", errnoName(e)); return }
    report.pass("virtgpu.resource_create", "bo=\(rc.bo_handle) res=\(rc.res_handle) \(w)x\(h) B8G8R8X8")
    var info = drm_virtgpu_resource_info(); info.bo_handle = rc.bo_handle
    e = device.ioctlErrno(vgpu_virtgpu_ioctl_resource_info(), &info)
    report.check("virtgpu.resource_info", e == 0 && info.res_handle == rc.res_handle && Int(info.size) >= w * h * 4,
                 e == 0 ? "res=\(info.res_handle) size=\(info.size)" : errnoName(e))
    var map = drm_virtgpu_map(); map.handle = rc.bo_handle
    e = device.ioctlErrno(vgpu_virtgpu_ioctl_map(), &map)
    guard e == 0 else { report.fail("virtgpu.map", errnoName(e)); return }
    guard let buffer = report.step("virtgpu.map", {
        try PixelBuffer(device: device, handle: rc.bo_handle, width: w, height: h, pitch: w * 4, size: w * h * 4, mapOffset: map.offset)
    }) else { return }
    report.pass("virtgpu.map", "offset=\(map.offset)")
    drawBars(buffer, reversed: true)
    // The kernel transfers only dumb buffers on a page flip: this bo reaches the host only
    // through the TRANSFER_TO_HOST below, so the screendump proves it worked.
    var t = drm_virtgpu_3d_transfer_to_host()
    t.bo_handle = rc.bo_handle
    t.box.x = 0; t.box.y = 0; t.box.z = 0; t.box.w = UInt32(w); t.box.h = UInt32(h); t.box.d = 1
    e = device.ioctlErrno(vgpu_virtgpu_ioctl_transfer_to_host(), &t)
    report.check("virtgpu.transfer_to_host", e == 0, e == 0 ? "box \(w)x\(h)" : errnoName(e))
    var wait = drm_virtgpu_3d_wait(handle: rc.bo_handle, flags: 0)
    let start = monotonicSeconds()
    e = device.ioctlErrno(vgpu_virtgpu_ioctl_wait(), &wait)
    report.check("virtgpu.wait", e == 0, e == 0 ? "fence signalled in \(Int((monotonicSeconds() - start) * 1000)) ms" : errnoName(e))
    guard let fb = report.step("virtgpu.addfb2", { try buffer.addFramebuffer() }) else { return }
    report.pass("virtgpu.addfb2", "fb=\(fb)")
    guard report.step("virtgpu.setcrtc", { try setCrtc(device, output, fb: fb) }) != nil else { return }
    report.pass("virtgpu.setcrtc", "fb=\(fb)")
    report.check("virtgpu.ack", handshake.ready("virtgpu"), "host looked at the reversed bars")
}

func cursor(_ device: Device, _ report: Report, _ handshake: Handshake) {
    guard let scanout = showBars(device, report, "cursor") else { return }
    guard let image = report.step("cursor.bo", { try PixelBuffer.dumb(device, width: 64, height: 64) }) else { return }
    image.fill(x: 0, y: 0, width: 64, height: 64, color: 0x0000_0000)
    image.fill(x: 8, y: 8, width: 48, height: 48, color: 0xFFFF_0000)
    var c = drm_mode_cursor()
    c.flags = UInt32(DRM_MODE_CURSOR_BO); c.crtc_id = scanout.output.crtc
    c.width = 64; c.height = 64; c.handle = image.handle
    var e = device.ioctlErrno(vgpu_drm_ioctl_mode_cursor(), &c)
    report.check("cursor.set", e == 0, e == 0 ? "64x64 ARGB bo \(image.handle) on crtc \(scanout.output.crtc)" : errnoName(e))
    for (x, y) in [(100, 80), (300, 200), (0, 0)] {
        var m = drm_mode_cursor()
        m.flags = UInt32(DRM_MODE_CURSOR_MOVE); m.crtc_id = scanout.output.crtc; m.x = Int32(x); m.y = Int32(y)
        e = device.ioctlErrno(vgpu_drm_ioctl_mode_cursor(), &m)
        report.check("cursor.move.\(x).\(y)", e == 0, e == 0 ? "moved to \(x),\(y)" : errnoName(e))
    }
    // QEMU's screendump shows the surface without the cursor: the bars must be untouched.
    report.check("cursor.ack", handshake.ready("cursor"), "host looked at the bars under the cursor")
    var hide = drm_mode_cursor()
    hide.flags = UInt32(DRM_MODE_CURSOR_BO); hide.crtc_id = scanout.output.crtc; hide.handle = 0
    e = device.ioctlErrno(vgpu_drm_ioctl_mode_cursor(), &hide)
    report.check("cursor.hide", e == 0, e == 0 ? "handle 0" : errnoName(e))
}

/// Switches to another size from the connector's mode list, then back to the preferred mode.
func modechange(_ device: Device, _ report: Report, _ handshake: Handshake) {
    guard let preferred = report.step("modechange.output", { try findOutput(device) }) else { return }
    let sizes = Set(preferred.modes.map { "\($0.hdisplay)x\($0.vdisplay)" })
    let others = preferred.modes.filter { Int($0.hdisplay) != preferred.width || Int($0.vdisplay) != preferred.height }
    let chosen = others.first { $0.hdisplay == 1024 && $0.vdisplay == 768 }
        ?? others.first { $0.hdisplay == 800 && $0.vdisplay == 600 } ?? others.first
    guard let chosen else {
        report.result("modechange.mode", "unsupported", "one mode size only: \(sizes.sorted().joined(separator: ","))")
        return
    }
    report.pass("modechange.output", "\(preferred.modes.count) modes, \(sizes.count) sizes; preferred \(preferred.modeName)")
    for (step, mode) in [("switch", chosen), ("back", preferred.mode)] {
        var output = preferred
        output.mode = mode
        let tag = step == "switch" ? "modechange" : "modechange-back"
        emit("VGPU-INFO modechange width=\(output.width) height=\(output.height) mode=\(output.modeName) refresh=\(mode.vrefresh)")
        guard let buffer = report.step("modechange.\(step).dumb", { try PixelBuffer.dumb(device, width: output.width, height: output.height) }) else { return }
        drawBars(buffer)
        guard let fb = report.step("modechange.\(step).addfb2", { try buffer.addFramebuffer() }) else { return }
        guard report.step("modechange.\(step).setcrtc", { try setCrtc(device, output, fb: fb) }) != nil else { return }
        report.pass("modechange.\(step).setcrtc", "mode \(output.modeName) \(output.width)x\(output.height)@\(mode.vrefresh) fb=\(fb)")
        report.check("modechange.\(step).ack", handshake.ready(tag), "host looked at \(output.width)x\(output.height)")
    }
}

/// Two heads (QEMU max_outputs=2; the second connector forced on with video=Virtual-2:...e):
/// the bars on the first, the reversed bars on the second.
func multihead(_ device: Device, _ report: Report, _ handshake: Handshake) {
    guard let outputs = report.step("multihead.outputs", { try findOutputs(device, all: true) }) else { return }
    let list = outputs.map { "connector \($0.connector) crtc \($0.crtc) \($0.modeName)" }.joined(separator: ", ")
    guard outputs.count >= 2 else { report.fail("multihead.outputs", "one connected output only: \(list)"); return }
    report.pass("multihead.outputs", "\(outputs.count) outputs: \(list)")
    var buffers: [PixelBuffer] = []  // kept alive (mapped) until the host has looked
    for (head, output) in outputs.prefix(2).enumerated() {
        emit("VGPU-INFO multihead head\(head)=\(output.width)x\(output.height)")
        guard let buffer = report.step("multihead.head\(head).dumb", { try PixelBuffer.dumb(device, width: output.width, height: output.height) }) else { return }
        drawBars(buffer, reversed: head == 1)
        buffers.append(buffer)
        guard let fb = report.step("multihead.head\(head).addfb2", { try buffer.addFramebuffer() }) else { return }
        guard report.step("multihead.head\(head).setcrtc", { try setCrtc(device, output, fb: fb) }) != nil else { return }
        report.pass("multihead.head\(head).setcrtc", "crtc \(output.crtc) connector \(output.connector) \(output.modeName) fb=\(fb)")
    }
    report.check("multihead.ack", handshake.ready("multihead"), "host looked at both heads")
    _ = buffers
}
