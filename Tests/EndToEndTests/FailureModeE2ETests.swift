import CShims
import DisplayChannel
import Foundation
import Synchronization
import Testing
import VGPUTestSupport
import VhostUser
import FrontendSide
import VirtioCore
import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// Issue 11 §3 and §4 through the whole device: floods and peers that vanish.
@Suite(.serialized) struct FailureModeE2ETests {
    /// §3.3: 300 GPU_SET_SOCKETs, each display peer silent, while a 1024x768 head is shown (each
    /// refresh sends 3 MiB the peer never reads): one refresh runs at a time,
    /// and the requests are coalesced. Before: one detached thread per request, without bound
    /// (enough of them and thread creation failed: precondition, process gone).
    @Test func setSocketFloodRunsOneRefreshAtATime() throws {
        let rig = try GPURig(config: GPUDeviceConfig(numScanouts: 1),
                             displayOptions: VhostUserGPUDisplay.Options(timeout: .milliseconds(200)))
        defer { _ = rig.disconnect() }
        let w: UInt32 = 1024, h: UInt32 = 768
        _ = try rig.makeResource(id: 1, width: w, height: h, pixels: pixelPattern(Int(w), Int(h)))
        try rig.check(rig.driver.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h)), "scanout")
        let stop = Atomic<Bool>(false), peak = Atomic<Int>(0)
        startThread(name: "count-refresh") {
            while !stop.load(ordering: .acquiring) {
                let n = threadCount(named: "vgpu-refresh")
                if n > peak.load(ordering: .relaxed) { peak.store(n, ordering: .relaxed) }
                usleep(2_000)
            }
        }
        var peers: [OwnedFileDescriptor] = []
        let requests = 300
        for _ in 0..<requests {
            let (mine, theirs) = try UnixSocket.pair()
            #expect(try rig.driver.frontend.gpuSetSocket(theirs.rawValue))
            peers.append(mine)   // open and silent
        }
        usleep(500_000)
        stop.store(true, ordering: .releasing)
        // One refresh runs at a time; a thread that has finished its last refresh may still be
        // on its way out while the next one starts (seen under ThreadSanitizer): at most two
        // exist at once. Before the fix: 8 here, and without bound under load.
        #expect(peak.load(ordering: .relaxed) <= 2, "refresh threads alive at once: \(peak.load(ordering: .relaxed))")
        // Never more than one refresh per request (plus the one at connect). Requests arriving
        // while one runs are coalesced, so fewer start; under ThreadSanitizer each refresh can
        // end before the next request arrives (301 for 300, measured), so only the normal runs
        // check the coalescing.
        let started = rig.device.refreshThreadsStarted
        #expect(started <= requests + 1, "started \(started) for \(requests) requests")
        if !underSanitizer {
            #expect(started < requests, "started \(started) for \(requests) requests")
        }
        // The device still answers.
        #expect(try rig.driver.getDisplayInfo().type == VIRTIO_GPU_RESP_OK_DISPLAY_INFO.rawValue)
        withExtendedLifetime(peers) {}
    }
}
