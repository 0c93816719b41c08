/* fuzz_safetensors.c — libFuzzer target for the safetensors reader: parse the
 * input as a whole file image, then check the invariants every accepted file
 * must satisfy (tensors inside the buffer, tiling sizes, name lookup) and
 * convert every float tensor with st_to_f32. A refused input must say
 * ENG_ERR_FORMAT (or NOMEM) with a message naming the file. */
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len);
int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len) {
    st_file *f = NULL;
    char err[512] = "";
    eng_status st = st_file_parse(&f, buf, len, "fuzz.safetensors", err, sizeof err);
    if (st != ENG_OK) {
        if (f || (st != ENG_ERR_FORMAT && st != ENG_ERR_NOMEM) || !strstr(err, "fuzz.safetensors")) abort();
        return 0;
    }
    uint64_t prev_end = 0;
    for (int i = 0; i < st_file_n_tensors(f); i++) {
        const st_tensor *t = st_file_tensor(f, i);
        if (!t || st_file_find(f, t->name) != t) abort();
        if (t->begin != prev_end || t->end - t->begin != t->n_elems * st_dtype_size(t->dtype)) abort();
        if (t->data < buf || t->data + (t->end - t->begin) > buf + len) abort();
        if (t->n_dims < 0 || t->n_dims > ST_MAX_DIMS) abort();
        prev_end = t->end;
        if (t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16) {
            float *dst = malloc(t->n_elems * sizeof(float) + 1);
            if (!dst || st_to_f32(dst, t->data, t->dtype, t->n_elems) != ENG_OK) abort();
            volatile float sink = t->n_elems ? dst[t->n_elems - 1] : 0.0f;
            (void)sink;
            free(dst);
        } else if (st_to_f32(NULL, t->data, t->dtype, t->n_elems) != ENG_ERR_UNSUPPORTED) {
            abort();
        }
    }
    st_file_close(f);
    return 0;
}
