#define _GNU_SOURCE
#include "cguestdrm.h"
#include <errno.h>
#include <sys/ioctl.h>

int vgpu_guest_ioctl(int fd, unsigned long request, void *arg) {
    int r;
    do { r = ioctl(fd, request, arg); } while (r < 0 && (errno == EINTR || errno == EAGAIN));
    return r < 0 ? -errno : 0;
}

int vgpu_guest_ioctl_value(int fd, unsigned long request, void *arg) {
    int r;
    do { r = ioctl(fd, request, arg); } while (r < 0 && (errno == EINTR || errno == EAGAIN));
    return r < 0 ? -errno : r;
}

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

int vgpu_guest_sealed_memfd(const char *name, size_t size) {
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)size) < 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

uint64_t vgpu_guest_fnv1a_rows(const void *base, size_t row_bytes, size_t rows, size_t stride) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t r = 0; r < rows; r++) {
        const unsigned char *p = (const unsigned char *)base + r * stride;
        for (size_t i = 0; i < row_bytes; i++) {
            h ^= p[i];
            h *= 0x100000001b3ull;
        }
    }
    return h;
}
