/* kvcache.c — fixed-capacity K/V storage, one allocation per lifetime
 * (see kvcache.h). Appending is done by the forward pass, which writes the
 * rotated keys straight into the slots; this file owns layout and bounds. */
#include "kvcache.h"

#include <string.h>

eng_status eng_kvcache_init(eng_kvcache *kv, int n_layer, int n_head, int head_dim, int cap) {
    memset(kv, 0, sizeof *kv);
    if (n_layer <= 0 || n_head <= 0 || head_dim <= 0 || cap <= 0) return ENG_ERR_INVAL;
    size_t n_kv = (size_t)n_layer * n_head * cap * head_dim;
    size_t n_pos = (size_t)n_layer * n_head * cap;
    size_t n_cnt = (size_t)n_layer * n_head;
    size_t bytes = 2 * n_kv * sizeof(float) + n_pos * sizeof(int32_t) + (n_cnt + (size_t)n_layer) * sizeof(int32_t);
    char *mem = eng_alloc(bytes);
    if (!mem) return ENG_ERR_NOMEM;
    kv->n_layer = n_layer;
    kv->n_head = n_head;
    kv->head_dim = head_dim;
    kv->cap = cap;
    kv->mem = mem;
    kv->k = (float *)mem;
    kv->v = kv->k + n_kv;
    kv->pos = (int32_t *)(kv->v + n_kv);
    kv->n = kv->pos + n_pos;
    kv->base = kv->n + n_cnt;
    kv->bytes = 2 * n_kv * sizeof(float);
    memset(kv->n, 0, (n_cnt + (size_t)n_layer) * sizeof(int32_t));
    return ENG_OK;
}

void eng_kvcache_free(eng_kvcache *kv) {
    if (!kv) return;
    eng_free(kv->mem);
    memset(kv, 0, sizeof *kv);
}

void eng_kvcache_clear(eng_kvcache *kv) {
    if (kv->n) memset(kv->n, 0, (size_t)kv->n_layer * (kv->n_head + 1) * sizeof(int32_t));   // counts and bases
}

eng_status eng_kvcache_truncate(eng_kvcache *kv, int n_drop) {
    size_t n_cnt = (size_t)kv->n_layer * kv->n_head;
    for (size_t i = 0; i < n_cnt; i++)
        if (kv->n[i] < n_drop) return ENG_ERR_INVAL;
    for (size_t i = 0; i < n_cnt; i++) kv->n[i] -= n_drop;
    return ENG_OK;
}
