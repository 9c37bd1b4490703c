import Testing
import VirtioCore

@Suite("GuestPhysicalAddress")
struct GuestAddressTests {
    @Test("checkedAdd adds an offset that fits")
    func checkedAddFits() {
        let a = GuestPhysicalAddress(0x1000)

        let sum = a.checkedAdd(0x234)

        #expect(sum == GuestPhysicalAddress(0x1234))
    }

    @Test("checkedAdd reaching exactly 2^64 - 1 is not an overflow")
    func checkedAddToMax() {
        let a = GuestPhysicalAddress(UInt64.max - 10)

        let sum = a.checkedAdd(10)

        #expect(sum?.raw == UInt64.max)
    }

    @Test("checkedAdd returns nil when the sum wraps past 2^64")
    func checkedAddOverflow() {
        let a = GuestPhysicalAddress(UInt64.max - 10)

        let sum = a.checkedAdd(11)

        #expect(sum == nil)
    }

    @Test("checkedAdd of the largest offset to a non-zero address overflows")
    func checkedAddHugeOffset() {
        #expect(GuestPhysicalAddress(1).checkedAdd(UInt64.max) == nil)
    }

    @Test("addresses order by their raw value")
    func ordering() {
        #expect(GuestPhysicalAddress(0x1000) < GuestPhysicalAddress(0x2000))
        #expect(!(GuestPhysicalAddress(0x2000) < GuestPhysicalAddress(0x1000)))
    }

    @Test("descriptions name the address space in hex")
    func descriptions() {
        #expect(GuestPhysicalAddress(0xdead_beef).description == "gpa:0xdeadbeef")
        #expect(FrontendVirtualAddress(0x7f00).description == "uva:0x7f00")
    }
}
