/// A guest physical address: what the driver puts in descriptors and backing entries.
///
/// Only ever used to read or write guest memory; never an identity, never a lookup key for
/// another device (design notes, section 3). No arithmetic operators: use `checkedAdd`.
public struct GuestPhysicalAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let raw: UInt64

    @inlinable public init(_ raw: UInt64) { self.raw = raw }

    /// `self + offset`, or nil when it would wrap past 2^64.
    @inlinable public func checkedAdd(_ offset: UInt64) -> GuestPhysicalAddress? {
        let (sum, overflow) = raw.addingReportingOverflow(offset)
        return overflow ? nil : GuestPhysicalAddress(sum)
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.raw < rhs.raw }
    public var description: String { "gpa:0x" + String(raw, radix: 16) }
}

/// An address in the frontend's (QEMU's) virtual address space. vhost-user vring addresses are
/// given this way; they are translated through the memory table like guest addresses.
public struct FrontendVirtualAddress: Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt64
    @inlinable public init(_ raw: UInt64) { self.raw = raw }
    public var description: String { "uva:0x" + String(raw, radix: 16) }
}
