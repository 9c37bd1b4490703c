#define _GNU_SOURCE
#include "cshims.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <pthread.h>

#define VGPU_MAX_FDS 16

ssize_t vgpu_sendmsg_fds(int sock, const struct iovec *iov, int iovcnt, const int *fds, int nfds) {
    if (nfds < 0 || nfds > VGPU_MAX_FDS) { errno = EINVAL; return -1; }
    union { char buf[CMSG_SPACE(sizeof(int) * VGPU_MAX_FDS)]; struct cmsghdr align; } ctrl;
    struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
    if (nfds > 0) {
        memset(&ctrl, 0, sizeof(ctrl));
        msg.msg_control = ctrl.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do { n = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n;
}

ssize_t vgpu_recvmsg_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *truncated) {
    union { char buf[CMSG_SPACE(sizeof(int) * VGPU_MAX_FDS)]; struct cmsghdr align; } ctrl;
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl.buf, .msg_controllen = sizeof(ctrl.buf) };
    *nfds = 0;
    *truncated = 0;
    ssize_t n;
    do { n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n < 0) return n;
    if (msg.msg_flags & MSG_CTRUNC) *truncated = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *in = (int *)CMSG_DATA(c);
        for (int i = 0; i < count; i++) {
            // Keep what fits; close the rest so nothing leaks.
            if (*nfds < maxfds) fds[(*nfds)++] = in[i];
            else { close(in[i]); *truncated = 1; }
        }
    }
    return n;
}

int vgpu_ioctl_ptr(int fd, unsigned long request, void *arg) {
    int r;
    do { r = ioctl(fd, request, arg); } while (r < 0 && errno == EINTR);
    return r;
}

int vgpu_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }

int vgpu_fcntl_int(int fd, int cmd, int arg) { return fcntl(fd, cmd, arg); }

int vgpu_memfd_add_seals(int fd, int seals) { return fcntl(fd, F_ADD_SEALS, seals); }
int vgpu_memfd_get_seals(int fd) { return fcntl(fd, F_GET_SEALS); }
int vgpu_F_SEAL_SHRINK(void) { return F_SEAL_SHRINK; }
int vgpu_F_SEAL_GROW(void) { return F_SEAL_GROW; }
uint32_t vgpu_dmabuf_fd_flags(void) { return O_CLOEXEC | O_RDWR; }

int vgpu_accept_cloexec(int listener) { return accept4(listener, NULL, NULL, SOCK_CLOEXEC); }

void vgpu_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof(buf) - 1);
    buf[sizeof(buf) - 1] = 0;
    pthread_setname_np(pthread_self(), buf);
}

// Byte positions of B, G, R in one source pixel, per virtio-gpu format (memory order).
int vgpu_convert_to_xrgb8888(uint32_t format, void *dst, const void *src, size_t count) {
    int b, g, r;
    switch (format) {
    case VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM:
    case VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM: b = 0; g = 1; r = 2; break;
    case VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM:
    case VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM: b = 3; g = 2; r = 1; break;
    case VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM:
    case VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM: b = 2; g = 1; r = 0; break;
    case VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM:
    case VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM: b = 1; g = 2; r = 3; break;
    default: return -1;
    }
    const uint8_t *s = src;
    uint32_t *d = dst;
    if (b == 0) { memcpy(dst, src, count * 4); return 0; }
    // One pass of shifts the compiler vectorises; alpha/X becomes 0xff (QEMU ignores it).
    for (size_t i = 0; i < count; i++) {
        const uint8_t *p = s + i * 4;
        d[i] = 0xff000000u | ((uint32_t)p[r] << 16) | ((uint32_t)p[g] << 8) | (uint32_t)p[b];
    }
    return 0;
}

// MARK: SIGBUS guard (guest RAM whose file shrank under the mapping)
//
// A handler has to be C: it runs on whatever thread touched the page and may only use
// async-signal-safe calls (mmap and write are system calls; no locks, no allocation). Slots
// are plain atomics; `busy` lets unregister wait out a handler that is reading its slot.

#include <signal.h>
#include <stdatomic.h>

#define VGPU_GUARD_SLOTS 256

struct vgpu_guard_slot {
    atomic_int used;
    atomic_uintptr_t start;
    atomic_uintptr_t end;
    atomic_int notify_fd;
    atomic_int busy;
    atomic_int faulted;
};

static struct vgpu_guard_slot vgpu_guard_slots[VGPU_GUARD_SLOTS];
static struct sigaction vgpu_previous_sigbus;
static pthread_once_t vgpu_guard_once = PTHREAD_ONCE_INIT;

static void vgpu_sigbus_handler(int sig, siginfo_t *info, void *context) {
    (void)sig; (void)context;
    int saved = errno;
    uintptr_t addr = (uintptr_t)info->si_addr;
    for (int i = 0; i < VGPU_GUARD_SLOTS; i++) {
        struct vgpu_guard_slot *s = &vgpu_guard_slots[i];
        atomic_fetch_add(&s->busy, 1);
        uintptr_t start = atomic_load(&s->start), end = atomic_load(&s->end);
        if (start != 0 && addr >= start && addr < end) {
            // Private zero pages over the whole range: this access and every later one succeed
            // (reading zeros) until the connection that owns the range is torn down.
            void *p = mmap((void *)start, end - start, PROT_READ | PROT_WRITE,
                           MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            int fd = atomic_load(&s->notify_fd);
            if (p != MAP_FAILED) {
                atomic_store(&s->faulted, 1);
                if (fd >= 0) { uint64_t one = 1; ssize_t r = write(fd, &one, sizeof one); (void)r; }
            }
            atomic_fetch_sub(&s->busy, 1);
            if (p != MAP_FAILED) { errno = saved; return; }
            break;
        }
        atomic_fetch_sub(&s->busy, 1);
    }
    // Not guest RAM: a real bug. Put the previous handler back; the access faults again into it.
    sigaction(SIGBUS, &vgpu_previous_sigbus, NULL);
    errno = saved;
}

static void vgpu_guard_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = vgpu_sigbus_handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &vgpu_previous_sigbus);
}

int vgpu_sigbus_guard_register(void *start, size_t length, int notify_fd) {
    if (start == NULL || length == 0) return -1;
    pthread_once(&vgpu_guard_once, vgpu_guard_install);
    for (int i = 0; i < VGPU_GUARD_SLOTS; i++) {
        struct vgpu_guard_slot *s = &vgpu_guard_slots[i];
        int expected = 0;
        if (!atomic_compare_exchange_strong(&s->used, &expected, 1)) continue;
        atomic_store(&s->faulted, 0);
        atomic_store(&s->notify_fd, notify_fd);
        atomic_store(&s->end, (uintptr_t)start + length);
        atomic_store(&s->start, (uintptr_t)start);
        return i;
    }
    return -1;
}

void vgpu_sigbus_guard_unregister(int slot) {
    if (slot < 0 || slot >= VGPU_GUARD_SLOTS) return;
    struct vgpu_guard_slot *s = &vgpu_guard_slots[slot];
    atomic_store(&s->start, 0);
    while (atomic_load(&s->busy) != 0) { }
    atomic_store(&s->notify_fd, -1);
    atomic_store(&s->used, 0);
}

int vgpu_sigbus_guard_faulted(int slot) {
    if (slot < 0 || slot >= VGPU_GUARD_SLOTS) return 0;
    return atomic_load(&vgpu_guard_slots[slot].faulted);
}
