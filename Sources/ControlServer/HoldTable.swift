import ControlProtocol
import SystemSupport
import VirtioCore
import VirtioGPU

/// Who holds which resource (`resolve`), per control connection. Keyed by UUID, which is never
/// reused, so a hold can never show on a later resource with the same id; holds are dropped on
/// `release`, when the connection closes, and when the resource or its device goes away.
final class HoldTable: Sendable {
    struct Target: Sendable, Hashable {
        let uuid: ResourceUUID
        let device: GPUDeviceID
        let resource: ResourceID
    }
    struct Hold: Sendable {
        let client: Int
        let target: Target
        let holder: String
        let pid: Int32
        var count: Int
    }
    private let holds = Mutex<[Hold]>([])

    func add(client: Int, target: Target, holder: String, pid: Int32) {
        holds.withLock { h in
            if let i = h.firstIndex(where: { $0.client == client && $0.target == target && $0.holder == holder }) { h[i].count += 1 }
            else { h.append(Hold(client: client, target: target, holder: holder, pid: pid, count: 1)) }
        }
    }

    /// Undoes one resolve of `uuid` by `client`: 1, or 0 when it held none (released already,
    /// or the resource went away and its holds with it).
    func release(client: Int, uuid: ResourceUUID) -> Int {
        holds.withLock { h in
            guard let i = h.firstIndex(where: { $0.client == client && $0.target.uuid == uuid }) else { return 0 }
            h[i].count -= 1
            if h[i].count == 0 { h.remove(at: i) }
            return 1
        }
    }

    func dropClient(_ client: Int) { holds.withLock { $0.removeAll { $0.client == client } } }

    /// An unref, device reset or disconnect: the holds of what went away.
    func drop(_ event: ResourceEvent) {
        holds.withLock { h in
            switch event.kind {
            case .unreferenced:
                h.removeAll { $0.target.device == event.device && ($0.target.resource == event.resource || $0.target.uuid == event.uuid) }
            case .deviceReset, .deviceDisconnected:
                h.removeAll { $0.target.device == event.device }
            default: break
            }
        }
    }

    /// The holders of the resource that has `uuid` now.
    func holders(of uuid: ResourceUUID?, device: GPUDeviceID) -> [ResourceHolder] {
        guard let uuid else { return [] }
        return holds.withLock { h in
            h.filter { $0.target.uuid == uuid && $0.target.device == device }.map { ResourceHolder(holder: $0.holder, pid: $0.pid, count: $0.count) }
        }
    }
}
