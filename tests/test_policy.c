/* test_policy.c — the KV-cache policy framework (engine/policy*.c).
 *
 *   equivalence   every policy whose budget is never reached gives logits
 *                 bit-identical to no policy (decode and chunked prefill),
 *                 pos=shift included, and says triggered = 0;
 *   reference     the selection helpers against naive sort-based versions
 *                 on random inputs, and, on a real model, the slots each
 *                 policy kept at every step against a naive selection from a
 *                 snapshot of the cache (and scores) taken before the step;
 *   properties    sizes never exceed budgets, sinks and the recent window
 *                 stay, evictions are counted, prefill policies compress to
 *                 their budgets, pyramidkv's layers differ;
 *   pos=shift     streaming with pos=shift equals a naive recomputation that
 *                 keeps pre-RoPE keys and rotates them by cache index;
 *   contracts     no allocation per token, parameter and spec errors.
 * Model: tests/data/models/m64-f32 (2 layers, 2 heads, D 64, 16 rotary dims,
 * vocab 512), token ids from a fixed LCG. */
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
static int32_t g_ids[256];

static uint64_t g_rng = 12345;
static uint32_t rnd(void) {
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(g_rng >> 33);
}

static eng_policy *mk(const char *spec) { return tu_policy(g_m, spec); }
static eng_state *mk_state(eng_policy *p, int n, int n_batch) { return tu_state(g_m, p, n, n_batch); }

/* ------------------------------------------------------------ (a) equivalence */

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

static const char *g_big[] = {
    "full", "full:pos=shift", "window:recent=200", "window:recent=200,pos=shift",
    "streaming:sink=4,recent=196", "streaming:sink=4,recent=196,pos=original",
    "h2o:sink=2,heavy=50,recent=150", "h2o:heavy=50,recent=150,pos=shift", "lazy_h2o:heavy=50,recent=150,interval=3",
    "tova:budget=200", "knorm:keep_ratio=1,prune_after=0", "l2:prune_after=1000", "snapkv:budget=200,window=8",
    "pyramidkv:budget=200", "pyramidkv:budget=200,pos=shift", "sepllm:init=4,sep_cap=8,local=100,cache=200",
    "fix_size_l2:size=200,skip_layers=none", "fix_size_l2:size=200,strategy=random,keep_ratio=0.3,pos=shift",
    "hybrid:sink=4,heavy=50,recent=146", "unified:sink=4,sep=8,heavy=40,recent=148",
    "unified:sink=4,sep=8,heavy=40,recent=100,interval=9,pos=shift", "cam:sink=4,recent=196",
};

static void test_equivalence(void) {
    int n = 120, V = g_m->cfg.n_vocab;
    float *ref = malloc((size_t)n * V * sizeof(float)), *got = malloc((size_t)n * V * sizeof(float));
    for (int mode = 0; mode < 2; mode++) {
        CU_ASSERT_FATAL(run_logits(NULL, n, 13, mode, ref) == 0);
        for (size_t i = 0; i < sizeof g_big / sizeof g_big[0]; i++) {
            eng_policy *p = mk(g_big[i]);
            CU_ASSERT_FATAL(p != NULL);
            CU_ASSERT_FATAL(run_logits(p, n, 13, mode, got) == 0);
            int same = memcmp(ref, got, (size_t)n * V * sizeof(float)) == 0;
            if (!same) printf("\n    %s (%s): logits differ from no policy", g_big[i], mode ? "decode" : "prefill");
            CU_ASSERT(same);
            eng_policy_stats st;
            eng_policy_stats_get(p, &st);
            CU_ASSERT_EQUAL(st.triggered, 0);
            CU_ASSERT_EQUAL(st.evictions, 0);
            CU_ASSERT_EQUAL(st.cache_tokens_max, n);
            if (p->score && mode == 1) {
                // h2o: each query's probabilities sum to 1, so nothing evicted means sum(acc) == n;
                // tova: the head-mean row of the last query sums to 1
                int h2o = strstr(g_big[i], "h2o") || strstr(g_big[i], "unified") || strstr(g_big[i], "cam");
                for (int l = 0; l < g_m->cfg.n_layer; l++) {
                    double sum = 0;
                    for (int j = 0; j < n; j++) sum += p->score[(size_t)l * g_m->cfg.n_head * p->cap + j];
                    CU_ASSERT(fabs(sum - (h2o ? n : 1)) < 1e-3 * (h2o ? n : 1));
                }
            }
            eng_policy_free(p);
        }
    }
    free(ref);
    free(got);
}

/* ------------------------------------------------------------ (b) reference: pure helpers */

typedef struct rk { float s; int32_t i; } rk;
static int rk_cmp(const void *a, const void *b) {
    const rk *x = a, *y = b;
    float xs = isnan(x->s) ? -INFINITY : x->s, ys = isnan(y->s) ? -INFINITY : y->s;
    if (xs != ys) return xs > ys ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}
static int i32_cmp(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* naive: the k best of idx[0..m) by score (sort everything), ascending */
static int naive_topk(const float *score, const int32_t *idx, int m, int k, int32_t *out) {
    if (k > m) k = m;
    if (k < 0) k = 0;
    rk *v = malloc((size_t)(m ? m : 1) * sizeof *v);
    for (int i = 0; i < m; i++) v[i] = (rk){score[idx[i]], idx[i]};
    qsort(v, (size_t)m, sizeof *v, rk_cmp);
    for (int i = 0; i < k; i++) out[i] = v[i].i;
    qsort(out, (size_t)k, sizeof *out, i32_cmp);
    free(v);
    return k;
}

static int same_set(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0;
}

static void test_helpers(void) {
    enum { M = 400 };
    float sc[M], out[M], ref[M];
    int32_t idx[M], a[M], b[M], scratch[M];
    int bad = 0;
    for (int it = 0; it < 3000; it++) {
        int n = 1 + (int)(rnd() % M);
        int ties = rnd() % 3 == 0;
        for (int j = 0; j < n; j++) sc[j] = ties ? (float)(rnd() % 4) : (float)rnd() / 4294967296.0f;
        if (rnd() % 10 == 0) sc[rnd() % n] = NAN;
        // pol_topk over a random ascending subset
        int m = 0;
        for (int j = 0; j < n; j++) if (rnd() % 4) idx[m++] = j;
        int k = m ? (int)(rnd() % (m + 1)) : 0;
        if (rnd() % 2 && m > 8) k = m - 1 - (int)(rnd() % 8);   // the drop-a-few path
        int na = pol_topk(sc, idx, m, k, a, scratch), nb = naive_topk(sc, idx, m, k, b);
        bad += !same_set(a, na, b, nb);
        // sink + recent
        int sink = (int)(rnd() % 8), recent = 1 + (int)(rnd() % 64);
        na = pol_select_sink_recent(n, sink, recent, a);
        nb = 0;
        for (int j = 0; j < n; j++) if (j < sink || j >= n - recent) b[nb++] = j;
        bad += !same_set(a, na, b, nb);
        // h2o
        int heavy = (int)(rnd() % 32);
        na = pol_select_h2o(sc, n, sink, heavy, recent, a, scratch);
        if (sink + heavy + recent >= n) {
            nb = n;
            for (int j = 0; j < n; j++) b[j] = j;
        } else {
            int mid = 0;
            for (int j = sink; j < n - recent; j++) idx[mid++] = j;
            int32_t hv[M];
            int nh = naive_topk(sc, idx, mid, heavy, hv);
            nb = 0;
            for (int j = 0; j < n; j++) {
                int in = j < sink || j >= n - recent;
                for (int q = 0; q < nh && !in; q++) in = hv[q] == j;
                if (in) b[nb++] = j;
            }
        }
        bad += !same_set(a, na, b, nb);
        // pooling: explicit padded array
        int kernel = 1 + 2 * (int)(rnd() % 4), use_max = rnd() % 2, pad = kernel / 2;
        for (int j = 0; j < n; j++) if (isnan(sc[j])) sc[j] = 0.5f;
        pol_pool1d(sc, n, kernel, use_max, out);
        for (int i = 0; i < n; i++) {
            float acc = use_max ? -INFINITY : 0.0f;
            for (int q = i - pad; q <= i + pad; q++) {
                float v = q < 0 || q >= n ? (use_max ? -INFINITY : 0.0f) : sc[q];
                acc = use_max ? fmaxf(acc, v) : acc + v;
            }
            ref[i] = use_max ? acc : acc / (float)kernel;
            if (fabsf(ref[i] - out[i]) > 1e-6f * (1 + fabsf(ref[i]))) bad++;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    // PyramidKV schedule: a worked example (KVF formula, doc b.4) and its cases
    CU_ASSERT_EQUAL(pol_pyramid_cap(512, 8, 20, 32, 0, 4000), 983);    // min 25, max 983, steps 30
    CU_ASSERT_EQUAL(pol_pyramid_cap(512, 8, 20, 32, 31, 4000), 53);
    CU_ASSERT_EQUAL(pol_pyramid_cap(512, 8, 20, 32, 5, 900), 504);     // q_len < 2(B - w): uniform
    CU_ASSERT_EQUAL(pol_pyramid_cap(512, 8, 1000, 32, 0, 1010), 1002);   // max clipped to q_len - w, min 6
    CU_ASSERT_EQUAL(pol_pyramid_cap(512, 8, 1000, 32, 31, 1010), 10);    // steps (1002 - 6) // 31 = 32
}

/* ------------------------------------------------------------ (b) reference: kept sets on the model */

typedef struct snapshot {
    int L, NH, D, cap;
    int32_t *n, *pos;   /* (L, NH), (L, NH, cap) */
    float *score, *key; /* (L, NH, cap), (L, NH, cap, D) */
} snapshot;

static void snap_take(snapshot *z, const eng_state *s, const eng_policy *p) {
    const eng_kvcache *kv = &s->kv;
    z->L = kv->n_layer; z->NH = kv->n_head; z->D = kv->head_dim; z->cap = kv->cap;
    size_t LH = (size_t)z->L * z->NH, slots = LH * z->cap;
    if (!z->n) {
        z->n = malloc(LH * sizeof(int32_t));
        z->pos = malloc(slots * sizeof(int32_t));
        z->score = malloc(slots * sizeof(float));
        z->key = malloc(slots * z->D * sizeof(float));
    }
    memcpy(z->n, kv->n, LH * sizeof(int32_t));
    memcpy(z->pos, kv->pos, slots * sizeof(int32_t));
    for (int l = 0; l < z->L; l++)   // through the accessor: a sliding layer's slot 0 is base rows in
        for (int h = 0; h < z->NH; h++)
            memcpy(z->key + ((size_t)l * z->NH + h) * z->cap * z->D, eng_kvcache_k(kv, l) + (size_t)h * z->cap * z->D,
                   (size_t)eng_kvcache_n(kv, l)[h] * z->D * sizeof(float));
    if (p->score) memcpy(z->score, p->score, slots * sizeof(float));
}

static void snap_free(snapshot *z) { free(z->n); free(z->pos); free(z->score); free(z->key); }

static int g_nsep[16];   /* (L, NH) the naive sepllm's separator-region size */

/* naive choice of slots for (l, h) holding n, as the policy's doc states it */
static int naive_keep(const eng_policy *p, const snapshot *z, int l, int h, int64_t steps, int32_t *keep) {
    const char *nm = p->ops->name;
    int n = z->n[l * z->NH + h];
    if (!strcmp(nm, "sepllm")) {
        int k = 0, *ns = &g_nsep[l * z->NH + h];
        if (n <= p->cache) { for (int j = 0; j < n; j++) keep[j] = j; return n; }
        int32_t cand[512];
        int nc = 0;
        for (int j = 0; j < p->init; j++) keep[k++] = j;
        for (int j = p->init; j < n - p->local; j++) {
            int32_t tok = g_ids[z->pos[((size_t)l * z->NH + h) * z->cap + j]];
            int sep = 0;
            for (int q = 0; q < p->n_seps; q++) sep |= p->seps[q] == tok;
            if (j < p->init + *ns || sep) cand[nc++] = j;
        }
        int from = nc > p->sep_cap ? nc - p->sep_cap : 0;   // the newest sep_cap
        for (int q = from; q < nc; q++) keep[k++] = cand[q];
        *ns = nc - from;
        for (int j = n - p->local; j < n; j++) keep[k++] = j;
        return k;
    }
    const float *sc = z->score + ((size_t)l * z->NH + h) * z->cap;
    int32_t idx[512];
    int m = 0, k = 0;
    float norm[512];
    const float *K = z->key + ((size_t)l * z->NH + h) * z->cap * z->D;
    for (int j = 0; j < n; j++) {
        float ss = 0.0f;
        for (int d = 0; d < z->D; d++) ss += K[(size_t)j * z->D + d] * K[(size_t)j * z->D + d];
        norm[j] = -sqrtf(ss);
    }
    if (!strcmp(nm, "fix_size_l2")) {   // keep_low / keep_high only (random: test_fix_size_random)
        if (p->skip[l] || n <= p->budget) { for (int j = 0; j < n; j++) keep[j] = j; return n; }
        int pr = (int)(p->budget * p->keep_ratio) < n ? (int)(p->budget * p->keep_ratio) : n;
        for (int j = 0; j < n - pr; j++) { idx[m++] = j; if (p->strategy == 1) norm[j] = -norm[j]; }
        k = naive_topk(norm, idx, m, p->budget - pr, keep);
        for (int j = n - pr; j < n; j++) keep[k++] = j;
        return k;
    }
    if (!strcmp(nm, "hybrid")) {
        if (p->skip[l] || n <= p->sink + p->heavy + p->recent) { for (int j = 0; j < n; j++) keep[j] = j; return n; }
        nm = "h2o";
        sc = norm;
    }
    if (!strcmp(nm, "unified")) {
        int b = p->sink + p->sep_cap + p->heavy + p->recent, ns = 0, hi = n - p->recent;
        int due = p->interval == 1 || (steps > 0 && steps % p->interval == 0) || n + 1 > b + p->interval - 1;
        if (!due || n <= b) { for (int j = 0; j < n; j++) keep[j] = j; return n; }
        char in[512] = {0};
        for (int j = hi - 1; j >= p->sink && ns < p->sep_cap; j--) {
            int32_t tok = g_ids[z->pos[((size_t)l * z->NH + h) * z->cap + j]];
            for (int q = 0; q < p->n_seps && !in[j]; q++) in[j] = p->seps[q] == tok;
            ns += in[j];
        }
        for (int j = p->sink; j < hi; j++) if (!in[j]) idx[m++] = j;
        int32_t hv[512];
        int nh = naive_topk(sc, idx, m, b - p->sink - p->recent - ns, hv);
        for (int q = 0; q < nh; q++) in[hv[q]] = 1;
        for (int j = 0; j < n; j++) if (j < p->sink || j >= hi || in[j]) keep[k++] = j;
        return k;
    }
    if (!strcmp(nm, "streaming") || !strcmp(nm, "window") || !strcmp(nm, "cam")) {
        int sink = p->sink, recent = p->recent;
        for (int j = 0; j < n; j++) if (n <= sink + recent || j < sink || j >= n - recent) keep[k++] = j;
        return k;
    }
    if (!strcmp(nm, "h2o") || !strcmp(nm, "lazy_h2o")) {
        int b = p->sink + p->heavy + p->recent;
        int due = strcmp(nm, "h2o") == 0 || (steps > 0 && steps % p->interval == 0) || n + 1 > b + p->interval;
        if (!due || n <= b) { for (int j = 0; j < n; j++) keep[j] = j; return n; }
        for (int j = p->sink; j < n - p->recent; j++) idx[m++] = j;
        int32_t hv[512];
        int nh = naive_topk(sc, idx, m, p->heavy, hv);
        for (int j = 0; j < n; j++) {
            int in = j < p->sink || j >= n - p->recent;
            for (int q = 0; q < nh && !in; q++) in = hv[q] == j;
            if (in) keep[k++] = j;
        }
        return k;
    }
    if (!strcmp(nm, "tova")) {
        if (n <= p->budget) { for (int j = 0; j < n; j++) keep[j] = j; return n; }
        for (int j = 0; j < n - 1; j++) idx[m++] = j;
        const float *head_mean = z->score + (size_t)l * z->NH * z->cap;   // head 0 row holds the mean
        k = naive_topk(head_mean, idx, m, p->budget - 1, keep);
        keep[k++] = n - 1;
        return k;
    }
    if (!strcmp(nm, "knorm") || !strcmp(nm, "l2")) {
        int kk = (int)ceil(p->keep_ratio * n);
        if (p->skip[l] || n < p->prune_after || kk >= n) { for (int j = 0; j < n; j++) keep[j] = j; return n; }
        for (int j = 0; j < n; j++) idx[j] = j;
        return naive_topk(norm, idx, n, kk, keep);
    }
    return -1;
}

static void check_kept_sets(const char *spec, int n_tok) {
    eng_policy *p = mk(spec);
    CU_ASSERT_FATAL(p != NULL);
    eng_state *s = mk_state(p, n_tok, 8);
    CU_ASSERT_FATAL(s != NULL);
    snapshot z = {0};
    int bad = 0, evicting = 0;
    memset(g_nsep, 0, sizeof g_nsep);
    for (int t = 0; t < n_tok && !bad; t++) {
        snap_take(&z, s, p);
        int64_t steps = p->steps;
        CU_ASSERT_FATAL(eng_forward(s, g_ids + t, 1, NULL, 0) == ENG_OK);
        for (int l = 0; l < z.L; l++)
            for (int h = 0; h < z.NH; h++) {
                int32_t keep[512];
                int k = naive_keep(p, &z, l, h, steps, keep);
                int now = eng_kvcache_n(&s->kv, l)[h] - 1;   // minus the step's own token
                const int32_t *pos = eng_kvcache_pos(&s->kv, l, h);
                int ok = k == now;
                for (int i = 0; ok && i < k; i++) ok = pos[i] == z.pos[((size_t)l * z.NH + h) * z.cap + keep[i]];
                ok = ok && pos[now] == t;
                if (k < z.n[l * z.NH + h]) evicting = 1;
                if (!ok) {
                    printf("\n    %s: step %d layer %d head %d: kept %d slots, naive %d", spec, t, l, h, now, k);
                    bad = 1;
                }
            }
    }
    CU_ASSERT_EQUAL(bad, 0);
    if (!evicting) printf("\n    %s: never evicted", spec);
    CU_ASSERT(evicting);
    snap_free(&z);
    eng_state_free(s);
    eng_policy_free(p);
}

static void test_kept_sets(void) {
    const char *specs[] = {
        "streaming:sink=3,recent=17", "window:recent=20", "h2o:sink=2,heavy=6,recent=10",
        "h2o:heavy=12,recent=4,pos=shift", "lazy_h2o:heavy=6,recent=10,interval=5", "tova:budget=19",
        "knorm:keep_ratio=0.9,prune_after=12,skip_layers=1", "l2:keep_ratio=0.8,prune_after=5,skip_layers=none",
        "sepllm:init=3,sep_cap=5,local=10,cache=30,seps=0;1;2;3;4;5;6;7;8;9;10;11;12;13;14;15;16;17;18;19;20;21;"
        "22;23;24;25;26;27;28;29;30;31;32;33;34;35;36;37;38;39;40;41;42;43;44;45;46;47;48;49;50;51;52;53;54;55;56;"
        "57;58;59;60;61;62;63",
        "sepllm:init=2,sep_cap=40,local=8,cache=60,seps=0;1;2;3;4;5;6;7;8;9;10;11;12;13;14;15;16;17;18;19;20;21;"
        "22;23;24;25;26;27;28;29;30;31;32;33;34;35;36;37;38;39;40;41;42;43;44;45;46;47;48;49;50;51;52;53;54;55;56;"
        "57;58;59;60;61;62;63",
        "fix_size_l2:size=20,keep_ratio=0.3,skip_layers=0", "fix_size_l2:size=16,strategy=keep_high,pos=shift,skip_layers=1",
        "fix_size_l2:size=12,keep_ratio=1,skip_layers=none", "hybrid:sink=2,heavy=6,recent=10,skip_layers=1",
        "unified:sink=2,sep=5,heavy=4,recent=8,seps=0;1;2;3;4;5;6;7;8;9;10;11;12;13;14;15;16;17;18;19;20;21;22;23",
        "unified:sink=1,sep=3,heavy=6,recent=5,interval=4,pos=shift,seps=0;2;4;6;8;10;12;14;16;18;20;22;24;26",
        "cam:sink=3,recent=17,merge=5",
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) check_kept_sets(specs[i], 90);
}

/* SnapKV / PyramidKV at prefill, against a naive window scoring */
static void check_prefill(const char *spec, int n_prompt) {
    eng_policy *p = mk(spec);
    CU_ASSERT_FATAL(p != NULL);
    eng_state *s = mk_state(p, n_prompt + 10, 16);
    CU_ASSERT_FATAL(s != NULL);
    // run the prompt without its last chunk's compression to snapshot the full cache:
    // a twin state without policy gives the same uncompressed cache
    eng_state *full = mk_state(NULL, n_prompt, 16);
    CU_ASSERT_FATAL(eng_forward(full, g_ids, n_prompt, NULL, 0) == ENG_OK);
    CU_ASSERT_FATAL(eng_forward(s, g_ids, n_prompt, NULL, 0) == ENG_OK);
    const eng_config *c = &g_m->cfg;
    int L = c->n_layer, NH = c->n_head, D = c->head_dim, w = p->window, C = c->n_embd, bad = 0;
    int m = n_prompt - w, kept_layer[8] = {0};
    float *probs = malloc((size_t)NH * w * full->kv.cap * sizeof(float)), *o = malloc((size_t)w * C * sizeof(float));
    int32_t *vis = malloc((size_t)NH * w * sizeof(int32_t));
    for (int l = 0; l < L; l++) {
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < w; i++) vis[h * w + i] = m + i + 1;
        kn_attention(o, p->winq + (size_t)l * w * C, (size_t)C, eng_kvcache_k(&full->kv, l),
                     eng_kvcache_v(&full->kv, l), w, NH, D, full->kv.cap, vis, full->att_scratch, probs);
        int heavy = !strcmp(p->ops->name, "snapkv") ? p->budget - w
                                                     : pol_pyramid_cap(p->budget, w, p->beta, L, l, n_prompt);
        for (int h = 0; h < NH; h++) {
            float sum[512], pooled[512];
            int32_t idx[512], keep[512];
            for (int j = 0; j < m; j++) {
                sum[j] = 0;
                for (int i = 0; i < w; i++) sum[j] += probs[((size_t)h * w + i) * full->kv.cap + j];
                idx[j] = j;
            }
            int pad = p->kernel / 2;
            for (int j = 0; j < m; j++) {
                float acc = p->pool_max ? -INFINITY : 0.0f;
                for (int q = j - pad; q <= j + pad; q++)
                    if (q >= 0 && q < m) acc = p->pool_max ? fmaxf(acc, sum[q]) : acc + sum[q];
                pooled[j] = p->pool_max ? acc : acc / (float)p->kernel;
            }
            int k = naive_topk(pooled, idx, m, heavy, keep);
            for (int j = m; j < n_prompt; j++) keep[k++] = j;
            const int32_t *pos = eng_kvcache_pos(&s->kv, l, h);
            int ok = eng_kvcache_n(&s->kv, l)[h] == k;
            for (int i = 0; ok && i < k; i++) ok = pos[i] == keep[i];
            if (!ok) { printf("\n    %s layer %d head %d: kept set differs", spec, l, h); bad++; }
            kept_layer[l] = k;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    // decode after the prompt appends without eviction
    for (int t = 0; t < 10; t++) CU_ASSERT_FATAL(eng_forward(s, g_ids + n_prompt + t, 1, NULL, 0) == ENG_OK);
    for (int l = 0; l < L; l++) CU_ASSERT_EQUAL(eng_kvcache_n(&s->kv, l)[0], kept_layer[l] + 10);
    eng_policy_stats st;
    eng_policy_stats_get(p, &st);
    CU_ASSERT(st.triggered);
    CU_ASSERT_EQUAL(st.layers_differ, kept_layer[0] != kept_layer[1]);
    free(probs); free(o); free(vis);
    eng_state_free(full);
    eng_state_free(s);
    eng_policy_free(p);
}

static void test_prefill_sets(void) {
    check_prefill("snapkv:window=8,kernel=5,budget=40", 100);
    check_prefill("snapkv:window=4,kernel=3,pooling=max,budget=30,pos=shift", 70);
    check_prefill("pyramidkv:window=4,budget=30,beta=4", 120);   // the schedule case: layers differ
    check_prefill("pyramidkv:window=8,budget=40", 60);           // the uniform case
}

/* ------------------------------------------------------------ (c) properties */

static void test_properties(void) {
    struct { const char *spec; int budget, sink, recent; } cases[] = {
        {"streaming:sink=4,recent=20", 24, 4, 20},
        {"streaming:sink=1,recent=7,pos=shift", 8, 1, 7},
        {"window:recent=16", 16, 0, 16},
        {"h2o:sink=2,heavy=5,recent=9", 16, 2, 9},
        {"lazy_h2o:heavy=5,recent=9,interval=4", 14 + 4, 0, 9},
        {"tova:budget=12", 12, 0, 1},
        {"sepllm:init=4,sep_cap=6,local=12,cache=30", 30, 4, 12},
        {"fix_size_l2:size=20,keep_ratio=0.5,skip_layers=none", 20, 0, 10},
        {"fix_size_l2:size=20,keep_ratio=0.5,strategy=random,seed=7,skip_layers=none", 20, 0, 10},
        {"hybrid:sink=2,heavy=5,recent=9", 16, 2, 9},
        {"unified:sink=2,sep=4,heavy=3,recent=9", 18, 2, 9},
        {"unified:sink=2,sep=4,heavy=3,recent=9,interval=5", 18 + 4, 2, 9},
    };
    int n = 150;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eng_policy *p = mk(cases[i].spec);
        CU_ASSERT_FATAL(p != NULL);
        eng_state *s = mk_state(p, n, 32);
        CU_ASSERT_FATAL(s != NULL);
        // a 40-token prompt in chunks, then token by token
        CU_ASSERT_FATAL(eng_forward(s, g_ids, 40, NULL, 0) == ENG_OK);
        int bad = 0;
        for (int t = 40; t < n; t++) {
            CU_ASSERT_FATAL(eng_forward(s, g_ids + t, 1, NULL, 0) == ENG_OK);
            for (int l = 0; l < g_m->cfg.n_layer; l++)
                for (int h = 0; h < g_m->cfg.n_head; h++) {
                    int held = eng_kvcache_n(&s->kv, l)[h];
                    const int32_t *pos = eng_kvcache_pos(&s->kv, l, h);
                    if (held > cases[i].budget + 1 || held > s->kv.cap) bad++;
                    for (int j = 0; j < cases[i].sink; j++) if (pos[j] != j) bad++;
                    int r = cases[i].recent + 1 < held ? cases[i].recent + 1 : held;   // + this step's token
                    for (int j = 0; j < r; j++) if (pos[held - 1 - j] != t - j) bad++;
                    for (int j = 1; j < held; j++) if (pos[j] <= pos[j - 1]) bad++;   // position order kept
                }
        }
        if (bad) printf("\n    %s: %d property violations", cases[i].spec, bad);
        CU_ASSERT_EQUAL(bad, 0);
        eng_policy_stats st;
        eng_policy_stats_get(p, &st);
        int64_t held_total = 0;
        for (int l = 0; l < g_m->cfg.n_layer; l++)
            for (int h = 0; h < g_m->cfg.n_head; h++) held_total += eng_kvcache_n(&s->kv, l)[h];
        CU_ASSERT(st.triggered);
        CU_ASSERT_EQUAL(st.evictions, (int64_t)n * g_m->cfg.n_layer * g_m->cfg.n_head - held_total);
        CU_ASSERT(st.cache_tokens_max <= cases[i].budget + 1 + 40);
        CU_ASSERT(st.cache_tokens_mean <= st.cache_tokens_max);
        CU_ASSERT(st.kv_bytes <= st.kv_bytes_alloc);
        eng_state_free(s);
        eng_policy_free(p);
    }
    // a budget never reached says so
    eng_policy *p = mk("streaming:sink=4,recent=508");
    eng_state *s = mk_state(p, 50, 8);
    CU_ASSERT_FATAL(eng_forward(s, g_ids, 50, NULL, 0) == ENG_OK);
    eng_policy_stats st;
    eng_policy_stats_get(p, &st);
    CU_ASSERT_EQUAL(st.triggered, 0);
    CU_ASSERT_EQUAL(st.cache_tokens_max, 50);
    CU_ASSERT_EQUAL(s->kv.cap, 50);
    eng_state_free(s);
    eng_policy_free(p);
}

/* fix_size_l2 random: the same seed keeps the same slots, another seed others */
static void test_fix_size_random(void) {
    const char *specs[] = {"fix_size_l2:size=24,strategy=random,seed=7,skip_layers=none",
                           "fix_size_l2:size=24,strategy=random,seed=7,skip_layers=none",
                           "fix_size_l2:size=24,strategy=random,seed=8,skip_layers=none"};
    int32_t kept[3][64];
    int nk[3];
    for (int i = 0; i < 3; i++) {
        eng_policy *p = mk(specs[i]);
        eng_state *s = p ? mk_state(p, 80, 8) : NULL;
        CU_ASSERT_FATAL(s != NULL);
        for (int t = 0; t < 80; t++) CU_ASSERT_FATAL(eng_forward(s, g_ids + t, 1, NULL, 0) == ENG_OK);
        nk[i] = eng_kvcache_n(&s->kv, 1)[1];
        CU_ASSERT_FATAL(nk[i] <= 64);
        memcpy(kept[i], eng_kvcache_pos(&s->kv, 1, 1), (size_t)nk[i] * sizeof(int32_t));
        eng_state_free(s);
        eng_policy_free(p);
    }
    CU_ASSERT(nk[0] == 25 && nk[0] == nk[1] && nk[1] == nk[2]);
    CU_ASSERT(memcmp(kept[0], kept[1], (size_t)nk[0] * sizeof(int32_t)) == 0);
    CU_ASSERT(memcmp(kept[0], kept[2], (size_t)nk[0] * sizeof(int32_t)) != 0);
}

/* ------------------------------------------------------------ (d) pos=shift reference */

/* Naive streaming forward: pre-RoPE keys of every token kept; at step t the
 * cache holds [0, sink) ∪ [t - recent, t) (or all of [0, t)), the query sits
 * at cache index |held| and key i at index i. Double accumulation. */
static void ref_streaming(int n, int sink, int recent, float *logits) {
    const eng_config *c = &g_m->cfg;
    const eng_weights *w = &g_m->w;
    int L = c->n_layer, C = c->n_embd, NH = c->n_head, D = c->head_dim, R = c->n_rot, F = c->n_ff, V = c->n_vocab;
    float *K = malloc((size_t)L * n * C * sizeof(float)), *Vv = malloc((size_t)L * n * C * sizeof(float));
    float *x = malloc(C * sizeof(float)), *hb = malloc(C * sizeof(float)), *qkv = malloc(3 * C * sizeof(float));
    float *att = malloc(C * sizeof(float)), *ao = malloc(C * sizeof(float)), *ff = malloc(F * sizeof(float));
    float *mo = malloc(C * sizeof(float));
    int *held = malloc((size_t)(n + 1) * sizeof(int));
    for (int t = 0; t < n; t++) {
        int nh = 0;
        for (int j = 0; j < t; j++) if (t <= sink + recent || j < sink || j >= t - recent) held[nh++] = j;
        held[nh] = t;
        memcpy(x, w->embed_in + (size_t)g_ids[t] * C, C * sizeof(float));
        for (int l = 0; l < L; l++) {
            kn_layernorm_ref(hb, x, w->ln1_w + l * C, w->ln1_b + l * C, 1, C, c->ln_eps);
            kn_matmul_ref(qkv, hb, w->qkv_w + (size_t)l * 3 * C * C, w->qkv_b + l * 3 * C, 1, C, 3 * C);
            memcpy(K + ((size_t)l * n + t) * C, qkv + C, C * sizeof(float));
            memcpy(Vv + ((size_t)l * n + t) * C, qkv + 2 * C, C * sizeof(float));
            for (int h = 0; h < NH; h++) {
                double q[256], sc[512], mx = -INFINITY, sum = 0;
                for (int d = 0; d < D; d++) q[d] = qkv[h * D + d];
                // rotate q to cache index nh (rotate-half on the first R dims)
                for (int i = 0; i < R / 2; i++) {
                    double th = nh * pow(c->rope_base, -2.0 * i / R), a = q[i], b = q[i + R / 2];
                    q[i] = a * cos(th) - b * sin(th);
                    q[i + R / 2] = b * cos(th) + a * sin(th);
                }
                for (int i = 0; i <= nh; i++) {
                    const float *kr = K + ((size_t)l * n + held[i]) * C + h * D;
                    double k[256];
                    for (int d = 0; d < D; d++) k[d] = kr[d];
                    for (int r = 0; r < R / 2; r++) {   // key at cache index i
                        double th = i * pow(c->rope_base, -2.0 * r / R), a = k[r], b = k[r + R / 2];
                        k[r] = a * cos(th) - b * sin(th);
                        k[r + R / 2] = b * cos(th) + a * sin(th);
                    }
                    double dot = 0;
                    for (int d = 0; d < D; d++) dot += q[d] * k[d];
                    sc[i] = dot / sqrt((double)D);
                    if (sc[i] > mx) mx = sc[i];
                }
                for (int i = 0; i <= nh; i++) sum += sc[i] = exp(sc[i] - mx);
                for (int d = 0; d < D; d++) {
                    double o = 0;
                    for (int i = 0; i <= nh; i++) o += sc[i] * Vv[((size_t)l * n + held[i]) * C + h * D + d];
                    att[h * D + d] = (float)(o / sum);
                }
            }
            kn_matmul_ref(ao, att, w->o_w + (size_t)l * C * C, w->o_b + l * C, 1, C, C);
            if (!c->parallel_residual) for (int i = 0; i < C; i++) x[i] += ao[i];
            kn_layernorm_ref(hb, x, w->ln2_w + l * C, w->ln2_b + l * C, 1, C, c->ln_eps);
            kn_matmul_ref(ff, hb, w->fc1_w + (size_t)l * F * C, w->fc1_b + l * F, 1, C, F);
            kn_gelu_ref(ff, F);
            kn_matmul_ref(mo, ff, w->fc2_w + (size_t)l * C * F, w->fc2_b + l * C, 1, F, C);
            for (int i = 0; i < C; i++) x[i] += c->parallel_residual ? ao[i] + mo[i] : mo[i];
        }
        kn_layernorm_ref(hb, x, w->lnf_w, w->lnf_b, 1, C, c->ln_eps);
        kn_matmul_ref(logits + (size_t)t * V, hb, w->embed_out, NULL, 1, C, V);
    }
    free(K); free(Vv); free(x); free(hb); free(qkv); free(att); free(ao); free(ff); free(mo); free(held);
}

static void test_pos_shift(void) {
    int n = 70, V = g_m->cfg.n_vocab;
    float *ref = malloc((size_t)n * V * sizeof(float)), *got = malloc((size_t)n * V * sizeof(float));
    struct { const char *spec; int sink, recent; } cases[] = {
        {"streaming:sink=2,recent=20,pos=shift", 2, 20}, {"window:recent=15,pos=shift", 0, 15},
        {"streaming:sink=4,recent=100,pos=shift", 4, 100},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ref_streaming(n, cases[i].sink, cases[i].recent, ref);
        eng_policy *p = mk(cases[i].spec);
        CU_ASSERT_FATAL(p && run_logits(p, n, 8, 1, got) == 0);
        double worst = 0;
        for (size_t j = 0; j < (size_t)n * V; j++) worst = fmax(worst, fabs((double)ref[j] - got[j]));
        printf("\n    %-40s max|dlogit| vs naive re-rotation = %.2e", cases[i].spec, worst);
        CU_ASSERT(worst <= 1e-4);
        eng_policy_free(p);
    }
    // and pos=original differs from pos=shift once tokens are evicted
    eng_policy *p = mk("streaming:sink=2,recent=20,pos=original");
    CU_ASSERT_FATAL(p && run_logits(p, n, 8, 1, got) == 0);
    ref_streaming(n, 2, 20, ref);
    CU_ASSERT(memcmp(ref, got, (size_t)n * V * sizeof(float)) != 0);
    eng_policy_free(p);
    free(ref);
    free(got);
}

/* ------------------------------------------------------------ (e) contracts */

static void test_no_alloc(void) {
    const char *specs[] = {"full", "streaming:sink=4,recent=20", "window:recent=16,pos=shift", "h2o:heavy=8,recent=8",
                           "lazy_h2o:heavy=8,recent=8,interval=4", "tova:budget=16", "knorm:prune_after=8",
                           "snapkv:budget=30,window=8", "pyramidkv:budget=30,window=4",
                           "sepllm:init=2,sep_cap=4,local=8,cache=20"};
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
        eng_state_free(s);
        eng_policy_free(p);
    }
}

static void test_errors(void) {
    char err[256], name[32], buf[128];
    eng_policy *p = (eng_policy *)1;
    CU_ASSERT_EQUAL(eng_policy_create(&p, "nope", NULL, &g_m->cfg, err, sizeof err), ENG_ERR_UNSUPPORTED);
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT_STRING_EQUAL(err, "unsupported policy 'nope'");
    eng_paramset ps;
    CU_ASSERT_EQUAL(eng_policy_parse_spec("streaming:sink=4,bogus=1", &ps, name, sizeof name, buf, sizeof buf, err,
                                          sizeof err), ENG_OK);
    CU_ASSERT_EQUAL(eng_policy_create(&p, name, &ps, &g_m->cfg, err, sizeof err), ENG_ERR_INVAL);
    CU_ASSERT(strstr(err, "'bogus'") != NULL);
    const char *bad[] = {"streaming:sink=-1", "streaming:pos=sideways", "h2o:heavy=0.5", "snapkv:kernel=4",
                         "snapkv:budget=8,window=8", "snapkv:pooling=median", "knorm:keep_ratio=1.5",
                         "knorm:skip_layers=7", "tova:budget=x", "full:recent=3", "sepllm:seps=a;b",
                         "sepllm:cache=10", "fix_size_l2:strategy=lowest", "fix_size_l2:size=0",
                         "fix_size_l2:keep_ratio=2", "hybrid:recent=0", "unified:seps=x", "unified:interval=0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CU_ASSERT_FATAL(eng_policy_parse_spec(bad[i], &ps, name, sizeof name, buf, sizeof buf, err, sizeof err) ==
                        ENG_OK);
        eng_status st = eng_policy_create(&p, name, &ps, &g_m->cfg, err, sizeof err);
        if (st != ENG_ERR_INVAL) printf("\n    %s accepted", bad[i]);
        CU_ASSERT_EQUAL(st, ENG_ERR_INVAL);
        const char *key = strchr(bad[i], ':') + 1;
        char k[32];
        snprintf(k, sizeof k, "'%.*s'", (int)(strchr(key, '=') - key), key);
        if (strcmp(bad[i], "snapkv:budget=8,window=8") && strcmp(bad[i], "sepllm:cache=10") && !strstr(err, k)) printf("\n    %s: %s", bad[i], err);
    }
    CU_ASSERT_EQUAL(eng_policy_parse_spec("h2o:heavy", &ps, name, sizeof name, buf, sizeof buf, err, sizeof err),
                    ENG_ERR_INVAL);
    CU_ASSERT_EQUAL(eng_policy_parse_spec(":a=1", &ps, name, sizeof name, buf, sizeof buf, err, sizeof err),
                    ENG_ERR_INVAL);
    CU_ASSERT_EQUAL(eng_policy_parse_spec("knorm:keep_ratio=0.9,skip_layers=0;1,prune_after=100", &ps, name,
                                          sizeof name, buf, sizeof buf, err, sizeof err), ENG_OK);
    CU_ASSERT_STRING_EQUAL(name, "knorm");
    CU_ASSERT_EQUAL(ps.n, 3);
    CU_ASSERT_EQUAL(ps.p[0].type, ENG_PARAM_REAL);
    CU_ASSERT_EQUAL(ps.p[1].type, ENG_PARAM_STR);
    CU_ASSERT_EQUAL(ps.p[2].type, ENG_PARAM_INT);
    CU_ASSERT_FATAL(eng_policy_create(&p, name, &ps, &g_m->cfg, err, sizeof err) == ENG_OK);
    CU_ASSERT_STRING_EQUAL(eng_policy_describe(p), "keep_ratio=0.9,prune_after=100,skip_layers=0;1,pos=original");
    CU_ASSERT_EQUAL(eng_policy_capacity(p, 5000), 5000);
    eng_policy_free(p);
    // attach only before the first token; capacity of bounded policies
    p = mk("streaming");
    CU_ASSERT_EQUAL(eng_policy_capacity(p, 100000), 4 + 512 + ENG_POLICY_SLACK);
    eng_state *s = mk_state(NULL, 16, 4);
    CU_ASSERT_FATAL(eng_forward(s, g_ids, 2, NULL, 0) == ENG_OK);
    CU_ASSERT_EQUAL(eng_state_set_policy(s, p), ENG_ERR_INVAL);
    eng_state_reset(s);
    CU_ASSERT_EQUAL(eng_state_set_policy(s, p), ENG_OK);
    eng_state_free(s);   // the policy outlives the state and can be freed after
    eng_policy_free(p);
    // OOM while attaching leaves the state without policy
    p = mk("h2o:heavy=4,recent=4");
    s = mk_state(NULL, 16, 4);
    eng_alloc_fail_after(0);
    CU_ASSERT_EQUAL(eng_state_set_policy(s, p), ENG_ERR_NOMEM);
    eng_alloc_fail_after(-1);
    CU_ASSERT_PTR_NULL(s->policy);
    eng_state_free(s);
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
    CU_pSuite s = CU_add_suite("policy", NULL, NULL);
    CU_add_test(s, "(a) budget >= length: logits bit-identical to no policy", test_equivalence);
    CU_add_test(s, "(b) selection helpers == naive sort-based references", test_helpers);
    CU_add_test(s, "(b) decode policies: kept slots == naive selection per step", test_kept_sets);
    CU_add_test(s, "(b) snapkv/pyramidkv: kept slots == naive window scoring", test_prefill_sets);
    CU_add_test(s, "(c) budgets, sinks, recent window, eviction counts", test_properties);
    CU_add_test(s, "(c) fix_size_l2 random: seeded and deterministic", test_fix_size_random);
    CU_add_test(s, "(d) pos=shift == naive re-rotation by cache index", test_pos_shift);
    CU_add_test(s, "(e) no allocation per token", test_no_alloc);
    CU_add_test(s, "params, specs, attach, OOM", test_errors);
    int rc = tu_run();
    eng_model_free(g_m);
    return rc;
}
