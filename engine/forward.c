/* forward.c — one GPT-NeoX forward pass over a chunk of tokens (see
 * forward.h for the numerics contract). The layer loop reads like HF's
 * GPTNeoXLayer.forward; every op is a kernels/ call so the CUDA backend can
 * mirror this file op for op. In offload mode (s->dev, forward_gpu.h) the
 * embedding, ln1 + QKV, dense + MLP and the logits run on the device and
 * only the attention block below — policy hooks, RoPE, cache, marks —
 * runs here. */
#include "forward.h"

#include <string.h>

#include "forward_gpu.h"
#include "kn.h"
#include "policy.h"
#include "policy_mark.h"

eng_status eng_state_init(eng_state **out, const eng_model *m, int n_ctx, int n_batch,
                          char *err, size_t n_err) {
    *out = NULL;
    const eng_config *c = &m->cfg;
    if (n_ctx <= 0 || n_batch <= 0) {
        eng_errf(err, n_err, "state: n_ctx (%d) and n_batch (%d) must be positive", n_ctx, n_batch);
        return ENG_ERR_INVAL;
    }
    if (n_batch > n_ctx) n_batch = n_ctx;
    eng_state *s = eng_calloc(1, sizeof *s);
    if (!s) goto nomem;
    s->model = m;
    s->n_batch = n_batch;
    s->n_threads = kn_get_threads();
    if (eng_kvcache_init(&s->kv, c->n_layer, c->n_head, c->head_dim, n_ctx) != ENG_OK) goto nomem;

    size_t B = (size_t)n_batch, C = (size_t)c->n_embd, R2 = (size_t)c->n_rot / 2;
    size_t sizes[] = {
        B * C, B * C, B * 3 * C, B * C, B * C, B * (size_t)c->n_ff, B * C, B * (size_t)c->n_vocab,
        R2 + 1, B * R2 + 1, B * R2 + 1, (size_t)s->n_threads * n_ctx,
        m->w.wtype == KN_W_F32 ? 0 : (size_t)KN_LP_TILE * (size_t)(c->n_ff > c->n_embd ? c->n_ff : c->n_embd),
    };
    float **ptrs[] = {&s->x, &s->h, &s->qkv, &s->att, &s->ao, &s->ff, &s->mo, &s->logits,
                      &s->inv_freq, &s->rope_cos, &s->rope_sin, &s->att_scratch, &s->lp_scratch};
    size_t n_f = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) n_f += sizes[i];
    size_t n_i = B + (size_t)c->n_head * B;
    s->mem = eng_alloc(n_f * sizeof(float) + n_i * sizeof(int32_t));
    if (!s->mem) goto nomem;
    float *p = s->mem;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        *ptrs[i] = p;
        p += sizes[i];
    }
    s->pos = (int32_t *)p;
    s->n_vis = s->pos + B;
    kn_rope_inv_freq(s->inv_freq, c->n_rot, c->rope_base);
    *out = s;
    return ENG_OK;
nomem:
    eng_errf(err, n_err, "state: out of memory for n_ctx=%d n_batch=%d", n_ctx, n_batch);
    eng_state_free(s);
    return ENG_ERR_NOMEM;
}

void eng_state_free(eng_state *s) {
    if (!s) return;
    if (s->policy) eng_policy_unbind(s->policy);
    eng_kvcache_free(&s->kv);
    eng_free(s->mem);
    eng_free(s);
}

void eng_state_reset(eng_state *s) {
    eng_kvcache_clear(&s->kv);
    s->n_past = 0;
}

const char *eng_state_errmsg(const eng_state *s) { return s ? s->err : "no state"; }

eng_status eng_state_rollback(eng_state *s, int n) {
    if (n < 0 || n > s->n_past || eng_kvcache_truncate(&s->kv, n) != ENG_OK) {
        eng_errf(s->err, sizeof s->err, "rollback: cannot drop %d of %d tokens", n, s->n_past);
        return ENG_ERR_INVAL;
    }
    s->n_past -= n;
    if (s->policy) eng_policy_cache_changed(s->policy);
    return ENG_OK;
}

/* Copy the chunk's rotated keys and values into the next free slots of each
 * head of layer l, and record how many keys each query may see. */
static void cache_append(eng_state *s, int l, int T) {
    const eng_config *c = &s->model->cfg;
    int NH = c->n_head, D = c->head_dim, C = c->n_embd;
    eng_kvcache *kv = &s->kv;
    float *K = eng_kvcache_k(kv, l), *V = eng_kvcache_v(kv, l);
    int32_t *n = eng_kvcache_n(kv, l);
    for (int h = 0; h < NH; h++) {
        int32_t base = n[h];
        int32_t *pos = eng_kvcache_pos(kv, l, h);
        for (int t = 0; t < T; t++) {
            const float *row = s->qkv + (size_t)t * 3 * C;
            size_t slot = ((size_t)h * kv->cap + base + t) * D;
            memcpy(K + slot, row + C + (size_t)h * D, (size_t)D * sizeof(float));
            memcpy(V + slot, row + 2 * C + (size_t)h * D, (size_t)D * sizeof(float));
            pos[base + t] = s->pos[t];
            s->n_vis[h * T + t] = base + t + 1;
        }
        n[h] = base + T;
    }
}

/* y(M,N) = x(M,K) · W(N,K)ᵀ + b for the n-th (N,K) block of a weight
 * matrix held fp32 (w32) or 16-bit (w16), whichever the model keeps. */
static void matmul(const eng_state *s, float *y, const float *x, const float *w32, const uint16_t *w16,
                   size_t block, const float *b, int M, int K, int N) {
    size_t off = block * (size_t)N * (size_t)K;
    kn_wtype wt = s->model->w.wtype;
    if (wt == KN_W_F32) kn_matmul(y, x, w32 + off, b, M, K, N);
    else kn_matmul_lp(y, x, w16 + off, wt, b, M, K, N, s->lp_scratch);
}

/* q and k of the chunk get RoPE at their true positions, unless a pos=shift
 * policy places them by cache index (keys then stay un-rotated in the cache). */
static void rope_qk(eng_state *s, int l, int T) {
    const eng_config *c = &s->model->cfg;
    size_t C = c->n_embd;
    if (s->policy && eng_policy_rope_qk(s->policy, l, T)) return;
    kn_rope(s->qkv, T, c->n_head, c->head_dim, 3 * C, c->n_rot, s->rope_cos, s->rope_sin);
    kn_rope(s->qkv + C, T, c->n_head, c->head_dim, 3 * C, c->n_rot, s->rope_cos, s->rope_sin);
}

/* evict -> rope(q, k) -> cache -> attend -> score, for the T rows of s->qkv */
static void attend(eng_state *s, int l, int T) {
    const eng_config *c = &s->model->cfg;
    size_t C = c->n_embd;
    eng_policy *p = s->policy;
    if (p) eng_policy_layer_evict(p, l, T);   // among the tokens held before these rows only
    rope_qk(s, l, T);
    cache_append(s, l, T);
    if (!p || !eng_policy_attend(p, l, T)) {   // kivi/think attend over their own store
        const float *K = p ? eng_policy_attn_keys(p, l, T) : eng_kvcache_k(&s->kv, l);
        kn_attention(s->att, s->qkv, 3 * C, K, eng_kvcache_v(&s->kv, l), T, c->n_head, c->head_dim, s->kv.cap,
                     s->n_vis, s->att_scratch, p ? eng_policy_probs(p) : NULL);
    }
    if (p) eng_policy_layer_observe(p, l, T);
}

/* Row t of a T-row chunk as a policy step of its own (s->policy_steps): the
 * row views of the activations are shifted to row t, attend runs with T = 1,
 * and the views are put back. Equal to a call with that token alone. */
static void attend_step(eng_state *s, int l, int T, int t) {
    const eng_config *c = &s->model->cfg;
    size_t C = c->n_embd, R2 = (size_t)c->n_rot / 2;
    float *qkv = s->qkv, *att = s->att, *rc = s->rope_cos, *rs = s->rope_sin;
    int32_t *pos = s->pos;
    s->qkv += (size_t)t * 3 * C;
    s->att += (size_t)t * C;
    s->rope_cos += (size_t)t * R2;
    s->rope_sin += (size_t)t * R2;
    s->pos += t;
    eng_policy_substep(s->policy, t, T);
    attend(s, l, 1);
    s->qkv = qkv;
    s->att = att;
    s->rope_cos = rc;
    s->rope_sin = rs;
    s->pos = pos;
}

/* A failed device op in offload mode: its message becomes the state's. */
static eng_status dev_fail(eng_state *s, eng_status st) {
    eng_errf(s->err, sizeof s->err, "%s", eng_gpu_state_errmsg(s->dev));
    return st;
}

static eng_status layer_forward(eng_state *s, int l, int T) {
    const eng_model *m = s->model;
    const eng_config *c = &m->cfg;
    const eng_weights *w = &m->w;
    size_t C = c->n_embd, F = c->n_ff;
    eng_policy *p = s->policy;

    // attention branch: ln1 -> qkv -> [evict] -> rope(q, k) -> cache -> attend -> [score] -> dense
    if (s->dev) {   // offload mode: ln1 and qkv on the device, the rest of attention here
        eng_status st = eng_gpu_offload_qkv(s->dev, l, T, s->qkv);
        if (st != ENG_OK) return dev_fail(s, st);
    } else {
        kn_layernorm(s->h, s->x, w->ln1_w + l * C, w->ln1_b + l * C, T, (int)C, c->ln_eps);
        matmul(s, s->qkv, s->h, w->qkv_w, w->qkv_w_h, l, w->qkv_b + l * 3 * C, T, (int)C, (int)(3 * C));
    }
    int r = s->mark ? s->mark_chunk_row : -1;   // a mark row in this chunk (policy_mark.h)
    if (r >= T) r = -1;
    if (r >= 0) eng_state_mark_layer_begin(s->mark, s, l);
    if (p && ((s->policy_steps && T > 1) || r > 0)) {
        for (int t = 0; t < T; t++) {
            if (t == r) {
                eng_policy_substep(p, t, T);
                eng_state_mark_layer_save(s->mark, s, l, t);
            }
            attend_step(s, l, T, t);
        }
    } else {
        if (r == 0) eng_state_mark_layer_save(s->mark, s, l, 0);
        attend(s, l, T);
    }
    if (s->dev) {
        eng_status st = eng_gpu_offload_mlp(s->dev, l, T, s->att);
        return st == ENG_OK ? ENG_OK : dev_fail(s, st);
    }
    matmul(s, s->ao, s->att, w->o_w, w->o_w_h, l, w->o_b + l * C, T, (int)C, (int)C);

    // MLP branch reads ln2(x) of the same x (parallel) or of x + attn (sequential)
    if (!c->parallel_residual) kn_add2(s->x, s->ao, NULL, (size_t)T * C);
    kn_layernorm(s->h, s->x, w->ln2_w + l * C, w->ln2_b + l * C, T, (int)C, c->ln_eps);
    matmul(s, s->ff, s->h, w->fc1_w, w->fc1_w_h, l, w->fc1_b + l * F, T, (int)C, (int)F);
    kn_gelu(s->ff, (size_t)T * F);
    matmul(s, s->mo, s->ff, w->fc2_w, w->fc2_w_h, l, w->fc2_b + l * C, T, (int)F, (int)C);
    kn_add2(s->x, c->parallel_residual ? s->ao : s->mo, c->parallel_residual ? s->mo : NULL,
            (size_t)T * C);
    return ENG_OK;
}

static eng_status forward_chunk(eng_state *s, const int32_t *tok, int T, float *logits, int all_logits,
                                int last) {
    const eng_model *m = s->model;
    const eng_config *c = &m->cfg;
    size_t C = c->n_embd, V = c->n_vocab;
    eng_status st;
    if (s->dev && (st = eng_gpu_offload_embed(s->dev, tok, T)) != ENG_OK) return dev_fail(s, st);
    for (int t = 0; t < T; t++) {
        s->pos[t] = s->n_past + t;
        if (s->dev) continue;
        size_t row = (size_t)tok[t] * C;
        if (m->w.wtype == KN_W_F32) memcpy(s->x + t * C, m->w.embed_in + row, C * sizeof(float));
        else if (m->w.wtype == KN_W_F16) kn_f16_to_f32(s->x + t * C, m->w.embed_in_h + row, C);
        else kn_bf16_to_f32(s->x + t * C, m->w.embed_in_h + row, C);
    }
    int trace = s->trace && !s->dev;   // the residual stream lives on the device in offload mode
    if (trace) s->trace(s->trace_ud, 0, s->x, T, (int)C, s->n_past);
    if (s->policy) eng_policy_chunk_tokens(s->policy, tok, T);
    kn_rope_table(s->rope_cos, s->rope_sin, s->inv_freq, s->pos, T, c->n_rot);
    for (int l = 0; l < c->n_layer; l++) {
        if ((st = layer_forward(s, l, T)) != ENG_OK) return st;
        if (trace) s->trace(s->trace_ud, l + 1, s->x, T, (int)C, s->n_past);
    }
    if (s->dev) {
        if ((st = eng_gpu_offload_logits(s->dev, T, logits, all_logits)) != ENG_OK) return dev_fail(s, st);
    } else {
        kn_layernorm(s->h, s->x, m->w.lnf_w, m->w.lnf_b, T, (int)C, c->ln_eps);
        if (trace) s->trace(s->trace_ud, c->n_layer + 1, s->h, T, (int)C, s->n_past);
    }
    if (logits && !s->dev) {
        if (all_logits)
            matmul(s, logits, s->h, m->w.embed_out, m->w.embed_out_h, 0, NULL, T, (int)C, (int)V);
        else
            matmul(s, logits, s->h + (size_t)(T - 1) * C, m->w.embed_out, m->w.embed_out_h, 0, NULL, 1, (int)C,
                   (int)V);
    }
    s->n_past += T;
    if (s->policy) eng_policy_step_end(s->policy, T, last);
    return ENG_OK;
}

eng_status eng_forward(eng_state *s, const int32_t *tokens, int n, float *logits, int all_logits) {
    const eng_config *c = &s->model->cfg;
    struct eng_state_mark *mk = s->mark;   // a mark row applies to this call only
    int mrow = s->mark_row;
    s->mark = NULL;
    if (n <= 0) {
        eng_errf(s->err, sizeof s->err, "forward: no tokens");
        return ENG_ERR_INVAL;
    }
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->n_vocab) {
            eng_errf(s->err, sizeof s->err, "forward: token %d at index %d outside vocab [0, %d)",
                     tokens[i], i, c->n_vocab);
            return ENG_ERR_INVAL;
        }
    eng_policy *p = s->policy;
    int bounded = p && eng_policy_bounded(p);
    if (!bounded) {
        int32_t most = 0;
        for (int i = 0; i < c->n_layer * c->n_head; i++)
            if (s->kv.n[i] > most) most = s->kv.n[i];
        if ((int64_t)most + n > s->kv.cap) {
            eng_errf(s->err, sizeof s->err, "forward: KV cache holds %d of %d tokens; %d more do not fit",
                     most, s->kv.cap, n);
            return ENG_ERR_CAPACITY;
        }
    }
    if (p) eng_policy_call_begin(p);
    for (int i = 0; i < n;) {
        int T = n - i < s->n_batch ? n - i : s->n_batch;
        if (bounded) {   // cut the chunk to what fits after the policy's eviction
            int room = eng_policy_room(p);
            if (room <= 0) {
                eng_errf(s->err, sizeof s->err, "forward: KV cache of %d slots has no room after policy '%s'",
                         s->kv.cap, eng_policy_name(p));
                return ENG_ERR_CAPACITY;
            }
            if (T > room) T = room;
        }
        int last = i + T == n;
        s->mark = mk;
        s->mark_chunk_row = mrow - i;
        float *lg = NULL;
        if (logits && all_logits) lg = logits + (size_t)i * c->n_vocab;
        else if (logits && last) lg = logits;
        eng_status st = forward_chunk(s, tokens + i, T, lg, all_logits, last);
        s->mark = NULL;
        if (st != ENG_OK) return st;
        i += T;
    }
    return ENG_OK;
}
