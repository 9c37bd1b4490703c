// The importer device's wire structs (guest/vgpu-import/vgpu_import_wire.h, shared with the
// guest module, included as is: no layout is retyped) and the digest both sides compute.
#ifndef VGPU_CIMPORTWIRE_H
#define VGPU_CIMPORTWIRE_H

#include <stddef.h>
#include <stdint.h>
#include "../../../guest/vgpu-import/vgpu_import_wire.h"

_Static_assert(sizeof(struct vgpu_import_wire_req) == VGPU_IMPORT_WIRE_REQ_SIZE, "request is 40 bytes");
_Static_assert(sizeof(struct vgpu_import_wire_resp) == VGPU_IMPORT_WIRE_RESP_SIZE, "response is 128 bytes");

#define VGPU_FNV1A64_OFFSET_BASIS 0xcbf29ce484222325ull
#define VGPU_FNV1A64_PRIME 0x100000001b3ull

/// 64-bit FNV-1a of `count` bytes at `bytes`, continuing from `hash` (start with the offset basis).
uint64_t vgpu_fnv1a64(uint64_t hash, const void *bytes, size_t count);

/// The importer's digest (docs/importer-protocol.md): FNV-1a 64 over `rows` rows of `row_bytes`
/// bytes, row r starting at `offset + r * stride` in the `mapped_size` bytes at `base`. Returns
/// 0 and sets `*digest`, or -1 when the rows do not fit in the mapping (every product and sum
/// overflow-checked) or `row_bytes > stride` with more than one row; nothing is read then.
int vgpu_import_digest_rows(const void *base, uint64_t mapped_size, uint64_t offset, uint64_t stride,
                            uint64_t row_bytes, uint64_t rows, uint64_t *digest);

#endif
