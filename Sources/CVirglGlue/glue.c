// EGL through libepoxy for virglrenderer; see include/cvirglglue.h.
#define VIRGL_RENDERER_UNSTABLE_APIS 1
#include "cvirglglue.h"

#include <epoxy/egl.h>
#include <epoxy/gl.h>
#include <gbm.h>
#include <virglrenderer.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct vgpu_egl {
    EGLDisplay display;
    int drm_fd;                 // -1 on the surfaceless platform
    struct gbm_device *gbm;     // NULL on the surfaceless platform
    const char *platform;
    char gl_renderer[128];
    char gl_version[128];
};

static void set_err(char *err, size_t len, const char *fmt, ...) {
    if (!err || !len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

// Desktop GL core context (virglrenderer asks versions from 4.6 down). No config and no
// surface: EGL_KHR_no_config_context and EGL_KHR_surfaceless_context, both checked at open.
static EGLContext create_context(EGLDisplay dpy, int major, int minor, EGLContext share) {
    const EGLint attrs[] = {
        EGL_CONTEXT_MAJOR_VERSION, major,
        EGL_CONTEXT_MINOR_VERSION, minor,
        EGL_CONTEXT_OPENGL_PROFILE_MASK, EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT,
        EGL_NONE,
    };
    if (!eglBindAPI(EGL_OPENGL_API)) return EGL_NO_CONTEXT;
    return eglCreateContext(dpy, EGL_NO_CONFIG_KHR, share, attrs);
}

static void copy_gl_string(char *dst, size_t len, GLenum name) {
    const char *s = (const char *)glGetString(name);
    snprintf(dst, len, "%s", s ? s : "unknown");
}

vgpu_egl *vgpu_egl_open(const char *render_node, char *err, size_t err_len) {
    // Client extensions are queried on EGL_NO_DISPLAY; without platform_base there is no
    // way to ask for a headless display.
    if (!epoxy_has_egl_extension(EGL_NO_DISPLAY, "EGL_EXT_platform_base")) {
        set_err(err, err_len, "EGL has no EGL_EXT_platform_base (no libEGL, or too old)");
        return NULL;
    }
    vgpu_egl *egl = calloc(1, sizeof *egl);
    if (!egl) { set_err(err, err_len, "out of memory"); return NULL; }
    egl->drm_fd = -1;

    if (render_node) {
        egl->platform = "gbm";
        if (!epoxy_has_egl_extension(EGL_NO_DISPLAY, "EGL_KHR_platform_gbm") &&
            !epoxy_has_egl_extension(EGL_NO_DISPLAY, "EGL_MESA_platform_gbm")) {
            set_err(err, err_len, "EGL has no GBM platform (EGL_KHR_platform_gbm)");
            goto fail;
        }
        egl->drm_fd = open(render_node, O_RDWR | O_CLOEXEC);
        if (egl->drm_fd < 0) {
            set_err(err, err_len, "cannot open render node %s: %s", render_node, strerror(errno));
            goto fail;
        }
        egl->gbm = gbm_create_device(egl->drm_fd);
        if (!egl->gbm) {
            set_err(err, err_len, "gbm_create_device failed on %s", render_node);
            goto fail;
        }
        egl->display = eglGetPlatformDisplayEXT(EGL_PLATFORM_GBM_KHR, egl->gbm, NULL);
    } else {
        egl->platform = "surfaceless";
        if (!epoxy_has_egl_extension(EGL_NO_DISPLAY, "EGL_MESA_platform_surfaceless")) {
            set_err(err, err_len, "EGL has no surfaceless platform (EGL_MESA_platform_surfaceless)");
            goto fail;
        }
        egl->display = eglGetPlatformDisplayEXT(EGL_PLATFORM_SURFACELESS_MESA, EGL_DEFAULT_DISPLAY, NULL);
    }
    if (egl->display == EGL_NO_DISPLAY) {
        set_err(err, err_len, "eglGetPlatformDisplayEXT(%s) failed (EGL error 0x%x)", egl->platform, eglGetError());
        goto fail;
    }
    EGLint major = 0, minor = 0;
    if (!eglInitialize(egl->display, &major, &minor)) {
        set_err(err, err_len, "eglInitialize on the %s platform failed (EGL error 0x%x)", egl->platform, eglGetError());
        egl->display = EGL_NO_DISPLAY;
        goto fail;
    }
    if (!epoxy_has_egl_extension(egl->display, "EGL_KHR_surfaceless_context") ||
        !epoxy_has_egl_extension(egl->display, "EGL_KHR_no_config_context")) {
        set_err(err, err_len, "EGL %d.%d on %s lacks EGL_KHR_surfaceless_context or EGL_KHR_no_config_context",
                major, minor, egl->platform);
        goto fail;
    }
    // Probe: a core context must exist and become current, or virglrenderer would fail later
    // with a less clear message.
    EGLContext probe = create_context(egl->display, 3, 2, EGL_NO_CONTEXT);
    if (probe == EGL_NO_CONTEXT) {
        set_err(err, err_len, "no OpenGL 3.2 core context on the %s EGL platform (EGL error 0x%x)",
                egl->platform, eglGetError());
        goto fail;
    }
    if (!eglMakeCurrent(egl->display, EGL_NO_SURFACE, EGL_NO_SURFACE, probe)) {
        set_err(err, err_len, "eglMakeCurrent of a surfaceless context failed (EGL error 0x%x)", eglGetError());
        eglDestroyContext(egl->display, probe);
        goto fail;
    }
    copy_gl_string(egl->gl_renderer, sizeof egl->gl_renderer, GL_RENDERER);
    copy_gl_string(egl->gl_version, sizeof egl->gl_version, GL_VERSION);
    eglMakeCurrent(egl->display, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT);
    eglDestroyContext(egl->display, probe);
    return egl;

fail:
    vgpu_egl_close(egl);
    return NULL;
}

void vgpu_egl_close(vgpu_egl *egl) {
    if (!egl) return;
    if (egl->display != EGL_NO_DISPLAY) {
        eglMakeCurrent(egl->display, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT);
        eglTerminate(egl->display);
    }
    if (egl->gbm) gbm_device_destroy(egl->gbm);
    if (egl->drm_fd >= 0) close(egl->drm_fd);
    free(egl);
}

const char *vgpu_egl_gl_renderer(const vgpu_egl *egl) { return egl->gl_renderer; }
const char *vgpu_egl_gl_version(const vgpu_egl *egl) { return egl->gl_version; }
const char *vgpu_egl_platform(const vgpu_egl *egl) { return egl->platform; }

// MARK: virglrenderer callbacks

// virglrenderer is one per process and keeps pointers to both: static storage.
static struct vgpu_virgl_cookie {
    vgpu_egl *egl;
    vgpu_virgl_fence_fn on_fence;
    void *owner;
} g_cookie;

static void cb_write_fence(void *cookie, uint32_t fence) {
    struct vgpu_virgl_cookie *c = cookie;
    if (c->on_fence) c->on_fence(c->owner, fence);
}

static virgl_renderer_gl_context cb_create_gl_context(void *cookie, int scanout_idx,
                                                      struct virgl_renderer_gl_ctx_param *param) {
    (void)scanout_idx;
    struct vgpu_virgl_cookie *c = cookie;
    // Shared contexts join the share group of the one current now (as QEMU does).
    EGLContext share = param->shared ? eglGetCurrentContext() : EGL_NO_CONTEXT;
    EGLContext ctx = create_context(c->egl->display, param->major_ver, param->minor_ver, share);
    return ctx == EGL_NO_CONTEXT ? NULL : (virgl_renderer_gl_context)ctx;
}

static void cb_destroy_gl_context(void *cookie, virgl_renderer_gl_context ctx) {
    struct vgpu_virgl_cookie *c = cookie;
    if (ctx) eglDestroyContext(c->egl->display, (EGLContext)ctx);
}

static int cb_make_current(void *cookie, int scanout_idx, virgl_renderer_gl_context ctx) {
    (void)scanout_idx;
    struct vgpu_virgl_cookie *c = cookie;
    return eglMakeCurrent(c->egl->display, EGL_NO_SURFACE, EGL_NO_SURFACE, (EGLContext)ctx) ? 0 : -1;
}

static void *cb_get_egl_display(void *cookie) {
    struct vgpu_virgl_cookie *c = cookie;
    return c->egl->display;
}

static struct virgl_renderer_callbacks g_callbacks = {
    .version = 4,
    .write_fence = cb_write_fence,
    .create_gl_context = cb_create_gl_context,
    .destroy_gl_context = cb_destroy_gl_context,
    .make_current = cb_make_current,
    .get_drm_fd = NULL,
    .write_context_fence = NULL,
    .get_server_fd = NULL,
    .get_egl_display = cb_get_egl_display,
};

int vgpu_virgl_init(vgpu_egl *egl, int flags, vgpu_virgl_fence_fn on_fence, void *owner) {
    g_cookie.egl = egl;
    g_cookie.on_fence = on_fence;
    g_cookie.owner = owner;
    return virgl_renderer_init(&g_cookie, flags, &g_callbacks);
}

void vgpu_virgl_cleanup(void) {
    virgl_renderer_cleanup(&g_cookie);
    g_cookie.on_fence = NULL;
    g_cookie.owner = NULL;
    g_cookie.egl = NULL;
}

// MARK: log

static _Atomic(vgpu_virgl_log_fn) g_log;

static void log_trampoline(const char *fmt, va_list ap) {
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    vgpu_virgl_log_fn fn = atomic_load(&g_log);
    if (fn && n > 0) fn(line);
}

void vgpu_virgl_set_log(vgpu_virgl_log_fn fn) {
    atomic_store(&g_log, fn);
    virgl_set_debug_callback(fn ? log_trampoline : NULL);
}

// MARK: export

int vgpu_egl_export_texture(vgpu_egl *egl, uint32_t tex_id, struct vgpu_dmabuf_plane *out,
                            char *err, size_t err_len) {
    EGLDisplay dpy = egl->display;
    if (!epoxy_has_egl_extension(dpy, "EGL_KHR_gl_texture_2D_image")) {
        set_err(err, err_len, "EGL on %s has no EGL_KHR_gl_texture_2D_image", egl->platform);
        return -1;
    }
    if (!epoxy_has_egl_extension(dpy, "EGL_MESA_image_dma_buf_export")) {
        set_err(err, err_len, "EGL on %s has no EGL_MESA_image_dma_buf_export", egl->platform);
        return -1;
    }
    EGLContext ctx = eglGetCurrentContext();
    EGLImageKHR image = eglCreateImageKHR(dpy, ctx, EGL_GL_TEXTURE_2D_KHR,
                                          (EGLClientBuffer)(uintptr_t)tex_id, NULL);
    if (image == EGL_NO_IMAGE_KHR) {
        set_err(err, err_len, "eglCreateImageKHR(texture %u) failed (EGL error 0x%x)", tex_id, eglGetError());
        return -1;
    }
    int fourcc = 0, planes = 0;
    EGLuint64KHR modifier = 0;
    int rc = -1;
    if (!eglExportDMABUFImageQueryMESA(dpy, image, &fourcc, &planes, &modifier)) {
        set_err(err, err_len, "eglExportDMABUFImageQueryMESA failed on %s (EGL error 0x%x)", egl->platform, eglGetError());
    } else if (planes != 1) {
        set_err(err, err_len, "texture %u exports as %d planes, expected 1", tex_id, planes);
    } else {
        int fd = -1;
        EGLint stride = 0, offset = 0;
        if (!eglExportDMABUFImageMESA(dpy, image, &fd, &stride, &offset) || fd < 0) {
            set_err(err, err_len, "eglExportDMABUFImageMESA failed on %s (EGL error 0x%x)", egl->platform, eglGetError());
        } else {
            out->fd = fd;
            out->stride = stride;
            out->offset = offset;
            out->fourcc = fourcc;
            out->modifier = modifier;
            rc = 0;
        }
    }
    eglDestroyImageKHR(dpy, image);
    return rc;
}
