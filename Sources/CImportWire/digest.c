#include "cimportwire.h"

uint64_t vgpu_fnv1a64(uint64_t hash, const void *bytes, size_t count) {
    const uint8_t *p = bytes;
    for (size_t i = 0; i < count; i++) {
        hash ^= p[i];
        hash *= VGPU_FNV1A64_PRIME;
    }
    return hash;
}

int vgpu_import_digest_rows(const void *base, uint64_t mapped_size, uint64_t offset, uint64_t stride,
                            uint64_t row_bytes, uint64_t rows, uint64_t *digest) {
    uint64_t hash = VGPU_FNV1A64_OFFSET_BASIS;
    if (rows > 0 && row_bytes > 0) {
        // The last row ends at offset + (rows - 1) * stride + row_bytes: that must fit.
        uint64_t last_start, end;
        if (rows > 1 && row_bytes > stride) return -1;
        if (__builtin_mul_overflow(rows - 1, stride, &last_start)) return -1;
        if (__builtin_add_overflow(last_start, offset, &last_start)) return -1;
        if (__builtin_add_overflow(last_start, row_bytes, &end)) return -1;
        if (end > mapped_size || base == NULL) return -1;
        const uint8_t *first = (const uint8_t *)base + offset;
        for (uint64_t r = 0; r < rows; r++) hash = vgpu_fnv1a64(hash, first + r * stride, (size_t)row_bytes);
    }
    *digest = hash;
    return 0;
}
