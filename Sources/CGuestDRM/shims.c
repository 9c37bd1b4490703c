#include "cguestdrm.h"
#include <errno.h>
#include <sys/ioctl.h>

int vgpu_guest_ioctl(int fd, unsigned long request, void *arg) {
    int r;
    do { r = ioctl(fd, request, arg); } while (r < 0 && (errno == EINTR || errno == EAGAIN));
    return r < 0 ? -errno : 0;
}
