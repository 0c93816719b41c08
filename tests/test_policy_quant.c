/* test_policy_quant.c — the policies that change what is stored
 * (engine/policy_quant.c): kivi (quantized K/V with an fp32 residual) and
 * think (key channels pruned and really dropped).
 *
 *   quantizer    pol_quant_minmax against a naive min-max quantizer on
 *                random groups (codes, min, scale), error ≤ scale/2 per
 *                element, bit packing at strided positions;
 *   equivalence  residual ≥ sequence (kivi), recent ≥ prompt or ratio 0
 *                (think): logits bit-identical to no policy;
 *   reference    on a real model, what kivi stored after an exact prompt
 *                equals a naive quantization of the no-policy cache, and the
 *                next token's logits equal a no-policy state whose cache
 *                was replaced by those dequantized rows; think's kept
 *                channels equal a naive sort of the channel scores, the
 *                compacted rows equal the kept channels, and the next
 *                logits equal a no-policy state with the pruned channels
 *                zeroed;
 *   accounting   kv_bytes equals the held bytes counted independently, the
 *                ratio to a full fp32 cache is close to the theoretical one;
 *   contracts    no allocation per token, errors name the param, a kivi
 *                store outgrown fails with ENG_ERR_CAPACITY.
 * Model: tests/data/models/m64-f32 (2 layers, 2 heads, D 64, vocab 512). */
#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "kn.h"
#include "model.h"
#include "policy.h"
#include "policy_impl.h"
#include "testutil.h"

static eng_model *g_m;
static int32_t g_ids[320];

static uint64_t g_rng = 777;
static uint32_t rnd(void) {
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(g_rng >> 33);
}
static float frand(void) { return (float)rnd() / 2147483648.0f - 1.0f; }

static eng_policy *mk(const char *spec) { return tu_policy(g_m, spec); }
static eng_state *mk_state(eng_policy *p, int n, int n_batch) { return tu_state(g_m, p, n, n_batch); }

/* ------------------------------------------------------------ quantizer */

static void test_quantizer(void) {
    unsigned char packed[4096];
    int bad_code = 0, bad_err = 0, bad_pack = 0;
    for (int it = 0; it < 3000; it++) {
        int bits = 2 << (rnd() % 3), n = 1 + (int)(rnd() % 64), stride = 1 + (int)(rnd() % 3);
        float x[256];
        float amp = it % 7 == 0 ? 0.0f : (float)(1 + rnd() % 100);
        for (int i = 0; i < n * stride; i++) x[i] = amp * frand();
        memset(packed, 0xA5, sizeof packed);
        size_t first = rnd() % 64, cs = 1 + rnd() % 4;
        float mn, sc;
        pol_quant_minmax(x, n, (size_t)stride, bits, packed, first, cs, &mn, &sc);
        // naive: min/max, scale, nearest code with ties to even
        float lo = x[0], hi = x[0];
        for (int i = 0; i < n; i++) {
            lo = fminf(lo, x[i * stride]);
            hi = fmaxf(hi, x[i * stride]);
        }
        float qmax = (float)((1 << bits) - 1), rs = (hi - lo) / qmax;
        if (mn != lo || sc != rs) bad_code++;
        for (int i = 0; i < n; i++) {
            float t = rs > 0 ? (x[i * stride] - lo) / rs : 0.0f;
            float c = floorf(t);
            if (t - c > 0.5f || (t - c == 0.5f && fmodf(c, 2.0f) != 0.0f)) c += 1.0f;
            c = fminf(fmaxf(c, 0.0f), qmax);
            unsigned got = pol_code_get(packed, first + (size_t)i * cs, bits);
            if (got != (unsigned)c) bad_code++;
            float deq = (float)got * sc + mn;
            if (fabsf(deq - x[i * stride]) > sc / 2 + 1e-6f * (fabsf(x[i * stride]) + fabsf(mn) + 1e-30f)) bad_err++;
        }
        // codes never touch bits outside their own slots
        for (size_t e = 0; e < first * (size_t)bits / 8; e++) if (packed[e] != 0xA5) bad_pack++;
    }
    if (bad_code || bad_err || bad_pack) printf("\n    codes %d, error bound %d, packing %d mismatches", bad_code, bad_err, bad_pack);
    CU_ASSERT_EQUAL(bad_code, 0);
    CU_ASSERT_EQUAL(bad_err, 0);
    CU_ASSERT_EQUAL(bad_pack, 0);
}

/* ------------------------------------------------------------ equivalence */

static int run_logits(eng_policy *p, int n, int n_batch, int decode, float *lg) {
    eng_state *s = mk_state(p, n, n_batch);
    if (!s) return -1;
    int V = g_m->cfg.n_vocab, rc = 0;
    if (decode) {
        for (int t = 0; t < n && !rc; t++) rc = eng_forward(s, g_ids + t, 1, lg + (size_t)t * V, 0) != ENG_OK;
    } else {
        rc = eng_forward(s, g_ids, n, lg, 1) != ENG_OK;
    }
    eng_state_free(s);
    return rc;
}

static void test_equivalence(void) {
    int n = 120, V = g_m->cfg.n_vocab;
    const char *specs[] = {"kivi:residual=128", "kivi:bits=4,group=16,residual=160", "think:recent=120",
                           "think:ratio=0", "think:ratio=0.01,window=8"};
    float *ref = malloc((size_t)n * V * sizeof(float)), *got = malloc((size_t)n * V * sizeof(float));
    for (int mode = 0; mode < 2; mode++) {
        CU_ASSERT_FATAL(run_logits(NULL, n, 13, mode, ref) == 0);
        for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
            eng_policy *p = mk(specs[i]);
            CU_ASSERT_FATAL(p != NULL);
            CU_ASSERT_FATAL(run_logits(p, n, 13, mode, got) == 0);
            int same = memcmp(ref, got, (size_t)n * V * sizeof(float)) == 0;
            if (!same) printf("\n    %s (%s): logits differ from no policy", specs[i], mode ? "decode" : "prefill");
            CU_ASSERT(same);
            eng_policy_stats st;
            eng_policy_stats_get(p, &st);
            CU_ASSERT_EQUAL(st.triggered, 0);
            CU_ASSERT_EQUAL(st.cache_tokens_max, n);
            CU_ASSERT_EQUAL(st.kv_bytes, (int64_t)n * 2 * g_m->cfg.head_dim * 4 * g_m->cfg.n_layer * g_m->cfg.n_head);
            eng_policy_free(p);
        }
    }
    free(ref);
    free(got);
}

/* ------------------------------------------------------------ kivi reference */

/* naive quantize-dequantize of x[i·stride], i < n, in place; returns 0 when
 * the codes/min/scale equal what the store holds (codes at first + i·cs) */
static int naive_qdq(float *x, int n, int stride, int bits, const unsigned char *codes, size_t first, size_t cs,
                     float mn_got, float sc_got) {
    float lo = x[0], hi = x[0];
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, x[i * stride]);
        hi = fmaxf(hi, x[i * stride]);
    }
    float qmax = (float)((1 << bits) - 1), sc = (hi - lo) / qmax;
    int bad = lo != mn_got || sc != sc_got;
    for (int i = 0; i < n; i++) {
        float c = sc > 0 ? rintf((x[i * stride] - lo) / sc) : 0.0f;
        c = fminf(fmaxf(c, 0.0f), qmax);
        bad += pol_code_get(codes, first + (size_t)i * cs, bits) != (unsigned)c;
        x[i * stride] = c * sc + lo;
    }
    return bad;
}

static void kivi_reference(const char *spec, int bits, int G, int R) {
    // n + 1 <= residual + 64: the prompt fits the fp32 residual and runs as one exact chunk
    int n = 70, L = g_m->cfg.n_layer, NH = g_m->cfg.n_head, D = g_m->cfg.head_dim, V = g_m->cfg.n_vocab;
    eng_policy *p = mk(spec);
    CU_ASSERT_FATAL(p != NULL);
    eng_state *s = mk_state(p, n + 1, n), *r = mk_state(NULL, n + 1, n);
    CU_ASSERT_FATAL(s && r);
    // the prompt in one chunk is exact: nothing is quantized before the next step starts
    CU_ASSERT_FATAL(eng_forward(s, g_ids, n, NULL, 0) == ENG_OK);
    CU_ASSERT_FATAL(eng_forward(r, g_ids, n, NULL, 0) == ENG_OK);
    CU_ASSERT_EQUAL(p->nq[0], 0);
    float *lg = malloc((size_t)V * sizeof(float)), *lr = malloc((size_t)V * sizeof(float));
    CU_ASSERT_FATAL(eng_forward(s, g_ids + n, 1, lg, 0) == ENG_OK);
    int nqk = n - n % R, nqv = n - R, bad = 0;
    size_t N = (size_t)p->n_max, cb = (((size_t)N * D * bits + 7) / 8 + 15) & ~(size_t)15;
    for (int l = 0; l < L; l++) {
        CU_ASSERT_EQUAL(p->nq[l], nqk);
        CU_ASSERT_EQUAL(p->nq[L + l], nqv);
        for (int h = 0; h < NH; h++) {
            size_t lh = (size_t)l * NH + h;
            float *K = eng_kvcache_k(&r->kv, l) + (size_t)h * r->kv.cap * D;
            float *Vv = eng_kvcache_v(&r->kv, l) + (size_t)h * r->kv.cap * D;
            CU_ASSERT_EQUAL(pol_held(p, l)[h], n + 1 - nqv);   // the fp32 residual: R values + the new token
            CU_ASSERT_EQUAL(eng_kvcache_pos(&s->kv, l, h)[0], nqv);
            for (int g = 0; g < nqk / G; g++)
                for (int c = 0; c < D; c++)
                    bad += naive_qdq(K + (size_t)g * G * D + c, G, D, bits, p->qk + lh * cb, (size_t)g * G * D + c,
                                     (size_t)D, p->k_mn[(lh * (N / G) + g) * D + c], p->k_sc[(lh * (N / G) + g) * D + c]);
            for (int j = 0; j < nqv; j++)
                for (int g = 0; g < D / G; g++)
                    bad += naive_qdq(Vv + (size_t)j * D + g * G, G, 1, bits, p->qv + lh * cb, (size_t)j * D + g * G, 1,
                                     p->v_mn[(lh * N + j) * (D / G) + g], p->v_sc[(lh * N + j) * (D / G) + g]);
        }
    }
    if (bad) printf("\n    %s: %d stored codes/params differ from the naive quantizer", spec, bad);
    CU_ASSERT_EQUAL(bad, 0);
    // r's cache now holds the naive dequantized rows: the next token must give the same logits
    CU_ASSERT_FATAL(eng_forward(r, g_ids + n, 1, lr, 0) == ENG_OK);
    int same = memcmp(lg, lr, (size_t)V * sizeof(float)) == 0;
    if (!same) printf("\n    %s: logits differ from attention over naive dequantized rows", spec);
    CU_ASSERT(same);
    eng_state_free(s);
    eng_state_free(r);
    eng_policy_free(p);
    free(lg);
    free(lr);
}

static void test_kivi_reference(void) {
    kivi_reference("kivi:bits=2,group=32,residual=32", 2, 32, 32);
    kivi_reference("kivi:bits=4,group=16,residual=48", 4, 16, 48);
    kivi_reference("kivi:bits=8,group=8,residual=8", 8, 8, 8);
}

/* ------------------------------------------------------------ kivi accounting */

static void test_kivi_accounting(void) {
    int n = 200, L = g_m->cfg.n_layer, NH = g_m->cfg.n_head, D = g_m->cfg.head_dim;
    struct { const char *spec; int bits, G, R; } cases[] = {
        {"kivi", 2, 32, 32}, {"kivi:bits=4,group=32,residual=64", 4, 32, 64}, {"kivi:bits=2,group=16,residual=48", 2, 16, 48}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eng_policy *p = mk(cases[i].spec);
        eng_state *s = mk_state(p, n, 16);
        CU_ASSERT_FATAL(s != NULL);
        for (int t = 0; t < n; t++) CU_ASSERT_FATAL(eng_forward(s, g_ids + t, 1, NULL, 0) == ENG_OK);
        eng_policy_stats st;
        eng_policy_stats_get(p, &st);
        // independent count at the peak (all n tokens): packed codes + fp32 (min, scale) + fp32 residual
        // (the peak over steps: the fp32 key residual drops to 0 at every multiple of R)
        int bits = cases[i].bits, G = cases[i].G, R = cases[i].R;
        int64_t want = 0, full = (int64_t)n * D * 8 * L * NH;
        for (int m = 1; m <= n; m++) {
            int64_t qk = m / R * R, qv = m > R ? m - R : 0;
            double per = (double)qk * D * bits / 8 + (double)qk / G * D * 8 + (double)(m - qk) * D * 4 +
                         (double)qv * D * bits / 8 + (double)qv * (D / G) * 8 + (double)(m - qv) * D * 4;
            if ((int64_t)(per * L * NH) > want) want = (int64_t)(per * L * NH);
        }
        CU_ASSERT_EQUAL(st.kv_bytes, want);
        double ratio = (double)st.kv_bytes / (double)full;
        double theory = ((double)bits + 64.0 / G) / 32.0;   // every element quantized, fp32 min+scale per group
        printf("\n    %-36s kv_bytes %lld (%.3f of full; asymptotic %.3f), allocated %lld vs full %lld", cases[i].spec,
               (long long)st.kv_bytes, ratio, theory, (long long)st.kv_bytes_alloc, (long long)full);
        CU_ASSERT(ratio > theory && ratio < theory + (double)(2 * R + R) / n);
        CU_ASSERT(st.kv_bytes_alloc < full);
        CU_ASSERT_EQUAL(st.cache_tokens_max, n);
        CU_ASSERT_EQUAL(st.triggered, 1);
        CU_ASSERT_EQUAL(st.evictions, 0);
        CU_ASSERT(st.cache_tokens_max <= n);
        CU_ASSERT(s->kv.cap <= R + ENG_POLICY_SLACK);
        eng_state_free(s);
        eng_policy_free(p);
    }
}

/* ------------------------------------------------------------ think reference */

typedef struct chs { double s; int c; } chs;
static int chs_cmp(const void *a, const void *b) {
    const chs *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return x->c - y->c;
}

static void think_reference(const char *spec, double ratio, int recent, int w) {
    int n = 100, L = g_m->cfg.n_layer, NH = g_m->cfg.n_head, D = g_m->cfg.head_dim, V = g_m->cfg.n_vocab;
    size_t C = (size_t)g_m->cfg.n_embd;
    eng_policy *p = mk(spec);
    CU_ASSERT_FATAL(p != NULL);
    eng_state *s = mk_state(p, n + 1, 32), *r = mk_state(NULL, n + 1, 32);
    CU_ASSERT_FATAL(s && r);
    CU_ASSERT_FATAL(eng_forward(s, g_ids, n, NULL, 0) == ENG_OK);
    CU_ASSERT_FATAL(eng_forward(r, g_ids, n, NULL, 0) == ENG_OK);
    int prune = (int)(D * ratio), Dk = D - prune, rows = n - recent, bad_set = 0, bad_rows = 0;
    for (int l = 0; l < L; l++) {
        CU_ASSERT_EQUAL(p->nq[l], rows);
        CU_ASSERT_EQUAL(p->wn[l], w);
        for (int h = 0; h < NH; h++) {
            float *K = eng_kvcache_k(&r->kv, l) + (size_t)h * r->kv.cap * D;
            const float *Q = p->winq + (size_t)l * w * C + (size_t)h * D;
            chs v[512];
            for (int c = 0; c < D; c++) {
                double qs = 0, ks = 0;
                for (int i = 0; i < w; i++) qs += (double)Q[i * C + c] * Q[i * C + c];
                for (int j = 0; j < n; j++) ks += (double)K[(size_t)j * D + c] * K[(size_t)j * D + c];
                v[c].s = qs / w * (ks / n);
                v[c].c = c;
            }
            qsort(v, (size_t)D, sizeof v[0], chs_cmp);
            unsigned char kept[512] = {0};
            for (int i = 0; i < Dk; i++) kept[v[i].c] = 1;
            const int32_t *ch = p->chan + ((size_t)l * NH + h) * D;
            for (int i = 0; i < Dk; i++) bad_set += !kept[ch[i]] || (i && ch[i] <= ch[i - 1]);
            CU_ASSERT_EQUAL(p->n_keep[l * NH + h], Dk);
            const float *Ks = eng_kvcache_k(&s->kv, l) + (size_t)h * s->kv.cap * D;
            for (int j = 0; j < rows; j++)
                for (int i = 0; i < Dk; i++) bad_rows += Ks[(size_t)j * Dk + i] != K[(size_t)j * D + ch[i]];
            // the naive counterpart: the pruned channels of the old rows are 0 in r's cache
            for (int j = 0; j < rows; j++)
                for (int c = 0; c < D; c++)
                    if (!kept[c]) K[(size_t)j * D + c] = 0.0f;
        }
    }
    if (bad_set || bad_rows) printf("\n    %s: kept channels %d, compacted rows %d mismatches", spec, bad_set, bad_rows);
    CU_ASSERT_EQUAL(bad_set, 0);
    CU_ASSERT_EQUAL(bad_rows, 0);
    float *lg = malloc((size_t)V * 4 * sizeof(float)), *lr = malloc((size_t)V * 4 * sizeof(float));
    CU_ASSERT_FATAL(eng_forward(s, g_ids + n, 1, lg, 0) == ENG_OK);
    CU_ASSERT_FATAL(eng_forward(r, g_ids + n, 1, lr, 0) == ENG_OK);
    int same = memcmp(lg, lr, (size_t)V * sizeof(float)) == 0;
    if (!same) printf("\n    %s: logits differ from a full cache with the pruned channels zeroed", spec);
    CU_ASSERT(same);
    eng_policy_stats st;
    eng_policy_stats_get(p, &st);
    // peak: the 96 unpruned prompt tokens after the third 32-token chunk, or the pruned cache + 1 token
    int64_t want = (int64_t)L * NH * (((int64_t)rows * Dk + (int64_t)(n + 1 - rows) * D + (int64_t)(n + 1) * D) * 4);
    int64_t early = (int64_t)L * NH * 96 * D * 8;
    if (early > want) want = early;
    if (st.kv_bytes != want) printf("\n    %s: kv_bytes %lld, want %lld", spec, (long long)st.kv_bytes, (long long)want);
    CU_ASSERT_EQUAL(st.kv_bytes, want);
    CU_ASSERT_EQUAL(st.triggered, 1);
    eng_state_free(s);
    eng_state_free(r);
    eng_policy_free(p);
    free(lg);
    free(lr);
}

static void test_think_reference(void) {
    think_reference("think:ratio=0.5,recent=20,window=8", 0.5, 20, 8);
    think_reference("think", 0.4, 32, 32);
    think_reference("think:ratio=0.9,recent=0,window=1", 0.9, 0, 1);
}

/* ------------------------------------------------------------ contracts */

static void test_no_alloc(void) {
    const char *specs[] = {"kivi", "kivi:bits=4,group=16,residual=16", "think:ratio=0.5,recent=8,window=8"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        eng_policy *p = mk(specs[i]);
        eng_state *s = mk_state(p, 120, 32);
        CU_ASSERT_FATAL(s != NULL);
        CU_ASSERT_FATAL(eng_forward(s, g_ids, 40, NULL, 0) == ENG_OK);
        unsigned long a0 = eng_alloc_count();
        for (int t = 40; t < 120; t++) CU_ASSERT_FATAL(eng_forward(s, g_ids + t, 1, s->logits, 0) == ENG_OK);
        eng_policy_stats st;
        eng_policy_stats_get(p, &st);
        CU_ASSERT_EQUAL(eng_alloc_count(), a0);
        CU_ASSERT_EQUAL(st.triggered, 1);
        eng_state_free(s);
        eng_policy_free(p);
    }
}

static void test_errors(void) {
    char err[256], name[32], buf[128];
    eng_paramset ps;
    eng_policy *p;
    const char *bad[] = {"kivi:bits=3", "kivi:bits=16", "kivi:group=48", "kivi:residual=40", "kivi:pos=shift",
                         "think:ratio=1", "think:ratio=-0.1", "think:window=0", "think:recent=-1", "think:budget=4"};
    const char *key[] = {"'bits'", "'bits'", "'group'", "'residual'", "'pos'",
                         "'ratio'", "'ratio'", "'window'", "'recent'", "'budget'"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CU_ASSERT_FATAL(eng_policy_parse_spec(bad[i], &ps, name, sizeof name, buf, sizeof buf, err, sizeof err) == ENG_OK);
        eng_status st = eng_policy_create(&p, name, &ps, &g_m->cfg, err, sizeof err);
        if (st != ENG_ERR_INVAL || !strstr(err, key[i])) printf("\n    %s: %d %s", bad[i], (int)st, err);
        CU_ASSERT_EQUAL(st, ENG_ERR_INVAL);
        CU_ASSERT(strstr(err, key[i]) != NULL);
    }
    p = mk("kivi:bits=4");
    CU_ASSERT_STRING_EQUAL(eng_policy_describe(p), "bits=4,group=32,residual=32");
    CU_ASSERT_EQUAL(eng_policy_capacity(p, 10000), 32 + ENG_POLICY_SLACK);
    // a store sized for 96 tokens (a multiple of group) refuses the 97th instead of overrunning
    eng_state *s = mk_state(p, 96, 8);
    CU_ASSERT_FATAL(s != NULL);
    CU_ASSERT_EQUAL(eng_forward(s, g_ids, 96, NULL, 0), ENG_OK);
    CU_ASSERT_EQUAL(eng_forward(s, g_ids + 96, 1, NULL, 0), ENG_ERR_CAPACITY);
    // reset starts a new sequence with an empty store
    eng_state_reset(s);
    CU_ASSERT_EQUAL(eng_forward(s, g_ids, 50, NULL, 0), ENG_OK);
    CU_ASSERT_EQUAL(p->nq[g_m->cfg.n_layer] + pol_held(p, 0)[0], 50);
    eng_state_free(s);
    eng_policy_free(p);
    p = mk("think");
    CU_ASSERT_STRING_EQUAL(eng_policy_describe(p), "ratio=0.4,recent=32,window=32");
    CU_ASSERT_EQUAL(eng_policy_at_prefill(p), 1);
    eng_policy_free(p);
}

int main(void) {
    char err[1024];
    eng_load_opts o = {.keep_16bit = 0};
    if (eng_model_load_ex(&g_m, tu_data("models/m64-f32"), &o, err, sizeof err) != ENG_OK) {
        printf("load m64-f32: %s\n", err);
        return 1;
    }
    for (size_t i = 0; i < sizeof g_ids / sizeof g_ids[0]; i++) g_ids[i] = (int32_t)(rnd() % (uint32_t)g_m->cfg.n_vocab);
    kn_set_threads(2);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("policy_quant", NULL, NULL);
    CU_add_test(s, "quantizer == naive min-max, error <= scale/2, packing", test_quantizer);
    CU_add_test(s, "residual/recent covers everything: logits bit-identical", test_equivalence);
    CU_add_test(s, "kivi: store == naive quantization; logits == naive dequantized cache", test_kivi_reference);
    CU_add_test(s, "kivi: kv_bytes == held bytes, ratio vs full", test_kivi_accounting);
    CU_add_test(s, "think: kept channels == naive; logits == zeroed channels", test_think_reference);
    CU_add_test(s, "no allocation per token", test_no_alloc);
    CU_add_test(s, "params, describe, capacity, store outgrown", test_errors);
    int rc = tu_run();
    eng_model_free(g_m);
    return rc;
}
