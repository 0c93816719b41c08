/* bench_policy.c — decode time of bounded KV policies against context
 * length, and what their eviction costs per step (issue 4, "Performance";
 * `make bench-policy`, README "Measured"). Not a test: it prints figures,
 * one JSON object per line, then a summary line with the targets.
 *
 *   bench_policy MODEL_DIR [steps] [contexts] [extra]   contexts: "512,2048,4096"
 *
 * extra: one more policy spec measured at every context, for diagnosis
 * (e.g. "streaming:sink=4,recent=508,pos=original"); not in the summary.
 *
 * Points: the bare engine (no policy: the full cache), `streaming` with
 * sink 4 + recent 508 (512 cached) and `h2o` with heavy 256 + recent 256
 * (512 cached, H2O's equal split), each at every context. A point is a
 * state prefilled with `context` random tokens in one call; then rounds of
 * `steps` greedy decode steps are timed. The rounds are interleaved across
 * all points at the step level (step j of every point, then step j + 1),
 * so a load change on a shared machine hits every point alike; the figure
 * is the median of the rounds' mean per-token times (the minimum is
 * printed too). The full-cache states roll back after each
 * round, so they stay at their context; bounded policies are at steady
 * state (cache at budget, one eviction per step) from the first step.
 *
 * Derived figures (the summary):
 *   flat      = streaming time at the largest context / at the smallest
 *               (target <= 1.10: decode time independent of context);
 *   overhead  = policy time at the largest context / bare-engine time with
 *               the same number of cached tokens (the smallest context) - 1:
 *               everything the policy adds per step (hooks, eviction and
 *               compaction, pos=shift re-rotation, attention probabilities
 *               for h2o), as a fraction of a full-cache decode step
 *               (targets: streaming <= 5%, h2o <= 15%);
 *   hook time = the time spent inside the policy's forward-pass hooks,
 *               measured directly: the Makefile links this program with
 *               GNU ld's --wrap for each hook (policy.h), and the wrappers
 *               below time the real hook. hook_frac = hook time / step
 *               time in the same steps, so a busy machine slows both alike
 *               (the differential above is noisier). Split into evict
 *               (layer_evict: selection + compaction), shift (rope_qk +
 *               attn_keys: the pos=shift re-rotation of cached keys),
 *               observe (score accumulation) and book (call_begin, room,
 *               step_end: accounting). Not inside a hook, so not in it:
 *               kn_attention writing the probabilities h2o reads. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "forward.h"
#include "kn.h"
#include "model.h"
#include "policy.h"
#include "sampler.h"

enum { MAX_CTX = 8, MAX_POL = 4, ROUNDS = 3 };

static const char *g_specs[MAX_POL] = {NULL, "streaming:sink=4,recent=508", "h2o:sink=0,heavy=256,recent=256"};
static const char *g_labels[MAX_POL] = {"full", "streaming", "h2o"};
static int g_n_pol = 3;

typedef struct bench_point {
    eng_policy *pol;
    eng_state *s;
    int ctx;
    int32_t next;
    double t[ROUNDS];   /* seconds per decoded token, per round */
    double hk[ROUNDS][4]; /* seconds per decoded token inside hooks, per round and kind (HK_*) */
    double prefill_s;
} bench_point;

/* ---- hook timing (linked with -Wl,--wrap=eng_policy_<hook>; see the Makefile) ----
 * The __real_ references are weak: without the --wrap flags nothing calls
 * the wrappers and the hook columns read 0. */
enum { HK_EVICT, HK_SHIFT, HK_OBSERVE, HK_BOOK };
static double g_hook[4];

#define BENCH_HOOK_VOID(name, kind, params, args)                                  \
    void __real_eng_policy_##name params __attribute__((weak));                   \
    void __wrap_eng_policy_##name params;                                          \
    void __wrap_eng_policy_##name params {                                         \
        double t0_ = now_s();                                                      \
        __real_eng_policy_##name args;                                             \
        g_hook[kind] += now_s() - t0_;                                             \
    }
#define BENCH_HOOK_RET(type, name, kind, params, args)                             \
    type __real_eng_policy_##name params __attribute__((weak));                   \
    type __wrap_eng_policy_##name params;                                          \
    type __wrap_eng_policy_##name params {                                         \
        double t0_ = now_s();                                                      \
        type r_ = __real_eng_policy_##name args;                                   \
        g_hook[kind] += now_s() - t0_;                                             \
        return r_;                                                                 \
    }

BENCH_HOOK_VOID(call_begin, HK_BOOK, (eng_policy * p), (p))
BENCH_HOOK_RET(int, room, HK_BOOK, (const eng_policy *p), (p))
BENCH_HOOK_VOID(layer_evict, HK_EVICT, (eng_policy * p, int l, int T), (p, l, T))
BENCH_HOOK_RET(int, rope_qk, HK_SHIFT, (eng_policy * p, int l, int T), (p, l, T))
BENCH_HOOK_RET(const float *, attn_keys, HK_SHIFT, (eng_policy * p, int l, int T), (p, l, T))
BENCH_HOOK_VOID(layer_observe, HK_OBSERVE, (eng_policy * p, int l, int T), (p, l, T))
BENCH_HOOK_VOID(step_end, HK_BOOK, (eng_policy * p, int T, int last_chunk), (p, T, last_chunk))

/* Order statistic k (0: the minimum, ROUNDS / 2: the median) of v[ROUNDS]. */
static double order_stat(const double *v, int k) {
    double c[ROUNDS];
    memcpy(c, v, sizeof c);
    qsort(c, ROUNDS, sizeof(double), cmp_double);
    return c[k];
}

static int point_init(bench_point *p, const eng_model *m, int k, int ctx, int steps, const int32_t *ids,
                      char *err, size_t n_err) {
    memset(p, 0, sizeof *p);
    p->ctx = ctx;
    int cap = ctx + steps + 8;
    if (g_specs[k]) {
        eng_paramset ps;
        char name[32], buf[256];
        if (eng_policy_parse_spec(g_specs[k], &ps, name, sizeof name, buf, sizeof buf, err, n_err) != ENG_OK ||
            eng_policy_create(&p->pol, name, &ps, &m->cfg, err, n_err) != ENG_OK)
            return 1;
        cap = eng_policy_capacity(p->pol, ctx + ROUNDS * steps + 8);
    }
    if (eng_state_init(&p->s, m, cap, 128, err, n_err) != ENG_OK) return 1;
    if (p->pol && eng_state_set_policy(p->s, p->pol) != ENG_OK) {
        snprintf(err, n_err, "%s", eng_state_errmsg(p->s));
        return 1;
    }
    double t0 = now_s();
    if (eng_forward(p->s, ids, ctx, p->s->logits, 0) != ENG_OK) {
        snprintf(err, n_err, "%s", eng_state_errmsg(p->s));
        return 1;
    }
    p->prefill_s = now_s() - t0;
    p->next = eng_argmax(p->s->logits, m->cfg.n_vocab);
    if (p->pol) eng_policy_stats_reset(p->pol);
    return 0;
}

/* One timed greedy step, added to round r. */
static int point_step(bench_point *p, int r, int V) {
    memset(g_hook, 0, sizeof g_hook);
    double t0 = now_s();
    if (eng_forward(p->s, &p->next, 1, p->s->logits, 0) != ENG_OK) return 1;
    p->next = eng_argmax(p->s->logits, V);
    p->t[r] += now_s() - t0;
    for (int k = 0; k < 4; k++) p->hk[r][k] += g_hook[k];
    return 0;
}

int main(int argc, char **argv) {
    kn_set_threads(getenv("KV_THREADS") ? atoi(getenv("KV_THREADS")) : 2);
    if (argc < 2) {
        fprintf(stderr, "usage: bench_policy MODEL_DIR [steps] [contexts, e.g. 512,2048,4096] [extra policy spec]\n");
        return 2;
    }
    int steps = argc > 2 ? atoi(argv[2]) : 32, n_ctx = 0, ctxs[MAX_CTX];
    const char *list = argc > 3 ? argv[3] : "512,2048,4096";
    for (const char *q = list; *q && n_ctx < MAX_CTX; q = strchr(q, ',') ? strchr(q, ',') + 1 : q + strlen(q))
        ctxs[n_ctx++] = atoi(q);
    if (steps < 1 || n_ctx < 1 || ctxs[0] < 1) {
        fprintf(stderr, "bench_policy: steps and contexts must be positive\n");
        return 2;
    }
    if (argc > 4) {
        g_specs[3] = argv[4];
        g_labels[3] = "extra";
        g_n_pol = 4;
    }
    char err[1024];
    eng_model *m = NULL;
    eng_load_opts lo = {.keep_16bit = !(getenv("KV_WEIGHTS") && !strcmp(getenv("KV_WEIGHTS"), "f32"))};
    if (eng_model_load_ex(&m, argv[1], &lo, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "bench_policy: %s\n", err);
        return 1;
    }
    int most = 0;
    for (int c = 0; c < n_ctx; c++) most = ctxs[c] > most ? ctxs[c] : most;
    int32_t *ids = malloc((size_t)most * sizeof(int32_t));
    bench_point *pts = calloc((size_t)g_n_pol * n_ctx, sizeof *pts);
    int rc = 1;
    if (!ids || !pts) goto done;
    unsigned x = 12345u;   // fixed pseudo-random prompt: a random model has no preferred text
    for (int i = 0; i < most; i++) {
        x = x * 1103515245u + 12345u;
        ids[i] = (int32_t)((x >> 8) % (unsigned)(m->cfg.n_vocab < 50000 ? m->cfg.n_vocab : 50000));
    }
    for (int k = 0; k < g_n_pol; k++)
        for (int c = 0; c < n_ctx; c++)
            if (point_init(&pts[k * n_ctx + c], m, k, ctxs[c], steps, ids, err, sizeof err)) {
                fprintf(stderr, "bench_policy: %s at %d: %s\n", g_labels[k], ctxs[c], err);
                goto done;
            }
    for (int r = 0; r < ROUNDS; r++) {
        for (int j = 0; j < steps; j++)
            for (int i = 0; i < g_n_pol * n_ctx; i++)
                if (point_step(&pts[i], r, m->cfg.n_vocab)) {
                    fprintf(stderr, "bench_policy: decode failed: %s\n", eng_state_errmsg(pts[i].s));
                    goto done;
                }
        for (int i = 0; i < g_n_pol * n_ctx; i++) {
            pts[i].t[r] /= steps;
            for (int k = 0; k < 4; k++) pts[i].hk[r][k] /= steps;
            if (!pts[i].pol && eng_state_rollback(pts[i].s, steps) != ENG_OK) goto done;
        }
    }
    double tp[MAX_POL][MAX_CTX], tm[MAX_POL][MAX_CTX], hf[MAX_POL][MAX_CTX];
    for (int k = 0; k < g_n_pol; k++)
        for (int c = 0; c < n_ctx; c++) {
            bench_point *p = &pts[k * n_ctx + c];
            eng_policy_stats st = {0};
            if (p->pol) eng_policy_stats_get(p->pol, &st);
            tp[k][c] = order_stat(p->t, ROUNDS / 2);
            tm[k][c] = order_stat(p->t, 0);
            double frac[ROUNDS], kind[4][ROUNDS], hook = 0;
            for (int r = 0; r < ROUNDS; r++) {
                double sum = 0;
                for (int h = 0; h < 4; h++) sum += kind[h][r] = p->hk[r][h];
                frac[r] = sum / p->t[r];
            }
            for (int h = 0; h < 4; h++) hook += order_stat(kind[h], ROUNDS / 2);
            hf[k][c] = order_stat(frac, ROUNDS / 2);
            printf("{\"bench\":\"policy_decode\",\"model\":\"%s\",\"threads\":%d,\"policy\":\"%s\",\"spec\":\"%s\","
                   "\"context\":%d,\"cached\":%lld,\"steps\":%d,\"reps\":%d,\"tpot_ms\":%.4f,\"tpot_ms_min\":%.4f,"
                   "\"tpot_ms_rounds\":[%.4f,%.4f,%.4f],\"prefill_s\":%.3f,\"evictions_per_step\":%.1f,"
                   "\"hook_ms\":%.4f,\"hook_frac\":%.4f,\"hook_evict_ms\":%.4f,\"hook_shift_ms\":%.4f,"
                   "\"hook_observe_ms\":%.4f,\"hook_book_ms\":%.4f}\n",
                   argv[1], kn_get_threads(), g_labels[k], g_specs[k] ? g_specs[k] : "none", p->ctx,
                   p->pol ? (long long)st.cache_tokens_max : (long long)p->ctx + 1, steps, ROUNDS, tp[k][c] * 1e3, tm[k][c] * 1e3,
                   p->t[0] * 1e3, p->t[1] * 1e3, p->t[2] * 1e3, p->prefill_s,
                   p->pol && st.n_steps ? (double)st.evictions / (double)st.n_steps : 0.0, hook * 1e3, hf[k][c],
                   order_stat(kind[HK_EVICT], ROUNDS / 2) * 1e3, order_stat(kind[HK_SHIFT], ROUNDS / 2) * 1e3,
                   order_stat(kind[HK_OBSERVE], ROUNDS / 2) * 1e3, order_stat(kind[HK_BOOK], ROUNDS / 2) * 1e3);
        }
    int hi = n_ctx - 1;
    for (int q = 0; q < 2; q++) {   // q 0: from the medians (the figures); 1: from the minima
        double(*t)[MAX_CTX] = q ? tm : tp;
        printf("{\"bench\":\"policy_summary\",\"from\":\"%s\",\"context_lo\":%d,\"context_hi\":%d,"
               "\"full_growth\":%.3f,\"streaming_flat\":%.3f,\"streaming_flat_target\":1.10,"
               "\"streaming_overhead\":%.4f,\"streaming_overhead_target\":0.05,\"h2o_flat\":%.3f,"
               "\"h2o_overhead\":%.4f,\"h2o_overhead_target\":0.15,\"streaming_hook_frac\":%.4f,"
               "\"h2o_hook_frac\":%.4f}\n",
               q ? "min" : "median", ctxs[0], ctxs[hi], t[0][hi] / t[0][0], t[1][hi] / t[1][0],
               t[1][hi] / t[0][0] - 1, t[2][hi] / t[2][0], t[2][hi] / t[0][0] - 1, hf[1][hi], hf[2][hi]);
    }
    rc = 0;
done:
    for (int i = 0; pts && i < g_n_pol * n_ctx; i++) {
        eng_state_free(pts[i].s);
        eng_policy_free(pts[i].pol);
    }
    free(pts);
    free(ids);
    eng_model_free(m);
    return rc;
}
