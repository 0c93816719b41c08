/* test_policy_merge.c — the policies that do more than drop tokens: cam
 * (evicted values merged into their successors) and cake (layer budgets
 * from the prompt's attention dispersion and shift), engine/policy_cam.c and
 * engine/policy_cake.c.
 *
 *   cam    at every decode step, the kept slots are StreamingLLM's, and the
 *          values held after the step equal a naive replay of the merge rule
 *          (probability from the accumulated attention, the same counter
 *          draws, v[e] / merge added to the successors) on a snapshot taken
 *          before the step; some merges happen, some do not; a budget that
 *          is never reached is bit-identical to no policy.
 *   cake   the per-layer budgets equal a naive recomputation of the
 *          preference scores (entropy and variance of the window attention)
 *          and of the budget split with its clipping; the kept slots per
 *          layer and head equal a naive top-k of the pooled indicator; the
 *          budgets add up to the total; decode keeps each layer at its
 *          budget + window.
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
static int32_t g_ids[256];

/* ------------------------------------------------------------ cam */

static void test_cam_replay(void) {
    const char *spec = "cam:sink=2,recent=20,merge=4,seed=5";
    eng_policy *p = tu_policy(g_m, spec);
    eng_state *s = p ? tu_state(g_m, p, 90, 8) : NULL;
    CU_ASSERT_FATAL(s != NULL);
    const eng_config *c = &g_m->cfg;
    int L = c->n_layer, NH = c->n_head, D = c->head_dim, cap = s->kv.cap;
    size_t slots = (size_t)L * NH * cap;
    float *v0 = malloc(slots * D * sizeof(float)), *acc0 = malloc(slots * sizeof(float));
    int32_t *n0 = malloc((size_t)L * NH * sizeof(int32_t)), *pos0 = malloc(slots * sizeof(int32_t));
    float *row = malloc((size_t)cap * D * sizeof(float));
    int merged = 0, skipped = 0, bad = 0;
    for (int t = 0; t < 90 && !bad; t++) {
        for (int l = 0; l < L; l++) {
            for (int h = 0; h < NH; h++)   // held rows through the accessor (cam's layers slide, kvcache.h)
                memcpy(v0 + ((size_t)l * NH + h) * cap * D, eng_kvcache_v(&s->kv, l) + (size_t)h * cap * D,
                       (size_t)eng_kvcache_n(&s->kv, l)[h] * D * sizeof(float));
            memcpy(n0 + l * NH, eng_kvcache_n(&s->kv, l), (size_t)NH * sizeof(int32_t));
            for (int h = 0; h < NH; h++)
                memcpy(pos0 + ((size_t)l * NH + h) * cap, eng_kvcache_pos(&s->kv, l, h), (size_t)cap * sizeof(int32_t));
        }
        memcpy(acc0, p->score, slots * sizeof(float));
        int64_t step = p->steps;
        CU_ASSERT_FATAL(eng_forward(s, g_ids + t, 1, NULL, 0) == ENG_OK);
        for (int l = 0; l < L; l++)
            for (int h = 0; h < NH; h++) {
                size_t r = (size_t)l * NH + h;
                int n = n0[r], keep_n = n > 22 ? 22 : n;
                const float *acc = acc0 + r * cap;
                memcpy(row, v0 + r * cap * D, (size_t)n * D * sizeof(float));
                for (int i = 0; i < n - keep_n; i++) {   // naive: evict slot 2 + i, oldest first
                    int e = 2 + i;
                    double mean = 0;
                    int m = 0;
                    for (int j = e + 1; j < n && j <= e + 4; j++, m++) mean += acc[j];
                    double pr = m ? acc[e] / (mean / m) : 0.0;
                    pr = isnan(pr) || pr < 0 ? 0 : pr > 1 ? 1 : pr;
                    if (pol_uniform(5, l, h, step, i) >= pr) { skipped++; continue; }
                    merged++;
                    for (int j = e + 1; j < n && j <= e + 4; j++)
                        for (int d = 0; d < D; d++) row[(size_t)j * D + d] += row[(size_t)e * D + d] / 4.0f;
                }
                // kept: [0, 2) and the newest 20 of the snapshot, then this step's token
                const float *v = eng_kvcache_v(&s->kv, l) + (size_t)h * cap * D;
                const int32_t *pos = eng_kvcache_pos(&s->kv, l, h);
                int held = eng_kvcache_n(&s->kv, l)[h], ok = held == keep_n + 1;
                for (int i = 0; ok && i < keep_n; i++) {
                    int j = i < 2 || n <= 22 ? i : n - 20 + (i - 2);
                    ok = pos[i] == pos0[r * cap + j] &&
                         memcmp(v + (size_t)i * D, row + (size_t)j * D, (size_t)D * sizeof(float)) == 0;
                }
                if (!ok) {
                    printf("\n    %s: step %d layer %d head %d: values or slots differ from the naive replay", spec, t,
                           l, h);
                    bad = 1;
                }
            }
    }
    printf("\n    %d merges, %d evictions without merge ", merged, skipped);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(merged > 20 && skipped > 20);
    free(v0); free(acc0); free(n0); free(pos0); free(row);
    eng_state_free(s);
    eng_policy_free(p);
}

/* ------------------------------------------------------------ cake */

static void test_cake_budgets(void) {
    const double pref[] = {10, 1, 1, 1};
    int32_t b[4];
    pol_cake_budgets(pref, 4, 40, 15, b);   // raw 30,3,3,3 -> clip 15 (+15 spread: 5 each) -> 15,8,8,8 -> +1 first
    CU_ASSERT(b[0] == 15 && b[1] == 9 && b[2] == 8 && b[3] == 8);
    const double even[] = {2, 2, 2};
    pol_cake_budgets(even, 3, 30, 100, b);
    CU_ASSERT(b[0] == 10 && b[1] == 10 && b[2] == 10);
    const double zero[] = {0, 0};
    pol_cake_budgets(zero, 2, 30, 100, b);   // no preference: an even split
    CU_ASSERT(b[0] == 15 && b[1] == 15);
    // random: never more than the total, every budget within [0, cap]
    uint64_t x = 99;
    int bad = 0, exact = 0;
    for (int it = 0; it < 2000; it++) {
        double pr[12];
        int32_t out[12];
        int L = 1 + (int)(it % 12);
        for (int l = 0; l < L; l++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            pr[l] = (double)(x >> 40) / (1 << 24) * ((x >> 20) % 5 == 0 ? 100.0 : 1.0);
        }
        int64_t cap = 5 + (int64_t)(x % 200), total = (int64_t)(x >> 13) % (L * cap + 1);
        pol_cake_budgets(pr, L, total, cap, out);
        int64_t sum = 0;
        for (int l = 0; l < L; l++) {
            sum += out[l];
            bad += out[l] < 0 || out[l] > cap;
        }
        bad += sum > total;
        exact += sum == total;
    }
    // adjust_budgets makes one pass: a layer pushed over cap by the spread is
    // clipped again when evicting (the reference's caller does the same), so
    // the total is an upper bound that is met in the common case
    printf("\n    2000 random splits: total met exactly in %d ", exact);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(exact > 1600);
}

static int naive_topk(const float *score, int m, int k, int32_t *out) {
    // selection by repeated max (higher first, older first on ties), then ascending
    char used[512] = {0};
    for (int i = 0; i < k && i < m; i++) {
        int best = -1;
        for (int j = 0; j < m; j++)
            if (!used[j] && (best < 0 || score[j] > score[best])) best = j;
        used[best] = 1;
    }
    int c = 0;
    for (int j = 0; j < m; j++) if (used[j]) out[c++] = j;
    return c;
}

static void test_cake_prefill(void) {
    const int n = 70, w = 6, budget = 20, kernel = 5;
    const double gamma = 200;
    eng_policy *p = tu_policy(g_m, "cake:budget=20,window=6,tau1=0.7,tau2=1.5");
    eng_state *s = p ? tu_state(g_m, p, n + 30, 16) : NULL, *full = tu_state(g_m, NULL, n, 16);
    CU_ASSERT_FATAL(s != NULL && full != NULL);
    CU_ASSERT_FATAL(eng_forward(full, g_ids, n, NULL, 0) == ENG_OK);
    CU_ASSERT_FATAL(eng_forward(s, g_ids, n, NULL, 0) == ENG_OK);
    const eng_config *c = &g_m->cfg;
    int L = c->n_layer, NH = c->n_head, D = c->head_dim, C = c->n_embd, cap = full->kv.cap, m = n - w;
    float *probs = malloc((size_t)NH * w * cap * sizeof(float)), *o = malloc((size_t)w * C * sizeof(float));
    float *ind = malloc((size_t)L * NH * m * sizeof(float));
    int32_t vis[64];
    double pref[8];
    for (int l = 0; l < L; l++) {
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < w; i++) vis[h * w + i] = m + i + 1;
        kn_attention_ref(o, p->winq + (size_t)l * w * C, (size_t)C, eng_kvcache_k(&full->kv, l),
                         eng_kvcache_v(&full->kv, l), w, NH, D, cap, vis, probs);
        double H = 0, V = 0;
        for (int h = 0; h < NH; h++) {
            float raw[512];
            for (int j = 0; j < m; j++) {
                double mu = 0, ss = 0;
                for (int i = 0; i < w; i++) {
                    double a = probs[((size_t)h * w + i) * cap + j];
                    mu += a / w;
                    H -= a * log(a + 1e-10);
                }
                for (int i = 0; i < w; i++) ss += pow(probs[((size_t)h * w + i) * cap + j] - mu, 2);
                V += ss / (w - 1);
                raw[j] = (float)(mu + gamma * ss / (w - 1));
            }
            for (int j = 0; j < m; j++) {   // avg pooling, zero padding counted
                double a = 0;
                for (int q = j - kernel / 2; q <= j + kernel / 2; q++) a += q >= 0 && q < m ? raw[q] : 0;
                ind[((size_t)l * NH + h) * m + j] = (float)(a / kernel);
            }
        }
        pref[l] = pow(H, 1 / 0.7) * pow(V, 1 / 1.5);
    }
    int32_t bud[8];
    pol_cake_budgets(pref, L, (int64_t)(budget - w) * L, m, bud);
    int bad = 0, differ = 0;
    for (int l = 0; l < L; l++) {
        if (fabs(pref[l] - p->pref[l]) > 1e-3 * fabs(pref[l])) {
            printf("\n    layer %d: preference %g, naive %g", l, p->pref[l], pref[l]);
            bad++;
        }
        bad += p->lbudget[l] != bud[l];
        differ |= bud[l] != budget - w;
        for (int h = 0; h < NH; h++) {
            int32_t keep[512];
            int k = naive_topk(ind + ((size_t)l * NH + h) * m, m, bud[l], keep);
            for (int j = m; j < n; j++) keep[k++] = j;
            const int32_t *pos = eng_kvcache_pos(&s->kv, l, h);
            int ok = eng_kvcache_n(&s->kv, l)[h] == k;
            for (int i = 0; ok && i < k; i++) ok = pos[i] == keep[i];
            if (!ok) { printf("\n    layer %d head %d: kept set differs from the naive top-k", l, h); bad++; }
        }
    }
    printf("\n    budgets per layer:");
    for (int l = 0; l < L; l++) printf(" %d", p->lbudget[l]);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(differ);   // the preference scores moved budget between layers
    // decode: every layer stays at its budget + window (+ this step's token), the window kept
    for (int t = 0; t < 30; t++) {
        CU_ASSERT_FATAL(eng_forward(s, g_ids + n + t, 1, NULL, 0) == ENG_OK);
        for (int l = 0; l < L; l++)
            for (int h = 0; h < NH; h++) {
                int held = eng_kvcache_n(&s->kv, l)[h];
                const int32_t *pos = eng_kvcache_pos(&s->kv, l, h);
                bad += held > bud[l] + w + 1;
                for (int j = 0; j < w + 1 && j < held; j++) bad += pos[held - 1 - j] != n + t - j;
            }
    }
    CU_ASSERT_EQUAL(bad, 0);
    free(probs); free(o); free(ind);
    eng_state_free(full);
    eng_state_free(s);
    eng_policy_free(p);
}

static int run_logits(eng_policy *p, int n, float *lg) {
    eng_state *s = tu_state(g_m, p, n, 16);
    if (!s) return 1;
    int rc = 0;
    for (int t = 0; t < n && !rc; t++) rc = eng_forward(s, g_ids + t, 1, lg + (size_t)t * g_m->cfg.n_vocab, 0) != ENG_OK;
    eng_state_free(s);
    return rc;
}

static void test_never_triggered(void) {
    int n = 100, V = g_m->cfg.n_vocab;
    float *ref = malloc((size_t)n * V * sizeof(float)), *got = malloc((size_t)n * V * sizeof(float));
    CU_ASSERT_FATAL(run_logits(NULL, n, ref) == 0);
    const char *specs[] = {"cam:sink=4,recent=100,pos=original", "cake:budget=120,window=8"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        eng_policy *p = tu_policy(g_m, specs[i]);
        CU_ASSERT_FATAL(p != NULL);
        CU_ASSERT_FATAL(run_logits(p, n, got) == 0);
        int same = memcmp(ref, got, (size_t)n * V * sizeof(float)) == 0;
        if (!same) printf("\n    %s: logits differ from no policy", specs[i]);
        CU_ASSERT(same);
        eng_policy_free(p);
    }
    free(ref);
    free(got);
}

int main(void) {
    if (!(g_m = tu_load_model("m64-f32"))) return 1;
    uint64_t x = 777;
    for (size_t i = 0; i < sizeof g_ids / sizeof g_ids[0]; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        g_ids[i] = (int32_t)((x >> 33) % (uint64_t)g_m->cfg.n_vocab);
    }
    kn_set_threads(2);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("policy_merge", NULL, NULL);
    CU_add_test(s, "cam: slots and merged values == naive replay per step", test_cam_replay);
    CU_add_test(s, "cake: budget split (adjust_budgets) known answers and totals", test_cake_budgets);
    CU_add_test(s, "cake: preferences, budgets, kept slots == naive; decode bounded", test_cake_prefill);
    CU_add_test(s, "cam, cake: budget never reached == no policy, bit for bit", test_never_triggered);
    int rc = tu_run();
    eng_model_free(g_m);
    return rc;
}
