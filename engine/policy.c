/* policy.c — the policy framework: creation from a name and typed params,
 * attachment to a state (one working allocation), the hooks forward.c calls
 * per chunk and per layer, in-place compaction, statistics, and the pure
 * selection helpers the families share (the spec-string parser is
 * policy_spec.c).
 *
 * What a family decides is only "which slots of (layer, head) stay"; this
 * file does the rest the same way for every family: the timing (evict at the
 * start of a step among held tokens; prefill compression at the end of the
 * first call), RoPE under pos=shift, compaction that preserves slot order,
 * and the accounting. See policy.h for the contract, README "KV policies"
 * for every rule. */
#include "policy_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kn.h"

/* ------------------------------------------------------------ registry */

static const pol_ops *const g_families[] = {
    &pol_ops_full, &pol_ops_window, &pol_ops_streaming, &pol_ops_h2o, &pol_ops_lazy_h2o,
    &pol_ops_tova, &pol_ops_knorm,  &pol_ops_l2,        &pol_ops_snapkv, &pol_ops_pyramidkv,
    &pol_ops_sepllm, &pol_ops_kivi, &pol_ops_think, &pol_ops_fix_size_l2, &pol_ops_hybrid, &pol_ops_unified,
    &pol_ops_cam, &pol_ops_cake,
};

/* ------------------------------------------------------------ params */

static const eng_param *param_find(eng_policy *p, const char *key) {
    if (!p->ps) return NULL;
    for (int i = 0; i < p->ps->n && i < 64; i++)
        if (p->ps->p[i].key && !strcmp(p->ps->p[i].key, key)) {
            p->used |= (uint64_t)1 << i;
            return &p->ps->p[i];
        }
    return NULL;
}

static const char *type_name(eng_param_type t) {
    switch (t) {
    case ENG_PARAM_INT: return "an integer";
    case ENG_PARAM_REAL: return "a number";
    case ENG_PARAM_BOOL: return "a boolean";
    case ENG_PARAM_STR: return "a string";
    }
    return "?";
}

eng_status pol_param_int(eng_policy *p, const char *key, int def, int lo, int hi, int *out, char *err,
                         size_t n_err) {
    const eng_param *q = param_find(p, key);
    *out = def;
    if (!q) return ENG_OK;
    double v;
    if (q->type == ENG_PARAM_INT) v = (double)q->i;
    else if (q->type == ENG_PARAM_REAL && q->r == floor(q->r)) v = q->r;
    else {
        eng_errf(err, n_err, "policy '%s': param '%s' must be an integer, got %s", p->name, key, type_name(q->type));
        return ENG_ERR_INVAL;
    }
    if (!(v >= lo && v <= hi)) {
        eng_errf(err, n_err, "policy '%s': param '%s' = %.17g is outside [%d, %d]", p->name, key, v, lo, hi);
        return ENG_ERR_INVAL;
    }
    *out = (int)v;
    return ENG_OK;
}

eng_status pol_param_real(eng_policy *p, const char *key, double def, double lo, double hi, double *out,
                          char *err, size_t n_err) {
    const eng_param *q = param_find(p, key);
    *out = def;
    if (!q) return ENG_OK;
    double v;
    if (q->type == ENG_PARAM_INT) v = (double)q->i;
    else if (q->type == ENG_PARAM_REAL) v = q->r;
    else {
        eng_errf(err, n_err, "policy '%s': param '%s' must be a number, got %s", p->name, key, type_name(q->type));
        return ENG_ERR_INVAL;
    }
    if (!(v >= lo && v <= hi)) {
        eng_errf(err, n_err, "policy '%s': param '%s' = %.17g is outside [%g, %g]", p->name, key, v, lo, hi);
        return ENG_ERR_INVAL;
    }
    *out = v;
    return ENG_OK;
}

eng_status pol_param_enum(eng_policy *p, const char *key, const char *choices, int def, int *out, char *err,
                          size_t n_err) {
    const eng_param *q = param_find(p, key);
    *out = def;
    if (!q) return ENG_OK;
    if (q->type == ENG_PARAM_STR && q->s) {
        size_t n = strlen(q->s);
        int idx = 0;
        for (const char *c = choices; *c; idx++) {
            const char *bar = strchr(c, '|');
            size_t len = bar ? (size_t)(bar - c) : strlen(c);
            if (len == n && !strncmp(c, q->s, n)) {
                *out = idx;
                return ENG_OK;
            }
            c += len + (bar != NULL);
        }
    }
    eng_errf(err, n_err, "policy '%s': param '%s' must be one of %s", p->name, key, choices);
    return ENG_ERR_INVAL;
}

eng_status pol_param_pos(eng_policy *p, int def_shift, char *err, size_t n_err) {
    return pol_param_enum(p, "pos", "original|shift", def_shift, &p->pos_shift, err, n_err);
}

eng_status pol_param_layers(eng_policy *p, const char *key, const char *def, char *err, size_t n_err) {
    const eng_param *q = param_find(p, key);
    int L = p->cfg.n_layer;
    memset(p->skip, 0, (size_t)L);
    if (q && q->type == ENG_PARAM_INT) {
        if (q->i < 0 || q->i >= L) goto bad;
        p->skip[q->i] = 1;
        return ENG_OK;
    }
    if (q && q->type != ENG_PARAM_STR) goto bad;
    const char *s = q ? q->s : def;
    if (!s || !*s || !strcmp(s, "none")) return ENG_OK;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v >= L) goto bad;
        p->skip[v] = 1;
        s = end;
        if (*s == ';' || *s == ',' || *s == ':' || *s == ' ') s++;
        else if (*s) goto bad;
    }
    return ENG_OK;
bad:
    eng_errf(err, n_err, "policy '%s': param '%s' must list layer indices in [0, %d) separated by ';'", p->name,
             key, L);
    return ENG_ERR_INVAL;
}

/* ------------------------------------------------------------ create / free */

eng_status eng_policy_create(eng_policy **out, const char *name, const eng_paramset *params,
                             const eng_config *cfg, char *err, size_t n_err) {
    *out = NULL;
    const pol_ops *ops = NULL;
    for (size_t i = 0; name && i < sizeof g_families / sizeof g_families[0]; i++)
        if (!strcmp(g_families[i]->name, name)) ops = g_families[i];
    if (!ops) {
        eng_errf(err, n_err, "unsupported policy '%s'", name ? name : "(null)");
        return ENG_ERR_UNSUPPORTED;
    }
    if (params && (params->n < 0 || params->n > ENG_TASK_MAX_PARAMS)) {
        eng_errf(err, n_err, "policy '%s': %d params", name, params->n);
        return ENG_ERR_INVAL;
    }
    int L = cfg->n_layer;
    eng_policy *p = eng_calloc(1, sizeof *p);
    void *mem = p ? eng_alloc((size_t)L * (3 * sizeof(double) + sizeof(int32_t) + 1)) : NULL;
    if (!mem) {
        eng_free(p);
        eng_errf(err, n_err, "policy '%s': out of memory", name);
        return ENG_ERR_NOMEM;
    }
    p->ops = ops;
    p->mem = mem;
    p->layer_sum = mem;
    p->layer_mean = p->layer_sum + L;
    p->pref = p->layer_mean + L;
    p->lbudget = (int32_t *)(p->pref + L);
    p->skip = (unsigned char *)(p->lbudget + L);
    memset(p->skip, 0, (size_t)L);
    p->cfg = *cfg;
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ps = params;
    eng_status st = ops->parse(p, err, n_err);
    for (int i = 0; st == ENG_OK && params && i < params->n; i++)
        if (!(p->used >> i & 1)) {
            eng_errf(err, n_err, "policy '%s': unknown param '%s' (this policy takes: %s)", name,
                     params->p[i].key ? params->p[i].key : "(null)", p->desc);
            st = ENG_ERR_INVAL;
        }
    p->ps = NULL;
    if (st != ENG_OK) {
        eng_policy_free(p);
        return st;
    }
    eng_policy_stats_reset(p);
    *out = p;
    return ENG_OK;
}

void eng_policy_set_max_tokens(eng_policy *p, int n_tokens) { p->max_tokens = n_tokens > 0 ? n_tokens : 0; }

void eng_policy_free(eng_policy *p) {
    if (!p) return;
    if (p->st && p->st->policy == p) p->st->policy = NULL;
    eng_free(p->work);
    eng_free(p->mem);
    eng_free(p);
}

const char *eng_policy_name(const eng_policy *p) { return p->name; }
const char *eng_policy_describe(const eng_policy *p) { return p->desc; }
int eng_policy_at_prefill(const eng_policy *p) { return (p->ops->flags & POL_AT_PREFILL) != 0; }
int eng_policy_bounded(const eng_policy *p) { return (p->ops->flags & POL_BOUNDED) != 0; }

int eng_policy_capacity(const eng_policy *p, int n_tokens) {
    // the sequence length a store-changing policy sizes its store for at attach (a sizing hint)
    ((eng_policy *)p)->max_tokens = n_tokens;
    int c = p->ops->capacity(p, n_tokens);
    return c < n_tokens ? c : n_tokens;
}

/* ------------------------------------------------------------ attach */

eng_status eng_state_set_policy(eng_state *s, eng_policy *p) {
    if (s->n_past != 0) {
        eng_errf(s->err, sizeof s->err, "set_policy: the state already holds %d tokens", s->n_past);
        return ENG_ERR_INVAL;
    }
    if (s->policy && s->policy != p) s->policy->st = NULL;
    s->policy = NULL;
    if (!p) return ENG_OK;
    const eng_config *c = &s->model->cfg;
    if (!eng_policy_fits(p, c)) {
        eng_errf(s->err, sizeof s->err, "set_policy: policy '%s' was created for another model shape", p->name);
        return ENG_ERR_INVAL;
    }
    if (p->st && p->st != s && p->st->policy == p) p->st->policy = NULL;
    size_t L = (size_t)c->n_layer, NH = (size_t)c->n_head, D = (size_t)c->head_dim, C = (size_t)c->n_embd;
    size_t R2 = (size_t)c->n_rot / 2, cap = (size_t)s->kv.cap, B = (size_t)s->n_batch;
    unsigned f = p->ops->flags;
    size_t w = f & POL_AT_PREFILL ? (size_t)p->window : 0;
    size_t nf[] = {
        f & POL_NEEDS_PROBS ? NH * B * cap : 0,
        p->pos_shift ? (f & POL_SLIDE ? L : 1) * NH * cap * D : 0,
        p->pos_shift ? cap * R2 : 0,
        p->pos_shift ? cap * R2 : 0,
        f & POL_SLOT_SCORES ? L * NH * cap : 0,
        2 * cap,
        L * w * C,
        NH * w * cap,
        w * C,
    };
    float **fp[] = {&p->probs, &p->kshift, &p->sh_cos, &p->sh_sin, &p->score, &p->tmp, &p->winq, &p->wprobs, &p->wout};
    size_t persist = p->pos_shift && (f & POL_SLIDE) ? L * NH : 0;
    size_t ni[] = {cap, cap, NH * w, L, f & POL_SLOT_IDS ? L * NH * cap : 0, f & POL_SLOT_IDS ? L * NH : 0, persist, persist};
    int32_t **ip[] = {&p->keep, &p->ord, &p->wvis, &p->wn, &p->ids, &p->n_sep, &p->rv0, &p->rv1};
    size_t total = 0;
    for (size_t i = 0; i < sizeof nf / sizeof nf[0]; i++) total += nf[i];
    for (size_t i = 0; i < sizeof ni / sizeof ni[0]; i++) total += ni[i];
    int n_max = p->max_tokens > (int)cap ? p->max_tokens : (int)cap;
    size_t head = (total * sizeof(float) + 64 + 63) & ~(size_t)63;
    p->store_bytes = p->store && p->store->size ? p->store->size(p, (int)cap, (int)B, n_max, s->n_threads) : 0;
    eng_free(p->work);
    p->work = eng_alloc(head + p->store_bytes);
    if (!p->work) {
        p->st = NULL;
        eng_errf(s->err, sizeof s->err, "set_policy: out of memory for policy '%s' (cap %zu)", p->name, cap);
        return ENG_ERR_NOMEM;
    }
    float *m = p->work;
    for (size_t i = 0; i < sizeof nf / sizeof nf[0]; i++) {
        *fp[i] = nf[i] ? m : NULL;
        m += nf[i];
    }
    for (size_t i = 0; i < sizeof ni / sizeof ni[0]; i++) {
        *ip[i] = ni[i] ? (int32_t *)m : NULL;
        m += ni[i];
    }
    if (p->pos_shift) {
        // rows 0..cap-1: the same fp32 angles forward.c computes for true positions
        int32_t *pos = p->keep;
        for (size_t j = 0; j < cap; j++) pos[j] = (int32_t)j;
        kn_rope_table(p->sh_cos, p->sh_sin, s->inv_freq, pos, (int)cap, c->n_rot);
    }
    p->n_max = n_max;
    if (p->store && p->store->carve) p->store->carve(p, (unsigned char *)p->work + head, (int)cap, (int)B, s->n_threads);
    p->st = s;
    p->cap = (int)cap;
    p->n_batch = (int)B;
    p->steps = p->last_evict = 0;
    s->policy = p;
    pol_shift_invalidate(p, -1);
    return ENG_OK;
}

void eng_policy_unbind(eng_policy *p) {
    if (p->st && p->st->policy == p) p->st->policy = NULL;
    p->st = NULL;
}

/* ------------------------------------------------------------ state access */

int32_t *pol_held(const eng_policy *p, int l) { return eng_kvcache_n(&p->st->kv, l); }

int pol_shift_persistent(const eng_policy *p) { return p->pos_shift && (p->ops->flags & POL_SLIDE); }

void pol_shift_invalidate(eng_policy *p, int l) {
    if (!p->rv0) return;
    size_t NH = (size_t)p->cfg.n_head, a = l < 0 ? 0 : (size_t)l * NH, n = l < 0 ? (size_t)p->cfg.n_layer * NH : NH;
    memset(p->rv0 + a, 0, n * sizeof(int32_t));
    memset(p->rv1 + a, 0, n * sizeof(int32_t));
}

void eng_policy_cache_changed(eng_policy *p) { pol_shift_invalidate(p, -1); }

/* Rotate rows [j0, j1) of head h of layer l into kshift at their row index
 * behind the base: key j at position base + j (sliding) or j. */
static void shift_rows(eng_policy *p, int l, int h, int j0, int j1, float *dst_layer, int base) {
    const eng_kvcache *kv = &p->st->kv;
    int D = kv->head_dim, R2 = p->cfg.n_rot / 2;
    if (j1 <= j0) return;
    size_t at = ((size_t)h * kv->cap + j0) * D;
    float *dst = dst_layer + at;
    memcpy(dst, eng_kvcache_k(kv, l) + at, (size_t)(j1 - j0) * D * sizeof(float));
    kn_rope(dst, j1 - j0, 1, D, (size_t)D, p->cfg.n_rot, p->sh_cos + (size_t)(base + j0) * R2,
            p->sh_sin + (size_t)(base + j0) * R2);
}

const float *pol_keys(eng_policy *p, int l) {
    const eng_kvcache *kv = &p->st->kv;
    float *K = eng_kvcache_k(kv, l);
    if (!p->pos_shift) return K;
    int NH = kv->n_head, D = kv->head_dim, cap = kv->cap;
    const int32_t *n = pol_held(p, l);
    if (!pol_shift_persistent(p)) {
        for (int h = 0; h < NH; h++) shift_rows(p, l, h, 0, n[h], p->kshift, 0);   // key j at position j
        return p->kshift;
    }
    // sliding: key j sits at row base + j and is rotated by that row index, which moves only when
    // the row moves (sinks after a slide, every row after a rebase): only those rows are redone
    int base = kv->base[l];
    float *dst = p->kshift + ((size_t)l * NH * cap + (size_t)base) * D;
    for (int h = 0; h < NH; h++) {
        int32_t *v0 = &p->rv0[l * NH + h], *v1 = &p->rv1[l * NH + h];
        if (*v1 > n[h]) *v1 = n[h];
        if (*v0 > *v1) *v0 = *v1 = 0;
        shift_rows(p, l, h, 0, *v0, dst, base);
        shift_rows(p, l, h, *v1, n[h], dst, base);
        *v0 = 0;
        *v1 = n[h];
    }
    return dst;
}

void pol_compact(eng_policy *p, int l, int h, const int32_t *keep, int k) {
    eng_kvcache *kv = &p->st->kv;
    int D = kv->head_dim, cap = kv->cap;
    int32_t *n = pol_held(p, l);
    float *K = eng_kvcache_k(kv, l) + (size_t)h * cap * D;
    float *V = eng_kvcache_v(kv, l) + (size_t)h * cap * D;
    int32_t *pos = eng_kvcache_pos(kv, l, h);
    float *sc = p->score ? p->score + ((size_t)l * kv->n_head + h) * cap : NULL;
    int32_t *id = p->ids ? p->ids + ((size_t)l * kv->n_head + h) * cap : NULL;
    for (int i = 0; i < k; i++) {
        int j = keep[i];   // ascending, so j >= i: a forward copy never overwrites a slot still to be read
        if (j == i) continue;
        memcpy(K + (size_t)i * D, K + (size_t)j * D, (size_t)D * sizeof(float));
        memcpy(V + (size_t)i * D, V + (size_t)j * D, (size_t)D * sizeof(float));
        pos[i] = pos[j];
        if (sc) sc[i] = sc[j];
        if (id) id[i] = id[j];
    }
    p->evictions += n[h] - k;
    n[h] = k;
}

/* ------------------------------------------------------------ hooks */

void eng_policy_call_begin(eng_policy *p) {
    p->in_prefill = p->st->n_past == 0;
    if (p->in_prefill) {
        p->steps = p->last_evict = 0;
        if (p->wn) memset(p->wn, 0, (size_t)p->cfg.n_layer * sizeof(int32_t));
        if (p->n_sep) memset(p->n_sep, 0, (size_t)p->cfg.n_layer * p->cfg.n_head * sizeof(int32_t));
        memset(p->lbudget, 0xff, (size_t)p->cfg.n_layer * sizeof(int32_t));   // -1: the policy's default
        pol_shift_invalidate(p, -1);
        if (p->store && p->store->reset) p->store->reset(p);
    }
}

void eng_policy_chunk_tokens(eng_policy *p, const int32_t *tok, int T) {
    (void)T;
    p->chunk_tok = p->chunk_tok0 = tok;
    p->chunk_steps0 = p->steps;
}

void eng_policy_substep(eng_policy *p, int t, int T) {
    (void)T;
    p->chunk_tok = p->chunk_tok0 + t;
    p->steps = p->chunk_steps0 + t;   // step_end adds the last one
}

int eng_policy_room(const eng_policy *p) {
    if (p->store && p->store->room) return p->store->room(p);
    int most = 0;
    for (int l = 0; l < p->cfg.n_layer; l++) {
        const int32_t *n = pol_held(p, l);
        for (int h = 0; h < p->cfg.n_head; h++) {
            int t = p->ops->target(p, l, h, n[h]);
            if (t > most) most = t;
        }
    }
    return p->cap - most;
}

/* Rows [0, rows) of head h of layer l, physical row `from` -> `to` (K and V). */
static void move_rows(eng_policy *p, int l, int h, int from, int to, int rows) {
    eng_kvcache *kv = &p->st->kv;
    size_t D = (size_t)kv->head_dim, at = ((size_t)l * kv->n_head + h) * kv->cap;
    memmove(kv->k + (at + to) * D, kv->k + (at + from) * D, (size_t)rows * D * sizeof(float));
    memmove(kv->v + (at + to) * D, kv->v + (at + from) * D, (size_t)rows * D * sizeof(float));
}

/* The slots keep[0..k) of n as [0, a) ∪ [a + d, n) with d > 0: 1 and *a, *d. */
static int slide_shape(const int32_t *keep, int k, int n, int *a, int *d) {
    int i = 0;
    while (i < k && keep[i] == i) i++;
    if (i == k || keep[k - 1] != n - 1 || keep[i] - i != n - k) return 0;
    for (int j = i + 1; j < k; j++)
        if (keep[j] != keep[j - 1] + 1) return 0;
    *a = i;
    *d = n - k;
    return 1;
}

/* Sliding compaction of layer l (POL_SLIDE): each head keeps [0, a) and its
 * tail; the a prefix rows move up by d and the base advances by d, so the
 * tail stays where it is (O(a) rows instead of O(n)). Per-slot metadata
 * (positions, scores, ids) is compacted as usual. A head whose kept set is
 * not of that shape (none, for the POL_SLIDE families) is compacted and
 * then moved up by d. Before the chunk's T rows would not fit behind the
 * base, every head moves back to row 0. */
static void evict_sliding(eng_policy *p, int l, int T) {
    eng_kvcache *kv = &p->st->kv;
    int NH = p->cfg.n_head, d = -1, most = 0;
    int32_t *n = pol_held(p, l);
    for (int h = 0; h < NH; h++) {
        int k = p->ops->target(p, l, h, n[h]), a, dh, got = n[h];
        if (k < n[h]) got = p->ops->select(p, l, h, n[h], k, p->keep);
        int shaped = got < n[h] && slide_shape(p->keep, got, n[h], &a, &dh);
        if (d < 0) d = shaped ? dh : 0;
        if (shaped && dh == d) {
            move_rows(p, l, h, kv->base[l], kv->base[l] + d, a);
            if (p->rv0) {   // the tail keeps its rows (and rotations); the moved sinks are redone
                int32_t *v0 = &p->rv0[l * NH + h], *v1 = &p->rv1[l * NH + h];
                if (*v0 <= a + d && *v1 > a + d) *v0 = a, *v1 -= d;
                else *v0 = *v1 = 0;
            }
            // metadata only: pol_compact would also move K/V, so do its bookkeeping by hand
            int32_t *pos = eng_kvcache_pos(kv, l, h);
            float *sc = p->score ? p->score + ((size_t)l * NH + h) * p->cap : NULL;
            int32_t *id = p->ids ? p->ids + ((size_t)l * NH + h) * p->cap : NULL;
            memmove(pos + a, pos + a + d, (size_t)(got - a) * sizeof(int32_t));
            if (sc) memmove(sc + a, sc + a + d, (size_t)(got - a) * sizeof(float));
            if (id) memmove(id + a, id + a + d, (size_t)(got - a) * sizeof(int32_t));
            p->evictions += n[h] - got;
            n[h] = got;
        } else {
            if (got < n[h]) pol_compact(p, l, h, p->keep, got);
            if (d > 0) move_rows(p, l, h, kv->base[l], kv->base[l] + d, n[h]);
            if (p->rv0 && (got < n[h] || d > 0)) p->rv0[l * NH + h] = p->rv1[l * NH + h] = 0;
        }
        if (n[h] > most) most = n[h];
    }
    if (d > 0) kv->base[l] += d;
    if (kv->base[l] + most + T > kv->cap) {   // rows back to 0 before the chunk runs out of room
        for (int h = 0; h < NH; h++) move_rows(p, l, h, kv->base[l], 0, n[h]);
        kv->base[l] = 0;
        pol_shift_invalidate(p, l);
    }
}

void eng_policy_layer_evict(eng_policy *p, int l, int T) {
    int NH = p->cfg.n_head, cap = p->cap;
    int32_t *n = pol_held(p, l);
    if (p->ops->flags & POL_SLIDE) evict_sliding(p, l, T);
    for (int h = 0; h < NH; h++) {
        int k = p->ops->flags & POL_SLIDE ? n[h] : p->ops->target(p, l, h, n[h]);
        if (k < n[h]) {
            int got = p->ops->select(p, l, h, n[h], k, p->keep);
            pol_compact(p, l, h, p->keep, got);
        }
        int e = n[h] + T < cap ? n[h] + T : cap;
        if (p->score) {   // the chunk's new slots start with no score
            float *sc = p->score + ((size_t)l * NH + h) * cap;
            for (int j = n[h]; j < e; j++) sc[j] = 0.0f;
        }
        if (p->ids) {
            int32_t *id = p->ids + ((size_t)l * NH + h) * cap;
            for (int j = n[h]; j < e; j++) id[j] = p->chunk_tok[j - n[h]];
        }
    }
    if (p->store && p->store->layer_begin) p->store->layer_begin(p, l, T);
}

int eng_policy_attend(eng_policy *p, int l, int T) {
    return p->store && p->store->attend ? p->store->attend(p, l, T) : 0;
}

int eng_policy_rope_qk(eng_policy *p, int l, int T) {
    if (!p->pos_shift) return 0;
    const eng_config *c = &p->cfg;
    int R2 = c->n_rot / 2, D = c->head_dim;
    size_t stride = 3 * (size_t)c->n_embd;
    const int32_t *n = pol_held(p, l);
    // query t of head h sits at cache index n[h] + t (+ the sliding base, like its keys); keys stay
    // un-rotated in the cache
    int base = p->st->kv.base[l];
    for (int h = 0; h < c->n_head; h++)
        kn_rope(p->st->qkv + (size_t)h * D, T, 1, D, stride, c->n_rot, p->sh_cos + (size_t)(base + n[h]) * R2,
                p->sh_sin + (size_t)(base + n[h]) * R2);
    return 1;
}

const float *eng_policy_attn_keys(eng_policy *p, int l, int T) {
    (void)T;
    return pol_keys(p, l);
}

float *eng_policy_probs(eng_policy *p) { return p->probs; }

void eng_policy_layer_observe(eng_policy *p, int l, int T) {
    if ((p->ops->flags & POL_AT_PREFILL) && p->in_prefill) {
        // keep the last w query rows of the prompt (post-RoPE), oldest first
        int w = p->window;
        size_t C = (size_t)p->cfg.n_embd, stride = 3 * C;
        float *q = p->winq + (size_t)l * w * C;
        int take = T < w ? T : w, have = p->wn[l];
        int drop = have + take > w ? have + take - w : 0;
        if (drop) memmove(q, q + (size_t)drop * C, (size_t)(have - drop) * C * sizeof(float));
        have -= drop;
        for (int t = T - take; t < T; t++, have++)
            memcpy(q + (size_t)have * C, p->st->qkv + (size_t)t * stride, C * sizeof(float));
        p->wn[l] = have;
    }
    if (p->ops->observe) p->ops->observe(p, l, T);
}

static void account_step(eng_policy *p, int64_t every);

void eng_policy_step_end(eng_policy *p, int T, int last_chunk) {
    (void)T;
    if ((p->ops->flags & POL_AT_PREFILL) && p->in_prefill && last_chunk)
        for (int l = 0; l < p->cfg.n_layer; l++) p->ops->prefill(p, l);
    p->steps++;
    account_step(p, -1);
}

/* One step's statistics: slots held per head from the attached cache (or
 * the store), or `every` slots in every head of every layer when >= 0. */
static void account_step(eng_policy *p, int64_t every) {
    const eng_config *c = &p->cfg;
    int L = c->n_layer, NH = c->n_head;
    double all = 0;
    int64_t slots = 0;
    for (int l = 0; l < L; l++) {
        const int32_t *n = every >= 0 ? NULL : pol_held(p, l);
        int64_t sum = 0;
        for (int h = 0; h < NH; h++) {
            int64_t k = every >= 0 ? every : p->store && p->store->tokens ? p->store->tokens(p, l, h) : n[h];
            sum += k;
            if (k > p->tok_max) p->tok_max = k;
        }
        p->layer_sum[l] += (double)sum / NH;
        all += (double)sum / NH;
        slots += sum;
    }
    p->tok_sum += all / L;
    if (slots > p->peak_slots) p->peak_slots = slots;
    if (p->store && p->store->bytes) {
        int64_t b = p->store->bytes(p);
        if (b > p->peak_bytes) p->peak_bytes = b;
    }
    p->n_steps++;
}

int eng_policy_fits(const eng_policy *p, const eng_config *c) {
    return c->n_layer == p->cfg.n_layer && c->n_head == p->cfg.n_head && c->head_dim == p->cfg.head_dim &&
           c->n_rot == p->cfg.n_rot;
}

int eng_policy_attached(const eng_policy *p) { return p->st != NULL; }

int eng_policy_sink_recent(const eng_policy *p, int *sink, int *recent, int *pos_shift) {
    if (p->ops != &pol_ops_full && p->ops != &pol_ops_window && p->ops != &pol_ops_streaming) return 0;
    int full = p->ops == &pol_ops_full;
    *sink = full ? 0 : p->sink;
    *recent = full ? -1 : p->recent;
    *pos_shift = p->pos_shift;
    return 1;
}

void eng_policy_account_uniform(eng_policy *p, int64_t n_held, int64_t evicted, int64_t kv_alloc) {
    if (p->st) return;   /* an attached policy accounts for itself */
    p->ext_kv_alloc = kv_alloc;
    p->evictions += evicted * p->cfg.n_layer * p->cfg.n_head;
    p->steps++;
    account_step(p, n_held);
}

/* ------------------------------------------------------------ statistics */

void eng_policy_stats_reset(eng_policy *p) {
    for (int l = 0; l < p->cfg.n_layer; l++) p->layer_sum[l] = p->layer_mean[l] = 0;
    p->tok_sum = 0;
    p->n_steps = p->tok_max = p->peak_slots = p->evictions = p->peak_bytes = p->compressed = 0;
}

void eng_policy_stats_get(const eng_policy *p, eng_policy_stats *st) {
    eng_policy *q = (eng_policy *)p;   // layer_mean is a cache owned by p
    const eng_config *c = &p->cfg;
    memset(st, 0, sizeof *st);
    st->n_steps = p->n_steps;
    st->cache_tokens_mean = p->n_steps ? p->tok_sum / (double)p->n_steps : 0;
    st->cache_tokens_max = p->tok_max;
    st->kv_bytes = p->peak_slots * 2 * (int64_t)c->head_dim * (int64_t)sizeof(float);
    if (p->store && p->store->bytes) st->kv_bytes = p->peak_bytes;
    st->kv_bytes_alloc = p->st ? (int64_t)p->st->kv.bytes + (int64_t)p->store_kv_bytes : p->ext_kv_alloc;
    st->evictions = p->evictions;
    st->evicted_tokens = (double)p->evictions / ((double)c->n_layer * c->n_head);
    st->triggered = p->evictions > 0 || p->compressed > 0;
    for (int l = 0; l < c->n_layer; l++) {
        q->layer_mean[l] = p->n_steps ? p->layer_sum[l] / (double)p->n_steps : 0;
        if (fabs(q->layer_mean[l] - q->layer_mean[0]) > 1e-9) st->layers_differ = 1;
    }
    st->layer_tokens_mean = p->layer_mean;
    st->n_layer = c->n_layer;
}

/* ------------------------------------------------------------ selection */

/* a ranks before b: higher score, then lower index; NaN ranks last */
static int ranks_before(const float *sc, int32_t a, int32_t b) {
    float x = sc[a], y = sc[b];
    if (isnan(x)) x = -INFINITY;
    if (isnan(y)) y = -INFINITY;
    return x > y || (x == y && a < b);
}

static void sift_rank(int32_t *v, int root, int n, const float *sc) {
    // max-heap where "larger" means "ranks later", so heap sort leaves v best..worst
    for (;;) {
        int c = 2 * root + 1;
        if (c >= n) return;
        if (c + 1 < n && ranks_before(sc, v[c], v[c + 1])) c++;   // the child that ranks later
        if (!ranks_before(sc, v[root], v[c])) return;
        int32_t t = v[c]; v[c] = v[root]; v[root] = t;
        root = c;
    }
}

static void sift_i32(int32_t *v, int root, int n) {
    for (;;) {
        int c = 2 * root + 1;
        if (c >= n) return;
        if (c + 1 < n && v[c + 1] > v[c]) c++;
        if (v[c] <= v[root]) return;
        int32_t t = v[c]; v[c] = v[root]; v[root] = t;
        root = c;
    }
}

void pol_sort_i32(int32_t *v, int n) {
    for (int i = n / 2 - 1; i >= 0; i--) sift_i32(v, i, n);
    for (int e = n - 1; e > 0; e--) {
        int32_t t = v[0]; v[0] = v[e]; v[e] = t;
        sift_i32(v, 0, e);
    }
}

int pol_topk(const float *score, const int32_t *idx, int m, int k, int32_t *out, int32_t *ord) {
    if (k <= 0) return 0;
    if (k >= m) {
        memmove(out, idx, (size_t)m * sizeof(int32_t));
        return m;
    }
    if (m - k <= 8) {
        // few to drop (the steady state of decode-time eviction): drop the last-ranked one at a time
        if (out != idx) memmove(out, idx, (size_t)m * sizeof(int32_t));
        for (int n = m; n > k; n--) {
            int worst = 0;
            for (int i = 1; i < n; i++)
                if (ranks_before(score, out[worst], out[i])) worst = i;
            memmove(out + worst, out + worst + 1, (size_t)(n - worst - 1) * sizeof(int32_t));
        }
        return k;
    }
    // heap sort by rank (worst first at the root), keep the k best, restore slot order
    memcpy(ord, idx, (size_t)m * sizeof(int32_t));
    for (int i = m / 2 - 1; i >= 0; i--) sift_rank(ord, i, m, score);
    for (int e = m - 1; e > 0; e--) {
        int32_t t = ord[0]; ord[0] = ord[e]; ord[e] = t;
        sift_rank(ord, 0, e, score);
    }
    memcpy(out, ord, (size_t)k * sizeof(int32_t));
    pol_sort_i32(out, k);
    return k;
}

int pol_select_sink_recent(int n, int sink, int recent, int32_t *keep) {
    int k = 0;
    if (sink + recent >= n) {
        for (int j = 0; j < n; j++) keep[k++] = j;
        return k;
    }
    for (int j = 0; j < sink; j++) keep[k++] = j;
    for (int j = n - recent; j < n; j++) keep[k++] = j;
    return k;
}

int pol_select_h2o(const float *acc, int n, int sink, int heavy, int recent, int32_t *keep, int32_t *scratch) {
    if (sink + heavy + recent >= n) {
        for (int j = 0; j < n; j++) keep[j] = j;
        return n;
    }
    int k = 0;
    for (int j = 0; j < sink; j++) keep[k++] = j;
    int m = n - recent - sink;
    // candidates [sink, n - recent) written in place, then narrowed to the best `heavy`
    for (int j = 0; j < m; j++) keep[k + j] = sink + j;
    k += pol_topk(acc, keep + k, m, heavy, keep + k, scratch);
    for (int j = n - recent; j < n; j++) keep[k++] = j;
    return k;
}

void pol_pool1d(const float *s, int m, int kernel, int use_max, float *out) {
    int pad = kernel / 2;
    for (int i = 0; i < m; i++) {
        int a = i - pad < 0 ? 0 : i - pad, b = i + pad >= m ? m - 1 : i + pad;
        if (use_max) {
            float v = -INFINITY;
            for (int j = a; j <= b; j++) if (s[j] > v) v = s[j];
            out[i] = v;
        } else {
            float v = 0.0f;
            for (int j = a; j <= b; j++) v += s[j];
            out[i] = v / (float)kernel;   // zero padding counts (count_include_pad)
        }
    }
}

static int floordiv(int a, int b) {
    int q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

int pol_pyramid_cap(int budget, int window, double beta, int L, int l, int q_len) {
    int bw = budget - window;
    if (q_len < 2 * bw) return bw;
    int min_num = (int)floor((double)bw / beta);
    int max_num = bw * 2 - min_num;
    if (max_num >= q_len - window) {
        max_num = q_len - window;
        min_num = bw * 2 - max_num;
    }
    int steps = L > 1 ? floordiv(max_num - min_num, L - 1) : 0;
    int cap = max_num - l * steps;
    if (cap < 0) cap = 0;
    if (cap > q_len - window) cap = q_len - window;
    return cap;
}
