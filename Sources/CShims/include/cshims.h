// Thin C helpers for what Swift cannot express directly. Keep this small.
#ifndef VGPU_CSHIMS_H
#define VGPU_CSHIMS_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <linux/memfd.h>
#include <poll.h>
#include <linux/virtio_gpu.h>
#include <linux/virtio_ring.h>

// MARK: ring memory ordering (virtio spec 2.7.13: barriers around idx and flags)

static inline uint16_t vgpu_load_acquire_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}
static inline void vgpu_store_release_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
}
static inline void vgpu_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// MARK: SCM_RIGHTS

/// sendmsg with up to `nfds` fds in one SCM_RIGHTS message. Returns bytes sent or -1 (errno set).
ssize_t vgpu_sendmsg_fds(int sock, const struct iovec *iov, int iovcnt, const int *fds, int nfds);

/// recvmsg collecting up to `maxfds` fds (O_CLOEXEC). `*nfds` gets the count, `*truncated` is set
/// when the kernel dropped control data (MSG_CTRUNC). Returns bytes read, 0 on EOF, -1 on error.
ssize_t vgpu_recvmsg_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *truncated);

// MARK: misc syscalls Swift does not import (variadic or missing)

int vgpu_ioctl_ptr(int fd, unsigned long request, void *arg);
int vgpu_memfd_create(const char *name, unsigned int flags);
int vgpu_fcntl_int(int fd, int cmd, int arg);
int vgpu_accept_cloexec(int listener);
void vgpu_set_thread_name(const char *name);

// MARK: pixels

/// Converts `count` 32-bit pixels of virtio-gpu `format` to XRGB8888 (B,G,R,X bytes in memory),
/// the layout QEMU's display surfaces use. Returns 0, or -1 for an unknown format.
int vgpu_convert_to_xrgb8888(uint32_t format, void *dst, const void *src, size_t count);

// MARK: host buffers (HostBuffers): kernel uapi from linux-libc-dev and libdrm-dev, as they are

#include <linux/udmabuf.h>
#include <linux/dma-buf.h>
#include <linux/dma-heap.h>
#include <libdrm/drm.h>
#include <libdrm/drm_mode.h>

// Swift cannot import function-like macros (_IOW and friends): the request numbers and the
// flag macros built from them, re-exported. Struct layouts come from the headers above.
static inline unsigned long vgpu_UDMABUF_CREATE(void) { return UDMABUF_CREATE; }
static inline unsigned long vgpu_UDMABUF_CREATE_LIST(void) { return UDMABUF_CREATE_LIST; }
static inline unsigned long vgpu_DMA_BUF_IOCTL_SYNC(void) { return DMA_BUF_IOCTL_SYNC; }
static inline unsigned long vgpu_DMA_BUF_SET_NAME(void) { return DMA_BUF_SET_NAME; }
static inline unsigned long vgpu_DMA_HEAP_IOCTL_ALLOC(void) { return DMA_HEAP_IOCTL_ALLOC; }
static inline unsigned long vgpu_DRM_IOCTL_MODE_CREATE_DUMB(void) { return DRM_IOCTL_MODE_CREATE_DUMB; }
static inline unsigned long vgpu_DRM_IOCTL_MODE_DESTROY_DUMB(void) { return DRM_IOCTL_MODE_DESTROY_DUMB; }
static inline unsigned long vgpu_DRM_IOCTL_PRIME_HANDLE_TO_FD(void) { return DRM_IOCTL_PRIME_HANDLE_TO_FD; }
static inline uint64_t vgpu_DMA_BUF_SYNC_START_READ(void) { return DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ; }
static inline uint64_t vgpu_DMA_BUF_SYNC_END_READ(void) { return DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ; }
static inline uint64_t vgpu_DMA_BUF_SYNC_START_RW(void) { return DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW; }
static inline uint64_t vgpu_DMA_BUF_SYNC_END_RW(void) { return DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW; }

/// fcntl(2) memfd seals (glibc hides them from Swift without _GNU_SOURCE): F_ADD_SEALS with
/// `seals`, F_GET_SEALS, and the seal bits.
int vgpu_memfd_add_seals(int fd, int seals);
int vgpu_memfd_get_seals(int fd);
int vgpu_F_SEAL_SHRINK(void);
int vgpu_F_SEAL_GROW(void);
// MARK: SIGBUS guard over guest RAM a frontend may shrink (issue 11 §3.1)

/// Registers [start, start + length) as guest RAM whose file may shrink under the mapping
/// (an unsealed memfd). A SIGBUS inside it maps zero pages over the whole range (the faulting
/// access is retried and reads zeros), marks the slot faulted and writes 1 to `notify_fd` (an
/// eventfd, or -1). Installs the SIGBUS handler on first use; faults outside every registered
/// range go to the handler that was there before. Returns a slot (>= 0), or -1 if all are used.
int vgpu_sigbus_guard_register(void *start, size_t length, int notify_fd);
/// Unregisters a slot; returns once no handler is using it (the caller may then munmap).
void vgpu_sigbus_guard_unregister(int slot);
/// Whether a SIGBUS was caught in the slot's range.
int vgpu_sigbus_guard_faulted(int slot);

/// O_CLOEXEC | O_RDWR for DRM_IOCTL_PRIME_HANDLE_TO_FD and DMA_HEAP_IOCTL_ALLOC's fd_flags.
uint32_t vgpu_dmabuf_fd_flags(void);

#endif
