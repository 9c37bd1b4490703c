/// The guest's framebuffer console as `guest/init` reports it (`VGPU-CONSOLE`): the
/// framebuffer size and the text grid, hence where each character cell is on the screen.
public struct ConsoleGeometry: Sendable, Equatable {
    public var framebuffer: String
    public var width: Int
    public var height: Int
    public var rows: Int
    public var columns: Int

    public init(framebuffer: String, width: Int, height: Int, rows: Int, columns: Int) {
        self.framebuffer = framebuffer
        self.width = width; self.height = height; self.rows = rows; self.columns = columns
    }

    /// Font cell size in pixels (fbcon's grid is the framebuffer divided by the font size).
    public var cellWidth: Int { columns > 0 ? width / columns : 0 }
    public var cellHeight: Int { rows > 0 ? height / rows : 0 }

    /// The pixels of a block of text cells; `row` and `column` are 1-based, as in ANSI
    /// cursor addressing (`ESC [ row ; column H`).
    public func cells(row: Int, column: Int, rows: Int = 1, columns: Int = 1) -> PixelRect {
        PixelRect(x: (column - 1) * cellWidth, y: (row - 1) * cellHeight,
                  width: columns * cellWidth, height: rows * cellHeight)
    }
}

/// What `guest/init`'s `draw_bars` paints: seven background-colour bars of spaces, in the
/// Linux console's default palette. Keep in step with BAR_TOP / BAR_ROWS / BAR_COLS there.
public enum ConsoleColorBars {
    public static let topRow = 4
    public static let rows = 16
    public static let columnsPerBar = 12
    /// SGR 41...47 in the VT's default palette (drivers/tty/vt/vt.c default_red/grn/blu).
    public static let colors: [(name: String, color: RGB)] = [
        ("red", RGB(0xaa, 0x00, 0x00)), ("green", RGB(0x00, 0xaa, 0x00)), ("brown", RGB(0xaa, 0x55, 0x00)),
        ("blue", RGB(0x00, 0x00, 0xaa)), ("magenta", RGB(0xaa, 0x00, 0xaa)), ("cyan", RGB(0x00, 0xaa, 0xaa)),
        ("white", RGB(0xaa, 0xaa, 0xaa)),
    ]

    /// Where bar `index` (0...6) is on the screen.
    public static func rect(_ index: Int, in geometry: ConsoleGeometry) -> PixelRect {
        geometry.cells(row: topRow, column: 1 + index * columnsPerBar, rows: rows, columns: columnsPerBar)
    }

    /// The whole block of bars.
    public static func area(in geometry: ConsoleGeometry) -> PixelRect {
        geometry.cells(row: topRow, column: 1, rows: rows, columns: columnsPerBar * colors.count)
    }

    /// For each bar, the share of its pixels that have exactly its colour (±`tolerance`).
    public static func match(_ image: RGBImage, geometry: ConsoleGeometry, tolerance: Int = 0) -> [(name: String, fraction: Double)] {
        colors.enumerated().map { i, bar in
            (bar.name, image.fraction(in: rect(i, in: geometry)) { $0.distance(to: bar.color) <= tolerance })
        }
    }
}
