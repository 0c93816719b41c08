/* mpack_write.h — the small msgpack writer behind every canonical encoding in
 * kvsweep (jobs, results, the re-emitted sweep file).
 *
 * Why not msgpack-c's packer: canonical bytes are what job_ids are made of,
 * so the exact form of every value is decided here, in one place: integers
 * in their shortest form (non-negative ones always in the unsigned
 * families), reals always float64, or written as integers when integral
 * (kv_mw_num). The same writer also runs in "compare" mode, where it checks
 * each byte it would write against a reference buffer instead of storing
 * it: kv_job_decode uses that to prove, without allocating, that a received
 * job is in canonical form (so sha256(received bytes) is the job_id kvsubmit
 * computed). Errors are sticky: write calls return nothing, kv_mw_status at
 * the end says whether all went well. */
#ifndef WORKER_MPACK_WRITE_H
#define WORKER_MPACK_WRITE_H

#include <stddef.h>
#include <stdint.h>

typedef struct kv_mw {
    unsigned char *buf;       /* grow mode: malloc'd output */
    size_t len, cap, limit;   /* bytes written (or compared) so far; cap on len */
    const unsigned char *ref; /* compare mode: the reference bytes */
    size_t ref_len;
    int fail;                 /* KV_OK, KV_ERR_NOMEM, KV_ERR_LIMIT or KV_ERR_FORMAT (mismatch) */
    size_t fail_off;          /* compare mode: first differing offset */
} kv_mw;

/* Grow mode: output goes to a malloc'd buffer of at most limit bytes. */
void kv_mw_init(kv_mw *w, size_t limit);
/* Compare mode: nothing is stored; each byte is checked against ref. */
void kv_mw_init_compare(kv_mw *w, const void *ref, size_t ref_len);
/* KV_OK when every write succeeded (compare mode: and all of ref matched). */
int kv_mw_status(const kv_mw *w);
/* Grow mode: hands the buffer over (caller frees). */
unsigned char *kv_mw_take(kv_mw *w, size_t *len);
/* Frees the buffer in grow mode (no-op after take or in compare mode). */
void kv_mw_free(kv_mw *w);

void kv_mw_map(kv_mw *w, uint32_t n);
void kv_mw_array(kv_mw *w, uint32_t n);
void kv_mw_str(kv_mw *w, const char *s, size_t n);
void kv_mw_cstr(kv_mw *w, const char *s);
void kv_mw_int(kv_mw *w, int64_t v);
void kv_mw_bool(kv_mw *w, int v);
void kv_mw_nil(kv_mw *w);
/* Always float64. */
void kv_mw_real(kv_mw *w, double v);
/* Canonical number: integral finite values in int64 range as integers,
 * everything else as float64. */
void kv_mw_num(kv_mw *w, double v);
/* 1 when v is finite, integral and representable as int64 (stored in *out). */
int kv_mw_real_is_int(double v, int64_t *out);

#endif /* WORKER_MPACK_WRITE_H */
