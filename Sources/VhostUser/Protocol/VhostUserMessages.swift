// The vhost-user wire protocol's vocabulary (QEMU docs/interop/vhost-user.rst): request codes,
// the message header and its flags, feature bits, and why a message is refused. Data only, no
// I/O; the payload structs are in VhostUserPayloads.swift.

import SystemSupport

/// Front-end → back-end requests. Raw values are the spec's.
public enum VhostUserRequest: UInt32, Sendable, CaseIterable {
    case getFeatures = 1, setFeatures = 2, setOwner = 3, resetOwner = 4, setMemTable = 5, setLogBase = 6,
         setLogFD = 7, setVringNum = 8, setVringAddr = 9, setVringBase = 10, getVringBase = 11,
         setVringKick = 12, setVringCall = 13, setVringErr = 14, getProtocolFeatures = 15,
         setProtocolFeatures = 16, getQueueNum = 17, setVringEnable = 18, sendRARP = 19, netSetMTU = 20,
         setBackendReqFD = 21, iotlbMsg = 22, setVringEndian = 23, getConfig = 24, setConfig = 25,
         createCryptoSession = 26, closeCryptoSession = 27, postcopyAdvise = 28, postcopyListen = 29,
         postcopyEnd = 30, getInflightFD = 31, setInflightFD = 32, gpuSetSocket = 33, resetDevice = 34,
         vringKick = 35, getMaxMemSlots = 36, addMemReg = 37, remMemReg = 38, setStatus = 39,
         getStatus = 40, getSharedObject = 41, setDeviceStateFD = 42, checkDeviceState = 43

    /// Spec name, for logs.
    public var name: String { "VHOST_USER_" + String(describing: self).snakeUpper }
}

extension String {
    var snakeUpper: String {
        var out = ""
        var previousLower = false
        for c in self {
            if c.isUppercase && previousLower { out += "_" }
            previousLower = c.isLowercase
            out += c.uppercased()
        }
        return out
    }
}

/// Back-end → front-end requests on the backend channel (SET_BACKEND_REQ_FD). Raw values are the spec's.
public enum VhostUserBackendRequest: UInt32, Sendable, CaseIterable {
    case iotlbMsg = 1, configChangeMsg = 2, vringHostNotifierMsg = 3
    /// QEMU >= 8.2, protocol feature SHARED_OBJECT: payload `VhostUserShared` (16-byte UUID).
    case sharedObjectAdd = 6, sharedObjectRemove = 7, sharedObjectLookup = 8

    public var name: String { "VHOST_USER_BACKEND_" + String(describing: self).snakeUpper }
}

/// Header flags (version in bits 0-1).
public enum VhostUserHeaderFlags {
    public static let version: UInt32 = 0x1
    public static let reply: UInt32 = 0x4
    public static let needReply: UInt32 = 0x8
    public static let versionMask: UInt32 = 0x3
}

/// The 12-byte message header.
public struct VhostUserHeader: VhostUserPayload {
    public static let size = 12
    public var request: UInt32
    public var flags: UInt32
    public var size: UInt32

    public init(request: UInt32, flags: UInt32, size: UInt32) {
        self.request = request; self.flags = flags; self.size = size
    }

    /// Decodes the first 12 bytes of `bytes` (the caller read exactly that many).
    public init(bytes: UnsafeRawBufferPointer) {
        var r = ByteReader(Array(bytes.prefix(Self.size)))
        self.init(reading: &r)
    }
    public init(reading r: inout ByteReader) { self.init(request: r.u32(), flags: r.u32(), size: r.u32()) }
    public func write(_ w: ByteWriter) { w.u32(request).u32(flags).u32(size) }

    public var needsReply: Bool { flags & VhostUserHeaderFlags.needReply != 0 }
}

/// Protocol feature bits (VHOST_USER_PROTOCOL_F_*).
public struct VhostUserProtocolFeatures: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let mq = Self(rawValue: 1 << 0)
    public static let logShmFD = Self(rawValue: 1 << 1)
    public static let replyAck = Self(rawValue: 1 << 3)
    public static let backendReq = Self(rawValue: 1 << 5)
    public static let config = Self(rawValue: 1 << 9)
    public static let backendSendFD = Self(rawValue: 1 << 10)
    public static let resetDevice = Self(rawValue: 1 << 13)
    public static let inbandNotifications = Self(rawValue: 1 << 14)
    public static let configureMemSlots = Self(rawValue: 1 << 15)
    public static let status = Self(rawValue: 1 << 16)
    public static let sharedObject = Self(rawValue: 1 << 18)
}

/// Transport feature bits a vhost-user backend offers alongside its device bits.
public enum VirtioFeature {
    public static let ringIndirectDesc: UInt64 = 1 << 28
    public static let ringEventIdx: UInt64 = 1 << 29
    /// VHOST_USER_F_PROTOCOL_FEATURES (bit 30): protocol features are negotiated.
    public static let protocolFeatures: UInt64 = 1 << 30
    public static let version1: UInt64 = 1 << 32
}

/// Why a message was refused. The connection goes on unless `isFatal`.
public enum VhostUserMessageError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownRequest(UInt32)
    case badSize(request: String, got: Int, expected: String)
    case badFDCount(request: String, got: Int, expected: Int)
    case invalidPayload(request: String, String)
    case unsupported(request: String)
    case failed(request: String, String)

    public var description: String {
        switch self {
        case let .unknownRequest(r): "unknown request \(r)"
        case let .badSize(r, g, e): "\(r): payload of \(g) bytes, expected \(e)"
        case let .badFDCount(r, g, e): "\(r): \(g) fds, expected \(e)"
        case let .invalidPayload(r, why): "\(r): \(why)"
        case let .unsupported(r): "\(r): not supported by this backend"
        case let .failed(r, why): "\(r) failed: \(why)"
        }
    }
}
