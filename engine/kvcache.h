/* kvcache.h — the per-layer, per-head key/value store the forward pass
 * attends over.
 *
 * Capacity is fixed at init and allocated once. Keys are stored after RoPE
 * (HF's convention; before RoPE under a pos=shift KV policy, policy.h) with
 * the absolute position each slot was computed at, so
 * eviction policies (engine issue "KV-cache policies") can compact a head's
 * slots in place and still know what they kept. Every (layer, head) has its
 * own fill count: policies may keep different token sets per head.
 *
 * Sliding: a layer's slots may start `base[l]` rows into each head's
 * region, so that a policy evicting the oldest non-sink tokens (streaming,
 * window, cam) moves its few sink rows up instead of every recent row down;
 * the accessors below add the base, so every reader sees slots 0..n-1. A
 * head then has cap − base[l] usable slots; policy.c moves the rows back to
 * 0 (base 0) before they would run out.
 *
 * Legend: L layers, NH heads, D head_dim, cap slots per head. */
#ifndef ENGINE_KVCACHE_H
#define ENGINE_KVCACHE_H

#include "eng.h"

typedef struct eng_kvcache {
    int n_layer, n_head, head_dim, cap;
    float *k;        /* (L, NH, cap, D) post-RoPE keys (pre-RoPE under pos=shift) */
    float *v;        /* (L, NH, cap, D) */
    int32_t *pos;    /* (L, NH, cap)    absolute position of each slot */
    int32_t *n;      /* (L, NH)         slots in use */
    int32_t *base;   /* (L)             first row of slot 0 in every head of layer l */
    void *mem;       /* the single allocation */
    size_t bytes;    /* bytes of k + v */
} eng_kvcache;

eng_status eng_kvcache_init(eng_kvcache *kv, int n_layer, int n_head, int head_dim, int cap);
void eng_kvcache_free(eng_kvcache *kv);
void eng_kvcache_clear(eng_kvcache *kv);

/* Keys / values of layer l: head h slot j at ((h·cap) + j)·D from the result. */
static inline float *eng_kvcache_k(const eng_kvcache *kv, int l) {
    return kv->k + ((size_t)l * kv->n_head * kv->cap + (size_t)kv->base[l]) * kv->head_dim;
}
static inline float *eng_kvcache_v(const eng_kvcache *kv, int l) {
    return kv->v + ((size_t)l * kv->n_head * kv->cap + (size_t)kv->base[l]) * kv->head_dim;
}
static inline int32_t *eng_kvcache_n(const eng_kvcache *kv, int l) { return kv->n + (size_t)l * kv->n_head; }
static inline int32_t *eng_kvcache_pos(const eng_kvcache *kv, int l, int h) {
    return kv->pos + ((size_t)l * kv->n_head + h) * kv->cap;
}

/* Remove the last `n_drop` slots of every (layer, head) (speculative
 * decoding rollback; also used by tests). Fails if a head has fewer. */
eng_status eng_kvcache_truncate(eng_kvcache *kv, int n_drop);

#endif /* ENGINE_KVCACHE_H */
