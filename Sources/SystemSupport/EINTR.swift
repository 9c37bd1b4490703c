// EINTR in one place: every syscall wrapper in the project retries an interrupted call here
// (or in Poll.swift, which also shortens the timeout by the time already spent).

import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// `errno` as a typed value.
@inline(__always) public func currentErrno() -> Errno { Errno(rawValue: errno) }

/// Runs a syscall-style call, retrying EINTR, turning -1 into `Errno`. The one place that
/// converts C error returns (swift-system's habit).
@inline(__always)
public func retryingEINTR<T: BinaryInteger>(_ body: () -> T) throws(Errno) -> T {
    while true {
        let r = body()
        if r >= 0 { return r }
        let e = Errno(rawValue: errno)
        if e != .interrupted { throw e }
    }
}

/// `read(2)` of up to `buffer.count` bytes, EINTR retried. 0 is end of file.
public func readRetryingEINTR(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
    try retryingEINTR { Glibc.read(fd, buffer.baseAddress, buffer.count) }
}

/// `write(2)` of up to `buffer.count` bytes, EINTR retried. Returns how many were written.
public func writeRetryingEINTR(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) throws(Errno) -> Int {
    try retryingEINTR { Glibc.write(fd, buffer.baseAddress, buffer.count) }
}

/// Writes all of `buffer` (a blocking fd), EINTR retried.
public func writeAllRetryingEINTR(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) throws(Errno) {
    var offset = 0
    while offset < buffer.count {
        offset += try writeRetryingEINTR(fd, UnsafeRawBufferPointer(rebasing: buffer[offset...]))
    }
}
