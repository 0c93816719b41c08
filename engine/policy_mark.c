/* policy_mark.c — save and restore a state with its KV policy (see
 * policy_mark.h). The copy covers, per (layer, head), the slots held at save
 * time: keys, values, positions, and the policy's per-slot scores and ids
 * when it keeps them; per state the fill counts and n_past; per policy the
 * per-sequence counters (steps, last lazy eviction, sepllm's separator
 * region), kivi's quantized store layer by layer (codes, min/scale, counts;
 * think's channel store is written once at the end of the prompt and needs
 * no copy) and the statistics, so that a restored state reports what an
 * undisturbed run would. Forward never touches slots beyond the held ones
 * in a way that matters after a restore (they are rewritten before read). */
#include "policy_mark.h"

#include <string.h>

#include "policy_impl.h"

struct eng_state_mark {
    const eng_state *st;
    const eng_policy *pol;
    int L, NH, D, cap, saved_past;
    float *k, *v;          /* (L, NH, cap, D) */
    int32_t *pos;          /* (L, NH, cap) */
    int32_t *n;            /* (L, NH) */
    int32_t *base;         /* (L) the layers' sliding bases (kvcache.h) */
    float *score;          /* (L, NH, cap) or NULL */
    int32_t *ids;          /* (L, NH, cap) or NULL */
    int32_t *n_sep;        /* (L, NH) or NULL */
    unsigned char *store;  /* (L, store layer bytes) of a store-changing policy (kivi), or NULL */
    size_t store_lb;
    double *layer_sum;     /* (L) */
    int64_t steps, last_evict, n_steps, tok_max, peak_slots, evictions, compressed, peak_bytes;
    double tok_sum;
    int in_prefill;
    int64_t ev_layer0;     /* evictions when the current layer's rows began (mark at a row) */
};

eng_status eng_state_mark_init(eng_state_mark **out, const eng_state *s, char *err, size_t n_err) {
    *out = NULL;
    const eng_kvcache *kv = &s->kv;
    const eng_policy *p = s->policy;
    size_t L = (size_t)kv->n_layer, NH = (size_t)kv->n_head, cap = (size_t)kv->cap, D = (size_t)kv->head_dim;
    eng_state_mark *m = eng_calloc(1, sizeof *m);
    if (!m) goto nomem;
    m->st = s;
    m->pol = p;
    m->L = (int)L;
    m->NH = (int)NH;
    m->D = (int)D;
    m->cap = (int)cap;
    m->saved_past = -1;
    m->k = eng_alloc(L * NH * cap * D * sizeof(float));
    m->v = eng_alloc(L * NH * cap * D * sizeof(float));
    m->pos = eng_alloc(L * NH * cap * sizeof(int32_t));
    m->n = eng_alloc(L * NH * sizeof(int32_t));
    m->base = eng_alloc(L * sizeof(int32_t));
    m->layer_sum = eng_alloc(L * sizeof(double));
    if (!m->k || !m->v || !m->pos || !m->n || !m->base || !m->layer_sum) goto nomem;
    if (p && p->score && !(m->score = eng_alloc(L * NH * cap * sizeof(float)))) goto nomem;
    if (p && p->ids && !(m->ids = eng_alloc(L * NH * cap * sizeof(int32_t)))) goto nomem;
    if (p && p->n_sep && !(m->n_sep = eng_alloc(L * NH * sizeof(int32_t)))) goto nomem;
    if (p && p->store && p->store->layer_copy) {   // kivi: its quantized store changes every step
        m->store_lb = p->store->layer_bytes(p);
        if (!(m->store = eng_alloc(L * m->store_lb))) goto nomem;
    }
    *out = m;
    return ENG_OK;
nomem:
    eng_errf(err, n_err, "state mark: out of memory (%zu layers x %zu heads x %zu slots)", L, NH, cap);
    eng_state_mark_free(m);
    return ENG_ERR_NOMEM;
}

void eng_state_mark_free(eng_state_mark *m) {
    if (!m) return;
    eng_free(m->k);
    eng_free(m->v);
    eng_free(m->pos);
    eng_free(m->n);
    eng_free(m->base);
    eng_free(m->score);
    eng_free(m->ids);
    eng_free(m->n_sep);
    eng_free(m->store);
    eng_free(m->layer_sum);
    eng_free(m);
}

int eng_state_mark_pos(const eng_state_mark *m) { return m ? m->saved_past : -1; }

/* Copy the held slots of every head of layers [l0, l1) between a state and
 * a mark (to_mark: state -> mark). Slot layout is the same on both sides. */
static void copy_slots(eng_state_mark *m, eng_state *s, const eng_policy *p, int to_mark, int l0, int l1) {
    eng_kvcache *kv = &s->kv;
    size_t D = (size_t)m->D, cap = (size_t)m->cap;
    for (int l = l0; l < l1; l++)
        for (int h = 0; h < m->NH; h++) {
            size_t lh = (size_t)l * m->NH + h, n = (size_t)m->n[lh];
            float *k = eng_kvcache_k(kv, l) + (size_t)h * cap * D, *v = eng_kvcache_v(kv, l) + (size_t)h * cap * D;
            float *mk = m->k + lh * cap * D, *mv = m->v + lh * cap * D;
            int32_t *pos = eng_kvcache_pos(kv, l, h), *mpos = m->pos + lh * cap;
            memcpy(to_mark ? mk : k, to_mark ? k : mk, n * D * sizeof(float));
            memcpy(to_mark ? mv : v, to_mark ? v : mv, n * D * sizeof(float));
            memcpy(to_mark ? mpos : pos, to_mark ? pos : mpos, n * sizeof(int32_t));
            if (m->score) {
                float *sc = p->score + lh * cap, *msc = m->score + lh * cap;
                memcpy(to_mark ? msc : sc, to_mark ? sc : msc, n * sizeof(float));
            }
            if (m->ids) {
                int32_t *id = p->ids + lh * cap, *mid = m->ids + lh * cap;
                memcpy(to_mark ? mid : id, to_mark ? id : mid, n * sizeof(int32_t));
            }
        }
}

/* The per-layer part of a save: fill counts, slots, separator region. */
static void save_layers(eng_state_mark *m, const eng_state *s, int l0, int l1) {
    eng_state *w = (eng_state *)s;   // copy_slots reads only when to_mark
    const eng_policy *p = s->policy;
    size_t a = (size_t)l0 * m->NH, n = (size_t)(l1 - l0) * m->NH;
    memcpy(m->n + a, s->kv.n + a, n * sizeof(int32_t));
    memcpy(m->base + l0, s->kv.base + l0, (size_t)(l1 - l0) * sizeof(int32_t));
    copy_slots(m, w, p, 1, l0, l1);
    if (m->n_sep) memcpy(m->n_sep + a, p->n_sep + a, n * sizeof(int32_t));
    for (int l = l0; m->store && l < l1; l++) p->store->layer_copy((eng_policy *)p, l, m->store + l * m->store_lb, 1);
}

/* The per-state part: position, step counters, statistics. */
static void save_globals(eng_state_mark *m, const eng_state *s, int n_past) {
    const eng_policy *p = s->policy;
    m->saved_past = n_past;
    if (!p) return;
    memcpy(m->layer_sum, p->layer_sum, (size_t)m->L * sizeof(double));
    m->steps = p->steps;
    m->last_evict = p->last_evict;
    m->in_prefill = p->in_prefill;
    m->n_steps = p->n_steps;
    m->tok_max = p->tok_max;
    m->peak_slots = p->peak_slots;
    m->evictions = p->evictions;
    m->compressed = p->compressed;
    m->peak_bytes = p->peak_bytes;
    m->tok_sum = p->tok_sum;
}

void eng_state_mark_save(eng_state_mark *m, const eng_state *s) {
    save_layers(m, s, 0, m->L);
    save_globals(m, s, s->n_past);
}

void eng_state_mark_at(eng_state *s, eng_state_mark *m, int row) {
    s->mark = m;
    s->mark_row = row;
    if (m) m->saved_past = -1;
}

void eng_state_mark_layer_begin(eng_state_mark *m, const eng_state *s, int l) {
    (void)l;
    if (s->policy) m->ev_layer0 = s->policy->evictions;
}

void eng_state_mark_layer_save(eng_state_mark *m, const eng_state *s, int l, int row) {
    const eng_policy *p = s->policy;
    if (l == 0) {   // the chunk's earlier rows are committed: their steps count
        save_globals(m, s, s->n_past + row);
        if (p) {
            m->steps = p->steps;            // substep already set it to this row's step
            m->evictions = m->ev_layer0;    // before the chunk; each layer adds its rows < row
        }
    }
    if (p) m->evictions += p->evictions - m->ev_layer0;   // this layer's evictions at rows < row
    save_layers(m, s, l, l + 1);
}

eng_status eng_state_mark_restore(eng_state_mark *m, eng_state *s) {
    if (m->saved_past < 0 || s != m->st || s->policy != m->pol) {
        eng_errf(s->err, sizeof s->err, "mark restore: %s",
                 m->saved_past < 0 ? "nothing saved" : "the state or its policy changed since the mark was made");
        return ENG_ERR_INVAL;
    }
    eng_policy *p = s->policy;
    size_t LH = (size_t)m->L * m->NH;
    memcpy(s->kv.n, m->n, LH * sizeof(int32_t));
    memcpy(s->kv.base, m->base, (size_t)m->L * sizeof(int32_t));   // before the rows: they go back behind it
    copy_slots(m, s, p, 0, 0, m->L);
    s->n_past = m->saved_past;
    if (!p) return ENG_OK;
    eng_policy_cache_changed(p);
    if (m->n_sep) memcpy(p->n_sep, m->n_sep, LH * sizeof(int32_t));
    for (int l = 0; m->store && l < m->L; l++) p->store->layer_copy(p, l, m->store + l * m->store_lb, 0);
    memcpy(p->layer_sum, m->layer_sum, (size_t)m->L * sizeof(double));
    p->steps = m->steps;
    p->last_evict = m->last_evict;
    p->in_prefill = m->in_prefill;
    p->n_steps = m->n_steps;
    p->tok_max = m->tok_max;
    p->peak_slots = m->peak_slots;
    p->evictions = m->evictions;
    p->compressed = m->compressed;
    p->peak_bytes = m->peak_bytes;
    p->tok_sum = m->tok_sum;
    return ENG_OK;
}
