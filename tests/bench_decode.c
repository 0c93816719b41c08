/* bench_decode.c — decode speed of the CPU engine next to the machine's
 * measured memory bandwidth, for `make bench` (ops/bench.sh). Not a test:
 * it prints figures, one JSON object per line.
 *
 *   bench_decode --bandwidth                      memcpy + read bandwidth
 *   bench_decode MODEL_DIR [n_prompt] [n_decode]  prefill, then timed decode
 *
 * The bandwidth bound for a model is (bytes of weights read per token) /
 * (bandwidth): at batch 1 every weight except embed_in is streamed once per
 * decoded token, in the dtype the engine holds it (fp32, or fp16/bf16 when a
 * 16-bit checkpoint is kept 16-bit). Both a read-only stream and memcpy
 * (read + write bytes) are measured; ops/bench_report.py divides by the
 * higher of the two, the stricter bound. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>

#include "bench_util.h"
#include "forward.h"
#include "kn.h"
#include "model.h"
#include "sampler.h"

static int bench_bandwidth(void) {
    size_t n = (size_t)1 << 27;   /* 512 MiB of floats per buffer */
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    if (!a || !b) return 1;
    int nt = kn_get_threads();
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) a[i] = b[i] = (float)(i & 1023);
    double best_copy = 1e30, best_read = 1e30, sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        #pragma omp parallel
        {
            int t = omp_get_thread_num(), T = omp_get_num_threads();
            size_t lo = n * t / T, hi = n * (t + 1) / T;
            memcpy(b + lo, a + lo, (hi - lo) * sizeof(float));
        }
        double t1 = now_s();
        float s = 0;
        #pragma omp parallel reduction(+ : s)
        {   /* 32 independent accumulators: the loop is bound by memory, not by add latency */
            int t = omp_get_thread_num(), T = omp_get_num_threads();
            size_t lo = n * t / T, hi = n * (t + 1) / T;
            float acc[32] = {0};
            for (size_t i = lo; i + 32 <= hi; i += 32) {
                #pragma omp simd
                for (int j = 0; j < 32; j++) acc[j] += a[i + j];
            }
            for (int j = 0; j < 32; j++) s += acc[j];
        }
        double t2 = now_s();
        sink += s;
        if (t1 - t0 < best_copy) best_copy = t1 - t0;
        if (t2 - t1 < best_read) best_read = t2 - t1;
    }
    double bytes = (double)n * sizeof(float);
    printf("{\"bench\":\"bandwidth\",\"threads\":%d,\"copy_GBps\":%.2f,\"read_GBps\":%.2f,\"sink\":%g}\n", nt,
           2 * bytes / best_copy / 1e9, bytes / best_read / 1e9, sink > 0 ? 1.0 : 0.0);
    free(a);
    free(b);
    return 0;
}

int main(int argc, char **argv) {
    kn_set_threads(getenv("KV_THREADS") ? atoi(getenv("KV_THREADS")) : 2);
    if (argc >= 2 && !strcmp(argv[1], "--bandwidth")) return bench_bandwidth();
    if (argc < 2) {
        fprintf(stderr, "usage: bench_decode --bandwidth | MODEL_DIR [n_prompt] [n_decode]\n");
        return 2;
    }
    int n_prompt = argc > 2 ? atoi(argv[2]) : 16, n_dec = argc > 3 ? atoi(argv[3]) : 32;
    char err[1024];
    eng_model *m = NULL;
    double tl = now_s();
    eng_load_opts lo = {.keep_16bit = !(getenv("KV_WEIGHTS") && !strcmp(getenv("KV_WEIGHTS"), "f32"))};
    if (eng_model_load_ex(&m, argv[1], &lo, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "bench_decode: %s\n", err);
        return 1;
    }
    tl = now_s() - tl;
    eng_state *s = NULL;
    if (eng_state_init(&s, m, n_prompt + n_dec + 1, 64, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "bench_decode: %s\n", err);
        return 1;
    }
    int32_t *ids = malloc((size_t)(n_prompt + n_dec + 1) * sizeof(int32_t));
    for (int i = 0; i < n_prompt; i++) ids[i] = (int32_t)((i * 7919) % 50000);
    /* Three repetitions (fresh cache each); report the median, so one
     * disturbed run on a shared machine does not decide the figure. */
    enum { REPS = 3 };
    double pre[REPS], dec[REPS];
    for (int r = 0; r < REPS; r++) {
        eng_state_reset(s);
        double t0 = now_s();
        eng_forward(s, ids, n_prompt, s->logits, 0);
        pre[r] = now_s() - t0;
        dec[r] = 0;
        for (int i = 0; i < n_dec; i++) {
            int32_t next = eng_argmax(s->logits, m->cfg.n_vocab);
            double a = now_s();
            eng_forward(s, &next, 1, s->logits, 0);
            dec[r] += now_s() - a;
        }
    }
    qsort(pre, REPS, sizeof(double), cmp_double);
    qsort(dec, REPS, sizeof(double), cmp_double);
    double t1 = pre[REPS / 2], tdec = dec[REPS / 2], t0 = 0;
    double bytes = eng_model_decode_bytes(&m->cfg, eng_model_weight_bytes(m));
    printf("{\"bench\":\"decode\",\"model\":\"%s\",\"threads\":%d,\"load_s\":%.2f,\"prefill_tokens\":%d,"
           "\"reps\":3,\"prefill_tok_s\":%.2f,\"decode_tokens\":%d,\"tpot_ms\":%.3f,\"decode_tok_s\":%.3f,\"bytes_per_token\":%.0f,"
           "\"weights\":\"%s\"}\n",
           argv[1], kn_get_threads(), tl, n_prompt, n_prompt / (t1 - t0), n_dec, tdec / n_dec * 1e3, n_dec / tdec, bytes,
           m->w.wtype == KN_W_F32 ? "f32" : m->w.wtype == KN_W_F16 ? "f16" : "bf16");
    free(ids);
    eng_state_free(s);
    eng_model_free(m);
    return 0;
}
