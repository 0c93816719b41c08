/* fuzz_job.c — libFuzzer target for the job and result decoders
 * (worker/job.c, job_result.c, mpack_guard.c): every input either decodes,
 * and then re-encodes to exactly the same bytes and job_id (the canonical
 * form is a fixed point), or fails with one of the documented codes and a
 * message. The same bytes also go through kv_result_decode, whose successes
 * must re-encode and decode again to the same fields. */
#include <stdlib.h>
#include <string.h>

#include "job.h"

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len);
int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len) {
    static kv_job j, e;
    char err[256] = "";
    int rc = kv_job_decode(buf, len, &j, err, sizeof err);
    if (rc == KV_OK) {
        unsigned char *out;
        size_t n;
        e = j;
        if (kv_job_encode(&e, &out, &n, err, sizeof err) != KV_OK) abort();
        if (n != len || memcmp(out, buf, len) != 0 || strcmp(e.job_id, j.job_id) != 0) abort();
        free(out);
    } else if (rc != KV_ERR_INVAL && rc != KV_ERR_FORMAT && rc != KV_ERR_LIMIT) {
        abort();
    } else if (!err[0] || j.job_id[0]) {
        abort();
    }

    kv_result r, d;
    rc = kv_result_decode(buf, len, &r, err, sizeof err);
    if (rc == KV_OK) {
        unsigned char *out;
        size_t n;
        if (kv_result_encode(&r, &out, &n, err, sizeof err) != KV_OK) abort();
        if (kv_result_decode(out, n, &d, err, sizeof err) != KV_OK) abort();
        if (strcmp(r.job_id, d.job_id) || strcmp(r.status, d.status) || r.attempt != d.attempt ||
            (r.extras_json == NULL) != (d.extras_json == NULL) ||
            (r.extras_json && strcmp(r.extras_json, d.extras_json)))
            abort();
        kv_result_free(&d);
        free(out);
    } else if (rc != KV_ERR_INVAL && rc != KV_ERR_FORMAT && rc != KV_ERR_LIMIT) {
        abort();
    } else if (r.extras_json) {
        abort();
    }
    kv_result_free(&r);
    return 0;
}
