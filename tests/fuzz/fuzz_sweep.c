/* fuzz_sweep.c — libFuzzer target for the sweep parser (submit/sweep.c,
 * sweep_tree.c), JSON and msgpack (detected from the first byte): any input
 * either fails with a documented code and a message naming the file, or
 * yields at most KV_SWEEP_MAX_JOBS jobs that encode, and whose canonical
 * msgpack re-emission parses back to the same count and the same job_ids
 * (checked on the first and last few jobs to keep iterations fast). */
#include <stdlib.h>
#include <string.h>

#include "sweep.h"

static int job_id_of(const kv_sweep *s, size_t i, char id[KV_JOB_ID_HEX]) {
    static kv_job j;
    unsigned char *buf;
    size_t n;
    char err[256];
    if (kv_sweep_job(s, i, NULL, &j, err, sizeof err) != KV_OK) return 0;
    if (kv_job_encode(&j, &buf, &n, err, sizeof err) != KV_OK) return 0;
    free(buf);
    memcpy(id, j.job_id, KV_JOB_ID_HEX);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len);
int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len) {
    kv_sweep *s = NULL, *back = NULL;
    char err[512] = "";
    int rc = kv_sweep_parse(&s, buf, len, -1, "fuzz.sweep", err, sizeof err);
    if (rc != KV_OK) {
        if (s) abort();
        if (rc != KV_ERR_INVAL && rc != KV_ERR_FORMAT && rc != KV_ERR_LIMIT) abort();
        if (strncmp(err, "fuzz.sweep: ", 12) != 0) abort();
        return 0;
    }
    size_t n = kv_sweep_n_jobs(s);
    if (n == 0 || n > KV_SWEEP_MAX_JOBS) abort();
    unsigned char *mp;
    size_t mp_len;
    if (kv_sweep_to_msgpack(s, &mp, &mp_len, err, sizeof err) != KV_OK) abort();
    if (kv_sweep_parse(&back, mp, mp_len, 0, "emitted", err, sizeof err) != KV_OK) abort();
    if (kv_sweep_n_jobs(back) != n) abort();
    for (size_t k = 0; k < 8 && k < n; k++) {
        size_t i = k < 4 ? k : n - 1 - (k - 4);
        char a[KV_JOB_ID_HEX], b[KV_JOB_ID_HEX];
        if (!job_id_of(s, i, a) || !job_id_of(back, i, b) || strcmp(a, b) != 0) abort();
    }
    free(mp);
    kv_sweep_free(back);
    kv_sweep_free(s);
    return 0;
}
