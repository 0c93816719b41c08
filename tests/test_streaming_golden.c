/* test_streaming_golden.c — StreamingLLM's position shift against Hugging
 * Face transformers (issue 4): `streaming:sink=S,recent=R,pos=shift`
 * decoding token by token must give the logits that HF's own GPTNeoX layers
 * give under StreamingLLM's rule (pre-RoPE keys, [0, sink) + the newest
 * `recent` kept, keys rotated by cache index, the query at the cache
 * length). Fixtures: tests/data/streaming/<model>/, written by
 * ops/golden/make_streaming_golden.py (which first checks its token-by-token
 * loop against HF's ordinary forward).
 *
 * And the sliding cache (kvcache.h "Sliding", policy.c evict_sliding):
 * streaming keeps the same slots as h2o with heavy = 0, which compacts the
 * ordinary way, so their logits must be bit-identical under pos=original
 * and equal to rounding under pos=shift (streaming's persistent rotations
 * use row indices behind the base), while streaming's bases really move and
 * really come back to 0. */
#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "kn.h"
#include "model.h"
#include "policy.h"
#include "testutil.h"

static void check_config(eng_model *m, const int32_t *ids, int n, int sink, int recent) {
    char spec[96], rel[96];
    snprintf(spec, sizeof spec, "streaming:sink=%d,recent=%d,pos=shift", sink, recent);
    snprintf(rel, sizeof rel, "streaming/m64-f32/s%dr%d.f32", sink, recent);
    int V = m->cfg.n_vocab;
    size_t len = 0;
    float *want = (float *)tu_read_file(tu_data(rel), &len);
    CU_ASSERT_FATAL(want != NULL && len == (size_t)n * V * sizeof(float));
    eng_policy *p = tu_policy(m, spec);
    eng_state *s = p ? tu_state(m, p, n, 8) : NULL;
    CU_ASSERT_FATAL(s != NULL);
    float *lg = malloc((size_t)V * sizeof(float));
    double worst = 0, worst_evicting = 0;
    for (int t = 0; t < n; t++) {
        CU_ASSERT_FATAL(eng_forward(s, ids + t, 1, lg, 0) == ENG_OK);
        for (int v = 0; v < V; v++) {
            double d = fabs((double)lg[v] - want[(size_t)t * V + v]);
            if (d > worst) worst = d;
            if (t > sink + recent && d > worst_evicting) worst_evicting = d;
        }
    }
    eng_policy_stats st;
    eng_policy_stats_get(p, &st);
    printf("\n    %-38s max |dlogit| vs HF = %.3g (%.3g after the first eviction), %lld evictions", spec, worst,
           worst_evicting, (long long)st.evictions);
    CU_ASSERT(worst <= 1e-4);
    CU_ASSERT(st.triggered && n > sink + recent + 8);
    free(lg);
    free(want);
    eng_state_free(s);
    eng_policy_free(p);
}

static void test_hf_golden(void) {
    eng_model *m = tu_load_model("m64-f32");
    CU_ASSERT_FATAL(m != NULL);
    int32_t ids[256];
    int n = tu_read_ids("streaming/m64-f32/ids.txt", ids, 256);
    CU_ASSERT_FATAL(n > 0);
    check_config(m, ids, n, 2, 12);
    check_config(m, ids, n, 4, 20);
    check_config(m, ids, n, 0, 16);
    eng_model_free(m);
}

static void test_sliding_equals_compaction(void) {
    eng_model *m = tu_load_model("m64-f32");
    CU_ASSERT_FATAL(m != NULL);
    int32_t ids[256];
    int n = tu_read_ids("streaming/m64-f32/ids.txt", ids, 256), V = m->cfg.n_vocab;
    CU_ASSERT_FATAL(n >= 64);
    const char *pairs[][2] = {{"streaming:sink=3,recent=9,pos=original", "h2o:sink=3,heavy=0,recent=9,pos=original"},
                              {"streaming:sink=3,recent=9,pos=shift", "h2o:sink=3,heavy=0,recent=9,pos=shift"},
                              {"window:recent=7", "h2o:sink=0,heavy=0,recent=7"}};
    float *a = malloc((size_t)V * sizeof(float)), *b = malloc((size_t)V * sizeof(float));
    for (int i = 0; i < 3; i++) {
        eng_policy *pa = tu_policy(m, pairs[i][0]), *pb = tu_policy(m, pairs[i][1]);
        int steps = 3 * n;   // the ids three times: well past one trip of the base through the slack
        eng_state *sa = pa ? tu_state(m, pa, steps, 8) : NULL, *sb = pb ? tu_state(m, pb, steps, 8) : NULL;
        CU_ASSERT_FATAL(sa && sb);
        double worst = 0;
        int slid = 0, rebased = 0, prev = 0;
        for (int t = 0; t < steps; t++) {
            const int32_t *id = ids + t % n;
            CU_ASSERT_FATAL(eng_forward(sa, id, 1, a, 0) == ENG_OK && eng_forward(sb, id, 1, b, 0) == ENG_OK);
            for (int v = 0; v < V; v++) worst = fmax(worst, fabs((double)a[v] - b[v]));
            int base = sa->kv.base[1];
            slid |= base > 0;
            rebased |= base < prev;
            prev = base;
            CU_ASSERT(sb->kv.base[1] == 0);
        }
        printf("\n    %-40s vs %-42s max |dlogit| %.3g", pairs[i][0], pairs[i][1], worst);
        CU_ASSERT(slid && rebased);
        CU_ASSERT(i == 1 ? worst <= 1e-4 : worst == 0.0);
        eng_state_free(sa);
        eng_state_free(sb);
        eng_policy_free(pa);
        eng_policy_free(pb);
    }
    free(a);
    free(b);
    eng_model_free(m);
}

int main(void) {
    kn_set_threads(2);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("streaming_golden", NULL, NULL);
    CU_add_test(s, "streaming pos=shift == HF transformers under StreamingLLM's rule", test_hf_golden);
    CU_add_test(s, "sliding cache == ordinary compaction (bases move and come back)", test_sliding_equals_compaction);
    return tu_run();
}
