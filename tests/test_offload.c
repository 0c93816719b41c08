/* test_offload.c — every KV policy and speculative decoding with --gpu:
 * engine/fwd.c's three modes against the CPU engine.
 *
 * The story: `kvworker --gpu N` and `kvrun --gpu N` open the device through
 * eng_fwd_init, which keeps the full cache on the device (device mode) and
 * runs any other policy in offload mode (forward_gpu.h): the dense math on
 * the device, the attention block with the policy's own hooks on the host.
 * Full, window, streaming, h2o, lazy_h2o and tova run on the device cache
 * itself (a moving window of rows, pos=shift rotated there by cache index;
 * attention scores kept there); the rest in offload mode. Here the device is the mock library (build/tests/libkvcuda_mock.so, the
 * CPU ops behind the CUDA table, loaded through the real loader via
 * KV_CUDA_LIB), so the bar is exact: for all 18 policies the logits of a
 * prompt and of 40 greedy steps equal the CPU path's bit for bit and the
 * policy statistics (evictions, mean/max slots, bytes) are the same; a
 * "full" run on the device reports the CPU's statistics; greedy speculative
 * decoding with policies on target and draft emits the CPU's tokens with the
 * same acceptance counts. Failures: no device / no such device give
 * ENG_ERR_DEVICE naming --gpu N; a device op failing mid-forward in offload
 * mode gives ENG_ERR_CUDA naming the op, never a crash; eng_state_set_device
 * refuses a device state with its own cache or a state already running.
 * Models: golden fixtures m64-f32 (fp32) and m80-bf16 (16-bit kept) as
 * targets, m32-f16 as the draft. With KV_REQUIRE_GPU=1 (make test-gpu) the
 * same runs go to the real libkvcuda.so on device 0 with the bar
 * (top-1 agreement >= 99.5 %, max softmax-probability difference <= 1e-2;
 * speculative output equal for at least 40 of 48 tokens) and fail without
 * a device; the fault-injection test is the mock's only. */
#include <CUnit/Basic.h>
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fwd.h"
#include "kn.h"
#include "kn_cuda.h"
#include "model.h"
#include "policy.h"
#include "sampler.h"
#include "spec.h"
#include "testutil.h"

#define N_STEPS 40

static const char *g_specs[] = {
    "full",
    "streaming:sink=4,recent=20",
    "streaming:sink=2,recent=16,pos=original",
    "window:recent=24",
    "h2o:sink=2,heavy=8,recent=12",
    "lazy_h2o:sink=2,heavy=8,recent=12,interval=4",
    "knorm:keep_ratio=0.9,prune_after=16,skip_layers=none",
    "l2:keep_ratio=0.95,prune_after=20",
    "tova:budget=28",
    "sepllm:init=2,local=12,sep_cap=8,cache=26",
    "snapkv:budget=16,window=4",
    "pyramidkv:budget=16,window=4",
    "fix_size_l2:size=24,keep_ratio=0.25,skip_layers=none",
    "hybrid:sink=2,heavy=8,recent=14",
    "unified:sink=2,sep=4,heavy=6,recent=12,seps=1;2;3;5;7;11;13;17;19;23;29;31;37;41;43;47",
    "cam:sink=2,recent=20,merge=4",
    "cake:budget=20,window=4",
    "kivi:bits=2,group=8,residual=16",
    "think:ratio=0.5,recent=4,window=8",
};
#define N_SPECS (int)(sizeof g_specs / sizeof g_specs[0])

static eng_model *g_m32, *g_m16, *g_draft;
static int32_t g_prompt[256];
static int g_np;
static char g_mock[PATH_MAX];
static int g_real;   /* 1: the real libkvcuda.so on a GPU (make test-gpu): the tolerances */

/* How far the device's logits (b) are from the CPU's (a), (rows, V) each;
 * 1 when within the bar: bit for bit on the mock (its ops are the CPU's),
 * or on a real device top-1 agreement >= 99.5 % and max softmax
 * probability difference <= 1e-2. */
static int logits_ok(const float *a, const float *b, int rows, int V, const char *what) {
    double dmax = 0, pmax = 0;
    long same = 0;
    for (int r = 0; r < rows; r++) {
        const float *x = a + (size_t)r * V, *y = b + (size_t)r * V;
        int ax = eng_argmax(x, V), ay = eng_argmax(y, V);
        double sx = 0, sy = 0;
        for (int i = 0; i < V; i++) {
            double d = fabs((double)x[i] - y[i]);
            if (!(d <= dmax)) dmax = d;
            sx += exp((double)x[i] - x[ax]);
            sy += exp((double)y[i] - y[ay]);
        }
        for (int i = 0; i < V; i++) {
            double d = fabs(exp((double)x[i] - x[ax]) / sx - exp((double)y[i] - y[ay]) / sy);
            if (!(d <= pmax)) pmax = d;
        }
        same += ax == ay;
    }
    printf("\n    %-58s max|dlogit| %.1e  max|dprob| %.1e  top-1 %ld/%d", what, dmax, pmax, same, rows);
    if (g_real) return (double)same >= 0.995 * rows && pmax <= 1e-2;
    return dmax == 0.0;
}

/* A counter of the mock library (cuda_mock.h), reached through its handle. */
static long mock_count(const char *sym) {
    void *h = dlopen(g_mock, RTLD_NOW | RTLD_NOLOAD);
    long (*f)(void) = h ? (long (*)(void))dlsym(h, sym) : NULL;
    long v = f ? f() : -1;
    if (h) dlclose(h);
    return v;
}

/* The mock library's fault injection, reached through its own handle. */
static void mock_fail_after(long k) {
    void *h = dlopen(g_mock, RTLD_NOW | RTLD_NOLOAD);
    void (*f)(long) = h ? (void (*)(long))dlsym(h, "cuda_mock_fail_after") : NULL;
    CU_ASSERT_FATAL(f != NULL);
    f(k);
    dlclose(h);
}

/* One run: prompt in one call (all rows' logits), then N_STEPS greedy steps
 * fed with ref's tokens when given (so both runs see the same inputs).
 * lg: (g_np + N_STEPS, V) out; toks: the greedy tokens. */
static int run_n(const eng_model *m, int gpu, const char *spec, int n_steps, float *lg, int32_t *toks,
                 const int32_t *ref, eng_policy_stats *ps, char *mode, size_t n_mode) {
    eng_policy *p = tu_policy(m, spec);
    if (!p) return -1;
    int V = m->cfg.n_vocab;
    eng_fwd f;
    char err[1024];
    int n = g_np + n_steps;
    eng_status st = eng_fwd_init(&f, m, gpu, eng_policy_capacity(p, n), 8, p, err, sizeof err);
    if (st != ENG_OK) {
        printf("\n    %s gpu %d: %s", spec, gpu, err);
        eng_policy_free(p);
        return -1;
    }
    snprintf(mode, n_mode, "%s", eng_fwd_mode(&f));
    st = eng_fwd_forward(&f, g_prompt, g_np, lg, 1);
    for (int i = 0; st == ENG_OK && i < n_steps; i++) {
        const float *row = lg + (size_t)(g_np + i - 1) * V;
        toks[i] = eng_argmax(row, V);
        int32_t t = ref ? ref[i] : toks[i];
        st = eng_fwd_forward(&f, &t, 1, lg + (size_t)(g_np + i) * V, 0);
    }
    if (st != ENG_OK) printf("\n    %s gpu %d: %s", spec, gpu, eng_fwd_errmsg(&f));
    eng_policy_stats_get(p, ps);
    eng_fwd_free(&f);
    eng_policy_free(p);
    return st == ENG_OK ? 0 : -1;
}

static int run(const eng_model *m, int gpu, const char *spec, float *lg, int32_t *toks, const int32_t *ref,
               eng_policy_stats *ps, char *mode, size_t n_mode) {
    return run_n(m, gpu, spec, N_STEPS, lg, toks, ref, ps, mode, n_mode);
}

static void policies_case(const eng_model *m, const char *what) {
    int V = m->cfg.n_vocab, n = g_np + N_STEPS;
    float *a = malloc((size_t)n * V * sizeof(float)), *b = malloc((size_t)n * V * sizeof(float));
    int32_t ta[N_STEPS], tb[N_STEPS];
    CU_ASSERT_FATAL(a && b);
    for (int i = 0; i < N_SPECS; i++) {
        eng_policy_stats sa, sb;
        char ma[16], mb[16];
        CU_ASSERT_FATAL(run(m, -1, g_specs[i], a, ta, NULL, &sa, ma, sizeof ma) == 0);
        CU_ASSERT_FATAL(run(m, 0, g_specs[i], b, tb, ta, &sb, mb, sizeof mb) == 0);
        char what_s[96];
        snprintf(what_s, sizeof what_s, "%s %s %s", what, g_specs[i], mb);
        /* full, window, streaming, h2o, lazy_h2o, tova: the device cache itself */
        int dev = i == 0 || !strncmp(g_specs[i], "window", 6) || !strncmp(g_specs[i], "streaming", 9) ||
                  !strncmp(g_specs[i], "h2o", 3) || !strncmp(g_specs[i], "lazy_h2o", 8) || !strncmp(g_specs[i], "tova", 4);
        CU_ASSERT(logits_ok(a, b, n, V, what_s));
        printf(" evictions %lld/%lld", (long long)sa.evictions, (long long)sb.evictions);
        CU_ASSERT_STRING_EQUAL(mb, dev ? "device" : "offload");
        if (!g_real) CU_ASSERT_EQUAL(memcmp(ta, tb, sizeof ta), 0);   /* on a device: the top-1 agreement above */
        CU_ASSERT_EQUAL(sa.n_steps, sb.n_steps);
        CU_ASSERT_EQUAL(sa.evictions, sb.evictions);
        CU_ASSERT_EQUAL(sa.cache_tokens_max, sb.cache_tokens_max);
        CU_ASSERT_EQUAL(sa.kv_bytes, sb.kv_bytes);
        CU_ASSERT_EQUAL(sa.triggered, sb.triggered);
        CU_ASSERT_DOUBLE_EQUAL(sa.cache_tokens_mean, sb.cache_tokens_mean, 1e-12);
        if (i > 0) CU_ASSERT_EQUAL(sa.kv_bytes_alloc, sb.kv_bytes_alloc);   /* full: the device's own cache */
        if (i > 0 && strcmp(g_specs[i], "kivi:bits=2,group=8,residual=16") != 0) CU_ASSERT(sa.triggered);
    }
    free(a);
    free(b);
}

static void test_policies_f32(void) { policies_case(g_m32, "f32"); }
static void test_policies_16(void) { policies_case(g_m16, "bf16"); }

/* The device cache's moving window over 300 steps: the capacity is budget
 * + 64, so the window goes back to row 0 several times, with pos=shift
 * and pos=original, with and without sinks. */
static void test_window_long(void) {
    const char *specs[] = {"streaming:sink=4,recent=20", "streaming:sink=3,recent=17,pos=original", "window:recent=16",
                           "window:recent=12,pos=shift", "h2o:sink=2,heavy=8,recent=12",
                           "h2o:sink=4,heavy=12,recent=6,pos=shift", "lazy_h2o:sink=2,heavy=8,recent=12,interval=5",
                           "tova:budget=20"};
    enum { STEPS = 300 };
    int V = g_m32->cfg.n_vocab, n = g_np + STEPS;
    float *a = malloc((size_t)n * V * sizeof(float)), *b = malloc((size_t)n * V * sizeof(float));
    int32_t *ta = malloc(STEPS * sizeof(int32_t)), *tb = malloc(STEPS * sizeof(int32_t));
    CU_ASSERT_FATAL(a && b && ta && tb);
    for (int i = 0; i < (int)(sizeof specs / sizeof specs[0]); i++) {
        eng_policy_stats sa, sb;
        char ma[16], mb[16];
        CU_ASSERT_FATAL(run_n(g_m32, -1, specs[i], STEPS, a, ta, NULL, &sa, ma, sizeof ma) == 0);
        long c0 = g_real ? 0 : mock_count("cuda_mock_graph_captures"), l0 = g_real ? 0 : mock_count("cuda_mock_graph_launches");
        CU_ASSERT_FATAL(run_n(g_m32, 0, specs[i], STEPS, b, tb, ta, &sb, mb, sizeof mb) == 0);
        if (!g_real) {   /* decode steps replay one graph per window position (h2o: the window never moves: one) */
            long caps = mock_count("cuda_mock_graph_captures") - c0, runs = mock_count("cuda_mock_graph_launches") - l0;
            printf("\n    %s: %ld graphs captured, %ld replays", specs[i], caps, runs);
            int moves = !strncmp(specs[i], "window", 6) || !strncmp(specs[i], "streaming", 9);
            CU_ASSERT(moves ? caps > 1 && caps <= 64 + 1 : caps == 1);
            CU_ASSERT(runs >= STEPS - 2 && runs > 2 * caps);
        }
        char what_s[96];
        snprintf(what_s, sizeof what_s, "%s, %d steps", specs[i], STEPS);
        CU_ASSERT(logits_ok(a, b, n, V, what_s));
        printf(" evictions %lld/%lld", (long long)sa.evictions, (long long)sb.evictions);
        CU_ASSERT_STRING_EQUAL(mb, "device");
        if (!g_real) CU_ASSERT_EQUAL(memcmp(ta, tb, STEPS * sizeof(int32_t)), 0);
        CU_ASSERT_EQUAL(sa.evictions, sb.evictions);
        CU_ASSERT(sa.evictions > (long long)(STEPS - 40) * g_m32->cfg.n_layer * g_m32->cfg.n_head);
        CU_ASSERT_DOUBLE_EQUAL(sa.cache_tokens_mean, sb.cache_tokens_mean, 1e-12);
        CU_ASSERT_EQUAL(sa.cache_tokens_max, sb.cache_tokens_max);
    }
    free(a);
    free(b);
    free(ta);
    free(tb);
}

/* One device state, policies switched between sequences: the graphs of
 * the previous policy (offsets, pos=shift rotation baked in) must not be
 * replayed under the next; each run equals a fresh state's bit for bit. */
static void run_dev(eng_gpu_state *gs, float *lg, int steps) {
    int V = g_m32->cfg.n_vocab;
    CU_ASSERT_FATAL(eng_gpu_forward(gs, g_prompt, g_np, lg, 0) == ENG_OK);
    for (int i = 0; i < steps; i++) {
        int32_t t = eng_argmax(lg + (size_t)i * V, V);
        CU_ASSERT_FATAL(eng_gpu_forward(gs, &t, 1, lg + (size_t)(i + 1) * V, 0) == ENG_OK);
    }
}

static void test_policy_switch(void) {
    enum { STEPS = 120 };
    const char *seq[] = {"streaming:sink=4,recent=20", "full", "h2o:sink=2,heavy=8,recent=12", "window:recent=16",
                         "streaming:sink=2,recent=30,pos=original", "h2o:sink=4,heavy=12,recent=6,pos=shift",
                         "lazy_h2o:sink=2,heavy=8,recent=12,interval=7", "tova:budget=24", "streaming:sink=4,recent=20"};
    int V = g_m32->cfg.n_vocab, cap = 150;   /* full holds the whole run: 24 + 120 */
    float *a = malloc((size_t)(STEPS + 1) * V * sizeof(float)), *b = malloc((size_t)(STEPS + 1) * V * sizeof(float));
    CU_ASSERT_FATAL(a && b);
    char err[512];
    eng_gpu_state *shared = NULL;
    CU_ASSERT_FATAL(eng_gpu_state_init(&shared, kn_cuda_load(), g_m32, 0, cap, 8, err, sizeof err) == ENG_OK);
    for (int k = 0; k < (int)(sizeof seq / sizeof seq[0]); k++) {
        eng_policy *p = tu_policy(g_m32, seq[k]), *q = tu_policy(g_m32, seq[k]);
        CU_ASSERT_FATAL(p && q);
        eng_gpu_state_reset(shared);
        CU_ASSERT_FATAL(eng_gpu_state_set_policy(shared, p) == ENG_OK);
        run_dev(shared, a, STEPS);
        eng_gpu_state *fresh = NULL;
        CU_ASSERT_FATAL(eng_gpu_state_init(&fresh, kn_cuda_load(), g_m32, 0, cap, 8, err, sizeof err) == ENG_OK);
        CU_ASSERT_FATAL(eng_gpu_state_set_policy(fresh, q) == ENG_OK);
        run_dev(fresh, b, STEPS);
        int same = !memcmp(a, b, (size_t)(STEPS + 1) * V * sizeof(float));
        printf("\n    after %d switches: %-42s %s (graphs: %s)", k, seq[k], same ? "== fresh state" : "DIFFERS",
               eng_gpu_state_graph_status(shared));
        CU_ASSERT(same);
        eng_gpu_state_free(fresh);
        eng_policy_free(p);
        eng_policy_free(q);
    }
    eng_gpu_state_free(shared);
    free(a);
    free(b);
}

/* Rollback of a call's tokens under a device-cache policy equals the CPU's:
 * after the prompt, 3-token calls of which the last 2 are taken back
 * (a speculative round's shape), for h2o, streaming and full. */
static void test_rollback_policies(void) {
    /* h2o's budget (50) is reached only after ~26 calls: rolled-back slots must not carry their scores
     * into the rows that later compete as heavy hitters */
    const char *specs[] = {"h2o:sink=2,heavy=8,recent=40", "streaming:sink=4,recent=20", "full"};
    int V = g_m32->cfg.n_vocab;
    float *lg[2];
    lg[0] = malloc((size_t)3 * V * sizeof(float));
    lg[1] = malloc((size_t)3 * V * sizeof(float));
    CU_ASSERT_FATAL(lg[0] && lg[1]);
    for (int i = 0; i < 3; i++) {
        eng_fwd f[2];
        eng_policy *p[2];
        char err[512];
        double dmax = 0;
        for (int g = 0; g < 2; g++) {
            p[g] = tu_policy(g_m32, specs[i]);
            CU_ASSERT_FATAL(p[g] != NULL);
            CU_ASSERT_FATAL(eng_fwd_init(&f[g], g_m32, g - 1, eng_policy_capacity(p[g], 200), 8, p[g], err, sizeof err) ==
                            ENG_OK);
            CU_ASSERT_FATAL(eng_fwd_forward(&f[g], g_prompt, g_np, NULL, 0) == ENG_OK);
        }
        CU_ASSERT_STRING_EQUAL(eng_fwd_mode(&f[1]), "device");
        int32_t t[3] = {1, 2, 3};
        for (int step = 0; step < 60; step++) {
            for (int g = 0; g < 2; g++) {
                CU_ASSERT_FATAL(eng_fwd_forward(&f[g], t, 3, lg[g], 1) == ENG_OK);
                CU_ASSERT_FATAL(eng_fwd_rollback(&f[g], 2) == ENG_OK);
            }
            for (size_t k = 0; k < (size_t)3 * V; k++) {
                double d = fabs((double)lg[0][k] - lg[1][k]);
                if (!(d <= dmax)) dmax = d;
            }
            t[0] = eng_argmax(lg[0], V);   /* the kept token's successor leads the next call */
            t[1] = (t[0] + 7) % V;
            t[2] = (t[0] + 11) % V;
        }
        printf("\n    %-32s 60 calls of 3, 2 rolled back each: max|dlogit| %.1e", specs[i], dmax);
        CU_ASSERT(g_real ? dmax < 1e-2 : dmax == 0.0);
        for (int g = 0; g < 2; g++) {
            eng_fwd_free(&f[g]);
            eng_policy_free(p[g]);
        }
    }
    free(lg[0]);
    free(lg[1]);
}

/* The device cache's policy state through failures and restarts (mock):
 * lazy_h2o after a rollback to position 0 counts its steps from 0 again
 * (the CPU's call_begin rule); a set_policy whose buffers cannot be made
 * leaves a state with no policy that still runs (== a fresh state); a call
 * failing mid-chunk under h2o leaves the state refusing forwards until a
 * reset, after which it equals a fresh state; graphs stay on for h2o/tova
 * with pos=shift at capacity-sized caches. */
static void test_policy_failures(void) {
    int V = g_m32->cfg.n_vocab;
    float *a = malloc((size_t)41 * V * sizeof(float)), *b = malloc((size_t)41 * V * sizeof(float));
    CU_ASSERT_FATAL(a && b);
    char err[512];
    /* lazy_h2o: 3 tokens, all rolled back, then the run: == CPU */
    eng_fwd f[2];
    eng_policy *p[2];
    for (int g = 0; g < 2; g++) {
        p[g] = tu_policy(g_m32, "lazy_h2o:sink=2,heavy=8,recent=12,interval=5");
        CU_ASSERT_FATAL(p[g] && eng_fwd_init(&f[g], g_m32, g - 1, eng_policy_capacity(p[g], 200), 8, p[g], err,
                                             sizeof err) == ENG_OK);
        CU_ASSERT_FATAL(eng_fwd_forward(&f[g], g_prompt, 3, NULL, 0) == ENG_OK);
        CU_ASSERT_FATAL(eng_fwd_rollback(&f[g], 3) == ENG_OK);
        CU_ASSERT_FATAL(eng_fwd_forward(&f[g], g_prompt, g_np, g == 0 ? a : b, 0) == ENG_OK);
        for (int i = 0; i < 40; i++) {
            int32_t t = eng_argmax(a + (size_t)i * V, V);   /* both fed the CPU's tokens */
            CU_ASSERT_FATAL(eng_fwd_forward(&f[g], &t, 1, (g == 0 ? a : b) + (size_t)(i + 1) * V, 0) == ENG_OK);
        }
    }
    CU_ASSERT_STRING_EQUAL(eng_fwd_mode(&f[1]), "device");
    CU_ASSERT(g_real || !memcmp(a, b, (size_t)41 * V * sizeof(float)));
    for (int g = 0; g < 2; g++) {
        eng_fwd_free(&f[g]);
        eng_policy_free(p[g]);
    }
    if (g_real) goto out;

    /* set_policy(h2o), a run, reset, then set_policy(streaming, pos=shift) with its buffers failing */
    eng_gpu_state *gs = NULL, *fresh = NULL;
    eng_policy *h = tu_policy(g_m32, "h2o:sink=2,heavy=8,recent=12"), *st = tu_policy(g_m32, "streaming:sink=4,recent=20");
    CU_ASSERT_FATAL(h && st);
    CU_ASSERT_FATAL(eng_gpu_state_init(&gs, kn_cuda_load(), g_m32, 0, 100, 8, err, sizeof err) == ENG_OK);
    CU_ASSERT_FATAL(eng_gpu_state_init(&fresh, kn_cuda_load(), g_m32, 0, 100, 8, err, sizeof err) == ENG_OK);
    CU_ASSERT_FATAL(eng_gpu_state_set_policy(gs, h) == ENG_OK);
    run_dev(gs, a, 40);
    eng_gpu_state_reset(gs);
    mock_fail_after(0);
    eng_status rc = eng_gpu_state_set_policy(gs, st);
    mock_fail_after(-1);
    printf("\n    set_policy with its buffers failing: %s", eng_gpu_state_errmsg(gs));
    CU_ASSERT_EQUAL(rc, ENG_ERR_CUDA);
    CU_ASSERT_PTR_NULL(gs->policy);
    CU_ASSERT(!gs->h2o && !gs->tova && !gs->pos_shift && gs->recent < 0);
    run_dev(gs, a, 40);      /* no policy: the full cache, as a fresh state */
    run_dev(fresh, b, 40);
    CU_ASSERT(!memcmp(a, b, (size_t)41 * V * sizeof(float)));

    /* h2o: a failure in the middle of a chunk -> refused until a reset */
    eng_gpu_state_reset(gs);
    eng_gpu_state_reset(fresh);
    CU_ASSERT_FATAL(eng_gpu_state_set_policy(gs, h) == ENG_OK);
    run_dev(gs, a, 30);
    mock_fail_after(16);   /* an op in the layers of the next call (2 tokens: eager, not a graph replay) */
    int32_t t2[2] = {5, 6};
    rc = eng_gpu_forward(gs, t2, 2, a, 0);
    mock_fail_after(-1);
    CU_ASSERT_EQUAL(rc, ENG_ERR_CUDA);
    printf("\n    injected: %s", eng_gpu_state_errmsg(gs));
    CU_ASSERT_EQUAL(eng_gpu_forward(gs, t2, 1, a, 0), ENG_ERR_INVAL);
    printf("\n    after a failed step under h2o: %s", eng_gpu_state_errmsg(gs));
    CU_ASSERT(strstr(eng_gpu_state_errmsg(gs), "reset") != NULL);
    eng_gpu_state_reset(gs);
    CU_ASSERT_FATAL(eng_gpu_state_set_policy(fresh, h) == ENG_OK);
    run_dev(gs, a, 40);
    run_dev(fresh, b, 40);
    CU_ASSERT(!memcmp(a, b, (size_t)41 * V * sizeof(float)));
    eng_gpu_state_free(gs);
    eng_gpu_state_free(fresh);
    eng_policy_free(h);
    eng_policy_free(st);

    /* graphs at capacity-sized caches with pos=shift: one graph (the window never moves) */
    const char *specs[] = {"h2o:sink=4,heavy=252,recent=256,pos=shift", "tova:budget=512,pos=shift",
                           "streaming:sink=4,recent=508"};
    for (int i = 0; i < 3; i++) {
        eng_policy *q = tu_policy(g_m32, specs[i]);
        eng_gpu_state *g2 = NULL;
        CU_ASSERT_FATAL(q && eng_gpu_state_init(&g2, kn_cuda_load(), g_m32, 0, eng_policy_capacity(q, 4096), 8, err,
                                                sizeof err) == ENG_OK);
        CU_ASSERT_FATAL(eng_gpu_state_set_policy(g2, q) == ENG_OK);
        printf("\n    %-44s cap %d: graphs %s", specs[i], g2->cap, eng_gpu_state_graph_status(g2));
        CU_ASSERT(g2->graph_on == 1);
        eng_gpu_state_free(g2);
        eng_policy_free(q);
    }
out:
    free(a);
    free(b);
}

/* Greedy speculative decoding, CPU vs device (offload), policies on both levels. */
static void test_spec(void) {
    /* the draft: the small random model (rejects nearly everything), or the
     * target itself under a harsher policy (accepts some, rejects some) */
    const char *cases[][2] = {{"full", NULL}, {"h2o:sink=2,heavy=8,recent=12", "streaming:sink=4,recent=8"},
                              {"kivi:bits=2,group=8,residual=16", "window:recent=8"}};
    for (int c = 0; c < 3; c++) {
        const eng_model *dm = c ? g_m32 : g_draft;
        eng_ids out[2] = {{0}, {0}};
        eng_spec_stats st[2];
        for (int g = 0; g < 2; g++) {
            eng_spec_opts o;
            eng_spec_opts_default(&o);
            o.gamma = 4;
            o.gamma_max = 8;
            o.schedule = ENG_SPEC_HEURISTIC;
            o.gpu = g ? 0 : -1;
            eng_spec *sp = NULL;
            char err[1024];
            eng_status s = eng_spec_init(&sp, g_m32, dm, NULL, 128, &o, err, sizeof err);
            if (s != ENG_OK) printf("\n    spec init: %s", err);
            CU_ASSERT_FATAL(s == ENG_OK);
            eng_policy *pt = tu_policy(g_m32, cases[c][0]), *pd = cases[c][1] ? tu_policy(dm, cases[c][1]) : NULL;
            CU_ASSERT_FATAL(pt != NULL);
            CU_ASSERT_FATAL(eng_spec_set_policy(sp, 0, pt) == ENG_OK);
            if (pd) CU_ASSERT_FATAL(eng_spec_set_policy(sp, 1, pd) == ENG_OK);
            s = eng_spec_generate(sp, g_prompt, g_np, 48, &out[g], &st[g]);
            if (s != ENG_OK) printf("\n    generate: %s", eng_spec_errmsg(sp));
            CU_ASSERT(s == ENG_OK);
            eng_spec_free(sp);
            eng_policy_free(pt);
            eng_policy_free(pd);
        }
        printf("\n    spec %-32s cpu %zu tokens, %ld/%ld accepted; device %zu tokens, %ld/%ld accepted", cases[c][0],
               out[0].n, st[0].accepted, st[0].drafted, out[1].n, st[1].accepted, st[1].drafted);
        CU_ASSERT_EQUAL(out[0].n, 48);
        CU_ASSERT_EQUAL(out[1].n, 48);
        size_t same = 0;
        while (same < out[0].n && same < out[1].n && out[0].v[same] == out[1].v[same]) same++;
        printf(" (first %zu tokens equal)", same);
        if (g_real) {   /* a real device may break a near-tie of a random model differently; then it diverges */
            CU_ASSERT(same >= 40);
        } else {
            CU_ASSERT_EQUAL(same, 48);
            CU_ASSERT_EQUAL(st[0].accepted, st[1].accepted);
            CU_ASSERT_EQUAL(st[0].drafted, st[1].drafted);
        }
        CU_ASSERT_EQUAL(st[1].invariant_violations, 0);
        if (c) CU_ASSERT(st[0].accepted > 0 && st[0].accepted < st[0].drafted);
        eng_ids_free(&out[0]);
        eng_ids_free(&out[1]);
    }
}

static void test_errors(void) {
    eng_fwd f;
    char err[1024];
    setenv("KV_MOCK_DEVICES", "0", 1);
    CU_ASSERT_EQUAL(eng_fwd_init(&f, g_m32, 0, 32, 8, NULL, err, sizeof err), ENG_ERR_DEVICE);
    printf("\n    no device: %s", err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--gpu 0: no CUDA device available"));
    unsetenv("KV_MOCK_DEVICES");
    CU_ASSERT_EQUAL(eng_fwd_init(&f, g_m32, 3, 32, 8, NULL, err, sizeof err), ENG_ERR_DEVICE);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--gpu 3: no such device"));
    CU_ASSERT_PTR_NULL(f.cpu);
    CU_ASSERT_PTR_NULL(f.gpu);

    /* set_device: a device state with its own cache, a running state, another model */
    eng_policy *p = tu_policy(g_m32, "knorm:keep_ratio=0.9,prune_after=16");   /* an offload-mode policy */
    CU_ASSERT_FATAL(p != NULL);
    CU_ASSERT_FATAL(eng_fwd_init(&f, g_m32, 0, 64, 8, p, err, sizeof err) == ENG_OK);
    CU_ASSERT_FATAL(f.cpu != NULL && f.gpu != NULL);   /* offload mode */
    eng_gpu_state *own = NULL, *other = NULL;
    CU_ASSERT_FATAL(eng_gpu_state_init(&own, kn_cuda_load(), g_m32, 0, 16, 8, err, sizeof err) == ENG_OK);
    CU_ASSERT_FATAL(eng_gpu_state_init(&other, kn_cuda_load(), g_draft, 0, 0, 8, err, sizeof err) == ENG_OK);
    CU_ASSERT_EQUAL(eng_state_set_device(f.cpu, own), ENG_ERR_INVAL);
    CU_ASSERT_EQUAL(eng_state_set_device(f.cpu, other), ENG_ERR_INVAL);
    CU_ASSERT_EQUAL(eng_gpu_forward(other, g_prompt, 2, NULL, 0), ENG_ERR_INVAL);   /* no cache: offload only */
    CU_ASSERT_EQUAL(eng_fwd_forward(&f, g_prompt, 4, NULL, 0), ENG_OK);
    CU_ASSERT_EQUAL(eng_state_set_device(f.cpu, f.gpu), ENG_ERR_INVAL);            /* already running */
    eng_gpu_state_free(own);
    eng_gpu_state_free(other);

    /* a device op failing in the middle of an offload forward */
    int failed = 0;
    for (long k = 0; k < 40; k += 7) {
        eng_fwd_reset(&f);
        mock_fail_after(k);
        eng_status st = eng_fwd_forward(&f, g_prompt, g_np, f.logits, 0);
        mock_fail_after(-1);
        if (st == ENG_OK) continue;
        failed++;
        CU_ASSERT_EQUAL(st, ENG_ERR_CUDA);
        CU_ASSERT_PTR_NOT_NULL(strstr(eng_fwd_errmsg(&f), "gpu forward:"));
        if (k == 7) printf("\n    injected: %s", eng_fwd_errmsg(&f));
    }
    CU_ASSERT(failed >= 5);
    eng_fwd_reset(&f);   /* usable again after a reset */
    CU_ASSERT_EQUAL(eng_fwd_forward(&f, g_prompt, g_np, f.logits, 0), ENG_OK);
    eng_fwd_free(&f);
    eng_policy_free(p);
}

int main(void) {
    /* the mock library beside this binary, through the real loader; with
     * KV_REQUIRE_GPU=1 (make test-gpu) the real one on device 0 instead */
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0) return 1;
    exe[k] = 0;
    snprintf(g_mock, sizeof g_mock, "%s/libkvcuda_mock.so", dirname(exe));
    const char *req = getenv("KV_REQUIRE_GPU");
    g_real = req && !strcmp(req, "1");
    if (g_real) {
        if (!kn_cuda_load() || kn_cuda_device_count() <= 0) {
            printf("FAIL test_offload (device): KV_REQUIRE_GPU=1 but no device: %s\n", kn_cuda_unavailable_reason());
            return 1;
        }
    } else {
        setenv("KV_CUDA_LIB", g_mock, 1);
    }
    kn_set_threads(1);
    eng_load_opts o16 = {.keep_16bit = 1};
    char err[1024];
    g_m32 = tu_load_model("m64-f32");
    g_draft = tu_load_model("m32-f16");
    if (eng_model_load_ex(&g_m16, tu_data("models/m80-bf16"), &o16, err, sizeof err) != ENG_OK) g_m16 = NULL;
    g_np = tu_read_ids("golden/m64-f32/prompt_ids.txt", g_prompt, 256);
    if (!g_m32 || !g_draft || !g_m16 || g_np < 8 || !kn_cuda_load()) {
        printf("test_offload: fixtures or the mock library (%s) missing: %s\n", g_mock, kn_cuda_unavailable_reason());
        return 1;
    }
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite(g_real ? "offload (real device)" : "offload (mock device)", NULL, NULL);
    CU_add_test(s, "18 policies, fp32: offload logits and stats == CPU", test_policies_f32);
    CU_add_test(s, "18 policies, bf16 kept: offload logits and stats == CPU", test_policies_16);
    CU_add_test(s, "device window/streaming/h2o/tova over 300 steps (window rebases) == CPU", test_window_long);
    CU_add_test(s, "rollback of a call's tokens under device-cache policies == CPU", test_rollback_policies);
    CU_add_test(s, "greedy spec decoding with policies on the device == CPU", test_spec);
    if (!g_real) CU_add_test(s, "one device state, policies switched between sequences == fresh states", test_policy_switch);
    CU_add_test(s, "device-cache policies through rollback to 0, failed set_policy, failed step", test_policy_failures);
    if (!g_real) CU_add_test(s, "no device, no such device, set_device misuse, injected op failures", test_errors);
    int rc = tu_run();
    eng_model_free(g_m32);
    eng_model_free(g_m16);
    eng_model_free(g_draft);
    return rc;
}
