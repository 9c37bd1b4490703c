// The colour bars (the host computes the same image) and mode setting: outputs, CRTCs, the bars on screen.
import CGuestDRM
import Glibc

// MARK: Patterns (guest side; the host computes the same images in Tests/QEMUTests)

/// Eight vertical bars: bar i spans x in [i*W/8, (i+1)*W/8).
let barColors: [UInt32] = [0xFFFFFF, 0xFFFF00, 0x00FFFF, 0x00FF00, 0xFF00FF, 0xFF0000, 0x0000FF, 0x808080]

func drawBars(_ buffer: PixelBuffer, reversed: Bool = false) {
    let colors = reversed ? Array(barColors.reversed()) : barColors
    for i in 0..<8 {
        let x0 = i * buffer.width / 8, x1 = (i + 1) * buffer.width / 8
        buffer.fill(x: x0, y: 0, width: x1 - x0, height: buffer.height, color: colors[i])
    }
}

// MARK: Mode setting

struct Output {
    let connector: UInt32
    let crtc: UInt32
    var mode: drm_mode_modeinfo
    /// Every mode the connector lists (EDID and the driver's own), preferred or not.
    var modes: [drm_mode_modeinfo] = []
    var width: Int { Int(mode.hdisplay) }
    var height: Int { Int(mode.vdisplay) }
    var modeName: String { Output.name(mode) }
    static func name(_ mode: drm_mode_modeinfo) -> String {
        withUnsafeBytes(of: mode.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}

func ids(_ count: UInt32) -> [UInt32] { [UInt32](repeating: 0, count: Int(count)) }
func address<T>(_ pointer: UnsafeMutableBufferPointer<T>) -> UInt64 { UInt64(UInt(bitPattern: pointer.baseAddress)) }

/// The first connected connector, its preferred mode (else its first) and a CRTC for it.
func findOutput(_ device: Device) throws -> Output {
    try findOutputs(device, all: false)[0]
}

/// Every connected connector (or only the first), each with a CRTC of its own.
func findOutputs(_ device: Device, all: Bool) throws -> [Output] {
    var found: [Output] = []
    var taken = Set<UInt32>()
    var res = drm_mode_card_res()
    try device.ioctl("GETRESOURCES", vgpu_drm_ioctl_mode_getresources(), &res)
    var crtcs = ids(res.count_crtcs), connectors = ids(res.count_connectors), encoders = ids(res.count_encoders)
    var fbs = ids(res.count_fbs)
    try crtcs.withUnsafeMutableBufferPointer { c in
        try connectors.withUnsafeMutableBufferPointer { k in
            try encoders.withUnsafeMutableBufferPointer { e in
                try fbs.withUnsafeMutableBufferPointer { f in
                    res.crtc_id_ptr = address(c); res.connector_id_ptr = address(k)
                    res.encoder_id_ptr = address(e); res.fb_id_ptr = address(f)
                    try device.ioctl("GETRESOURCES", vgpu_drm_ioctl_mode_getresources(), &res)
                }
            }
        }
    }
    var seen: [String] = []
    for id in connectors {
        var conn = drm_mode_get_connector()
        conn.connector_id = id
        try device.ioctl("GETCONNECTOR \(id)", vgpu_drm_ioctl_mode_getconnector(), &conn)
        seen.append("\(id):connection=\(conn.connection),modes=\(conn.count_modes)")
        guard conn.connection == 1, conn.count_modes > 0 else { continue }
        var modes = [drm_mode_modeinfo](repeating: drm_mode_modeinfo(), count: Int(conn.count_modes))
        var connEncoders = ids(conn.count_encoders)
        let encoderID = conn.encoder_id
        try modes.withUnsafeMutableBufferPointer { m in
            try connEncoders.withUnsafeMutableBufferPointer { e in
                var again = drm_mode_get_connector()
                again.connector_id = id
                again.count_modes = UInt32(m.count); again.modes_ptr = address(m)
                again.count_encoders = UInt32(e.count); again.encoders_ptr = address(e)
                try device.ioctl("GETCONNECTOR \(id)", vgpu_drm_ioctl_mode_getconnector(), &again)
            }
        }
        // A mode from the kernel command line (video=CONNECTOR:WxH) first, then the preferred one.
        let mode = modes.first { $0.type & UInt32(DRM_MODE_TYPE_USERDEF) != 0 }
            ?? modes.first { $0.type & UInt32(DRM_MODE_TYPE_PREFERRED) != 0 } ?? modes[0]
        var crtc: UInt32 = 0
        for encoder in [encoderID] + connEncoders where encoder != 0 && crtc == 0 {
            var enc = drm_mode_get_encoder()
            enc.encoder_id = encoder
            guard device.ioctlErrno(vgpu_drm_ioctl_mode_getencoder(), &enc) == 0 else { continue }
            if enc.crtc_id != 0 && !taken.contains(enc.crtc_id) { crtc = enc.crtc_id; break }
            for (i, c) in crtcs.enumerated() where enc.possible_crtcs & (1 << UInt32(i)) != 0 && !taken.contains(c) { crtc = c; break }
        }
        if crtc == 0, let first = crtcs.first(where: { !taken.contains($0) }) { crtc = first }
        taken.insert(crtc)
        found.append(Output(connector: id, crtc: crtc, mode: mode, modes: modes))
        if !all { return found }
    }
    guard !found.isEmpty else { throw CheckFailure(message: "no connected connector with modes (\(seen.joined(separator: " ")))") }
    return found
}

func setCrtc(_ device: Device, _ output: Output, fb: UInt32) throws {
    var connector = output.connector
    try withUnsafeMutablePointer(to: &connector) { c in
        var cmd = drm_mode_crtc()
        cmd.set_connectors_ptr = UInt64(UInt(bitPattern: c))
        cmd.count_connectors = 1
        cmd.crtc_id = output.crtc
        cmd.fb_id = fb
        cmd.mode_valid = 1
        cmd.mode = output.mode
        try device.ioctl("SETCRTC crtc \(output.crtc) fb \(fb)", vgpu_drm_ioctl_mode_setcrtc(), &cmd)
    }
}

/// A dumb buffer the size of the output's mode, with the bars drawn, shown on the output.
struct Scanout {
    let output: Output
    let buffer: PixelBuffer
    let fb: UInt32
}

func showBars(_ device: Device, _ report: Report, _ scenario: String) -> Scanout? {
    guard let output = report.step("\(scenario).output", { try findOutput(device) }) else { return nil }
    report.pass("\(scenario).output", "connector=\(output.connector) crtc=\(output.crtc) mode=\(output.modeName) \(output.width)x\(output.height)")
    emit("VGPU-INFO \(scenario) width=\(output.width) height=\(output.height) connector=\(output.connector) crtc=\(output.crtc)")
    guard let buffer = report.step("\(scenario).dumb", { try PixelBuffer.dumb(device, width: output.width, height: output.height) }) else { return nil }
    report.pass("\(scenario).dumb", "handle=\(buffer.handle) pitch=\(buffer.pitch) size=\(buffer.size)")
    drawBars(buffer)
    guard let fb = report.step("\(scenario).addfb2", { try buffer.addFramebuffer() }) else { return nil }
    report.pass("\(scenario).addfb2", "fb=\(fb) XRGB8888")
    guard report.step("\(scenario).setcrtc", { try setCrtc(device, output, fb: fb) }) != nil else { return nil }
    report.pass("\(scenario).setcrtc", "fb=\(fb) on crtc \(output.crtc)")
    return Scanout(output: output, buffer: buffer, fb: fb)
}
