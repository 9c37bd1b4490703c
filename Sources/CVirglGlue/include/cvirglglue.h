// The C side of VirglRenderer: what Swift cannot do over libepoxy and libvirglrenderer.
// libepoxy's EGL entry points and constants are macros over function pointers, virglrenderer's
// callbacks take a cookie and its log hook a va_list. This header includes neither library's
// headers (they are imported once, by CVirglRenderer and CEpoxy), so Swift sees plain types.
#ifndef CVIRGLGLUE_H
#define CVIRGLGLUE_H

#include <stdint.h>
#include <stddef.h>

/// An EGL display this backend opened (surfaceless Mesa, or GBM on a render node) and the GL
/// contexts it hands to virglrenderer. Opaque.
typedef struct vgpu_egl vgpu_egl;

/// Opens an EGL display: `eglGetPlatformDisplayEXT(EGL_PLATFORM_SURFACELESS_MESA)` when
/// `render_node` is NULL, GBM over `render_node` otherwise; binds desktop OpenGL and proves a
/// core context can be made current. Returns NULL with a one-line reason in `err`.
vgpu_egl *vgpu_egl_open(const char *render_node, char *err, size_t err_len);

/// Terminates the display (and closes the GBM device and node). Contexts must be gone.
void vgpu_egl_close(vgpu_egl *egl);

/// GL_RENDERER, GL_VERSION of the probe context made at open, and "surfaceless" or "gbm".
const char *vgpu_egl_gl_renderer(const vgpu_egl *egl);
const char *vgpu_egl_gl_version(const vgpu_egl *egl);
const char *vgpu_egl_platform(const vgpu_egl *egl);

/// Called from inside virglrenderer (on the renderer thread) when fence `fence` retires.
typedef void (*vgpu_virgl_fence_fn)(void *owner, uint32_t fence);

/// `virgl_renderer_init` with a non-NULL cookie and callbacks (version 4) that create, destroy
/// and make current contexts on `egl`, hand virglrenderer the display, and forward write_fence
/// to `on_fence(owner, id)`. virglrenderer is one per process: returns its result (0 = success).
int vgpu_virgl_init(vgpu_egl *egl, int flags, vgpu_virgl_fence_fn on_fence, void *owner);

/// `virgl_renderer_cleanup` with the cookie given to `vgpu_virgl_init`.
void vgpu_virgl_cleanup(void);

/// Routes virglrenderer's log lines (one line each, no newline) to `fn`; NULL restores stderr.
typedef void (*vgpu_virgl_log_fn)(const char *line);
void vgpu_virgl_set_log(vgpu_virgl_log_fn fn);

/// The layout of virglrenderer's `struct virgl_box` (src/virglrenderer_hw.h, not installed);
/// the installed header only forward-declares it.
struct vgpu_virgl_box {
    uint32_t x, y, z;
    uint32_t w, h, d;
};

/// One plane of a dmabuf made from a GL texture.
struct vgpu_dmabuf_plane {
    int fd;
    int stride;
    int offset;
    int fourcc;
    uint64_t modifier;
};

/// Exports GL texture `tex_id` (of the context current on this thread, which must share with
/// virglrenderer's) as a dmabuf: EGL_KHR_gl_texture_2D_image + EGL_MESA_image_dma_buf_export.
/// Returns 0, or -1 with a one-line reason in `err`.
int vgpu_egl_export_texture(vgpu_egl *egl, uint32_t tex_id, struct vgpu_dmabuf_plane *out,
                            char *err, size_t err_len);

#endif
