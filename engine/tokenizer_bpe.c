/* tokenizer_bpe.c — the byte-level BPE model: vocab, merges, and the merge of
 * one pre-tokenized word into ids, equal to HF `tokenizers` models::bpe.
 *
 * A word arrives as raw UTF-8 bytes. Its initial symbols are the vocab ids of
 * the single byte-map characters of its bytes (the GPT-2 bytes_to_unicode
 * map: byte b is the character eng_bpe_byte_char(b)). Bytes without such an
 * entry become unk_token when one is set (runs fused when fuse_unk) and are
 * dropped otherwise, as HF does. Then the adjacent pair of lowest merge rank is
 * merged, leftmost first, until no pair has a rank. HF does this with a heap
 * ordered by (rank, position); words of up to heap_min symbols use a
 * quadratic scan instead, which gives the same result (a stale heap entry can
 * never match again: the merged string identifies the pair), and is faster for
 * the short words that dominate.
 *
 * Tables (all built once at load, immutable afterwards):
 *  - vocab: id -> string in one arena; string -> id in an open-addressing
 *    table of ids (power-of-two size, linear probing, load <= 1/2).
 *  - merges: (left id, right id) -> (rank, merged id), open addressing on the
 *    64-bit pair. A pair listed twice keeps its last rank (HF collects the
 *    list into a HashMap).
 *  - byte_id[256]: initial symbol of each byte (-1: none).
 * Mutable per-model state, hence one encoding thread per model: the word cache
 * (direct-mapped, BPE_CACHE_SIZE entries of 64 bytes, allocated at load; words
 * of up to BPE_CACHE_KEY bytes and BPE_CACHE_IDS ids) and the merge scratch
 * (grow-only). A warm encode therefore allocates nothing here. */
#include "tokenizer_bpe.h"

#include <stdio.h>
#include <string.h>

#include "utf8.h"

#define BPE_CACHE_BITS 15
#define BPE_CACHE_SIZE (1u << BPE_CACHE_BITS)
#define BPE_CACHE_KEY 26
#define BPE_CACHE_IDS 8
#define BPE_HEAP_MIN 48

typedef struct bpe_cache_entry {
    uint32_t hash;              /* high half of the 64-bit word hash */
    uint8_t klen;               /* 0: empty slot */
    uint8_t n_ids;
    char key[BPE_CACHE_KEY];
    int32_t ids[BPE_CACHE_IDS];
} bpe_cache_entry;

typedef struct bpe_pair {
    uint64_t key;               /* left << 32 | right; BPE_PAIR_EMPTY if free */
    int32_t rank, id;
} bpe_pair;
#define BPE_PAIR_EMPTY UINT64_MAX

typedef struct bpe_heap_item { int32_t rank, pos, id; } bpe_heap_item;

struct eng_bpe {
    int32_t max_id;             /* largest vocab id */
    size_t n_tokens;            /* vocab entries */
    char *arena;                /* vocab strings, each NUL-terminated */
    uint32_t *off, *len;        /* (max_id + 1): string of id; off = UINT32_MAX if none */
    int32_t *slots;             /* (n_slots) string hash table of ids, -1 empty */
    size_t slot_mask;
    bpe_pair *pairs;            /* (pair_mask + 1) merge table */
    size_t pair_mask;
    int pair_shift;             /* 64 - log2(pair_mask + 1) */
    int32_t byte_id[256];
    int32_t unk_id;             /* -1: unknown bytes are dropped */
    int fuse_unk, ignore_merges;
    bpe_cache_entry *cache;     /* (BPE_CACHE_SIZE) */
    int cache_on;
    size_t heap_min;
    /* merge scratch, grow-only: cap symbols */
    size_t cap;
    int32_t *sym, *rank, *mid, *prev, *next;
    bpe_heap_item *heap;        /* (3 * cap) */
    eng_buf word;               /* byte-mapped word (ignore_merges) and merge keys */
};

int32_t eng_bpe_byte_char(unsigned char b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    if (b <= 0x20) return 0x100 + b;
    if (b <= 0xA0) return 0x100 + 33 + (b - 0x7F);
    return 0x143; /* 0xAD */
}

int eng_bpe_char_byte(int32_t c) {
    if (c < 0x100) return ((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE) ? c : -1;
    if (c <= 0x120) return c - 0x100;
    if (c <= 0x142) return 0x7F + (c - 0x121);
    if (c == 0x143) return 0xAD;
    return -1;
}

uint64_t eng_bpe_hash(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return h;
}

static size_t bpe_pow2_at_least(size_t n) {
    size_t p = 16;
    while (p < n) p *= 2;
    return p;
}

int32_t eng_bpe_lookup(const eng_bpe *b, const char *s, size_t n) {
    size_t i = (size_t)eng_bpe_hash(s, n) & b->slot_mask;
    for (;; i = (i + 1) & b->slot_mask) {
        int32_t id = b->slots[i];
        if (id < 0) return -1;
        if (b->len[id] == n && memcmp(b->arena + b->off[id], s, n) == 0) return id;
    }
}

const char *eng_bpe_token(const eng_bpe *b, int32_t id, size_t *len) {
    if (id < 0 || id > b->max_id || b->off[id] == UINT32_MAX) return NULL;
    if (len) *len = b->len[id];
    return b->arena + b->off[id];
}

int32_t eng_bpe_max_id(const eng_bpe *b) { return b->max_id; }
size_t eng_bpe_size(const eng_bpe *b) { return b->n_tokens; }

size_t eng_bpe_set_heap_min(eng_bpe *b, size_t n) {
    size_t old = b->heap_min;
    b->heap_min = n;
    return old;
}

int eng_bpe_set_cache(eng_bpe *b, int on) {
    int old = b->cache_on;
    b->cache_on = on;
    return old;
}

static const bpe_pair *bpe_pair_find(const eng_bpe *b, int32_t l, int32_t r) {
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> b->pair_shift);
    for (;; i = (i + 1) & b->pair_mask) {
        const bpe_pair *p = &b->pairs[i];
        if (p->key == key) return p;
        if (p->key == BPE_PAIR_EMPTY) return NULL;
    }
}

static void bpe_pair_put(eng_bpe *b, int32_t l, int32_t r, int32_t rank, int32_t id) {
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> b->pair_shift);
    for (;; i = (i + 1) & b->pair_mask) {
        bpe_pair *p = &b->pairs[i];
        if (p->key == key || p->key == BPE_PAIR_EMPTY) {
            p->key = key;
            p->rank = rank; /* a repeated pair keeps its last rank, as in HF */
            p->id = id;
            return;
        }
    }
}

void eng_bpe_free(eng_bpe *b) {
    if (!b) return;
    eng_free(b->arena);
    eng_free(b->off);
    eng_free(b->len);
    eng_free(b->slots);
    eng_free(b->pairs);
    eng_free(b->cache);
    eng_free(b->sym);
    eng_free(b->heap);
    eng_buf_free(&b->word);
    eng_free(b);
}

/* ---- loading ---- */

#define BPE_FAIL(code, ...) do { eng_errf(err, n_err, __VA_ARGS__); st = (code); goto fail; } while (0)

static eng_status bpe_load_vocab(eng_bpe *b, json_t *vocab, const char *label, char *err, size_t n_err) {
    eng_status st = ENG_OK;
    if (!json_is_object(vocab)) BPE_FAIL(ENG_ERR_FORMAT, "%s: model.vocab: expected an object", label);
    size_t n = json_object_size(vocab);
    if (n == 0) BPE_FAIL(ENG_ERR_FORMAT, "%s: model.vocab: is empty", label);
    size_t total = 0;
    int32_t max_id = -1;
    for (void *it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it)) {
        json_t *v = json_object_iter_value(it);
        const char *key = json_object_iter_key(it);
        if (!json_is_integer(v))
            BPE_FAIL(ENG_ERR_FORMAT, "%s: model.vocab: id of \"%.40s\" is not an integer", label, key);
        json_int_t id = json_integer_value(v);
        if (id < 0 || id > ENG_BPE_MAX_ID)
            BPE_FAIL(id < 0 ? ENG_ERR_FORMAT : ENG_ERR_UNSUPPORTED,
                     "%s: model.vocab: id %lld of \"%.40s\" is out of range (0..%d)", label, (long long)id,
                     key, ENG_BPE_MAX_ID);
        if ((int32_t)id > max_id) max_id = (int32_t)id;
        total += json_object_iter_key_len(it) + 1;
    }
    if (total > UINT32_MAX - 1) BPE_FAIL(ENG_ERR_UNSUPPORTED, "%s: model.vocab: strings too large", label);
    b->max_id = max_id;
    b->n_tokens = n;
    b->arena = eng_alloc(total);
    b->off = eng_alloc(((size_t)max_id + 1) * sizeof *b->off);
    b->len = eng_alloc(((size_t)max_id + 1) * sizeof *b->len);
    size_t n_slots = bpe_pow2_at_least(2 * n);
    b->slots = eng_alloc(n_slots * sizeof *b->slots);
    if (!b->arena || !b->off || !b->len || !b->slots) BPE_FAIL(ENG_ERR_NOMEM, "%s: model.vocab: out of memory", label);
    memset(b->off, 0xFF, ((size_t)max_id + 1) * sizeof *b->off);
    memset(b->slots, 0xFF, n_slots * sizeof *b->slots);
    b->slot_mask = n_slots - 1;
    size_t pos = 0;
    for (void *it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        int32_t id = (int32_t)json_integer_value(json_object_iter_value(it));
        if (b->off[id] != UINT32_MAX)
            BPE_FAIL(ENG_ERR_FORMAT, "%s: model.vocab: id %d is given to both \"%.40s\" and \"%.40s\"", label,
                     (int)id, b->arena + b->off[id], key);
        memcpy(b->arena + pos, key, klen);
        b->arena[pos + klen] = 0;
        b->off[id] = (uint32_t)pos;
        b->len[id] = (uint32_t)klen;
        pos += klen + 1;
        size_t i = (size_t)eng_bpe_hash(key, klen) & b->slot_mask;
        while (b->slots[i] >= 0) i = (i + 1) & b->slot_mask;
        b->slots[i] = id;
    }
    return ENG_OK;
fail:
    return st;
}

/* One merge rule: its two parts, from "a b" or ["a", "b"]. */
static eng_status bpe_merge_parts(json_t *m, int tuple, size_t i, const char **a, size_t *na, const char **c,
                                  size_t *nc, const char *label, char *err, size_t n_err) {
    eng_status st = ENG_OK;
    if (tuple) {
        if (!json_is_array(m) || json_array_size(m) != 2 || !json_is_string(json_array_get(m, 0)) ||
            !json_is_string(json_array_get(m, 1)))
            BPE_FAIL(ENG_ERR_FORMAT, "%s: model.merges[%zu]: expected a pair of strings like the first merge", label, i);
        *a = json_string_value(json_array_get(m, 0));
        *na = json_string_length(json_array_get(m, 0));
        *c = json_string_value(json_array_get(m, 1));
        *nc = json_string_length(json_array_get(m, 1));
        return ENG_OK;
    }
    if (!json_is_string(m))
        BPE_FAIL(ENG_ERR_FORMAT, "%s: model.merges[%zu]: expected a string \"left right\" like the first merge", label, i);
    const char *s = json_string_value(m);
    size_t n = json_string_length(m), sp = n, spaces = 0;
    for (size_t k = 0; k < n; k++)
        if (s[k] == ' ') { spaces++; if (sp == n) sp = k; }
    if (spaces != 1)
        BPE_FAIL(ENG_ERR_FORMAT, "%s: model.merges[%zu]: \"%.60s\" is not two symbols separated by one space", label, i, s);
    *a = s;
    *na = sp;
    *c = s + sp + 1;
    *nc = n - sp - 1;
    return ENG_OK;
fail:
    return st;
}

static eng_status bpe_load_merges(eng_bpe *b, json_t *merges, const char *label, char *err, size_t n_err) {
    eng_status st = ENG_OK;
    if (!json_is_array(merges)) BPE_FAIL(ENG_ERR_FORMAT, "%s: model.merges: expected an array", label);
    size_t n = json_array_size(merges);
    if (n > INT32_MAX) BPE_FAIL(ENG_ERR_UNSUPPORTED, "%s: model.merges: too many merges", label);
    size_t cap = bpe_pow2_at_least(2 * n);
    b->pairs = eng_alloc(cap * sizeof *b->pairs);
    if (!b->pairs) BPE_FAIL(ENG_ERR_NOMEM, "%s: model.merges: out of memory", label);
    for (size_t i = 0; i < cap; i++) b->pairs[i].key = BPE_PAIR_EMPTY;
    b->pair_mask = cap - 1;
    b->pair_shift = 64;
    for (size_t c = cap; c > 1; c >>= 1) b->pair_shift--;
    int tuple = n && json_is_array(json_array_get(merges, 0));
    for (size_t i = 0; i < n; i++) {
        const char *a, *c;
        size_t na, nc;
        if ((st = bpe_merge_parts(json_array_get(merges, i), tuple, i, &a, &na, &c, &nc, label, err, n_err)) != ENG_OK)
            return st;
        int32_t ia = eng_bpe_lookup(b, a, na), ic = eng_bpe_lookup(b, c, nc);
        if (ia < 0 || ic < 0)
            BPE_FAIL(ENG_ERR_FORMAT, "%s: model.merges[%zu]: symbol \"%.*s\" is not in model.vocab", label, i,
                     (int)(ia < 0 ? (na > 40 ? 40 : na) : (nc > 40 ? 40 : nc)), ia < 0 ? a : c);
        b->word.n = 0;
        if (eng_buf_append(&b->word, a, na) != ENG_OK || eng_buf_append(&b->word, c, nc) != ENG_OK)
            BPE_FAIL(ENG_ERR_NOMEM, "%s: model.merges: out of memory", label);
        int32_t im = eng_bpe_lookup(b, b->word.v, b->word.n);
        if (im < 0)
            BPE_FAIL(ENG_ERR_FORMAT, "%s: model.merges[%zu]: merged symbol \"%.*s\" is not in model.vocab", label,
                     i, (int)(b->word.n > 40 ? 40 : b->word.n), b->word.v);
        bpe_pair_put(b, ia, ic, (int32_t)i, im);
    }
    return ENG_OK;
fail:
    return st;
}

/* An optional field: absent or null gives NULL, else the value. */
static json_t *bpe_opt(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

static eng_status bpe_load_options(eng_bpe *b, json_t *model, const char *label, char *err, size_t n_err) {
    eng_status st = ENG_OK;
    json_t *v;
    if ((v = bpe_opt(model, "dropout"))) {
        if (!json_is_number(v)) BPE_FAIL(ENG_ERR_FORMAT, "%s: model.dropout: expected a number or null", label);
        if (json_number_value(v) != 0.0) BPE_FAIL(ENG_ERR_UNSUPPORTED, "%s: model.dropout: only null or 0 is supported", label);
    }
    const char *strs[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        if (!(v = bpe_opt(model, strs[k]))) continue;
        if (!json_is_string(v)) BPE_FAIL(ENG_ERR_FORMAT, "%s: model.%s: expected a string or null", label, strs[k]);
        if (json_string_length(v)) BPE_FAIL(ENG_ERR_UNSUPPORTED, "%s: model.%s: only null or \"\" is supported", label, strs[k]);
    }
    const char *flags[] = {"fuse_unk", "byte_fallback", "ignore_merges"};
    int val[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) {
        if (!(v = bpe_opt(model, flags[k]))) continue;
        if (!json_is_boolean(v)) BPE_FAIL(ENG_ERR_FORMAT, "%s: model.%s: expected true or false", label, flags[k]);
        val[k] = json_is_true(v);
    }
    if (val[1]) BPE_FAIL(ENG_ERR_UNSUPPORTED, "%s: model.byte_fallback: true is not supported", label);
    b->fuse_unk = val[0];
    b->ignore_merges = val[2];
    b->unk_id = -1;
    if ((v = bpe_opt(model, "unk_token"))) {
        if (!json_is_string(v)) BPE_FAIL(ENG_ERR_FORMAT, "%s: model.unk_token: expected a string or null", label);
        b->unk_id = eng_bpe_lookup(b, json_string_value(v), json_string_length(v));
        if (b->unk_id < 0)
            BPE_FAIL(ENG_ERR_FORMAT, "%s: model.unk_token: \"%.40s\" is not in model.vocab", label, json_string_value(v));
    }
    return ENG_OK;
fail:
    return st;
}

eng_status eng_bpe_load(eng_bpe **out, json_t *model, const char *label, char *err, size_t n_err) {
    eng_status st = ENG_OK;
    *out = NULL;
    eng_bpe *b = eng_calloc(1, sizeof *b);
    if (!b) { eng_errf(err, n_err, "%s: model: out of memory", label); return ENG_ERR_NOMEM; }
    b->heap_min = BPE_HEAP_MIN;
    b->cache_on = 1;
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!vocab) BPE_FAIL(ENG_ERR_FORMAT, "%s: model.vocab: missing", label);
    if (!merges) BPE_FAIL(ENG_ERR_FORMAT, "%s: model.merges: missing", label);
    if ((st = bpe_load_vocab(b, vocab, label, err, n_err)) != ENG_OK) goto fail;
    if ((st = bpe_load_options(b, model, label, err, n_err)) != ENG_OK) goto fail;
    if ((st = bpe_load_merges(b, merges, label, err, n_err)) != ENG_OK) goto fail;
    for (int c = 0; c < 256; c++) {
        char u[4];
        size_t n = eng_utf8_encode(eng_bpe_byte_char((unsigned char)c), u);
        b->byte_id[c] = eng_bpe_lookup(b, u, n);
    }
    b->cache = eng_calloc(BPE_CACHE_SIZE, sizeof *b->cache);
    if (!b->cache) BPE_FAIL(ENG_ERR_NOMEM, "%s: model: out of memory (word cache)", label);
    *out = b;
    return ENG_OK;
fail:
    eng_bpe_free(b);
    return st;
}

/* ---- encoding ---- */

static eng_status bpe_scratch_reserve(eng_bpe *b, size_t n) {
    if (n <= b->cap) return ENG_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < n) cap *= 2;
    if (cap > SIZE_MAX / (8 * sizeof(bpe_heap_item))) return ENG_ERR_NOMEM;
    int32_t *sym = eng_alloc(cap * 5 * sizeof *sym);
    bpe_heap_item *heap = eng_alloc(cap * 3 * sizeof *heap);
    if (!sym || !heap) {
        eng_free(sym);
        eng_free(heap);
        return ENG_ERR_NOMEM;
    }
    eng_free(b->sym);
    eng_free(b->heap);
    b->sym = sym;
    b->rank = sym + cap;
    b->mid = sym + 2 * cap;
    b->prev = sym + 3 * cap;
    b->next = sym + 4 * cap;
    b->heap = heap;
    b->cap = cap;
    return ENG_OK;
}

/* Rank and merged id of the pair at i (sym[i], sym[i + 1]); rank -1: none. */
static void bpe_rank_at(eng_bpe *b, size_t i) {
    const bpe_pair *p = bpe_pair_find(b, b->sym[i], b->sym[i + 1]);
    b->rank[i] = p ? p->rank : -1;
    b->mid[i] = p ? p->id : -1;
}

/* Quadratic merge of sym[0..m); returns the new count. */
static size_t bpe_merge_scan(eng_bpe *b, size_t m) {
    if (m < 2) return m;
    for (size_t i = 0; i + 1 < m; i++) bpe_rank_at(b, i);
    for (;;) {
        size_t best = SIZE_MAX;
        int32_t best_rank = INT32_MAX;
        for (size_t i = 0; i + 1 < m; i++)
            if (b->rank[i] >= 0 && b->rank[i] < best_rank) { best_rank = b->rank[i]; best = i; }
        if (best == SIZE_MAX) return m;
        b->sym[best] = b->mid[best];
        size_t tail = m - best - 2;
        memmove(b->sym + best + 1, b->sym + best + 2, tail * sizeof *b->sym);
        memmove(b->rank + best + 1, b->rank + best + 2, tail * sizeof *b->rank);
        memmove(b->mid + best + 1, b->mid + best + 2, tail * sizeof *b->mid);
        m--;
        if (best > 0) bpe_rank_at(b, best - 1);
        if (best + 1 < m) bpe_rank_at(b, best);
    }
}

static int bpe_heap_less(const bpe_heap_item *x, const bpe_heap_item *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void bpe_heap_push(bpe_heap_item *h, size_t *n, bpe_heap_item it) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bpe_heap_less(&it, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static bpe_heap_item bpe_heap_pop(bpe_heap_item *h, size_t *n) {
    bpe_heap_item top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && bpe_heap_less(&h[c + 1], &h[c])) c++;
        if (!bpe_heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static void bpe_heap_offer(eng_bpe *b, size_t *nh, int32_t l, int32_t r, int32_t pos) {
    const bpe_pair *p = bpe_pair_find(b, l, r);
    if (p) bpe_heap_push(b->heap, nh, (bpe_heap_item){p->rank, pos, p->id});
}

/* HF's Word::merge_all over sym[0..m) (linked list + heap); compacts the
 * result into sym[0..) and returns its length. At most m - 1 merges happen,
 * each pushing at most 2 items, so the heap never exceeds 3 * m items. */
static size_t bpe_merge_heap(eng_bpe *b, size_t m) {
    int32_t *sym = b->sym, *prev = b->prev, *next = b->next, *dead = b->rank;
    size_t nh = 0;
    for (size_t i = 0; i < m; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < m ? (int32_t)i + 1 : -1;
        dead[i] = 0;
    }
    for (size_t i = 0; i + 1 < m; i++) bpe_heap_offer(b, &nh, sym[i], sym[i + 1], (int32_t)i);
    while (nh) {
        bpe_heap_item top = bpe_heap_pop(b->heap, &nh);
        int32_t p = top.pos, nx = next[p];
        if (dead[p] || nx < 0) continue;
        const bpe_pair *pr = bpe_pair_find(b, sym[p], sym[nx]);
        if (!pr || pr->id != top.id) continue;
        sym[p] = top.id;
        dead[nx] = 1;
        next[p] = next[nx];
        if (next[nx] >= 0) prev[next[nx]] = p;
        if (prev[p] >= 0) bpe_heap_offer(b, &nh, sym[prev[p]], sym[p], prev[p]);
        if (next[p] >= 0) bpe_heap_offer(b, &nh, sym[p], sym[next[p]], p);
    }
    size_t k = 0;
    for (int32_t i = m ? 0 : -1; i >= 0; i = next[i]) sym[k++] = sym[i];
    return k;
}

eng_status eng_bpe_encode_word(eng_bpe *b, const unsigned char *w, size_t n, eng_ids *ids) {
    eng_status st;
    if (n == 0) return ENG_OK;
    bpe_cache_entry *ce = NULL;
    uint32_t tag = 0;
    if (b->cache_on && n <= BPE_CACHE_KEY) {
        uint64_t h = eng_bpe_hash(w, n);
        tag = (uint32_t)(h >> 32);
        ce = &b->cache[h & (BPE_CACHE_SIZE - 1)];
        if (ce->klen == n && ce->hash == tag && memcmp(ce->key, w, n) == 0) {
            if ((st = eng_ids_reserve(ids, ce->n_ids)) != ENG_OK) return st;
            if (ce->n_ids) memcpy(ids->v + ids->n, ce->ids, ce->n_ids * sizeof *ids->v);
            ids->n += ce->n_ids;
            return ENG_OK;
        }
    }
    if ((st = bpe_scratch_reserve(b, n)) != ENG_OK) return st;
    size_t m = 0;
    int32_t whole = -1;
    if (b->ignore_merges) {
        b->word.n = 0;
        if ((st = eng_buf_reserve(&b->word, 2 * n)) != ENG_OK) return st;
        for (size_t i = 0; i < n; i++) b->word.n += eng_utf8_encode(eng_bpe_byte_char(w[i]), b->word.v + b->word.n);
        whole = eng_bpe_lookup(b, b->word.v, b->word.n);
    }
    if (whole >= 0) {
        b->sym[m++] = whole;
    } else {
        int pending_unk = 0;
        for (size_t i = 0; i < n; i++) {
            int32_t id = b->byte_id[w[i]];
            if (id >= 0) {
                if (pending_unk) { b->sym[m++] = b->unk_id; pending_unk = 0; }
                b->sym[m++] = id;
            } else if (b->unk_id >= 0) {
                if (pending_unk && !b->fuse_unk) b->sym[m++] = b->unk_id;
                pending_unk = 1;
            }
        }
        if (pending_unk) b->sym[m++] = b->unk_id;
        m = m > b->heap_min ? bpe_merge_heap(b, m) : bpe_merge_scan(b, m);
    }
    if ((st = eng_ids_reserve(ids, m)) != ENG_OK) return st;
    if (m) memcpy(ids->v + ids->n, b->sym, m * sizeof *ids->v);
    ids->n += m;
    if (ce && m <= BPE_CACHE_IDS) {
        ce->hash = tag;
        ce->klen = (uint8_t)n;
        ce->n_ids = (uint8_t)m;
        memcpy(ce->key, w, n);
        memcpy(ce->ids, b->sym, m * sizeof *b->sym);
    }
    return ENG_OK;
}
