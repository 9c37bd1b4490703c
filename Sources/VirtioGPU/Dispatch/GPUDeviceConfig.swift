/// Settings of one virtio-gpu device: heads, default mode, and the caps that bound what a guest
/// can make the host allocate.
public struct GPUDeviceConfig: Equatable, Sendable {
    /// Number of scanouts (`virtio_gpu_config.num_scanouts`), 1...16; clamped by the processor.
    public var numScanouts: UInt32
    /// The mode GET_DISPLAY_INFO reports, and GET_EDID uses, when the display cannot say.
    public var defaultWidth: UInt32
    public var defaultHeight: UInt32
    /// How many heads (from scanout 0) GET_DISPLAY_INFO reports enabled when the display cannot
    /// say. QEMU's C backend enables only the first; a larger value lets a test drive more heads.
    public var defaultEnabledScanouts: UInt32
    /// Largest host copy of one resource (RESOURCE_CREATE_2D → ERR_OUT_OF_MEMORY above it).
    public var maxResourceBytes: UInt64
    /// Sum of the host copies of this device.
    public var maxTotalBytes: UInt64
    /// Live resources of this device. Each holds a memfd: raise RLIMIT_NOFILE to match.
    public var maxResources: Int
    /// Most entries one RESOURCE_ATTACH_BACKING may carry (QEMU: 16384).
    public var maxBackingEntries: UInt32
    /// Guest-error log lines per second per (command, error) pair; the rest are counted.
    public var guestErrorLogsPerSecond: Int
    /// Show heads whose resource has a dmabuf host buffer with DMABUF_SCANOUT(2)/DMABUF_UPDATE
    /// instead of pixel updates (falls back to pixels when the display does not answer).
    public var dmabufScanout = false

    public init(numScanouts: UInt32 = 1,
                defaultWidth: UInt32 = 1280, defaultHeight: UInt32 = 800, defaultEnabledScanouts: UInt32 = 1,
                maxResourceBytes: UInt64 = 256 << 20, maxTotalBytes: UInt64 = 1 << 30, maxResources: Int = 4096,
                maxBackingEntries: UInt32 = 16384, guestErrorLogsPerSecond: Int = 10) {
        self.numScanouts = numScanouts
        self.defaultWidth = defaultWidth
        self.defaultHeight = defaultHeight
        self.defaultEnabledScanouts = defaultEnabledScanouts
        self.maxResourceBytes = maxResourceBytes
        self.maxTotalBytes = maxTotalBytes
        self.maxResources = maxResources
        self.maxBackingEntries = maxBackingEntries
        self.guestErrorLogsPerSecond = guestErrorLogsPerSecond
    }

    /// The same settings with every value brought into range: 1...16 scanouts, a non-zero
    /// default mode, enabled heads ≤ scanouts, non-negative caps.
    public var normalized: GPUDeviceConfig {
        var c = self
        c.numScanouts = min(max(numScanouts, 1), 16)
        if c.defaultWidth == 0 || c.defaultHeight == 0 { c.defaultWidth = 1280; c.defaultHeight = 800 }
        c.defaultEnabledScanouts = min(defaultEnabledScanouts, c.numScanouts)
        c.maxResources = max(0, maxResources)
        c.guestErrorLogsPerSecond = max(0, guestErrorLogsPerSecond)
        return c
    }

    /// The three resource caps together (the same storage as the individual properties).
    public var limits: ResourceLimits {
        get { ResourceLimits(maxResourceBytes: maxResourceBytes, maxTotalBytes: maxTotalBytes, maxResources: maxResources) }
        set {
            maxResourceBytes = newValue.maxResourceBytes
            maxTotalBytes = newValue.maxTotalBytes
            maxResources = newValue.maxResources
        }
    }
}
