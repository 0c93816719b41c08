/* test_spec_policy.c — speculative decoding combined with KV policies
 * (engine/spec.c "Policies", engine/policy_mark.c).
 *
 * The story: with a policy on the target, greedy speculative output must be
 * the target's own greedy decoding under that policy, token for token, for
 * several gammas, schedules and a cascade, with or without a policy on the
 * draft; the budgets are small enough that every policy evicts in the
 * 24-token prompt + 64 generated tokens. Rollback leaves no trace: after a
 * sampled run (random accept/reject patterns) the target's and the draft's
 * caches — fill counts, kept positions, keys, values, policy scores — equal
 * those of a single-model run that decoded the committed tokens one by one;
 * and a mark restored after tentative tokens is bit-identical to a state
 * that never saw them, for every eviction policy. No allocation per token,
 * error codes for policies a mark cannot cover. Models: the golden fixtures
 * m64-f32 (target), m32-f16 (draft), m80-bf16 (intermediate), which share a
 * 512-token vocabulary. */
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
#include "policy_mark.h"
#include "spec.h"
#include "testutil.h"

static eng_model *g_t, *g_d, *g_mid;
static const eng_model *g_draft;   /* the draft greedy_spec_case uses (g_d unless a test swaps it) */
static int32_t g_prompt[256];
static int g_np;

/* budgets chosen so that every policy evicts within 24 + 64 tokens */
static const char *const g_specs[] = {
    "streaming:sink=4,recent=20",
    "window:recent=24",
    "h2o:sink=2,heavy=8,recent=12",
    "lazy_h2o:sink=2,heavy=8,recent=12,interval=4",
    "knorm:keep_ratio=0.9,prune_after=16,skip_layers=none",
    "l2:keep_ratio=0.95,prune_after=20",
    "tova:budget=28",
    "sepllm:init=2,local=12,sep_cap=8,cache=26",
    "snapkv:budget=16,window=4",
    "streaming:sink=2,recent=16,pos=original",
    "fix_size_l2:size=24,keep_ratio=0.25,skip_layers=none",
    "hybrid:sink=2,heavy=8,recent=14",
    "unified:sink=2,sep=4,heavy=6,recent=12,seps=1;2;3;5;7;11;13;17;19;23;29;31;37;41;43;47",
    "cam:sink=2,recent=20,merge=4",
    "cake:budget=20,window=4",
    "kivi:bits=2,group=8,residual=16",
    "kivi:bits=4,group=16,residual=16",
    "think:ratio=0.5,recent=4,window=8",
    NULL,
};

static int suite_init(void) {
    g_t = tu_load_model("m64-f32");
    g_d = tu_load_model("m32-f16");
    g_mid = tu_load_model("m80-bf16");
    g_np = tu_read_ids("golden/m64-f32/prompt_ids.txt", g_prompt, 256);
    g_draft = g_d;
    return g_t && g_d && g_mid && g_np > 0 ? 0 : -1;
}

static int suite_clean(void) {
    eng_model_free(g_t);
    eng_model_free(g_d);
    eng_model_free(g_mid);
    return 0;
}

/* A policy from a spec string, for model m; NULL (test failure) on error. */
static eng_policy *policy_make(const char *spec, const eng_model *m) { return tu_policy(m, spec); }

/* Target-only greedy decoding under a policy: the prompt in one call, then
 * one token per call. Returns evictions (so a test can insist on them); for
 * kivi/think, which compress instead of evicting, 1 when they triggered. */
static long greedy_target_only(const char *spec, int max_new, int32_t *out) {
    char err[512];
    eng_policy *p = policy_make(spec, g_t);
    eng_state *s = NULL;
    CU_ASSERT_FATAL(p != NULL);
    CU_ASSERT_FATAL(eng_state_init(&s, g_t, 128, 64, err, sizeof err) == ENG_OK);
    CU_ASSERT_FATAL(eng_state_set_policy(s, p) == ENG_OK);
    CU_ASSERT_FATAL(eng_forward(s, g_prompt, g_np, s->logits, 0) == ENG_OK);
    for (int i = 0; i < max_new; i++) {
        out[i] = eng_argmax(s->logits, g_t->cfg.n_vocab);
        if (i + 1 < max_new) CU_ASSERT_FATAL(eng_forward(s, &out[i], 1, s->logits, 0) == ENG_OK);
    }
    eng_policy_stats ps;
    eng_policy_stats_get(p, &ps);
    eng_state_free(s);
    eng_policy_free(p);
    return ps.evictions ? (long)ps.evictions : ps.triggered;
}

/* Greedy speculative decoding with `spec` on the target (and dspec on the
 * draft, may be NULL); 1 when the output equals ref[0..64). */
static int greedy_spec_case(const char *spec, const char *dspec, int mid, int gamma, eng_spec_schedule sch,
                            const int32_t *ref, eng_spec_stats *st) {
    eng_spec_opts o;
    eng_spec_opts_default(&o);
    o.gamma = gamma;
    o.gamma_max = 8;
    o.schedule = sch;
    eng_spec *sp = NULL;
    char err[2048];
    CU_ASSERT_FATAL(eng_spec_init(&sp, g_t, g_draft, mid ? g_mid : NULL, 128, &o, err, sizeof err) == ENG_OK);
    eng_policy *pt = policy_make(spec, g_t), *pd = dspec ? policy_make(dspec, g_draft) : NULL;
    eng_policy *pm = dspec && mid ? policy_make(dspec, g_mid) : NULL;
    CU_ASSERT_FATAL(pt != NULL);
    CU_ASSERT_FATAL(eng_spec_set_policy(sp, 0, pt) == ENG_OK);
    if (pd) CU_ASSERT_FATAL(eng_spec_set_policy(sp, 1, pd) == ENG_OK);
    if (pm) CU_ASSERT_FATAL(eng_spec_set_policy(sp, 2, pm) == ENG_OK);
    eng_ids out = {0};
    eng_status gs = eng_spec_generate(sp, g_prompt, g_np, 64, &out, st);
    if (gs != ENG_OK) fprintf(stderr, "\n  generate: %s\n", eng_spec_errmsg(sp));
    CU_ASSERT_FATAL(gs == ENG_OK);
    int same = out.n == 64 && !memcmp(out.v, ref, 64 * sizeof(int32_t));
    if (!same) {
        int i = 0;
        while (i < (int)out.n && out.v[i] == ref[i]) i++;
        fprintf(stderr, "\n  mismatch: %s draft %s mid %d gamma %d schedule %d: first differs at %d\n", spec,
                dspec ? dspec : "-", mid, gamma, (int)sch, i);
    }
    CU_ASSERT_EQUAL(st->invariant_violations, 0);
    eng_ids_free(&out);
    eng_spec_free(sp);
    eng_policy_free(pt);
    eng_policy_free(pd);
    eng_policy_free(pm);
    return same;
}

static void test_greedy_equals_target_only(void) {
    int32_t ref[64];
    eng_spec_stats st;
    int gammas[] = {1, 3, 5};
    for (int i = 0; g_specs[i]; i++) {
        long ev = greedy_target_only(g_specs[i], 64, ref);
        CU_ASSERT(ev > 0);   /* the budget is reached: the policy really evicts */
        int ok = 1, n = 0;
        double acc = 0;
        for (int gi = 0; gi < 3; gi++)
            for (int s = 0; s < 3; s++) {
                if (gi != 1 && s != 0) continue;   /* every gamma with constant, every schedule with gamma 3 */
                ok &= greedy_spec_case(g_specs[i], NULL, 0, gammas[gi], (eng_spec_schedule)s, ref, &st);
                acc += st.acceptance_rate;
                n++;
            }
        /* a policy on the draft too (the same spec; the draft's own rules) */
        ok &= greedy_spec_case(g_specs[i], g_specs[i], 0, 4, ENG_SPEC_AIMD, ref, &st);
        CU_ASSERT(ok);
        printf("\n  %-52s evictions %5ld, mean acceptance %.3f: %s", g_specs[i], ev, acc / n,
               ok ? "== target-only" : "DIFFERS");
    }
}

/* The unrelated fixture pair never agrees (acceptance 0), so the rows after
 * the first of a verification never decide anything there. Here the draft is
 * the target model under a smaller window: it agrees often but not always,
 * so multi-row verifications under the target's policy are accepted in part
 * and rolled back in part. */
static void test_greedy_partial_acceptance(void) {
    int32_t ref[64];
    eng_spec_stats st;
    g_draft = g_t;
    for (int i = 0; g_specs[i]; i++) {
        greedy_target_only(g_specs[i], 64, ref);
        int ok = 1;
        double acc = 0;
        for (int g = 2; g <= 6; g += 2) {
            ok &= greedy_spec_case(g_specs[i], "window:recent=6", 0, g, ENG_SPEC_HEURISTIC, ref, &st);
            acc += st.acceptance_rate / 3;
            CU_ASSERT(st.accepted > 0);
        }
        CU_ASSERT(ok);
        printf("\n  %-52s draft = target + window:recent=6: acceptance %.3f: %s", g_specs[i], acc,
               ok ? "== target-only" : "DIFFERS");
    }
    g_draft = g_d;
}

static void test_greedy_cascade_policies(void) {
    int32_t ref[64];
    eng_spec_stats st;
    const char *specs[] = {"streaming:sink=4,recent=20", "h2o:sink=2,heavy=8,recent=12", "knorm:keep_ratio=0.9,prune_after=16"};
    for (int i = 0; i < 3; i++) {
        greedy_target_only(specs[i], 64, ref);
        for (int s = 0; s < 3; s++) {
            CU_ASSERT(greedy_spec_case(specs[i], NULL, 1, 3, (eng_spec_schedule)s, ref, &st));
            CU_ASSERT(st.mid_passes > 0);
        }
        CU_ASSERT(greedy_spec_case(specs[i], specs[i], 1, 3, ENG_SPEC_HEURISTIC, ref, &st));
    }
}

static void test_draft_equals_target_policy(void) {
    /* draft == target, same policy on both: everything is accepted */
    int32_t ref[64];
    const char *spec = "h2o:sink=2,heavy=8,recent=12";
    greedy_target_only(spec, 64, ref);
    eng_spec_opts o;
    eng_spec_opts_default(&o);
    o.gamma = 4;
    eng_spec *sp = NULL;
    char err[1024];
    CU_ASSERT_FATAL(eng_spec_init(&sp, g_t, g_t, NULL, 128, &o, err, sizeof err) == ENG_OK);
    eng_policy *pt = policy_make(spec, g_t), *pd = policy_make(spec, g_t);
    CU_ASSERT_FATAL(eng_spec_set_policy(sp, 0, pt) == ENG_OK && eng_spec_set_policy(sp, 1, pd) == ENG_OK);
    eng_ids out = {0};
    eng_spec_stats st;
    CU_ASSERT_FATAL(eng_spec_generate(sp, g_prompt, g_np, 64, &out, &st) == ENG_OK);
    CU_ASSERT(out.n == 64 && !memcmp(out.v, ref, sizeof ref));
    CU_ASSERT_EQUAL(st.accepted, st.drafted);
    eng_ids_free(&out);
    eng_spec_free(sp);
    eng_policy_free(pt);
    eng_policy_free(pd);
}

/* Compare two states holding the same tokens under the same policy: fill
 * counts and kept positions exactly, keys/values/scores within tol.
 * *bit: stays 1 while everything is bit-identical. Returns 1 if equal. */
static int states_equal(const eng_state *a, const eng_state *b, double tol, int *bit) {
    const eng_kvcache *ka = &a->kv, *kb = &b->kv;
    const eng_policy *pa = a->policy, *pb = b->policy;
    if (a->n_past != b->n_past) return 0;
    int D = ka->head_dim;
    for (int l = 0; l < ka->n_layer; l++)
        for (int h = 0; h < ka->n_head; h++) {
            size_t lh = (size_t)l * ka->n_head + h;
            int n = ka->n[lh];
            if (n != kb->n[lh]) return 0;
            if (memcmp(eng_kvcache_pos(ka, l, h), eng_kvcache_pos(kb, l, h), (size_t)n * sizeof(int32_t))) return 0;
            const float *xa[2] = {eng_kvcache_k(ka, l) + (size_t)h * ka->cap * D, eng_kvcache_v(ka, l) + (size_t)h * ka->cap * D};
            const float *xb[2] = {eng_kvcache_k(kb, l) + (size_t)h * kb->cap * D, eng_kvcache_v(kb, l) + (size_t)h * kb->cap * D};
            for (int w = 0; w < 2; w++)
                for (int j = 0; j < n * D; j++) {
                    if (xa[w][j] != xb[w][j]) *bit = 0;
                    if (fabs((double)xa[w][j] - xb[w][j]) > tol) return 0;
                }
            if (pa && pa->score) {
                const float *sa = pa->score + lh * ka->cap, *sb = pb->score + lh * kb->cap;
                for (int j = 0; j < n; j++) {
                    if (sa[j] != sb[j]) *bit = 0;
                    if (fabs((double)sa[j] - sb[j]) > tol * (1 + fabs((double)sb[j]))) return 0;
                }
            }
            if (pa && pa->ids && memcmp(pa->ids + lh * ka->cap, pb->ids + lh * kb->cap, (size_t)n * sizeof(int32_t)))
                return 0;
        }
    if (pa && pa->store && pa->store->layer_copy) {   // kivi: the quantized store, layer by layer, bytes equal
        size_t lb = pa->store->layer_bytes(pa);
        if (lb != pb->store->layer_bytes(pb)) return 0;
        unsigned char *x = malloc(lb), *y = malloc(lb);
        int same = x && y;
        for (int l = 0; same && l < ka->n_layer; l++) {
            pa->store->layer_copy((eng_policy *)pa, l, x, 1);
            pb->store->layer_copy((eng_policy *)pb, l, y, 1);
            same = !memcmp(x, y, lb);
        }
        free(x);
        free(y);
        if (!same) return 0;
    }
    return 1;
}


/* Single-model reference: prompt in one call, then seq[g_np..upto) one by one. */
static eng_state *replay(const eng_model *m, eng_policy *p, const int32_t *seq, int upto) {
    char err[512];
    eng_state *s = NULL;
    CU_ASSERT_FATAL(eng_state_init(&s, m, 128, 64, err, sizeof err) == ENG_OK);
    CU_ASSERT_FATAL(eng_state_set_policy(s, p) == ENG_OK);
    CU_ASSERT_FATAL(eng_forward(s, seq, g_np, NULL, 0) == ENG_OK);
    for (int i = g_np; i < upto; i++) CU_ASSERT_FATAL(eng_forward(s, seq + i, 1, NULL, 0) == ENG_OK);
    return s;
}

/* Sampled runs (random accept/reject): target and draft caches afterwards
 * equal single-model runs over the committed tokens, for every policy. */
static void test_rollback_matches_replay(void) {
    int n_bit = 0, n_case = 0;
    /* With every matmul row computed alone, a batched verification pass rounds
     * exactly like the replay's one-token calls: any difference left is a bug,
     * not a near tie (issue 5: the knorm cascade case). */
    kn_set_batch_invariant(1);
    for (int i = 0; g_specs[i]; i++)
        for (int casc = 0; casc < 2; casc++) {
            eng_spec_opts o;
            eng_spec_opts_default(&o);
            o.gamma = 3 + casc;
            o.gamma_max = 8;
            o.schedule = ENG_SPEC_HEURISTIC;
            o.temperature = 0.9f;
            o.seed = 11 + (uint64_t)i;
            eng_spec *sp = NULL;
            char err[1024];
            CU_ASSERT_FATAL(eng_spec_init(&sp, g_t, g_d, casc ? g_mid : NULL, 128, &o, err, sizeof err) == ENG_OK);
            const eng_model *ms[3] = {g_t, g_d, g_mid};
            eng_policy *pol[3] = {NULL, NULL, NULL};
            for (int l = 0; l < 2 + casc; l++) {
                pol[l] = policy_make(g_specs[i], ms[l]);
                CU_ASSERT_FATAL(pol[l] && eng_spec_set_policy(sp, l, pol[l]) == ENG_OK);
            }
            eng_ids out = {0};
            eng_spec_stats st;
            CU_ASSERT_FATAL(eng_spec_generate(sp, g_prompt, g_np, 60, &out, &st) == ENG_OK);
            CU_ASSERT_EQUAL(st.invariant_violations, 0);
            CU_ASSERT(st.resampled > 0);
            int32_t seq[128];
            memcpy(seq, g_prompt, (size_t)g_np * sizeof(int32_t));
            memcpy(seq + g_np, out.v, out.n * sizeof(int32_t));
            for (int l = 0; l < 2 + casc; l++) {
                eng_state *s = eng_spec_state(sp, l);
                eng_policy *rp = policy_make(g_specs[i], ms[l]);
                eng_state *r = replay(ms[l], rp, seq, s->n_past);
                int bit = 1, eq = states_equal(s, r, 1e-4, &bit);
                eng_policy_stats a, b;
                eng_policy_stats_get(pol[l], &a);
                eng_policy_stats_get(rp, &b);
                if (l == 0) CU_ASSERT_EQUAL(a.evictions, b.evictions);   /* no eviction from a rejected step survives */
                if (!eq) {
                    int d = 0;
                    for (int x = 0; x < s->kv.n_layer * s->kv.n_head; x++) d += s->kv.n[x] != r->kv.n[x];
                    fprintf(stderr, "\n  %s level %d (cascade %d): cache differs from the replay (n_past %d/%d, %d heads with other counts)\n",
                            g_specs[i], l, casc, s->n_past, r->n_past, d);
                    for (int x = 0; x < s->kv.n_layer * s->kv.n_head; x++) {
                        int L0 = x / s->kv.n_head, H0 = x % s->kv.n_head, nn = s->kv.n[x];
                        const int32_t *pa = eng_kvcache_pos(&s->kv, L0, H0), *pb = eng_kvcache_pos(&r->kv, L0, H0);
                        double md = 0;
                        const float *ka = eng_kvcache_k(&s->kv, L0) + (size_t)H0 * s->kv.cap * s->kv.head_dim;
                        const float *kb = eng_kvcache_k(&r->kv, L0) + (size_t)H0 * r->kv.cap * r->kv.head_dim;
                        for (int j = 0; j < nn * s->kv.head_dim; j++) md = fmax(md, fabs((double)ka[j] - kb[j]));
                        int dp = 0;
                        for (int j = 0; j < nn; j++) dp += pa[j] != pb[j];
                        fprintf(stderr, "    layer %d head %d: %d slots, %d positions differ, max |dK| %.3g\n", L0, H0, nn, dp, md);
                        if (dp) {
                            for (int j = 0; j < nn; j++) fprintf(stderr, "%d/%d ", pa[j], pb[j]);
                            fprintf(stderr, "\n");
                        }
                    }
                }
                CU_ASSERT(eq);
                n_bit += bit;
                n_case++;
                eng_state_free(r);
                eng_policy_free(rp);
            }
            eng_ids_free(&out);
            eng_spec_free(sp);
            for (int l = 0; l < 3; l++) eng_policy_free(pol[l]);
        }
    kn_set_batch_invariant(0);
    printf("\n  %d level caches equal their single-model replay (%d of them bit-identical)", n_case, n_bit);
    CU_ASSERT_EQUAL(n_bit, n_case);
}

/* Mark, tentative tokens (one batched policy-step call and single calls),
 * restore, then the committed continuation: bit-identical to a state that
 * never saw the tentative tokens, fed in the same call shapes. */
static void test_mark_restore_bit_identical(void) {
    char err[512];
    const int32_t tent[6] = {300, 301, 302, 303, 304, 305}, cont[5] = {9, 10, 11, 12, 13};
    for (int i = 0; g_specs[i]; i++) {
        eng_policy *pa = policy_make(g_specs[i], g_t), *pb = policy_make(g_specs[i], g_t);
        eng_state *a = NULL, *b = NULL;
        eng_state_mark *mk = NULL;
        CU_ASSERT_FATAL(eng_state_init(&a, g_t, 128, 64, err, sizeof err) == ENG_OK);
        CU_ASSERT_FATAL(eng_state_init(&b, g_t, 128, 64, err, sizeof err) == ENG_OK);
        CU_ASSERT_FATAL(eng_state_set_policy(a, pa) == ENG_OK && eng_state_set_policy(b, pb) == ENG_OK);
        CU_ASSERT_FATAL(eng_state_mark_init(&mk, a, err, sizeof err) == ENG_OK);
        CU_ASSERT_EQUAL(eng_state_mark_restore(mk, a), ENG_ERR_INVAL);   /* nothing saved yet */
        a->policy_steps = b->policy_steps = 1;
        int bit = 1;
        for (int round = 0; round < 12; round++) {   /* 24 + 12·5 = 84 tokens: every policy evicts */
            const int32_t *src = round == 0 ? g_prompt : cont;
            int n = round == 0 ? g_np : 5;
            a->policy_steps = b->policy_steps = round > 0;
            CU_ASSERT_FATAL(eng_forward(a, src, n, NULL, 0) == ENG_OK);
            CU_ASSERT_FATAL(eng_forward(b, src, n, NULL, 0) == ENG_OK);
            eng_state_mark_save(mk, a);
            CU_ASSERT_FATAL(eng_forward(a, tent, 1 + round % 6, a->logits, 1) == ENG_OK);   /* a verify-like call */
            CU_ASSERT_FATAL(eng_forward(a, tent, 1, NULL, 0) == ENG_OK);                    /* a draft-like call */
            CU_ASSERT_FATAL(eng_state_mark_restore(mk, a) == ENG_OK);
            CU_ASSERT_EQUAL(eng_state_mark_pos(mk), b->n_past);
            CU_ASSERT(states_equal(a, b, 0.0, &bit));
        }
        eng_policy_stats x, y;
        eng_policy_stats_get(pa, &x);
        eng_policy_stats_get(pb, &y);
        CU_ASSERT(x.evictions == y.evictions && x.triggered && x.n_steps == y.n_steps);
        CU_ASSERT(bit);
        if (!bit) fprintf(stderr, "\n  %s: restore not bit-identical\n", g_specs[i]);
        eng_state_mark_free(mk);
        eng_state_free(a);
        eng_state_free(b);
        eng_policy_free(pa);
        eng_policy_free(pb);
    }
}

/* policy_steps: a T-token call equals T one-token calls under a policy, bit
 * for bit once matmul rows are batch-invariant (kivi's store is compared
 * byte for byte, so rounding noise would show there first). */
static void test_policy_steps_equal_single_calls(void) {
    char err[512];
    kn_set_batch_invariant(1);
    int V = g_t->cfg.n_vocab;
    float *la = malloc((size_t)8 * V * sizeof(float)), *lb = malloc((size_t)V * sizeof(float));
    for (int i = 0; g_specs[i]; i++) {
        eng_policy *pa = policy_make(g_specs[i], g_t), *pb = policy_make(g_specs[i], g_t);
        eng_state *a = NULL, *b = NULL;
        CU_ASSERT_FATAL(eng_state_init(&a, g_t, 128, 64, err, sizeof err) == ENG_OK);
        CU_ASSERT_FATAL(eng_state_init(&b, g_t, 128, 64, err, sizeof err) == ENG_OK);
        CU_ASSERT_FATAL(eng_state_set_policy(a, pa) == ENG_OK && eng_state_set_policy(b, pb) == ENG_OK);
        CU_ASSERT_FATAL(eng_forward(a, g_prompt, g_np, NULL, 0) == ENG_OK);
        CU_ASSERT_FATAL(eng_forward(b, g_prompt, g_np, NULL, 0) == ENG_OK);
        a->policy_steps = 1;
        int ok = 1, bit = 1;
        for (int c = 0; c < 8; c++) {
            int32_t tok[8];
            for (int t = 0; t < 8; t++) tok[t] = (int32_t)((c * 37 + t * 11) % V);
            CU_ASSERT_FATAL(eng_forward(a, tok, 8, la, 1) == ENG_OK);
            for (int t = 0; t < 8; t++) {
                CU_ASSERT_FATAL(eng_forward(b, tok + t, 1, lb, 0) == ENG_OK);
                for (int v = 0; v < V; v++) {
                    if (la[(size_t)t * V + v] != lb[v]) bit = 0;
                    if (fabs((double)la[(size_t)t * V + v] - lb[v]) > 1e-4) ok = 0;
                }
            }
            ok &= states_equal(a, b, 1e-4, &bit);
        }
        CU_ASSERT(ok && bit);
        if (!ok || !bit) fprintf(stderr, "\n  %s: policy steps differ from single calls\n", g_specs[i]);
        eng_state_free(a);
        eng_state_free(b);
        eng_policy_free(pa);
        eng_policy_free(pb);
    }
    kn_set_batch_invariant(0);
    free(la);
    free(lb);
}

static void test_no_alloc_per_token_policies(void) {
    eng_spec_opts o;
    eng_spec_opts_default(&o);
    o.gamma = 3;
    o.schedule = ENG_SPEC_AIMD;
    o.temperature = 1.0f;
    o.compare = 1;
    eng_spec *sp = NULL;
    char err[1024];
    CU_ASSERT_FATAL(eng_spec_init(&sp, g_t, g_d, g_mid, 128, &o, err, sizeof err) == ENG_OK);
    eng_policy *p0 = policy_make("h2o:sink=2,heavy=8,recent=12", g_t), *p1 = policy_make("streaming:sink=4,recent=20", g_d);
    eng_policy *p2 = policy_make("knorm:keep_ratio=0.9,prune_after=16", g_mid);
    CU_ASSERT_FATAL(eng_spec_set_policy(sp, 0, p0) == ENG_OK && eng_spec_set_policy(sp, 1, p1) == ENG_OK &&
                    eng_spec_set_policy(sp, 2, p2) == ENG_OK);
    CU_ASSERT(eng_spec_policy(sp, 1) == p1);
    eng_ids out = {0};
    eng_spec_stats st;
    CU_ASSERT_FATAL(eng_spec_generate(sp, g_prompt, g_np, 64, &out, &st) == ENG_OK);
    out.n = 0;
    unsigned long a0 = eng_alloc_count();
    CU_ASSERT_FATAL(eng_spec_generate(sp, g_prompt, g_np, 64, &out, &st) == ENG_OK);
    CU_ASSERT_EQUAL(eng_alloc_count(), a0);
    CU_ASSERT_EQUAL(st.n_new, 64);
    CU_ASSERT_EQUAL(st.invariant_violations, 0);
    eng_ids_free(&out);
    eng_spec_free(sp);
    eng_policy_free(p0);
    eng_policy_free(p1);
    eng_policy_free(p2);
}

static void test_errors_policy(void) {
    eng_spec_opts o;
    eng_spec_opts_default(&o);
    eng_spec *sp = NULL;
    char err[1024];
    CU_ASSERT_FATAL(eng_spec_init(&sp, g_t, g_d, NULL, 128, &o, err, sizeof err) == ENG_OK);
    eng_policy *pd = policy_make("window:recent=8", g_d), *pt = policy_make("full", g_t);
    CU_ASSERT_EQUAL(eng_spec_set_policy(sp, 0, pd), ENG_ERR_INVAL);   /* created for another shape */
    CU_ASSERT(strstr(eng_spec_errmsg(sp), "shape") != NULL);
    CU_ASSERT_EQUAL(eng_spec_set_policy(sp, 2, pt), ENG_ERR_INVAL);   /* no intermediate level */
    CU_ASSERT_EQUAL(eng_spec_set_policy(sp, 0, pt), ENG_OK);          /* full: truncation, no mark */
    eng_ids out = {0};
    eng_spec_stats st;
    CU_ASSERT_EQUAL(eng_spec_generate(sp, g_prompt, g_np, 16, &out, &st), ENG_OK);
    CU_ASSERT_EQUAL(eng_spec_state(sp, 0)->n_past, g_np + 16 - 1);
    CU_ASSERT_EQUAL(eng_spec_set_policy(sp, 0, NULL), ENG_OK);
    eng_ids_free(&out);
    eng_spec_free(sp);
    eng_policy_free(pd);
    eng_policy_free(pt);
}

int main(void) {
    /* one thread: the fixtures are tiny (threads only add barrier waits), and
     * the 100k-draw tests must not spin in threaded BLAS on a loaded box */
    kn_set_threads(1);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("spec_policy", suite_init, suite_clean);
    CU_add_test(s, "greedy spec == target-only greedy under every policy", test_greedy_equals_target_only);
    CU_add_test(s, "greedy spec == target-only greedy, partial acceptance", test_greedy_partial_acceptance);
    CU_add_test(s, "greedy cascade == target-only greedy under policies", test_greedy_cascade_policies);
    CU_add_test(s, "draft == target with h2o on both accepts everything", test_draft_equals_target_policy);
    CU_add_test(s, "policy steps: a T-token call == T single calls", test_policy_steps_equal_single_calls);
    CU_add_test(s, "mark restore is bit-identical, every policy", test_mark_restore_bit_identical);
    CU_add_test(s, "rollback: caches == single-model replay, every policy", test_rollback_matches_replay);
    CU_add_test(s, "no allocation per token with policies", test_no_alloc_per_token_policies);
    CU_add_test(s, "errors: shape, level, full keeps truncation", test_errors_policy);
    return tu_run();
}
