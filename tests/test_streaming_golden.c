/* test_streaming_golden.c — StreamingLLM's position shift against Hugging
 * Face transformers (issue 4): `streaming:sink=S,recent=R,pos=shift`
 * decoding token by token must give the logits that HF's own GPTNeoX layers
 * give under StreamingLLM's rule (pre-RoPE keys, [0, sink) + the newest
 * `recent` kept, keys rotated by cache index, the query at the cache
 * length). Fixtures: tests/data/streaming/<model>/, written by
 * ops/golden/make_streaming_golden.py (which first checks its token-by-token
 * loop against HF's ordinary forward). */
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
    char err[1024];
    eng_model *m = NULL;
    eng_load_opts o = {.keep_16bit = 0};
    CU_ASSERT_FATAL(eng_model_load_ex(&m, tu_data("models/m64-f32"), &o, err, sizeof err) == ENG_OK);
    int32_t ids[256];
    int n = tu_read_ids("streaming/m64-f32/ids.txt", ids, 256);
    CU_ASSERT_FATAL(n > 0);
    check_config(m, ids, n, 2, 12);
    check_config(m, ids, n, 4, 20);
    check_config(m, ids, n, 0, 16);
    eng_model_free(m);
}

int main(void) {
    kn_set_threads(2);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("streaming_golden", NULL, NULL);
    CU_add_test(s, "streaming pos=shift == HF transformers under StreamingLLM's rule", test_hf_golden);
    return tu_run();
}
