// The report protocol on the serial console (VGPU-RESULT/VGPU-INFO lines) and the check bookkeeping.
import CGuestDRM
import Glibc

// MARK: Output

func emit(_ line: String) {
    var text = line
    text += "\n"
    text.withUTF8 { buffer in
        var done = 0
        while done < buffer.count {
            let n = write(1, buffer.baseAddress! + done, buffer.count - done)
            if n <= 0 { if errno == EINTR { continue }; return }
            done += n
        }
    }
}

func errnoName(_ e: Int32) -> String {
    switch e {
    case EINVAL: return "EINVAL"
    case ENOENT: return "ENOENT"
    case ENOMEM: return "ENOMEM"
    case EFAULT: return "EFAULT"
    case EBUSY: return "EBUSY"
    case ENOSPC: return "ENOSPC"
    case EPERM: return "EPERM"
    case EACCES: return "EACCES"
    case ENODEV: return "ENODEV"
    case ENOSYS: return "ENOSYS"
    case EOPNOTSUPP: return "EOPNOTSUPP"
    case ERANGE: return "ERANGE"
    case E2BIG: return "E2BIG"
    case ETIMEDOUT: return "ETIMEDOUT"
    case EBADF: return "EBADF"
    default: return "errno\(e)"
    }
}

struct CheckFailure: Error { let message: String }

/// The checks of one run, printed as they happen.
final class Report {
    private(set) var failures = 0

    func result(_ name: String, _ status: String, _ detail: String) {
        if status == "fail" { failures += 1 }
        emit("VGPU-RESULT name=\(name) status=\(status) detail=\(detail)")
    }
    func pass(_ name: String, _ detail: String = "") { result(name, "pass", detail) }
    func fail(_ name: String, _ detail: String) { result(name, "fail", detail) }
    func check(_ name: String, _ ok: Bool, _ detail: String) { result(name, ok ? "pass" : "fail", detail) }

    /// Runs `body`; a thrown `CheckFailure` becomes a failed check called `name`.
    func step<T>(_ name: String, _ body: () throws -> T) -> T? {
        do { return try body() } catch let error as CheckFailure {
            fail(name, error.message); return nil
        } catch {
            fail(name, "\(error)"); return nil
        }
    }
}
