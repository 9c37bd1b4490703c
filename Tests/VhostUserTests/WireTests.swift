import SystemSupport
import Testing
@testable import VhostUser

@Suite struct WireTests {
    @Test func headerRoundTrip() {
        let h = VhostUserHeader(request: 24, flags: 0x5, size: 300)
        let bytes = h.bytes
        #expect(bytes.count == 12)
        #expect(bytes == [24, 0, 0, 0, 5, 0, 0, 0, 44, 1, 0, 0])
        #expect(bytes.withUnsafeBytes { VhostUserHeader(bytes: $0) } == h)
        #expect(VhostUserHeader(decoding: bytes) == h)
    }

    @Test func vringAddressLayout() {
        let a = VringAddressPayload(index: 1, flags: 0, descriptor: 0x1000, used: 0x3000, available: 0x2000, log: 0)
        #expect(a.bytes.count == VringAddressPayload.size)
        #expect(VringAddressPayload(decoding: a.bytes) == a)
        // desc, used, avail order as in the spec.
        var r = ByteReader(a.bytes, offset: 16)
        #expect(r.u64() == 0x3000)
    }

    @Test func memoryTableLayout() throws {
        let t = MemoryTablePayload(regions: [MemoryRegionPayload(guestAddress: 0, size: 4096, userAddress: 0x7f00, mmapOffset: 0),
                                              MemoryRegionPayload(guestAddress: 1 << 32, size: 8192, userAddress: 0x8f00, mmapOffset: 4096)])
        #expect(t.bytes.count == 8 + 2 * 32)
        let decoded = try MemoryTablePayload(decoding: t.bytes, request: "SET_MEM_TABLE")
        #expect(decoded == t)
        #expect(decoded.regions[1].mmapOffset == 4096)
    }

    @Test func memoryTableRejectsWhatTheConnectionRejects() {
        let region = MemoryRegionPayload(guestAddress: 0, size: 4096, userAddress: 0, mmapOffset: 0)
        let one = MemoryTablePayload(regions: [region]).bytes
        #expect(throws: VhostUserMessageError.badSize(request: "T", got: 4, expected: ">= 8")) {
            try MemoryTablePayload(decoding: Array(one[0..<4]), request: "T")
        }
        #expect(throws: VhostUserMessageError.invalidPayload(request: "T", "0 regions")) {
            try MemoryTablePayload(decoding: MemoryTablePayload(regions: []).bytes, request: "T")
        }
        #expect(throws: VhostUserMessageError.invalidPayload(request: "T", "9 regions")) {
            try MemoryTablePayload(decoding: MemoryTablePayload(regions: Array(repeating: region, count: 9)).bytes, request: "T")
        }
        #expect(throws: VhostUserMessageError.badSize(request: "T", got: 39, expected: "40")) {
            try MemoryTablePayload(decoding: Array(one.dropLast()), request: "T")
        }
    }

    @Test func singleRegionHasEightBytesOfPaddingFirst() {
        let region = MemoryRegionPayload(guestAddress: 0x1000, size: 0x2000, userAddress: 0x3000, mmapOffset: 0x4000)
        let bytes = SingleMemoryRegionPayload(region: region).bytes
        #expect(bytes.count == SingleMemoryRegionPayload.size)
        #expect(bytes[0..<8].allSatisfy { $0 == 0 })
        #expect(Array(bytes[8...]) == region.bytes)
        #expect(SingleMemoryRegionPayload(decoding: bytes)?.region == region)
        #expect(SingleMemoryRegionPayload(decoding: Array(bytes.dropLast())) == nil)
    }

    @Test func vringFDPayloadBits() {
        #expect(VringFDPayload(index: 3).bytes == [3, 0, 0, 0, 0, 0, 0, 0])
        let polling = VringFDPayload(index: 2, hasFD: false)
        #expect(polling.value == 0x102 && !polling.hasFD && polling.index == 2 && polling.reservedBits == 0)
        #expect(VringFDPayload(value: 0x201).reservedBits == 0x200)
        #expect(VringFDPayload(decoding: [1, 0, 0, 0]) == nil)
    }

    @Test func configPayloadSizeAgreement() {
        let c = ConfigPayload(offset: 4, size: 3, flags: 1, data: [7, 8, 9])
        #expect(c.bytes == [4, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 7, 8, 9])
        #expect(ConfigPayload(decoding: c.bytes) == c)
        #expect(ConfigPayload(decoding: c.bytes)?.hasConsistentSize == true)
        #expect(ConfigPayload(decoding: Array(c.bytes.dropLast()))?.hasConsistentSize == false)
        #expect(ConfigPayload(decoding: Array(c.bytes[0..<11])) == nil)
        let tooBig = ConfigPayload(offset: 0, size: 257, data: [UInt8](repeating: 0, count: 257))
        #expect(ConfigPayload(decoding: tooBig.bytes)?.hasConsistentSize == false)
    }

    @Test func sharedObjectAndU64Payloads() {
        let uuid = (0..<16).map { UInt8($0) }
        #expect(SharedObjectPayload(decoding: uuid)?.uuid == uuid)
        #expect(SharedObjectPayload(decoding: Array(uuid.dropLast())) == nil)
        #expect(SharedObjectPayload.zero.bytes == [UInt8](repeating: 0, count: 16))
        #expect(U64Payload(0x0102).bytes == [2, 1, 0, 0, 0, 0, 0, 0])
        #expect(U64Payload(decoding: [2, 1, 0, 0, 0, 0, 0, 0])?.value == 0x0102)
        #expect(U64Payload(decoding: []) == nil)
        #expect(VringState(decoding: VringState(index: 1, num: 256).bytes) == VringState(index: 1, num: 256))
    }

    @Test func requestNames() {
        #expect(VhostUserRequest.gpuSetSocket.name == "VHOST_USER_GPU_SET_SOCKET")
        #expect(VhostUserRequest.getVringBase.name == "VHOST_USER_GET_VRING_BASE")
        #expect(VhostUserRequest(rawValue: 33) == .gpuSetSocket)
    }
}
