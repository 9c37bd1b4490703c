import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where backends put their control sockets by default, and how `vgpuctl` finds one.
public enum ControlSocketLocation {
    /// `$XDG_RUNTIME_DIR/vgpu`, else `/run/vgpu` for root, else `/tmp/vgpu-<uid>`.
    public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let xdg = environment["XDG_RUNTIME_DIR"], !xdg.isEmpty { return xdg + "/vgpu" }
        return getuid() == 0 ? "/run/vgpu" : "/tmp/vgpu-\(getuid())"
    }

    /// `<default directory>/<pid>.sock`.
    public static func defaultPath(pid: Int32 = getpid()) -> String {
        defaultDirectory() + "/\(pid).sock"
    }

    /// The control sockets in `directory` whose backend (the pid in the name) is alive, sorted.
    public static func candidates(in directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { name in
            guard name.hasSuffix(".sock") else { return false }
            guard let pid = Int32(name.dropLast(5)) else { return true }   // a named socket: keep
            return kill(pid, 0) == 0 || errno == EPERM
        }.sorted().map { directory + "/" + $0 }
    }

    /// The single socket in the default directory, or an error naming what was found.
    public static func findSingle(in directory: String = defaultDirectory()) throws(ControlClientError) -> String {
        let found = candidates(in: directory)
        switch found.count {
        case 0: throw .noSocket("no vgpu-backend control socket in \(directory) (is vgpu-backend running? use --socket PATH)")
        case 1: return found[0]
        default: throw .noSocket("several vgpu-backend control sockets in \(directory), pick one with --socket: \(found.joined(separator: " "))")
        }
    }
}
