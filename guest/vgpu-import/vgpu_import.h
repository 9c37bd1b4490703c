/* SPDX-License-Identifier: MIT */
/*
 * /dev/vgpu-import: the guest module's uapi (docs/importer-protocol.md).
 *
 * Usable from C and, through a module map, from Swift. Each ioctl returns 0 when the device
 * answered (read `status`: VGPU_IMPORT_STATUS_*), or -1 with errno:
 *   EBADF   `fd` is not an open file (IMPORT)
 *   EINVAL  `fd` is not a dma-buf, or not a virtio dma-buf (no UUID; the kernel log says which),
 *           or `flags`/reserved fields are not 0
 *   ENODEV  the exporter could not give a UUID (virtio_dma_buf_get_uuid failed)
 *   ETIMEDOUT the device did not answer in time (the device is then given up: EIO afterwards)
 *   EIO     the device answered something malformed, or was given up
 *   EINTR   a signal interrupted the wait
 */
#ifndef VGPU_IMPORT_H
#define VGPU_IMPORT_H

#include <linux/ioctl.h>
#include <linux/types.h>

#include "vgpu_import_wire.h" /* VGPU_IMPORT_STATUS_*, _KIND_*, _COHERENCY_*, _PATH_*, _SO_* */

#define VGPU_IMPORT_DEVICE_PATH "/dev/vgpu-import"

struct vgpu_import {
	__s32 fd;          /* in (IMPORT): a dma-buf fd */
	__u32 flags;       /* in: 0 */
	__u8 uuid[16];     /* in (IMPORT_UUID); out (IMPORT): the buffer's UUID */
	__u32 status;      /* out: VGPU_IMPORT_STATUS_* */
	__u32 handle;      /* out (IMPORT*); in (QUERY, RELEASE) */
	__u32 device;      /* out: GPU device id on the host */
	__u32 resource_id; /* out: resource id on that device */
	__u32 fourcc;      /* out: DRM fourcc */
	__u32 width;       /* out */
	__u32 height;      /* out */
	__u32 stride;      /* out: bytes per row of the host buffer */
	__u32 offset;      /* out */
	__u32 host_kind;   /* out: VGPU_IMPORT_KIND_* */
	__u32 coherency;   /* out: VGPU_IMPORT_COHERENCY_* */
	__u32 path;        /* out: VGPU_IMPORT_PATH_* */
	__s32 shared_object_status; /* out: what QEMU's shared-object table said (VGPU_IMPORT_SO_*) */
	__u32 pad;         /* 0 */
	__u64 size;        /* out: bytes of the host buffer */
	__u64 digest;      /* out: FNV-1a 64 of the visible bytes, row by row */
	__u64 device_ns;   /* out: the device's own time for the request */
	__u64 round_trip_ns; /* out: the module's time from sending the request to the answer */
};

#define VGPU_IMPORT_IOCTL_BASE 0xB7
/* fd -> UUID (virtio_dma_buf_get_uuid) -> IMPORT. The module holds the dma-buf only for the call. */
#define VGPU_IMPORT_IOCTL_IMPORT      _IOWR(VGPU_IMPORT_IOCTL_BASE, 0x01, struct vgpu_import)
/* uuid -> IMPORT, for tests and for drivers that got a UUID elsewhere. */
#define VGPU_IMPORT_IOCTL_IMPORT_UUID _IOWR(VGPU_IMPORT_IOCTL_BASE, 0x02, struct vgpu_import)
/* handle -> layout and a fresh digest; status REVOKED once the resource is gone. */
#define VGPU_IMPORT_IOCTL_QUERY       _IOWR(VGPU_IMPORT_IOCTL_BASE, 0x03, struct vgpu_import)
/* handle -> released (also done for every handle of a file when it is closed). */
#define VGPU_IMPORT_IOCTL_RELEASE     _IOWR(VGPU_IMPORT_IOCTL_BASE, 0x04, struct vgpu_import)

#endif /* VGPU_IMPORT_H */
