/* SPDX-License-Identifier: MIT */
/*
 * The vgpu importer device's virtqueue protocol (docs/importer-protocol.md).
 *
 * One request queue. Each request is one chain: a driver-readable struct vgpu_import_wire_req
 * (exactly 40 bytes) followed by a device-writable struct vgpu_import_wire_resp (exactly 128
 * bytes). The device always writes the whole response and returns used length 128; the driver
 * checks the length, the magic, the version and that `tag` echoes its request.
 *
 * Shared by the guest module (kernel) and the host backend (Swift, through a module map):
 * only <linux/types.h>, every field little-endian, no implicit padding.
 */
#ifndef VGPU_IMPORT_WIRE_H
#define VGPU_IMPORT_WIRE_H

#include <linux/types.h>

#define VGPU_IMPORT_WIRE_MAGIC   0x49504756u /* "VGPI" in memory order */
#define VGPU_IMPORT_WIRE_VERSION 1

/* Request types. */
#define VGPU_IMPORT_REQ_IDENTIFY 1 /* is this an importer? (before the driver claims the device) */
#define VGPU_IMPORT_REQ_IMPORT   2 /* uuid -> a new handle, the layout and the digest */
#define VGPU_IMPORT_REQ_QUERY    3 /* handle -> the layout and a fresh digest, or REVOKED */
#define VGPU_IMPORT_REQ_RELEASE  4 /* handle -> gone */

/* Response status (also the ioctl's `status`). */
#define VGPU_IMPORT_STATUS_OK          0
#define VGPU_IMPORT_STATUS_NOT_FOUND   1 /* no exporter knows the UUID */
#define VGPU_IMPORT_STATUS_REVOKED     2 /* the resource went away after the import */
#define VGPU_IMPORT_STATUS_UNSUPPORTED 3 /* known, but cannot be imported (format, no mapping) */
#define VGPU_IMPORT_STATUS_ERROR       4 /* the device failed (its log says why) */
#define VGPU_IMPORT_STATUS_INVALID     5 /* malformed request, unknown type or handle */
#define VGPU_IMPORT_STATUS_NO_HANDLES  6 /* too many handles held (see max_handles) */

/* Host buffer kind of the imported buffer. */
#define VGPU_IMPORT_KIND_UNKNOWN    0
#define VGPU_IMPORT_KIND_UDMABUF    1
#define VGPU_IMPORT_KIND_DMA_HEAP   2
#define VGPU_IMPORT_KIND_DRM_DUMB   3
#define VGPU_IMPORT_KIND_MEMFD      4
#define VGPU_IMPORT_KIND_GL_TEXTURE 5

/* Coherency of the host buffer with the guest's writes. */
#define VGPU_IMPORT_COHERENCY_UNKNOWN     0
#define VGPU_IMPORT_COHERENCY_ZERO_COPY   1
#define VGPU_IMPORT_COHERENCY_ON_TRANSFER 2
#define VGPU_IMPORT_COHERENCY_ON_FLUSH    3

/* Which path resolved the UUID. */
#define VGPU_IMPORT_PATH_NONE          0
#define VGPU_IMPORT_PATH_SHARED_OBJECT 1 /* QEMU's shared-object table (vhost-user LOOKUP) */
#define VGPU_IMPORT_PATH_CONTROL       2 /* vgpu-backend's control socket (`resolve`) */

/* shared_object_status: 0 QEMU answered with an fd; < 0 QEMU's status (a negative errno, e.g.
 * -22); or one of these. */
#define VGPU_IMPORT_SO_NOT_TRIED  1 /* no backend channel, SHARED_OBJECT not negotiated, or off */
#define VGPU_IMPORT_SO_NO_ANSWER  2 /* QEMU did not answer in time */
#define VGPU_IMPORT_SO_NO_FD      3 /* QEMU answered 0 but sent no fd */

struct vgpu_import_wire_req {
	__le32 magic;   /* VGPU_IMPORT_WIRE_MAGIC */
	__le16 version; /* VGPU_IMPORT_WIRE_VERSION */
	__le16 type;    /* VGPU_IMPORT_REQ_* */
	__le64 tag;     /* chosen by the driver, echoed in the response */
	__le32 handle;  /* QUERY, RELEASE */
	__le32 flags;   /* 0 */
	__u8 uuid[16];  /* IMPORT */
};

struct vgpu_import_wire_resp {
	__le32 magic;
	__le16 version;
	__le16 status;      /* VGPU_IMPORT_STATUS_* */
	__le64 tag;         /* the request's */
	__le32 handle;      /* IMPORT: the new handle (never 0); QUERY/RELEASE: the request's */
	__le32 device;      /* the GPU device (vgpu-backend's device id) that owns the resource */
	__le32 resource_id; /* the guest's resource id on that device */
	__le32 fourcc;      /* DRM fourcc, 0 if unknown */
	__le32 width;
	__le32 height;
	__le32 stride;      /* bytes per row in the host buffer */
	__le32 offset;      /* of the first pixel in the host buffer */
	__le64 size;        /* bytes of the host buffer */
	__le64 digest;      /* FNV-1a 64 over the visible bytes, row by row (width * bpp per row) */
	__le32 host_kind;   /* VGPU_IMPORT_KIND_* */
	__le32 coherency;   /* VGPU_IMPORT_COHERENCY_* */
	__le32 path;        /* VGPU_IMPORT_PATH_* */
	__le32 shared_object_status; /* signed: see VGPU_IMPORT_SO_* */
	__le64 device_ns;   /* the device's time for this request (resolve, map, digest) */
	__le32 max_handles; /* IDENTIFY: handles one driver may hold */
	__le32 features;    /* IDENTIFY: 0 */
	__u8 name[32];      /* IDENTIFY: NUL-padded device name, e.g. "vgpu-import-device" */
};

#define VGPU_IMPORT_WIRE_REQ_SIZE  40
#define VGPU_IMPORT_WIRE_RESP_SIZE 128

#endif /* VGPU_IMPORT_WIRE_H */
