// The DRM uapi for vgpu-guest-test (the program that runs inside test guests): libdrm-dev's
// copies of the kernel's drm.h, drm_mode.h, drm_fourcc.h and virtgpu_drm.h, imported as they
// are. Swift cannot import function-like macros (DRM_IOWR, fourcc_code) or call the variadic
// ioctl(2), so the request numbers and formats used are re-exported as inline functions here;
// the struct layouts all come from the headers.
#ifndef CGUESTDRM_H
#define CGUESTDRM_H

#include <stddef.h>
#include <stdint.h>
#include <libdrm/drm.h>
#include <libdrm/drm_mode.h>
#include <libdrm/drm_fourcc.h>
#include <libdrm/virtgpu_drm.h>
#include <linux/udmabuf.h>
// The importer module's uapi (guest/vgpu-import): the one definition the module is built from.
#include "../../../guest/vgpu-import/vgpu_import.h"
#include <linux/udmabuf.h>
#include <linux/memfd.h>
// The importer module's uapi (guest/vgpu-import): the one definition the module is built from.
#include "../../../guest/vgpu-import/vgpu_import.h"

// libdrm-dev's virtgpu_drm.h predates these GETPARAM values (both guest kernels, 6.1 and 6.12,
// have them: include/uapi/drm/virtgpu_drm.h). Values as in the kernel's header.
#ifndef VIRTGPU_PARAM_RESOURCE_BLOB
#define VIRTGPU_PARAM_RESOURCE_BLOB 3 /* DRM_VIRTGPU_RESOURCE_CREATE_BLOB */
#endif
#ifndef VIRTGPU_PARAM_HOST_VISIBLE
#define VIRTGPU_PARAM_HOST_VISIBLE 4 /* host blob resources are mappable */
#endif
#ifndef VIRTGPU_PARAM_CROSS_DEVICE
#define VIRTGPU_PARAM_CROSS_DEVICE 5 /* cross virtio-device resource sharing (RESOURCE_UUID) */
#endif
#ifndef VIRTGPU_PARAM_CONTEXT_INIT
#define VIRTGPU_PARAM_CONTEXT_INIT 6 /* DRM_VIRTGPU_CONTEXT_INIT */
#endif
#ifndef VIRTGPU_PARAM_SUPPORTED_CAPSET_IDs
#define VIRTGPU_PARAM_SUPPORTED_CAPSET_IDs 7 /* bitmask of supported capability set ids */
#endif

/// ioctl(2) with a pointer argument, retried on EINTR and EAGAIN (as libdrm's drmIoctl).
/// Returns 0 or -errno.
int vgpu_guest_ioctl(int fd, unsigned long request, void *arg);
/// The same, for ioctls that answer with a value (a new fd): that value, or -errno.
int vgpu_guest_ioctl_value(int fd, unsigned long request, void *arg);

static inline unsigned long vgpu_drm_ioctl_version(void) { return DRM_IOCTL_VERSION; }
static inline unsigned long vgpu_drm_ioctl_gem_close(void) { return DRM_IOCTL_GEM_CLOSE; }
static inline unsigned long vgpu_drm_ioctl_prime_handle_to_fd(void) { return DRM_IOCTL_PRIME_HANDLE_TO_FD; }
static inline unsigned long vgpu_drm_ioctl_prime_fd_to_handle(void) { return DRM_IOCTL_PRIME_FD_TO_HANDLE; }
static inline unsigned long vgpu_drm_ioctl_set_client_cap(void) { return DRM_IOCTL_SET_CLIENT_CAP; }
static inline unsigned long vgpu_drm_ioctl_set_master(void) { return DRM_IOCTL_SET_MASTER; }
static inline unsigned long vgpu_drm_ioctl_mode_getresources(void) { return DRM_IOCTL_MODE_GETRESOURCES; }
static inline unsigned long vgpu_drm_ioctl_mode_getconnector(void) { return DRM_IOCTL_MODE_GETCONNECTOR; }
static inline unsigned long vgpu_drm_ioctl_mode_getencoder(void) { return DRM_IOCTL_MODE_GETENCODER; }
static inline unsigned long vgpu_drm_ioctl_mode_getcrtc(void) { return DRM_IOCTL_MODE_GETCRTC; }
static inline unsigned long vgpu_drm_ioctl_mode_setcrtc(void) { return DRM_IOCTL_MODE_SETCRTC; }
static inline unsigned long vgpu_drm_ioctl_mode_cursor(void) { return DRM_IOCTL_MODE_CURSOR; }
static inline unsigned long vgpu_drm_ioctl_mode_addfb2(void) { return DRM_IOCTL_MODE_ADDFB2; }
static inline unsigned long vgpu_drm_ioctl_mode_rmfb(void) { return DRM_IOCTL_MODE_RMFB; }
static inline unsigned long vgpu_drm_ioctl_mode_dirtyfb(void) { return DRM_IOCTL_MODE_DIRTYFB; }
static inline unsigned long vgpu_drm_ioctl_mode_page_flip(void) { return DRM_IOCTL_MODE_PAGE_FLIP; }
static inline uint32_t vgpu_drm_mode_page_flip_event(void) { return DRM_MODE_PAGE_FLIP_EVENT; }
static inline uint32_t vgpu_drm_event_flip_complete(void) { return DRM_EVENT_FLIP_COMPLETE; }
static inline unsigned long vgpu_drm_ioctl_mode_create_dumb(void) { return DRM_IOCTL_MODE_CREATE_DUMB; }
static inline unsigned long vgpu_drm_ioctl_mode_map_dumb(void) { return DRM_IOCTL_MODE_MAP_DUMB; }
static inline unsigned long vgpu_drm_ioctl_mode_destroy_dumb(void) { return DRM_IOCTL_MODE_DESTROY_DUMB; }
static inline unsigned long vgpu_virtgpu_ioctl_getparam(void) { return DRM_IOCTL_VIRTGPU_GETPARAM; }
static inline unsigned long vgpu_virtgpu_ioctl_resource_create(void) { return DRM_IOCTL_VIRTGPU_RESOURCE_CREATE; }
static inline unsigned long vgpu_virtgpu_ioctl_resource_info(void) { return DRM_IOCTL_VIRTGPU_RESOURCE_INFO; }
static inline unsigned long vgpu_virtgpu_ioctl_transfer_to_host(void) { return DRM_IOCTL_VIRTGPU_TRANSFER_TO_HOST; }
static inline unsigned long vgpu_virtgpu_ioctl_wait(void) { return DRM_IOCTL_VIRTGPU_WAIT; }
static inline unsigned long vgpu_virtgpu_ioctl_map(void) { return DRM_IOCTL_VIRTGPU_MAP; }

static inline uint32_t vgpu_drm_format_xrgb8888(void) { return DRM_FORMAT_XRGB8888; }
static inline uint32_t vgpu_drm_format_argb8888(void) { return DRM_FORMAT_ARGB8888; }

static inline unsigned long vgpu_import_ioctl_import(void) { return VGPU_IMPORT_IOCTL_IMPORT; }
static inline unsigned long vgpu_import_ioctl_import_uuid(void) { return VGPU_IMPORT_IOCTL_IMPORT_UUID; }
static inline unsigned long vgpu_import_ioctl_query(void) { return VGPU_IMPORT_IOCTL_QUERY; }
static inline unsigned long vgpu_import_ioctl_release(void) { return VGPU_IMPORT_IOCTL_RELEASE; }
static inline unsigned long vgpu_udmabuf_ioctl_create(void) { return UDMABUF_CREATE; }

/// A memfd of `size` bytes sealed against shrinking (what UDMABUF_CREATE wants), or -errno.
int vgpu_guest_sealed_memfd(const char *name, size_t size);

/// 64-bit FNV-1a over `rows` rows of `row_bytes` bytes, `stride` bytes apart (the importer
/// protocol's digest; docs/importer-protocol.md). A byte loop: C, not Swift, for speed under TCG.
uint64_t vgpu_guest_fnv1a_rows(const void *base, size_t row_bytes, size_t rows, size_t stride);

#endif
