import CShims
import DisplayChannel

/// The cursor queue's commands: the cursor image goes to the display, nothing comes back.
extension GPUCommandProcessor {
    /// UPDATE_CURSOR: resource 0 hides the cursor; otherwise the 64×64 resource's pixels become
    /// the cursor image (ARGB) at (x, y) with its hot spot.
    func updateCursor(_ c: virtio_gpu_update_cursor) {
        let type = VIRTIO_GPU_CMD_UPDATE_CURSOR.rawValue
        let scanout = c.pos.scanout_id
        guard scanout < numScanouts else {
            guestErrors.report(command: type, code: GPUError.invalidScanoutID.responseType, "UPDATE_CURSOR: scanout \(scanout) ≥ \(numScanouts)")
            return
        }
        let display = self.display
        let id = ResourceID(c.resource_id)
        if id.isNone {
            display.cursorHide(scanout: scanout)
            return
        }
        if let r3 = renderer3D {
            // Read back on the render thread; the cursor queue does not wait for it.
            let buffer = cursorBuffer, guestErrors = self.guestErrors
            let (x, y, hotX, hotY) = (c.pos.x, c.pos.y, c.hot_x, c.hot_y)
            r3.withCursorImageAsync(id, into: buffer) { result in
                switch result {
                case .success: display.cursorUpdate(scanout: scanout, x: x, y: y, hotX: hotX, hotY: hotY, pixels: buffer.pixels)
                case let .failure(error): guestErrors.report(command: type, code: error.error.responseType, "UPDATE_CURSOR: \(error)")
                }
            }
            return
        }
        let renderer = self.renderer
        do {
            try cursorImage.withLock { (image: inout CursorBuffer) throws(GPUFailure) in
                try renderer.copyCursorImage(id, into: image.pixels)
                display.cursorUpdate(scanout: scanout, x: c.pos.x, y: c.pos.y, hotX: c.hot_x, hotY: c.hot_y, pixels: image.pixels)
            }
        } catch {
            guestErrors.report(command: type, code: error.error.responseType, "UPDATE_CURSOR: \(error)")
        }
    }

    /// MOVE_CURSOR: moves the cursor; resource 0 hides it (as QEMU's vhost-user backend does).
    func moveCursor(_ c: virtio_gpu_update_cursor) {
        let scanout = c.pos.scanout_id
        guard scanout < numScanouts else {
            guestErrors.report(command: VIRTIO_GPU_CMD_MOVE_CURSOR.rawValue, code: GPUError.invalidScanoutID.responseType,
                               "MOVE_CURSOR: scanout \(scanout) ≥ \(numScanouts)")
            return
        }
        if c.resource_id == 0 {
            display.cursorHide(scanout: scanout)
        } else {
            display.cursorMove(scanout: scanout, x: c.pos.x, y: c.pos.y)
        }
    }
}
