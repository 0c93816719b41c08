/* safetensors.h — a validating reader for the safetensors format.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON, then the data
 * buffer. Every header is checked before any tensor is handed out: N within
 * bounds (<= 100,000,000 and <= file size - 8), JSON is an object, each entry
 * has a known dtype, a shape of non-negative integers and data_offsets
 * [begin, end] with end - begin == prod(shape) * dtype size (overflow-checked),
 * no duplicate names, and the entries sorted by offset tile the buffer exactly
 * from 0 to its end. Files are mmap'd read-only; tensors point into the map. */
#ifndef ENGINE_SAFETENSORS_H
#define ENGINE_SAFETENSORS_H

#include "eng.h"

typedef enum st_dtype {
    ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_I16, ST_U16, ST_F16,
    ST_BF16, ST_I32, ST_U32, ST_F32, ST_F64, ST_I64, ST_U64, ST_N_DTYPES
} st_dtype;

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER 100000000ull

typedef struct st_tensor {
    const char *name;        /* owned by the st_file */
    st_dtype dtype;
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    uint64_t n_elems;
    uint64_t begin, end;     /* relative to the data buffer */
    const uint8_t *data;     /* into the mapping (or the parsed buffer) */
} st_tensor;

typedef struct st_file st_file;

const char *st_dtype_name(st_dtype t);
size_t st_dtype_size(st_dtype t);

/* Parse a whole safetensors image held in memory (header + data). `buf` must
 * outlive the st_file. `label` names the file in error messages. */
eng_status st_file_parse(st_file **out, const uint8_t *buf, size_t len,
                         const char *label, char *err, size_t n_err);

/* mmap `path` and parse it. */
eng_status st_file_open(st_file **out, const char *path, char *err, size_t n_err);
void st_file_close(st_file *f);

int st_file_n_tensors(const st_file *f);
const st_tensor *st_file_tensor(const st_file *f, int i);
const st_tensor *st_file_find(const st_file *f, const char *name);

/* Convert n elements of F32/F16/BF16 data (possibly unaligned) to fp32. */
eng_status st_to_f32(float *dst, const uint8_t *src, st_dtype t, uint64_t n);

/* Write a safetensors file (used by `kvrun random-model`). Tensors are laid
 * out in the given order; header padded with spaces to a multiple of 8. */
typedef struct st_write_entry {
    const char *name;
    st_dtype dtype;          /* F32, F16 or BF16 */
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    const float *data;       /* fp32 source, converted to dtype on write */
    /* When data is NULL: called to produce the tensor's fp32 values in
     * chunks (dst holds n values starting at element `first`), so huge
     * random checkpoints can be written without holding them in memory. */
    void (*fill)(float *dst, uint64_t first, uint64_t n, void *ud);
    void *fill_ud;
} st_write_entry;
eng_status st_file_write(const char *path, const st_write_entry *entries, int n,
                         char *err, size_t n_err);

#endif /* ENGINE_SAFETENSORS_H */
