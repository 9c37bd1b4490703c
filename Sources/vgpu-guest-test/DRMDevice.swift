// The DRM device (/dev/dri/card0: ioctls with errno) and dumb-buffer pixel buffers.
import CGuestDRM
import Glibc

// MARK: DRM device

struct IoctlError: Error, CustomStringConvertible {
    let what: String
    let errno: Int32
    var description: String { "\(what): \(errnoName(errno))" }
}

/// Opens `path` read-write, retrying for `waitSeconds` (device nodes appear when a driver binds).
func openWaiting(_ path: String, waitSeconds: Double, hint: String = "") throws -> Int32 {
    let deadline = monotonicSeconds() + waitSeconds
    while true {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd >= 0 { return fd }
        if monotonicSeconds() > deadline { throw CheckFailure(message: "open \(path): \(errnoName(errno))\(hint)") }
        sleepMilliseconds(100)
    }
}

final class Device {
    let fd: Int32

    init(path: String = "/dev/dri/card0", waitSeconds: Double = 30) throws {
        fd = try openWaiting(path, waitSeconds: waitSeconds)
    }

    deinit { close(fd) }

    /// 0 or the errno.
    func ioctlErrno<T>(_ request: UInt, _ argument: inout T) -> Int32 {
        let r = withUnsafeMutablePointer(to: &argument) { vgpu_guest_ioctl(fd, request, UnsafeMutableRawPointer($0)) }
        return r < 0 ? -r : 0
    }

    func ioctl<T>(_ what: String, _ request: UInt, _ argument: inout T) throws {
        let e = ioctlErrno(request, &argument)
        if e != 0 { throw IoctlError(what: what, errno: e) }
    }

    func getParam(_ param: Int32) -> (value: UInt64, errno: Int32) {
        var value: UInt64 = 0
        let e = withUnsafeMutablePointer(to: &value) { pointer -> Int32 in
            var arg = drm_virtgpu_getparam(param: UInt64(param), value: UInt64(UInt(bitPattern: pointer)))
            return ioctlErrno(vgpu_virtgpu_ioctl_getparam(), &arg)
        }
        return (value, e)
    }

    func driverName() throws -> (name: String, version: String) {
        var v = drm_version()
        try ioctl("DRM_IOCTL_VERSION", vgpu_drm_ioctl_version(), &v)
        var name = [CChar](repeating: 0, count: Int(v.name_len) + 1)
        var desc = [CChar](repeating: 0, count: Int(v.desc_len) + 1)
        var date = [CChar](repeating: 0, count: Int(v.date_len) + 1)
        try name.withUnsafeMutableBufferPointer { n in
            try desc.withUnsafeMutableBufferPointer { d in
                try date.withUnsafeMutableBufferPointer { t in
                    v.name = n.baseAddress; v.desc = d.baseAddress; v.date = t.baseAddress
                    try ioctl("DRM_IOCTL_VERSION", vgpu_drm_ioctl_version(), &v)
                }
            }
        }
        let cut = { (a: [CChar]) in String(decoding: a.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return (cut(name), "\(v.version_major).\(v.version_minor).\(v.version_patchlevel)")
    }

    func gemClose(_ handle: UInt32) {
        var arg = drm_gem_close(handle: handle, pad: 0)
        _ = ioctlErrno(vgpu_drm_ioctl_gem_close(), &arg)
    }
}

/// A mapped dumb buffer (or a virtgpu bo mapped through VIRTGPU_MAP) of 32-bit pixels.
final class PixelBuffer {
    let device: Device
    let handle: UInt32
    let width: Int, height: Int, pitch: Int, size: Int
    let pixels: UnsafeMutableRawPointer

    init(device: Device, handle: UInt32, width: Int, height: Int, pitch: Int, size: Int, mapOffset: UInt64) throws {
        self.device = device; self.handle = handle
        self.width = width; self.height = height; self.pitch = pitch; self.size = size
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, device.fd, off_t(Int64(bitPattern: mapOffset))),
              p != MAP_FAILED else {
            throw CheckFailure(message: "mmap of handle \(handle) (\(size) bytes): \(errnoName(errno))")
        }
        pixels = p
    }

    static func dumb(_ device: Device, width: Int, height: Int) throws -> PixelBuffer {
        var create = drm_mode_create_dumb()
        create.width = UInt32(width); create.height = UInt32(height); create.bpp = 32
        try device.ioctl("CREATE_DUMB \(width)x\(height)", vgpu_drm_ioctl_mode_create_dumb(), &create)
        var map = drm_mode_map_dumb()
        map.handle = create.handle
        try device.ioctl("MAP_DUMB", vgpu_drm_ioctl_mode_map_dumb(), &map)
        return try PixelBuffer(device: device, handle: create.handle, width: width, height: height,
                               pitch: Int(create.pitch), size: Int(create.size), mapOffset: map.offset)
    }

    deinit { munmap(pixels, size) }

    /// XRGB8888 / ARGB8888: 0xAARRGGBB in a little-endian word.
    func fill(x: Int, y: Int, width w: Int, height h: Int, color: UInt32) {
        for row in y..<(y + h) {
            let line = (pixels + row * pitch).assumingMemoryBound(to: UInt32.self)
            for col in x..<(x + w) { line[col] = color }
        }
    }

    func addFramebuffer() throws -> UInt32 {
        var cmd = drm_mode_fb_cmd2()
        cmd.width = UInt32(width); cmd.height = UInt32(height)
        cmd.pixel_format = vgpu_drm_format_xrgb8888()
        cmd.handles = (handle, 0, 0, 0)
        cmd.pitches = (UInt32(pitch), 0, 0, 0)
        try device.ioctl("ADDFB2", vgpu_drm_ioctl_mode_addfb2(), &cmd)
        return cmd.fb_id
    }
}
