import ArgumentParser
import ControlProtocol
import Foundation

// The subcommands that read the backend's state: list, show, watch.

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List every device's resources.")
    @OptionGroup var connection: Connection

    func run() {
        do {
            let client = try connection.connect()
            let (result, _) = try client.call(.list)
            let devices = result.devices ?? []
            if connection.json { printJSON(devices); return }
            if devices.isEmpty { print("no devices connected"); return }
            for d in devices {
                print("device \(d.id)  \(d.label)  connected \(age(d.connectedSeconds)) ago  \(d.resources.count) resource\(d.resources.count == 1 ? "" : "s")")
                guard !d.resources.isEmpty else { print(); continue }
                print(table(["ID", "UUID", "FORMAT", "SIZE", "HOST BUFFER", "BACKING", "SCANOUTS", "AGE", "HELD BY"], d.resources.map { r in
                    ["\(r.id)", r.uuid ?? "-", "\(r.format) (\(r.fourcc))", "\(r.width)x\(r.height)",
                     "\(r.hostBuffer.kind) \(bytes(r.hostBuffer.size)) \(r.hostBuffer.coherency)\(r.hostBuffer.shadowReason == nil ? "" : " (shadow)")",
                     r.backingEntries == 0 ? "-" : "\(r.backingEntries) entr\(r.backingEntries == 1 ? "y" : "ies"), \(bytes(r.backingBytes))",
                     r.scanouts.isEmpty ? "-" : r.scanouts.map(String.init).joined(separator: ","), age(r.ageSeconds), holders(r.holders)]
                }))
                print()
            }
        } catch { fail(error) }
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one resource: DEVICE:ID, ID or UUID.")
    @OptionGroup var connection: Connection
    @Argument(help: "DEVICE:ID, ID (if unique over the devices) or UUID.") var resource: String

    func run() {
        do {
            let client = try connection.connect()
            let (result, _) = try client.call(.show, resource: resource)
            guard let d = result.detail else { fail(ControlClientError.protocolError("reply without a resource")) }
            if connection.json { printJSON(d); return }
            let r = d.resource
            print(table(["FIELD", "VALUE"], [
                ["device", "\(r.device) (\(d.deviceLabel))"], ["resource id", "\(r.id)"], ["uuid", r.uuid ?? "- (not exported)"],
                ["format", "\(r.format), DRM fourcc \(r.fourcc), linear"], ["size", "\(r.width)x\(r.height), stride \(r.stride)"],
                ["host buffer", "\(r.hostBuffer.kind) (\(r.hostBuffer.kind == "memfd" ? "no dmabuf" : "dmabuf")), \(r.hostBuffer.size) bytes, " +
                    (r.hostBuffer.exported ? "exported" : "not exported yet: the host copy")],
                ["coherency", r.hostBuffer.coherency == "zero-copy"
                    ? "zero-copy: the guest's own pages, guest writes show at once"
                    : "on-transfer: the backend's host copy, updated by TRANSFER_TO_HOST_2D"],
                ["pages", r.hostBuffer.source == "guest-ram" ? "guest RAM" : "host copy"],
                ["scanouts", r.scanouts.isEmpty ? "-" : r.scanouts.map(String.init).joined(separator: ",")],
                ["age", age(r.ageSeconds)],
                ["held by", holders(r.holders)],
            ]))
            if let why = r.hostBuffer.shadowReason { print("shadow: \(why)") }
            print()
            print("guest backing (guest physical ranges read by TRANSFER_TO_HOST_2D; not an identity): \(r.backingEntries) entries, \(r.backingBytes) bytes")
            if !d.guestBacking.isEmpty {
                print(table(["#", "GUEST PHYSICAL", "LENGTH"], d.guestBacking.enumerated().map { i, g in ["\(i)", g.guestPhysicalAddress, "\(g.length)"] }))
            }
        } catch { fail(error) }
    }
}

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print resource and device events as they happen (created, uuid-assigned, unref, device-reset, device-connected, device-disconnected).")
    @OptionGroup var connection: Connection

    func run() {
        do {
            let client = try connection.connect()
            _ = try client.call(.watch)
            // On stderr, so stdout stays events only: from here on nothing is missed (scripts
            // and tests wait for this line before making the events they want to see).
            FileHandle.standardError.write(Data("vgpuctl: watching \(client.path)\n".utf8))
            while let e = try client.nextEvent() {
                if connection.json {
                    FileHandle.standardOutput.write(Data(ControlCodec.encodeLine(e)))
                } else {
                    var line = String(format: "%.3f ", e.time) + e.kind.padding(toLength: 19, withPad: " ", startingAt: 0) + " device \(e.device)"
                    if let r = e.resource { line += " resource \(r)" }
                    if let u = e.uuid { line += " uuid \(u)" }
                    if let n = e.dropped { line += " (\(n) events dropped before this)" }
                    emit(line)
                }
            }
        } catch { fail(error) }
    }
}
