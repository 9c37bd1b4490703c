import HostBuffers
import VirtioCore

/// Host buffers for 2D resources: zero copy (a udmabuf over the guest's pages) where the
/// allocator and the backing allow, else the best shadow of the host copy (udmabuf over the
/// memfd, dma-heap or DRM dumb buffer, the memfd itself).
extension Renderer2D {
    public func exportResource(_ id: ResourceID, memory: GuestMemory) -> HostBufferInfo? {
        table.withLock { t in
            guard let res = t[id] else { return nil }
            if let e = res.export { return e.info }
            var reason: String?
            if hostBuffers.zeroCopy {
                if let backing = res.backing {
                    do {
                        let needed = UInt64(res.stride) * UInt64(res.height)
                        let pages = try ZeroCopyPlan.guestPages(backing, memory: memory, needed: needed)
                        let buffer = try hostBuffers.makeUdmabuf(over: pages, name: "vgpu:\(id.raw)")
                        let info = HostBufferInfo(kind: .udmabuf, size: buffer.size, coherency: .zeroCopy, source: .guestRAM, exported: true)
                        t.setExport(ResourceExport(buffer: buffer, info: info), storage: res.storage, for: id)
                        return info
                    } catch {
                        reason = "no zero copy: \(error)"
                    }
                } else {
                    reason = "no zero copy: no backing attached at RESOURCE_ASSIGN_UUID"
                }
            }
            let (export, storage) = makeShadowExport(res, reason: reason)
            t.setExport(export, storage: storage, for: id)
            return export.info
        }
    }

    /// The best shadow the allocator allows for `res`: a udmabuf over its host copy, else a
    /// dma-heap or DRM dumb buffer that becomes its host copy, else the host copy memfd.
    /// Failures fall through to the next kind and are added to `reason`.
    func makeShadowExport(_ res: Resource2D, reason: String?) -> (ResourceExport, HostPixelStorage) {
        var reasons = reason.map { [$0] } ?? []
        let name = "vgpu:\(res.id.raw)"
        for kind in hostBuffers.shadowKinds {
            do throws(HostBufferError) {
                switch kind {
                case .udmabuf:
                    // Shares pages with the host copy: transfers show through with no extra copy.
                    res.storage.buffer.sealSize()
                    let pages = MemfdPages(fd: res.storage.fd, offset: 0, length: UInt64(res.storage.buffer.size))
                    let buffer = try hostBuffers.makeUdmabuf(over: [pages], name: name)
                    return (ResourceExport(buffer: buffer, info: shadowInfo(buffer, reasons)), res.storage)
                case .dmaHeap, .drmDumb:
                    // The dmabuf becomes the host copy: transfers write straight into it.
                    let buffer = try hostBuffers.makeMapped(kind, size: res.storage.length, name: name)
                    let storage = try HostPixelStorage(buffer: buffer, length: res.storage.length)
                    buffer.beginCPUAccess(write: true)
                    storage.base.copyMemory(from: res.storage.base, byteCount: res.storage.length)
                    buffer.endCPUAccess(write: true)
                    return (ResourceExport(buffer: buffer, info: shadowInfo(buffer, reasons)), storage)
                case .glTexture:
                    throw HostBufferError("GL textures are virgl's")
                case .memfd:
                    res.storage.buffer.sealSize()
                    return (ResourceExport(buffer: res.storage.buffer, info: shadowInfo(res.storage.buffer, reasons)), res.storage)
                }
            } catch {
                reasons.append("\(kind.rawValue): \(error)")
            }
        }
        // shadowKinds always ends with memfd, which cannot fail above; keep the compiler happy.
        return (ResourceExport(buffer: res.storage.buffer, info: shadowInfo(res.storage.buffer, reasons)), res.storage)
    }

    private func shadowInfo(_ buffer: HostBuffer, _ reasons: [String]) -> HostBufferInfo {
        HostBufferInfo(kind: buffer.kind, size: buffer.size, coherency: .onTransfer, source: .hostCopy, exported: true,
                       shadowReason: reasons.isEmpty ? nil : reasons.joined(separator: "; "))
    }

    public func scanoutDMABuffer(_ id: ResourceID) -> ScanoutDMABuffer? {
        table.withLock { t in
            guard let r = t[id], let e = r.export, e.buffer.isDMABuf else { return nil }
            return ScanoutDMABuffer(buffer: e.buffer, layout: DMABufLayout(stride: UInt32(r.stride), fourcc: r.format.drmFourCC))
        }
    }

    public func openHostBuffer(_ id: ResourceID) throws(GPUFailure) -> (fd: Int32, info: HostBufferInfo) {
        // Taken under the lock, opened after it: the strong reference keeps the buffer alive.
        let found = table.withLock { t in
            t[id].map { r in
                if r.export == nil { r.storage.handedOut.store(true, ordering: .releasing) }
                return (r.export?.buffer ?? r.storage.buffer, Self.info(of: r))
            }
        }
        guard let (buffer, info) = found else { throw .invalidResourceID("\(id) does not exist") }
        do { return (try buffer.exportFD(), info) } catch { throw .unspec("export of \(id): \(error)") }
    }

    /// What export hands out for `r`: its export, or (before ASSIGN_UUID) its host copy.
    static func info(of r: Resource2D) -> HostBufferInfo {
        r.export?.info ?? HostBufferInfo(kind: r.storage.buffer.kind, size: r.storage.buffer.size, coherency: .onTransfer,
                                         source: .hostCopy, exported: false)
    }
}
