import Testing
@testable import VhostUser

@Suite struct WireTests {
    @Test func headerRoundTrip() {
        let h = VhostUserHeader(request: 24, flags: 0x5, size: 300)
        let bytes = h.bytes
        #expect(bytes.count == 12)
        #expect(bytes == [24, 0, 0, 0, 5, 0, 0, 0, 44, 1, 0, 0])
        #expect(bytes.withUnsafeBytes { VhostUserHeader(bytes: $0) } == h)
    }

    @Test func vringAddressLayout() {
        let a = VringAddressPayload(index: 1, flags: 0, descriptor: 0x1000, used: 0x3000, available: 0x2000, log: 0)
        #expect(a.bytes.count == VringAddressPayload.size)
        #expect(VringAddressPayload(WireReader(a.bytes)) == a)
        // desc, used, avail order as in the spec.
        #expect(WireReader(a.bytes).u64(16) == 0x3000)
    }

    @Test func memoryTableLayout() {
        let t = MemoryTablePayload(regions: [MemoryRegionPayload(guestAddress: 0, size: 4096, userAddress: 0x7f00, mmapOffset: 0),
                                              MemoryRegionPayload(guestAddress: 1 << 32, size: 8192, userAddress: 0x8f00, mmapOffset: 4096)])
        #expect(t.bytes.count == 8 + 2 * 32)
        #expect(MemoryRegionPayload(WireReader(t.bytes), at: 40).mmapOffset == 4096)
    }

    @Test func requestNames() {
        #expect(VhostUserRequest.gpuSetSocket.name == "VHOST_USER_GPU_SET_SOCKET")
        #expect(VhostUserRequest.getVringBase.name == "VHOST_USER_GET_VRING_BASE")
        #expect(VhostUserRequest(rawValue: 33) == .gpuSetSocket)
    }
}
