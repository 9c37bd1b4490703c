import ControlProtocol
import Foundation
import VirtioCore
import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// What a request turns into: a reply line, a reply line with an fd, or a subscription.
enum ControlReply {
    case response(ControlResponse)
    case withFD(ControlResponse, OwnedFileDescriptor)
    /// `resolve`: the reply and fd, and the hold the server records for the connection.
    case resolved(ControlResponse, OwnedFileDescriptor, HoldTable.Target)
    /// `release`: the server drops the connection's holds.
    case release
    case watch
}

/// Answers requests from the device directory. Pure apart from opening export fds.
struct ControlHandler {
    let directory: DeviceDirectory
    var holds: HoldTable? = nil

    func handle(_ request: ControlRequest, _ method: ControlMethod) -> ControlReply {
        do {
            switch method {
            case .list:
                let now = wallClockSeconds()
                let devices = directory.devices().map { d in
                    DeviceSummary(id: d.id.raw, label: d.label, connectedSeconds: max(0, now - d.connectedAt),
                                  resources: d.processor.snapshot().map { summary($0, device: d.id, now: now) })
                }
                return .response(.success(request.id, ControlResult(devices: devices)))
            case .show:
                let (entry, info) = try resolve(request.resource)
                let ranges = (entry.processor.backingEntries(of: info.id) ?? []).map {
                    GuestRange(guestPhysicalAddress: "0x" + String($0.address.raw, radix: 16), length: $0.length)
                }
                let detail = ResourceDetail(resource: summary(info, device: entry.id, now: wallClockSeconds()), deviceLabel: entry.label,
                                            createdAt: info.createdAt, guestBacking: ranges)
                return .response(.success(request.id, ControlResult(detail: detail)))
            case .export, .dump, .resolve:
                if method != .dump, let r = request.resource, ResourceUUID(string: r) == nil {
                    throw ControlError(.badRequest, "\(method.rawValue) takes a UUID (resources are exported by UUID only); got \"\(r)\"")
                }
                if method == .resolve, (request.holder ?? "").isEmpty || (request.holder ?? "").utf8.count > 256 {
                    throw ControlError(.badRequest, "resolve needs \"holder\": who holds the buffer (1-256 bytes of text)")
                }
                let resolved: (DeviceDirectory.Entry, ResourceInfo)
                do { resolved = try resolve(request.resource) } catch {
                    // Not ours: a device whose frontend may be asked (SHARED_OBJECT_LOOKUP) can resolve it.
                    // Not for `resolve`: a hold is only recorded on this backend's own resources.
                    if method == .export, error.code == .notFound, let r = request.resource, let uuid = ResourceUUID(string: r),
                       let reply = exportForeign(uuid, request: request) {
                        return reply
                    }
                    throw error
                }
                let (entry, info) = resolved
                let opened: (fd: Int32, info: VirtioGPU.HostBufferInfo)
                do { opened = try entry.processor.openHostBuffer(info.id) } catch {
                    if error.error == .invalidResourceID {
                        throw ControlError(.notFound, "\(entry.id)/\(info.id) has no host buffer (unreferenced meanwhile?)")
                    }
                    throw ControlError(.internalError, "\(error)")
                }
                let fd = OwnedFileDescriptor(opened.fd)
                var layout = BufferLayout(uuid: info.uuid?.description, device: entry.id.raw, resource: info.id.raw,
                                          handleType: opened.info.handleType,
                                          format: info.format.description, fourcc: info.format.drmFourCCName,
                                          drmFormat: info.format.drmFourCC,
                                          width: info.width, height: info.height, stride: info.stride, offset: 0,
                                          size: opened.info.size, modifier: DRMFourCC.linearModifier)
                layout.kind = opened.info.kind.rawValue
                layout.coherency = opened.info.coherency.rawValue
                if let own = opened.info.layout {
                    // A GL texture: its own stride, offset, fourcc and modifier.
                    layout.stride = Int(own.stride)
                    layout.offset = Int(own.offset)
                    layout.drmFormat = own.fourcc
                    layout.fourcc = DRMFourCC.name(code: own.fourcc)
                    layout.modifier = own.modifier
                }
                if method == .resolve, let uuid = info.uuid {
                    return .resolved(.success(request.id, ControlResult(buffer: layout)), fd,
                                     HoldTable.Target(uuid: uuid, device: entry.id, resource: info.id))
                }
                return .withFD(.success(request.id, ControlResult(buffer: layout)), fd)
            case .release:
                // Answered by the server, which knows the connection.
                guard let r = request.resource, ResourceUUID(string: r) != nil else {
                    throw ControlError(.badRequest, "release takes the UUID that was resolved; got \"\(request.resource ?? "")\"")
                }
                return .release
            case .watch:
                return .watch
            }
        } catch let e as ControlError {
            return .response(.failure(request.id, e))
        } catch {
            return .response(.failure(request.id, ControlError(.internalError, "\(error)")))
        }
    }

    /// A UUID no device here owns, asked of each device's frontend in turn. The owner is
    /// elsewhere, so only what the fd itself says is known: it is a dmabuf or memfd of `size`
    /// bytes; format and geometry are not (reported as "unknown" and 0, `foreign: true`).
    func exportForeign(_ uuid: ResourceUUID, request: ControlRequest) -> ControlReply? {
        for d in directory.devices() {
            guard let ask = d.lookupForeign, let raw = ask(uuid) else { continue }
            let fd = OwnedFileDescriptor(raw)
            let size = Int(lseek(raw, 0, SEEK_END))
            var link = [CChar](repeating: 0, count: 256)
            let n = readlink("/proc/self/fd/\(raw)", &link, 255)
            let target = n > 0 ? String(decoding: link.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
            var layout = BufferLayout(uuid: uuid.description, device: d.id.raw, resource: 0,
                                      handleType: target.hasPrefix("/memfd:") ? "memfd" : "dmabuf",
                                      format: "unknown", fourcc: "", drmFormat: 0, width: 0, height: 0, stride: 0, offset: 0,
                                      size: max(0, size), modifier: DRMFourCC.linearModifier)
            layout.foreign = true
            return .withFD(.success(request.id, ControlResult(buffer: layout)), fd)
        }
        return nil
    }

    func summary(_ r: ResourceInfo, device: GPUDeviceID, now: Double) -> ResourceSummary {
        ResourceSummary(device: device.raw, id: r.id.raw, uuid: r.uuid?.description, format: r.format.description,
                        fourcc: DRMFourCC.name(for: r.format), width: r.width, height: r.height, stride: r.stride,
                        hostBuffer: HostBufferSummary(kind: r.hostBuffer.kind.rawValue, size: r.hostBuffer.size,
                                                      coherency: r.hostBuffer.coherency.rawValue, source: r.hostBuffer.source.rawValue,
                                                      exported: r.hostBuffer.exported, shadowReason: r.hostBuffer.shadowReason),
                        backingEntries: r.backingEntryCount, backingBytes: r.backingBytes, scanouts: r.scanouts,
                        ageSeconds: r.createdAt > 0 ? max(0, now - r.createdAt) : 0,
                        holders: holds?.holders(of: r.uuid, device: device) ?? [])
    }

    /// `DEVICE:ID`, `ID` (must be unique over the devices) or a UUID.
    func resolve(_ reference: String?) throws(ControlError) -> (DeviceDirectory.Entry, ResourceInfo) {
        guard let reference, !reference.isEmpty else { throw ControlError(.badRequest, "missing \"resource\": DEVICE:ID, ID or UUID") }
        let devices = directory.devices()
        if let uuid = ResourceUUID(string: reference) {
            for d in devices {
                if let owner = d.processor.uuids.lookup(uuid), let entry = devices.first(where: { $0.id == owner.device }),
                   let info = entry.processor.resourceInfo(owner.resource) {
                    return (entry, info)
                }
            }
            throw ControlError(.notFound, "no resource has UUID \(uuid) (never assigned, or unreferenced)")
        }
        let parts = reference.split(separator: ":", omittingEmptySubsequences: false)
        if parts.count == 2, let dev = UInt32(parts[0]), let id = UInt32(parts[1]) {
            guard let entry = devices.first(where: { $0.id.raw == dev }) else {
                throw ControlError(.notFound, "no device \(dev) (devices: \(devices.map { String($0.id.raw) }.joined(separator: ", ")))")
            }
            guard let info = entry.processor.resourceInfo(ResourceID(id)) else { throw ControlError(.notFound, "device \(dev) has no resource \(id)") }
            return (entry, info)
        }
        if parts.count == 1, let id = UInt32(reference) {
            let hits = devices.compactMap { d in d.processor.resourceInfo(ResourceID(id)).map { (d, $0) } }
            switch hits.count {
            case 0: throw ControlError(.notFound, "no resource \(id) on any device")
            case 1: return hits[0]
            default: throw ControlError(.ambiguous, "resource \(id) exists on devices \(hits.map { String($0.0.id.raw) }.joined(separator: ", ")); say DEVICE:\(id)")
            }
        }
        throw ControlError(.badRequest, "\"\(reference)\" is not DEVICE:ID, ID or a UUID")
    }
}
