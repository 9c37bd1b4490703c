#if canImport(Glibc)
import Glibc
#endif

/// Sends `bytes` with `fds` attached in one sendmsg, with a control buffer as large as `fds`
/// needs: unlike the project's own sender (at most 16), it can send more than a receiver
/// takes, which is how tests make the receiver see MSG_CTRUNC. Returns sendmsg's result.
public func sendWithFDs(_ socket: Int32, bytes: [UInt8], fds: [Int32]) -> Int {
    let header = MemoryLayout<cmsghdr>.size
    let dataLength = fds.count * MemoryLayout<Int32>.size
    var control = [UInt8](repeating: 0, count: header + (dataLength + 7) & ~7)
    control.withUnsafeMutableBytes { c in
        var h = cmsghdr()
        h.cmsg_len = header + dataLength
        h.cmsg_level = SOL_SOCKET
        h.cmsg_type = Int32(SCM_RIGHTS)
        c.storeBytes(of: h, as: cmsghdr.self)
        for (i, fd) in fds.enumerated() { c.storeBytes(of: fd, toByteOffset: header + i * 4, as: Int32.self) }
    }
    var payload = bytes
    return payload.withUnsafeMutableBytes { p in
        control.withUnsafeMutableBytes { c in
            var iov = iovec(iov_base: p.baseAddress, iov_len: p.count)
            return withUnsafeMutablePointer(to: &iov) { iovp in
                var message = msghdr()
                message.msg_iov = iovp
                message.msg_iovlen = 1
                message.msg_control = c.baseAddress
                message.msg_controllen = c.count
                return sendmsg(socket, &message, Int32(MSG_NOSIGNAL))
            }
        }
    }
}
