import ArgumentParser
import ControlProtocol
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// vgpuctl: inspect a running vgpu-backend through its control socket.
@main
struct VGPUCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vgpuctl",
        abstract: "Inspect a running vgpu-backend: resources, UUIDs, host buffers.",
        discussion: "Talks to the backend's control socket (default: the single one under \(ControlSocketLocation.defaultDirectory())).",
        subcommands: [List.self, Show.self, Watch.self, Export.self, Dump.self])

    /// Options given before the subcommand (`vgpuctl --socket P list`) are moved right after it,
    /// where the subcommand parses them (not to the end: `export --exec` takes everything after it).
    static func main() {
        var args = Array(CommandLine.arguments.dropFirst())
        var leading: [String] = []
        while let first = args.first {
            if first == "--socket", args.count >= 2 { leading += args.prefix(2); args.removeFirst(2) }
            else if first.hasPrefix("--socket=") || first == "--json" { leading.append(first); args.removeFirst() }
            else { break }
        }
        if !leading.isEmpty, let sub = args.first { args = [sub] + leading + args.dropFirst() } else { args = leading + args }
        do {
            var command = try parseAsRoot(args)
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

struct Connection: ParsableArguments {
    @Option(name: .long, help: "The backend's control socket (default: the single socket under the default directory).")
    var socket: String?

    @Flag(name: .long, help: "Print JSON (the protocol's result object) instead of a table.")
    var json = false

    func connect() throws -> ControlClient {
        signal(SIGPIPE, SIG_IGN)
        let path = try socket ?? ControlSocketLocation.findSingle()
        return try ControlClient(path: path)
    }
}

/// One-line errors with a non-zero exit for everything the control socket can say.
func fail(_ error: Error) -> Never {
    let text = (error as? ControlClientError)?.description ?? "\(error)"
    FileHandle.standardError.write(Data("vgpuctl: \(text)\n".utf8))
    exit(1)
}
