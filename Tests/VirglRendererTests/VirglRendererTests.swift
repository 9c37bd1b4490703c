import Dispatch
import struct Synchronization.Atomic
import SystemSupport
import Testing
import VGPUTestSupport
@testable import VirglRenderer
#if canImport(Glibc)
import Glibc
#endif

/// virglrenderer is one per process: the tests share one renderer (made on first use, and again
/// after the lifecycle test shut it down), and the suite runs serialized (fence completions
/// are renderer-wide).
enum SharedRenderer {
    static let logLines = Atomic<Int>(0)
    private static let current = Mutex<VirglRenderer?>(nil)

    static func options(renderNode: String? = nil) -> VirglRendererOptions {
        VirglRendererOptions(renderNode: renderNode, log: { _ in SharedRenderer.logLines.add(1, ordering: .relaxed) })
    }

    static func get() throws -> VirglRenderer {
        try current.withLock { renderer throws(VirglError) -> VirglRenderer in
            if let renderer { return renderer }
            let made = try VirglRenderer(options())
            renderer = made
            return made
        }
    }

    static func shutDown() {
        current.withLock { renderer in
            renderer?.shutdown()
            renderer = nil
        }
    }
}

/// The environment without Foundation.
enum ProcessInfoLite {
    static var environment: [String: String] {
        var result: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let pair = String(cString: pointer)
            if let eq = pair.firstIndex(of: "=") {
                result[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
            }
            entry += 1
        }
        return result
    }
}

/// A render target, its surface made and cleared by a command stream, in one context.
private func clearResource(_ core: VirglRendererCore, context: UInt32, resource: UInt32, surface: UInt32,
                           format: UInt32, rgba: (Float, Float, Float, Float)) throws(VirglError) {
    var stream = VirglCommandStream()
    stream.createSurface(handle: surface, resource: resource, format: format)
    stream.setFramebufferState(colorSurfaces: [surface])
    stream.clear(red: rgba.0, green: rgba.1, blue: rgba.2, alpha: rgba.3)
    stream.destroySurface(handle: surface)
    try core.submit(context: context, words: stream.words)
}

private func renderTarget(_ id: UInt32, format: UInt32 = VirglFormat.b8g8r8a8Unorm,
                          width: UInt32 = 64, height: UInt32 = 32) -> VirglResourceCreate3D {
    VirglResourceCreate3D(resourceID: id, format: format,
                          bind: VirglBind.renderTarget | VirglBind.samplerView, width: width, height: height)
}

/// Every 4-byte pixel of `bytes` that differs from `pixel`, as (index, bytes) for the message.
private func mismatches(_ bytes: [UInt8], expected pixel: [UInt8]) -> [(Int, [UInt8])] {
    stride(from: 0, to: bytes.count, by: 4).compactMap { i in
        let p = Array(bytes[i..<i + 4])
        return p == pixel ? nil : (i / 4, p)
    }
}

@Suite(.serialized)
struct VirglRendererTests {
    @Test func glComesFromTheSurfacelessPlatform() throws {
        let renderer = try SharedRenderer.get()
        #expect(renderer.platform == "surfaceless")
        #expect(!renderer.glRenderer.isEmpty)
        #expect(renderer.glVersion.contains("4.") || renderer.glVersion.contains("3."))
    }

    @Test func secondRendererIsRefused() throws {
        _ = try SharedRenderer.get()
        #expect(throws: VirglError.alreadyRunning) { _ = try VirglRenderer() }
    }

    @Test func capsetsVirglAndVirgl2() throws {
        let renderer = try SharedRenderer.get()
        let (infos, virgl, virgl2) = try renderer.sync { core in
            (core.capsets(),
             try core.capset(id: VirglCapset.virgl.rawValue, version: 1),
             try core.capset(id: VirglCapset.virgl2.rawValue, version: 2))
        }
        #expect(infos.map(\.id) == [1, 2])
        let v1 = try #require(infos.first), v2 = try #require(infos.last)
        #expect(v1.maxVersion >= 1 && v2.maxVersion >= 2)
        // struct virgl_caps_v1 is a few hundred bytes, union virgl_caps (v2) larger, both < 64 KiB.
        #expect(v1.maxSize >= 64 && v1.maxSize < v2.maxSize && v2.maxSize < 65536)
        #expect(virgl.count == Int(v1.maxSize) && virgl2.count == Int(v2.maxSize))
        // Both unions start with max_version.
        let firstWord = { (b: [UInt8]) in UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24 }
        #expect(firstWord(virgl) == 1)
        #expect(firstWord(virgl2) == 2)
        #expect(virgl2.contains { $0 != 0 })
    }

    @Test func unknownCapsetsAndVersionsAreErrors() throws {
        let renderer = try SharedRenderer.get()
        #expect(throws: VirglError.unknownCapset(0)) { try renderer.sync { try $0.capsetInfo(id: 0) } }
        #expect(throws: VirglError.unknownCapset(3)) { try renderer.sync { try $0.capset(id: 3, version: 0) } }
        #expect(throws: VirglError.unknownCapsetVersion(capset: 1, version: 99)) {
            try renderer.sync { try $0.capset(id: 1, version: 99) }
        }
        // Mesa asks VIRGL2 with version 0.
        let caps = try renderer.sync { try $0.capset(id: 2, version: 0) }
        #expect(!caps.isEmpty)
    }

    @Test func contextCreatedAndDestroyed() throws {
        let renderer = try SharedRenderer.get()
        try renderer.sync { core in
            try core.createContext(11, name: "test")
            #expect(core.contextIDs.contains(11))
            #expect(throws: VirglError.contextExists(11)) { try core.createContext(11) }
            try core.destroyContext(11)
            #expect(!core.contextIDs.contains(11))
            #expect(throws: VirglError.unknownContext(11)) { try core.destroyContext(11) }
            #expect(throws: VirglError.invalidContextID(0)) { try core.createContext(0) }
            #expect(throws: VirglError.invalidContextID(0x8000_0000)) { try core.createContext(0x8000_0000) }
            #expect(throws: VirglError.unknownContext(12)) { try core.submit(context: 12, words: [0]) }
        }
    }

    @Test func clearReadBackPixelExact() throws {
        let renderer = try SharedRenderer.get()
        let (width, height): (UInt32, UInt32) = (64, 32)
        let (bgra, rgba, viaBacking) = try renderer.sync { core in
            try core.createContext(21)
            defer { try? core.destroyContext(21) }
            try core.createResource(renderTarget(201, format: VirglFormat.b8g8r8a8Unorm, width: width, height: height))
            try core.createResource(renderTarget(202, format: VirglFormat.r8g8b8a8Unorm, width: width, height: height))
            defer { try? core.destroyResource(201); try? core.destroyResource(202) }
            try core.attachResource(201, toContext: 21)
            try core.attachResource(202, toContext: 21)
            // Values that are exact in 8-bit unorm: 1.0 -> 255, 0.2 -> 51, 0.4 -> 102, 0.6 -> 153.
            try clearResource(core, context: 21, resource: 201, surface: 1, format: VirglFormat.b8g8r8a8Unorm,
                              rgba: (1.0, 0.2, 0.4, 1.0))
            try clearResource(core, context: 21, resource: 202, surface: 2, format: VirglFormat.r8g8b8a8Unorm,
                              rgba: (0.2, 0.6, 0.0, 0.4))
            let box = VirglBox(width: width, height: height)
            var bgra = [UInt8](repeating: 0xEE, count: Int(width * height * 4))
            var rgba = bgra
            try bgra.withUnsafeMutableBytes { b in try core.readPixels(201, box: box, into: b) }
            try rgba.withUnsafeMutableBytes { b in try core.readPixels(202, box: box, into: b) }

            // TRANSFER_FROM_HOST_3D into attached backing, a sub-box with a wider stride.
            let backing = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 64)
            defer { backing.deallocate() }
            backing.initializeMemory(as: UInt8.self, repeating: 0)
            try core.attachBacking(201, [UnsafeMutableRawBufferPointer(rebasing: backing[0..<1024]),
                                         UnsafeMutableRawBufferPointer(rebasing: backing[1024...])])
            try core.transferFromHost(VirglTransfer(resourceID: 201, contextID: 21, stride: 64,
                                                    box: VirglBox(x: 3, y: 5, width: 8, height: 4), offset: 16))
            try core.detachBacking(201)
            return (bgra, rgba, Array(backing))
        }
        #expect(mismatches(bgra, expected: [102, 51, 255, 255]).isEmpty)
        #expect(mismatches(rgba, expected: [51, 153, 0, 102]).isEmpty)
        // Rows of 8 pixels at offset 16 + 64*row; everything else untouched.
        for row in 0..<4 {
            let start = 16 + 64 * row
            #expect(mismatches(Array(viaBacking[start..<start + 32]), expected: [102, 51, 255, 255]).isEmpty)
            #expect(viaBacking[start + 32..<start + 64].allSatisfy { $0 == 0 })
        }
        #expect(viaBacking[0..<16].allSatisfy { $0 == 0 })
        #expect(viaBacking[16 + 64 * 4..<4096].allSatisfy { $0 == 0 })
    }

    @Test func transferToHostRoundTrip() throws {
        let renderer = try SharedRenderer.get()
        let (width, height) = (16, 8)
        var pattern = [UInt8](repeating: 0, count: width * height * 4)
        for i in pattern.indices { pattern[i] = UInt8(truncatingIfNeeded: i &* 7 &+ 3) }
        let source = pattern
        let readBack = try renderer.sync { core in
            try core.createResource(renderTarget(301, width: UInt32(width), height: UInt32(height)))
            defer { try? core.destroyResource(301) }
            let backing = UnsafeMutableRawBufferPointer.allocate(byteCount: source.count, alignment: 64)
            defer { backing.deallocate() }
            backing.copyBytes(from: source)
            try core.attachBacking(301, [backing])
            try core.transferToHost(VirglTransfer(resourceID: 301, stride: UInt32(width * 4),
                                                  box: VirglBox(width: UInt32(width), height: UInt32(height))))
            var out = [UInt8](repeating: 0, count: source.count)
            try out.withUnsafeMutableBytes { b in
                try core.readPixels(301, box: VirglBox(width: UInt32(width), height: UInt32(height)), into: b)
            }
            let info = try core.resourceInfo(301)
            #expect(info.format == VirglFormat.b8g8r8a8Unorm && info.width == 16 && info.height == 8)
            #expect(info.stride == 64)
            return out
        }
        #expect(readBack == source)
    }

    @Test func badTransfersAndAttachmentsAreErrors() throws {
        let renderer = try SharedRenderer.get()
        try renderer.sync { core in
            try core.createContext(41)
            try core.createResource(renderTarget(401, width: 16, height: 16))
            defer { try? core.destroyResource(401); try? core.destroyContext(41) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 16 * 4, alignment: 64)
            defer { buffer.deallocate() }
            let whole = VirglBox(width: 16, height: 16)
            #expect(throws: VirglError.noBacking(401)) { try core.transferToHost(VirglTransfer(resourceID: 401, box: whole)) }
            try core.attachBacking(401, [buffer])
            #expect(throws: VirglError.backingAlreadyAttached(401)) { try core.attachBacking(401, [buffer]) }
            for box in [VirglBox(x: 1, width: 16, height: 16), VirglBox(y: 0xFFFF_FFFF, width: 1, height: 2),
                        VirglBox(width: 16, height: 16, depth: 2), VirglBox(z: 1, width: 1, height: 1)] {
                #expect(throws: VirglError.self) { try core.transferToHost(VirglTransfer(resourceID: 401, box: box)) }
                #expect(throws: VirglError.self) { try core.transferFromHost(VirglTransfer(resourceID: 401, box: box)) }
                #expect(throws: VirglError.self) { try core.readPixels(401, box: box, into: buffer) }
            }
            #expect(throws: VirglError.self) { try core.transferToHost(VirglTransfer(resourceID: 401, level: 1, box: whole)) }
            // A box inside the resource whose bytes would run past the backing: virglrenderer's refusal.
            #expect(throws: VirglError.self) {
                try core.transferToHost(VirglTransfer(resourceID: 401, stride: 64, box: whole, offset: 4096))
            }
            #expect(throws: VirglError.self) {
                try core.readPixels(401, box: whole, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<100]))
            }
            #expect(throws: VirglError.unknownResource(499)) { try core.readPixels(499, box: whole, into: buffer) }
            #expect(throws: VirglError.unknownContext(49)) {
                try core.transferToHost(VirglTransfer(resourceID: 401, contextID: 49, box: whole))
            }
            try core.attachResource(401, toContext: 41)
            #expect(throws: VirglError.resourceAlreadyAttached(resource: 401, context: 41)) {
                try core.attachResource(401, toContext: 41)
            }
            try core.detachResource(401, fromContext: 41)
            #expect(throws: VirglError.resourceNotAttached(resource: 401, context: 41)) {
                try core.detachResource(401, fromContext: 41)
            }
            #expect(throws: VirglError.resourceExists(401)) { try core.createResource(renderTarget(401)) }
            #expect(throws: VirglError.invalidResourceID(0)) { try core.createResource(renderTarget(0)) }
            #expect(throws: VirglError.commandStreamNotWordAligned(3)) {
                try [UInt8](repeating: 0, count: 3).withUnsafeBytes { b in try core.submit(context: 41, commands: b) }
            }
            try core.detachBacking(401)
            #expect(throws: VirglError.noBacking(401)) { try core.detachBacking(401) }
        }
    }

    @Test func fencesCompleteInOrder() throws {
        let renderer = try SharedRenderer.get()
        let completions = try renderer.sync { core in
            try core.createContext(51)
            try core.createResource(renderTarget(501, width: 256, height: 256))
            defer { try? core.destroyResource(501); try? core.destroyContext(51) }
            try core.attachResource(501, toContext: 51)
            _ = core.pollFences()   // nothing left over from earlier tests
            for i in 0..<8 {
                try clearResource(core, context: 51, resource: 501, surface: UInt32(10 + i),
                                  format: VirglFormat.b8g8r8a8Unorm, rgba: (Float(i) / 8, 0, 0, 1))
                try core.createFence(UInt64(1000 + i), context: 51)
            }
            try core.createFence(2000, context: 0)   // a fence with no work of its own
            var done: [VirglFenceCompletion] = []
            let deadline = DispatchTime.now().uptimeNanoseconds + 5_000_000_000
            while core.pendingFenceCount > 0, DispatchTime.now().uptimeNanoseconds < deadline {
                done += core.pollFences()
                if core.pendingFenceCount > 0 { usleep(1000) }
            }
            return done
        }
        #expect(completions.map(\.fenceID) == (0..<8).map { UInt64(1000 + $0) } + [2000])
        #expect(completions.map(\.contextID) == Array(repeating: 51, count: 8) + [0])
    }

    @Test func exportWithoutDRMIsAClearError() throws {
        let renderer = try SharedRenderer.get()
        let outcome = try renderer.sync { core -> Result<VirglDMABuf, VirglError> in
            try core.createResource(renderTarget(601))
            defer { try? core.destroyResource(601) }
            return Result { () throws(VirglError) in try core.exportResource(601) }
        }
        switch outcome {
        case .success(let dmabuf):   // a host with a DRM device
            #expect(dmabuf.fd >= 0)
            close(dmabuf.fd)
        case .failure(let error):
            guard case .exportUnavailable(601, let reason) = error else {
                Issue.record("unexpected \(error)")
                return
            }
            print("export without DRM: \(error)")
            #expect(!reason.isEmpty && !reason.contains("\n"))
            #expect(!error.description.contains("\n"))
        }
        #expect(throws: VirglError.unknownResource(699)) { try renderer.sync { try $0.exportResource(699) } }
    }

    @Test func asyncRunAndPostUseTheRenderThread() async throws {
        let renderer = try SharedRenderer.get()
        let infos = try await renderer.run { core in core.capsets() }
        #expect(infos.count == 2)
        let posted = DispatchSemaphore(value: 0)
        let capsetCount = Atomic<Int>(0)
        #expect(renderer.post { core in
            capsetCount.store(core.capsets().count, ordering: .relaxed)
            posted.signal()
        })
        posted.wait()
        #expect(capsetCount.load(ordering: .relaxed) == 2)
        // sync inside a job runs inline instead of deadlocking.
        let nested = try renderer.sync { _ in try renderer.sync { $0.capsets().count } }
        #expect(nested == 2)
    }

    @Test func randomSubmitsLeaveTheRendererUsable() throws {
        let renderer = try SharedRenderer.get()
        // VGPU_VIRGL_FUZZ_SECONDS and VGPU_VIRGL_FUZZ_SEED make a longer or a repeated run.
        let environment = ProcessInfoLite.environment
        let seed = environment["VGPU_VIRGL_FUZZ_SEED"].flatMap { UInt64($0) } ?? UInt64(DispatchTime.now().uptimeNanoseconds)
        let seconds = environment["VGPU_VIRGL_FUZZ_SECONDS"].flatMap { UInt64($0) } ?? 3
        var rng = SplitMix64(seed: seed)
        let deadline = DispatchTime.now().uptimeNanoseconds + seconds * 1_000_000_000
        var submitted = 0, refused = 0, contextsMade = 0
        var context: UInt32 = 0
        try renderer.sync { core in
            try core.createResource(renderTarget(701, width: 32, height: 32))
            try core.createResource(VirglResourceCreate3D(resourceID: 702, target: VirglTarget.buffer,
                                                          format: 64 /* R8_UNORM */, bind: VirglBind.vertexBuffer,
                                                          width: 4096, height: 1))
        }
        while DispatchTime.now().uptimeNanoseconds < deadline {
            // A batch per job, so the other work on the render thread interleaves.
            let words: [[UInt32]] = (0..<16).map { _ in
                switch UInt8.random(in: 0..<3, using: &rng) {
                case 0:
                    // Noise.
                    return (0..<Int.random(in: 1...64, using: &rng)).map { _ in UInt32.random(in: 0...UInt32.max, using: &rng) }
                case 1:
                    // A plausible header: a known command, a small object type, the real length,
                    // and small handles, to get past the first checks into the decoders.
                    let count = Int.random(in: 1...64, using: &rng)
                    var w = (0..<count).map { _ in UInt32.random(in: 0...UInt32.max, using: &rng) }
                    let command = UInt32.random(in: 0..<64, using: &rng)
                    let object = UInt32.random(in: 0..<12, using: &rng)
                    w[0] = command | object << 8 | UInt32(count - 1) << 16
                    for i in 1..<count where Bool.random(using: &rng) { w[i] = UInt32.random(in: 0..<8, using: &rng) }
                    return w
                default:
                    // A valid clear of resource 701 with a few words changed (a value or one bit).
                    var stream = VirglCommandStream()
                    stream.createSurface(handle: 1, resource: 701, format: VirglFormat.b8g8r8a8Unorm)
                    stream.setFramebufferState(colorSurfaces: [1])
                    stream.clear(red: 1, green: 0, blue: 0, alpha: 1)
                    stream.destroySurface(handle: 1)
                    var w = stream.words
                    for _ in 0..<Int.random(in: 1...4, using: &rng) {
                        let i = Int.random(in: 0..<w.count, using: &rng)
                        w[i] = Bool.random(using: &rng) ? UInt32.random(in: 0...UInt32.max, using: &rng)
                                                         : w[i] ^ (1 << UInt32.random(in: 0..<32, using: &rng))
                    }
                    return w
                }
            }
            try renderer.sync { core in
                for batch in words {
                    if context == 0 {
                        context = 800 + UInt32(contextsMade % 100)
                        contextsMade += 1
                        try core.createContext(context)
                        try core.attachResource(701, toContext: context)
                        try core.attachResource(702, toContext: context)
                    }
                    submitted += 1
                    do {
                        try core.submit(context: context, words: batch)
                    } catch {
                        // A refused stream can leave the context unusable: replace it, as a guest would.
                        refused += 1
                        try core.destroyContext(context)
                        context = 0
                    }
                }
                _ = core.pollFences()
            }
        }
        print("random submits: seed \(seed), \(submitted) streams, \(refused) refused, \(contextsMade) contexts, \(SharedRenderer.logLines.load(ordering: .relaxed)) log lines")
        #expect(submitted > 20, "random submits barely ran")

        // Still usable: a fresh context clears and reads back exactly.
        let pixels = try renderer.sync { core -> [UInt8] in
            if context != 0 { try core.destroyContext(context) }
            try core.createContext(899)
            defer { try? core.destroyContext(899); try? core.destroyResource(701); try? core.destroyResource(702) }
            try core.createResource(renderTarget(703, width: 32, height: 32))
            defer { try? core.destroyResource(703) }
            try core.attachResource(703, toContext: 899)
            try clearResource(core, context: 899, resource: 703, surface: 1, format: VirglFormat.b8g8r8a8Unorm,
                              rgba: (0.0, 1.0, 0.2, 1.0))
            var out = [UInt8](repeating: 0, count: 32 * 32 * 4)
            try out.withUnsafeMutableBytes { b in try core.readPixels(703, box: VirglBox(width: 32, height: 32), into: b) }
            try core.createFence(9999, context: 899)
            let deadline = DispatchTime.now().uptimeNanoseconds + 5_000_000_000
            var completions: [VirglFenceCompletion] = []
            while core.pendingFenceCount > 0, DispatchTime.now().uptimeNanoseconds < deadline {
                completions += core.pollFences()
                usleep(1000)
            }
            #expect(completions.last?.fenceID == 9999)
            return out
        }
        #expect(mismatches(pixels, expected: [51, 255, 0, 255]).isEmpty)
    }

    @Test func resetDropsEverythingAndTheRendererGoesOn() throws {
        let renderer = try SharedRenderer.get()
        let backing = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 32 * 4, alignment: 64)
        defer { backing.deallocate() }
        let pixels = try renderer.sync { core -> [UInt8] in
            try core.createContext(61)
            try core.createResource(renderTarget(611))
            try core.attachResource(611, toContext: 61)
            try core.attachBacking(611, [backing])
            core.reset()
            #expect(core.contextIDs.isEmpty && core.resourceIDs.isEmpty && core.pendingFenceCount == 0)
            // The same ids again, and a clear that reads back.
            try core.createContext(61)
            try core.createResource(renderTarget(611, width: 4, height: 4))
            defer { try? core.destroyResource(611); try? core.destroyContext(61) }
            try core.attachResource(611, toContext: 61)
            try clearResource(core, context: 61, resource: 611, surface: 1, format: VirglFormat.b8g8r8a8Unorm,
                              rgba: (0.4, 0.4, 0.4, 0.2))
            var out = [UInt8](repeating: 0, count: 4 * 4 * 4)
            try out.withUnsafeMutableBytes { b in try core.readPixels(611, box: VirglBox(width: 4, height: 4), into: b) }
            return out
        }
        #expect(mismatches(pixels, expected: [102, 102, 102, 51]).isEmpty)
    }

    @Test func noGLIsAClearErrorAndTheRendererRestarts() throws {
        // Leave work behind for shutdown to clean: a context, a resource with backing attached.
        let leftover = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 32 * 4, alignment: 64)
        defer { leftover.deallocate() }
        try SharedRenderer.get().sync { core in
            try core.createContext(91)
            try core.createResource(renderTarget(901))
            try core.attachResource(901, toContext: 91)
            try core.attachBacking(901, [leftover])
        }
        SharedRenderer.shutDown()

        do {
            _ = try VirglRenderer(SharedRenderer.options(renderNode: "/nonexistent/renderD128"))
            Issue.record("a renderer on a missing render node")
        } catch {
            guard case .noGL(let why) = error else { Issue.record("unexpected \(error)"); return }
            print("no GL: \(error)")
            #expect(why.contains("/nonexistent/renderD128"))
            #expect(!error.description.contains("\n"))
        }

        // virglrenderer can be initialized again in the same process, twice over.
        for round in 0..<2 {
            let renderer = try VirglRenderer(SharedRenderer.options())
            let pixels = try renderer.sync { core -> [UInt8] in
                try core.createContext(92)
                try core.createResource(renderTarget(902, width: 8, height: 8))
                try core.attachResource(902, toContext: 92)
                try clearResource(core, context: 92, resource: 902, surface: 1, format: VirglFormat.b8g8r8a8Unorm,
                                  rgba: (0.2, 0.4, Float(round), 1.0))
                var out = [UInt8](repeating: 0, count: 8 * 8 * 4)
                try out.withUnsafeMutableBytes { b in try core.readPixels(902, box: VirglBox(width: 8, height: 8), into: b) }
                return out
            }
            #expect(mismatches(pixels, expected: [UInt8(round * 255), 102, 51, 255]).isEmpty)
            renderer.shutdown()
            renderer.shutdown()   // idempotent
            #expect(throws: VirglError.shutDown) { try renderer.sync { $0.capsets().count } }
            #expect(!renderer.post { _ in })
        }

        // Shut down from inside a job: no deadlock; the teardown runs right after the job.
        let renderer = try VirglRenderer(SharedRenderer.options())
        try renderer.sync { _ in renderer.shutdown() }
        #expect(throws: VirglError.shutDown) { try renderer.sync { $0.capsets().count } }
        // The next renderer may have to wait for that teardown to finish.
        var next: VirglRenderer?
        for _ in 0..<100 where next == nil {
            switch Result(catching: { () throws(VirglError) in try VirglRenderer(SharedRenderer.options()) }) {
            case .success(let renderer): next = renderer
            case .failure(.alreadyRunning): usleep(10_000)
            case .failure(let error): throw error
            }
        }
        #expect(next != nil)

        // Shutdown while other threads call in: each call gets its answer or `shutDown`.
        let racing = try #require(next)
        let answered = Atomic<Int>(0), refused = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            if worker == 0 {
                usleep(20_000)
                racing.shutdown()
                return
            }
            while true {
                do {
                    _ = try racing.sync { core in core.capsets().count }
                    answered.add(1, ordering: .relaxed)
                } catch {
                    #expect(error as? VirglError == .shutDown)
                    refused.add(1, ordering: .relaxed)
                    return
                }
            }
        }
        #expect(answered.load(ordering: .relaxed) > 0 && refused.load(ordering: .relaxed) == 3)
    }
}
