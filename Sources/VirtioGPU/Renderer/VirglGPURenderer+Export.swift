import HostBuffers
import VirglRenderer
import VirtioCore

/// Host buffers for virgl resources: the texture as a dmabuf where virglrenderer can export it,
/// else a memfd shadow filled by readback (at export, at every flush and at each open), counted
/// against the renderer's total cap.
extension VirglGPURenderer {
    /// A dmabuf of the texture where virglrenderer can make one (EGL on a render node): the
    /// consumer maps the GPU's own memory, in the texture's layout. Else a memfd shadow filled
    /// by readback now and at every flush (surfaceless EGL, as on this machine).
    public func exportResource(_ id: ResourceID, memory: GuestMemory) -> HostBufferInfo? {
        let found = table.withLock { $0[id] }
        guard let res = found else { return nil }
        if let info = res.exported { return info }
        var reason = ""
        do {
            let d = try virgl.sync { try $0.exportResource(id.raw) }
            do {
                let buffer = try HostBuffer.adopt(dmabuf: d.fd, kind: .glTexture)
                buffer.setName("vgpu:\(id.raw)")
                let layout = DMABufLayout(stride: UInt32(bitPattern: d.stride), offset: UInt32(bitPattern: d.offset), fourcc: d.fourcc,
                                          modifier: d.modifier, yZeroTop: d.yZeroTop)
                let exported = HostBufferInfo(kind: .glTexture, size: buffer.size, coherency: .zeroCopy, source: .texture,
                                              exported: true, layout: layout)
                table.withLock { $0[id]?.texture = ScanoutDMABuffer(buffer: buffer, layout: layout); $0[id]?.exported = exported }
                return exported
            } catch {
                reason = "\(error)"
            }
        } catch {
            reason = "\(error)"
        }
        let info: HostBufferInfo
        if res.format != nil, res.args.target == VirglTarget.texture2D,
           let bytes = Resource2D.byteCount(width: res.args.width, height: res.args.height), let length = Int(exactly: bytes),
           reserveShadow(id, bytes: bytes, reason: &reason),
           let shadow = Self.makeShadow(length: length, name: "vgpu:\(id.raw)", onFailure: { self.releaseShadow(id, bytes: bytes) }) {
            table.withLock { $0[id]?.shadow = shadow }
            refreshShadow(shadow, res)
            info = HostBufferInfo(kind: .memfd, size: shadow.buffer.size, coherency: .onFlush, source: .hostCopy, exported: true,
                                  shadowReason: reason)
        } else {
            info = HostBufferInfo(kind: .memfd, size: 0, coherency: .onFlush, source: .hostCopy, exported: false,
                                  shadowReason: "\(reason); no readback for virgl format \(res.args.format), target \(res.args.target)")
        }
        table.withLock { $0[id]?.exported = info }
        return info
    }

    /// Counts an export shadow of `bytes` against the total cap, on the record; false (with
    /// `reason` extended) past the cap: the export then reports no host buffer.
    private func reserveShadow(_ id: ResourceID, bytes: UInt64, reason: inout String) -> Bool {
        let outcome = table.withLock { (t: inout [ResourceID: Record]) -> String? in
            guard t[id] != nil else { return "\(id) is gone" }
            do { try reserve(bytes) } catch { return "export shadow: \(error)" }
            t[id]!.accountedBytes += bytes
            return nil
        }
        guard let outcome else { return true }
        reason += "; \(outcome)"
        return false
    }

    private func releaseShadow(_ id: ResourceID, bytes: UInt64) {
        table.withLock { t in
            guard t[id] != nil else { return }
            t[id]!.accountedBytes -= min(t[id]!.accountedBytes, bytes)
            release(bytes)
        }
    }

    private static func makeShadow(length: Int, name: String, onFailure: () -> Void) -> HostPixelStorage? {
        if let shadow = try? HostPixelStorage(length: length, name: name) { return shadow }
        onFailure()
        return nil
    }

    public func scanoutDMABuffer(_ id: ResourceID) -> ScanoutDMABuffer? {
        table.withLock { $0[id]?.texture }
    }

    /// Reads the whole resource `res` back into its shadow.
    func refreshShadow(_ shadow: HostPixelStorage, _ res: Record) {
        let box = VirglBox(width: res.args.width, height: res.args.height)
        try? virgl.sync { try $0.readPixels(res.args.resourceID, box: box, stride: Int(res.args.width) * 4,
                                            into: UnsafeMutableRawBufferPointer(start: shadow.base, count: shadow.length)) }
    }

    public func openHostBuffer(_ id: ResourceID) throws(GPUFailure) -> (fd: Int32, info: HostBufferInfo) {
        guard let res = table.withLock({ $0[id] }) else { throw .invalidResourceID("\(id) does not exist") }
        if let texture = res.texture, let info = res.exported {
            do { return (try texture.buffer.exportFD(), info) } catch { throw .unspec("export of \(id): \(error)") }
        }
        guard let shadow = res.shadow, let info = res.exported else {
            throw .unspec("\(id) has no host buffer yet (virgl resources get one at RESOURCE_ASSIGN_UUID)")
        }
        refreshShadow(shadow, res)
        do { return (try shadow.buffer.exportFD(), info) } catch { throw .unspec("export of \(id): \(error)") }
    }
}
