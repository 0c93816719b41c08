/* tokenizer.c — loading a tokenizer.json and the encode/decode pipeline of the
 * GPT-NeoX byte-level BPE tokenizer, bit-for-bit equal to HF `tokenizers`.
 *
 * Encode, in HF's order (TokenizerImpl::encode_single_sequence):
 *  1. invalid UTF-8 -> U+FFFD (utf8.c; HF only ever sees a valid str);
 *  2. added tokens with normalized:false are cut out of the raw text,
 *     leftmost-longest (HF: Aho-Corasick, MatchKind::LeftmostLongest);
 *  3. each piece between them is NFC-normalized (utf8.c) and cut again on the
 *     normalized:true added tokens, whose patterns are themselves NFC'd;
 *  4. each remaining piece is split with the GPT-2 regex of the ByteLevel
 *     pre-tokenizer (PCRE2 JIT; the regex never sees across a piece);
 *  5. each word goes through the BPE model (tokenizer_bpe.c).
 * Decode joins the per-id bytes (eng_tokenizer_token_bytes) and repairs the
 * result like Rust's String::from_utf8_lossy.
 *
 * HF runs the regex with Oniguruma (Unicode 16 classes); PCRE2 10.42 knows
 * Unicode 14. The pattern therefore spells its classes out: whitespace is the
 * exact White_Space list Oniguruma's \s uses (PCRE2's \s adds U+180E), and
 * \p{L} / \p{N} are extended with the ranges Unicode 15.0-16.0 added. Every
 * code point is checked against HF by tests/data/tokenizer/unicode_blocks.jsonl.
 *
 * Loading is strict: every section of the file is checked, and anything whose
 * HF behaviour is not implemented here (other normalizers, pre-tokenizers,
 * decoders, post-processors that add tokens, truncation, padding, lstrip /
 * rstrip / single_word added tokens, dropout, byte fallback) is refused with
 * ENG_ERR_UNSUPPORTED naming the field. An added token whose id differs from
 * the one HF would assign is refused too (HF only warns and renumbers).
 *
 * Invariants: after load everything except the scratch buffers, the PCRE2
 * match data and the BPE cache is immutable; encode/decode allocate only to
 * grow scratch (once warm: never) and the caller's output. One thread at a
 * time per tokenizer. */
#include "tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>

#include "tokenizer_bpe.h"
#include "utf8.h"

/* Oniguruma's \s (Unicode White_Space), and the letters / digits Unicode
 * 15.0-16.0 added over PCRE2 10.42's Unicode 14 \p{L} / \p{N}. */
#define TOK_WS "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define TOK_L                                                                                                    \
    "\\p{L}\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}\\x{10D4A}-\\x{10D65}"   \
    "\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}"  \
    "\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}"   \
    "\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}"            \
    "\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}"              \
    "\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"
#define TOK_N                                                                                                    \
    "\\p{N}\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}"                 \
    "\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"  \
    "\\x{1E5F1}-\\x{1E5FA}"
/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static const char tok_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?[" TOK_L "]+| ?[" TOK_N "]+| ?[^" TOK_WS TOK_L TOK_N
                                  "]+|[" TOK_WS "]+(?![^" TOK_WS "])|[" TOK_WS "]+";

/* A byte trie of added-token patterns, matched leftmost-longest. */
typedef struct tok_trie_node {
    int32_t child, sibling; /* first child, next sibling; -1 none */
    int32_t id;             /* token id when a pattern ends here, else -1 */
    unsigned char byte;
} tok_trie_node;

typedef struct tok_trie {
    tok_trie_node *nodes;   /* nodes[0] is the root */
    size_t n, cap;
    int32_t root[256];      /* child of the root per byte, -1 none */
    int empty;              /* no patterns */
    int n_first;            /* distinct first bytes; 1: memchr for first */
    unsigned char first;
} tok_trie;

typedef struct tok_added {
    char *content;          /* as in the file */
    size_t len;
    int32_t id;
    int normalized, special;
} tok_added;

struct eng_tokenizer {
    eng_bpe *bpe;
    int nfc;                      /* normalizer is NFC (else none) */
    tok_added *added;             /* (n_added) */
    size_t n_added;
    tok_trie raw_trie, norm_trie; /* normalized:false / normalized:true patterns */
    int32_t n_ids;                /* largest id + 1 */
    char *bytes;                  /* decoded bytes of every id, concatenated */
    uint32_t *bytes_off;          /* (n_ids + 1): id i is bytes[off[i] .. off[i+1]) */
    uint8_t *has_bytes;           /* (n_ids): id has a token string */
    pcre2_general_context *gctx;
    pcre2_code *re;
    pcre2_match_data *md;
    int jit;
    eng_buf repair, norm;         /* scratch */
    eng_utf8_scratch nfc_scratch;
    size_t n_replaced;
    char err[256];
};

/* ---- added-token tries ---- */

static void tok_trie_free(tok_trie *tr) {
    eng_free(tr->nodes);
    tr->nodes = NULL;
    tr->n = tr->cap = 0;
}

static int32_t tok_trie_new_node(tok_trie *tr, unsigned char byte) {
    if (tr->n == tr->cap) {
        size_t cap = tr->cap ? 2 * tr->cap : 64;
        tok_trie_node *v = eng_realloc(tr->nodes, cap * sizeof *v);
        if (!v) return -1;
        tr->nodes = v;
        tr->cap = cap;
    }
    tr->nodes[tr->n] = (tok_trie_node){-1, -1, -1, byte};
    return (int32_t)tr->n++;
}

static eng_status tok_trie_init(tok_trie *tr) {
    memset(tr, 0, sizeof *tr);
    memset(tr->root, 0xFF, sizeof tr->root);
    tr->empty = 1;
    return tok_trie_new_node(tr, 0) < 0 ? ENG_ERR_NOMEM : ENG_OK;
}

/* Adds pattern s[0..n) (n >= 1) for id; an identical earlier pattern wins. */
static eng_status tok_trie_add(tok_trie *tr, const char *s, size_t n, int32_t id) {
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int32_t ch = tr->nodes[node].child;
        while (ch >= 0 && tr->nodes[ch].byte != c) ch = tr->nodes[ch].sibling;
        if (ch < 0) {
            if ((ch = tok_trie_new_node(tr, c)) < 0) return ENG_ERR_NOMEM;
            tr->nodes[ch].sibling = tr->nodes[node].child;
            tr->nodes[node].child = ch;
            if (node == 0) {
                tr->root[c] = ch;
                tr->n_first++;
                tr->first = c;
            }
        }
        node = ch;
    }
    if (tr->nodes[node].id < 0) tr->nodes[node].id = id;
    tr->empty = 0;
    return ENG_OK;
}

/* Finds the leftmost-longest match in s[from..n): returns 1 with its start,
 * length and id, or 0 when there is none. */
static int tok_trie_find(const tok_trie *tr, const unsigned char *s, size_t n, size_t from, size_t *start,
                         size_t *len, int32_t *id) {
    if (tr->empty) return 0;
    for (size_t i = from; i < n; i++) {
        if (tr->n_first == 1) { /* the usual case: all patterns start alike */
            const unsigned char *p = memchr(s + i, tr->first, n - i);
            if (!p) return 0;
            i = (size_t)(p - s);
        }
        int32_t node = tr->root[s[i]];
        if (node < 0) continue;
        size_t best = 0;
        for (size_t k = i + 1;; k++) {
            if (tr->nodes[node].id >= 0) { best = k - i; *id = tr->nodes[node].id; }
            if (k >= n) break;
            int32_t ch = tr->nodes[node].child;
            while (ch >= 0 && tr->nodes[ch].byte != s[k]) ch = tr->nodes[ch].sibling;
            if (ch < 0) break;
            node = ch;
        }
        if (best) { *start = i; *len = best; return 1; }
    }
    return 0;
}

/* ---- loading: sections other than the model ---- */

#define TOK_FAIL(code, ...) do { eng_errf(err, n_err, __VA_ARGS__); st = (code); goto fail; } while (0)

static json_t *tok_opt(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

/* The "type" string of a component object, or NULL after setting err. */
static const char *tok_type(json_t *v, const char *field, const char *label, char *err, size_t n_err) {
    if (!json_is_object(v)) {
        eng_errf(err, n_err, "%s: %s: expected an object", label, field);
        return NULL;
    }
    json_t *ty = json_object_get(v, "type");
    if (!json_is_string(ty)) {
        eng_errf(err, n_err, "%s: %s.type: missing or not a string", label, field);
        return NULL;
    }
    return json_string_value(ty);
}

/* A boolean option of a component: absent/null gives dflt; wrong type fails;
 * a value other than `want` is unsupported. */
static eng_status tok_flag(json_t *o, const char *key, int want, const char *field, const char *label, char *err,
                           size_t n_err) {
    json_t *v = tok_opt(o, key);
    if (!v) return ENG_OK;
    if (!json_is_boolean(v)) {
        eng_errf(err, n_err, "%s: %s.%s: expected true or false", label, field, key);
        return ENG_ERR_FORMAT;
    }
    if (json_is_true(v) != want) {
        eng_errf(err, n_err, "%s: %s.%s: %s is not supported", label, field, key, want ? "false" : "true");
        return ENG_ERR_UNSUPPORTED;
    }
    return ENG_OK;
}

/* normalizer: null, NFC, or a Sequence of those. */
static eng_status tok_parse_normalizer(eng_tokenizer *t, json_t *v, const char *field, const char *label,
                                       char *err, size_t n_err, int depth) {
    eng_status st = ENG_OK;
    if (!v) return ENG_OK;
    const char *ty = tok_type(v, field, label, err, n_err);
    if (!ty) return ENG_ERR_FORMAT;
    if (strcmp(ty, "NFC") == 0) { t->nfc = 1; return ENG_OK; }
    if (strcmp(ty, "Sequence") != 0 || depth > 8)
        TOK_FAIL(ENG_ERR_UNSUPPORTED, "%s: %s.type: \"%.40s\" is not supported (NFC or Sequence of NFC only)", label,
                 field, ty);
    json_t *seq = json_object_get(v, "normalizers");
    if (!json_is_array(seq)) TOK_FAIL(ENG_ERR_FORMAT, "%s: %s.normalizers: expected an array", label, field);
    for (size_t i = 0; i < json_array_size(seq); i++) {
        char sub[96];
        snprintf(sub, sizeof sub, "%s.normalizers[%zu]", field, i);
        if ((st = tok_parse_normalizer(t, json_array_get(seq, i), sub, label, err, n_err, depth + 1)) != ENG_OK)
            return st;
    }
    return ENG_OK;
fail:
    return st;
}

/* A ByteLevel component (pre-tokenizer, decoder or post-processor), or a
 * Sequence of such; *n_bytelevel counts them. Any other type changes the
 * output in ways not implemented here, so it is refused. */
static eng_status tok_parse_bytelevel(json_t *v, const char *field, const char *list, int *n_bytelevel,
                                      const char *label, char *err, size_t n_err, int depth) {
    eng_status st = ENG_OK;
    const char *ty = tok_type(v, field, label, err, n_err);
    if (!ty) return ENG_ERR_FORMAT;
    if (strcmp(ty, "ByteLevel") == 0) {
        /* The flags change only the pre-tokenizer; the ByteLevel decoder
         * ignores them and the post-processor uses them for offsets only. */
        int pre = strncmp(field, "pre_tokenizer", 13) == 0;
        const char *flags[] = {"add_prefix_space", "use_regex", "trim_offsets"};
        for (int k = 0; k < 3; k++) {
            json_t *f = tok_opt(v, flags[k]);
            if (f && !json_is_boolean(f))
                TOK_FAIL(ENG_ERR_FORMAT, "%s: %s.%s: expected true or false", label, field, flags[k]);
        }
        if (pre && (st = tok_flag(v, "add_prefix_space", 0, field, label, err, n_err)) != ENG_OK) return st;
        if (pre && (st = tok_flag(v, "use_regex", 1, field, label, err, n_err)) != ENG_OK) return st;
        (*n_bytelevel)++;
        return ENG_OK;
    }
    if (strcmp(ty, "Sequence") != 0 || depth > 8)
        TOK_FAIL(ENG_ERR_UNSUPPORTED, "%s: %s.type: \"%.40s\" is not supported (ByteLevel only)", label, field, ty);
    json_t *seq = json_object_get(v, list);
    if (!json_is_array(seq)) TOK_FAIL(ENG_ERR_FORMAT, "%s: %s.%s: expected an array", label, field, list);
    for (size_t i = 0; i < json_array_size(seq); i++) {
        char sub[96];
        snprintf(sub, sizeof sub, "%s.%s[%zu]", field, list, i);
        if ((st = tok_parse_bytelevel(json_array_get(seq, i), sub, list, n_bytelevel, label, err, n_err, depth + 1)) !=
            ENG_OK)
            return st;
    }
    return ENG_OK;
fail:
    return st;
}

static eng_status tok_parse_sections(eng_tokenizer *t, json_t *root, const char *label, char *err, size_t n_err) {
    eng_status st = ENG_OK;
    json_t *v = json_object_get(root, "version");
    if (v && (!json_is_string(v) || strcmp(json_string_value(v), "1.0") != 0))
        TOK_FAIL(ENG_ERR_FORMAT, "%s: version: expected \"1.0\"", label);
    if (tok_opt(root, "truncation")) TOK_FAIL(ENG_ERR_UNSUPPORTED, "%s: truncation: only null is supported", label);
    if (tok_opt(root, "padding")) TOK_FAIL(ENG_ERR_UNSUPPORTED, "%s: padding: only null is supported", label);
    if ((st = tok_parse_normalizer(t, tok_opt(root, "normalizer"), "normalizer", label, err, n_err, 0)) != ENG_OK)
        return st;
    int n;
    const struct { const char *key, *list; int need; } parts[] = {
        {"pre_tokenizer", "pretokenizers", 1}, {"decoder", "decoders", 1}, {"post_processor", "processors", 0}};
    for (int k = 0; k < 3; k++) {
        json_t *c = tok_opt(root, parts[k].key);
        if (!c && !parts[k].need) continue;
        if (!c) TOK_FAIL(ENG_ERR_UNSUPPORTED, "%s: %s: null is not supported (ByteLevel only)", label, parts[k].key);
        n = 0;
        if ((st = tok_parse_bytelevel(c, parts[k].key, parts[k].list, &n, label, err, n_err, 0)) != ENG_OK) return st;
        /* ByteLevel twice would byte-map twice (pre-tokenizer, decoder) */
        if (parts[k].need && n != 1)
            TOK_FAIL(ENG_ERR_UNSUPPORTED, "%s: %s: exactly one ByteLevel is supported, found %d", label, parts[k].key, n);
    }
    return ENG_OK;
fail:
    return st;
}

/* added_tokens: each entry as HF's TokenizerImpl deserializer adds it. */
static eng_status tok_parse_added(eng_tokenizer *t, json_t *arr, const char *label, char *err, size_t n_err) {
    eng_status st = ENG_OK;
    if (!arr) return ENG_OK;
    if (!json_is_array(arr)) TOK_FAIL(ENG_ERR_FORMAT, "%s: added_tokens: expected an array", label);
    size_t n = json_array_size(arr);
    t->added = eng_calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) TOK_FAIL(ENG_ERR_NOMEM, "%s: added_tokens: out of memory", label);
    int32_t max_added = -1;
    size_t vocab_size = eng_bpe_size(t->bpe);
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        if (!json_is_object(o)) TOK_FAIL(ENG_ERR_FORMAT, "%s: added_tokens[%zu]: expected an object", label, i);
        json_t *id = json_object_get(o, "id"), *content = json_object_get(o, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) > ENG_BPE_MAX_ID)
            TOK_FAIL(ENG_ERR_FORMAT, "%s: added_tokens[%zu].id: expected an integer in 0..%d", label, i, ENG_BPE_MAX_ID);
        if (!json_is_string(content)) TOK_FAIL(ENG_ERR_FORMAT, "%s: added_tokens[%zu].content: expected a string", label, i);
        const char *s = json_string_value(content);
        size_t len = json_string_length(content);
        const char *flags[] = {"single_word", "lstrip", "rstrip", "normalized", "special"};
        int val[5];
        for (int k = 0; k < 5; k++) {
            json_t *f = json_object_get(o, flags[k]);
            if (!json_is_boolean(f))
                TOK_FAIL(ENG_ERR_FORMAT, "%s: added_tokens[%zu].%s: expected true or false", label, i, flags[k]);
            val[k] = json_is_true(f);
            if (k < 3 && val[k])
                TOK_FAIL(ENG_ERR_UNSUPPORTED, "%s: added_tokens[%zu].%s: true is not supported (token \"%.40s\")", label,
                         i, flags[k], s);
        }
        if (len == 0) continue; /* HF ignores empty tokens */
        int32_t want = -1;
        for (size_t k = 0; k < t->n_added; k++)
            if (t->added[k].len == len && memcmp(t->added[k].content, s, len) == 0)
                TOK_FAIL(ENG_ERR_FORMAT, "%s: added_tokens[%zu].content: \"%.40s\" is listed twice", label, i, s);
        want = eng_bpe_lookup(t->bpe, s, len);
        if (want < 0) /* HF's AddedVocabulary::add_tokens numbering */
            want = max_added < 0 ? (int32_t)vocab_size
                   : ((size_t)max_added >= vocab_size || vocab_size == 0) ? max_added + 1 : (int32_t)vocab_size;
        if (json_integer_value(id) != want)
            TOK_FAIL(ENG_ERR_FORMAT, "%s: added_tokens[%zu].id: %lld, but HF would number \"%.40s\" %d", label, i,
                     (long long)json_integer_value(id), s, (int)want);
        if (want > ENG_BPE_MAX_ID) TOK_FAIL(ENG_ERR_UNSUPPORTED, "%s: added_tokens[%zu].id: too large", label, i);
        if (want > max_added) max_added = want;
        tok_added *a = &t->added[t->n_added];
        a->content = eng_alloc(len + 1);
        if (!a->content) TOK_FAIL(ENG_ERR_NOMEM, "%s: added_tokens: out of memory", label);
        memcpy(a->content, s, len);
        a->content[len] = 0;
        a->len = len;
        a->id = want;
        a->normalized = val[3];
        a->special = val[4];
        t->n_added++;
    }
    return ENG_OK;
fail:
    return st;
}

/* Tries: HF orders special tokens before the others (matters only for
 * patterns that are equal after NFC). */
static eng_status tok_build_tries(eng_tokenizer *t) {
    eng_status st;
    if ((st = tok_trie_init(&t->raw_trie)) != ENG_OK || (st = tok_trie_init(&t->norm_trie)) != ENG_OK) return st;
    for (int pass = 1; pass >= 0; pass--) {
        for (size_t i = 0; i < t->n_added; i++) {
            tok_added *a = &t->added[i];
            if (a->special != pass) continue;
            if (!a->normalized) {
                if ((st = tok_trie_add(&t->raw_trie, a->content, a->len, a->id)) != ENG_OK) return st;
                continue;
            }
            const char *p = a->content;
            size_t n = a->len;
            if (t->nfc) {
                t->norm.n = 0;
                if ((st = eng_utf8_nfc(a->content, a->len, &t->norm, &t->nfc_scratch)) != ENG_OK) return st;
                p = t->norm.v;
                n = t->norm.n;
            }
            if (n && (st = tok_trie_add(&t->norm_trie, p, n, a->id)) != ENG_OK) return st;
        }
    }
    return ENG_OK;
}

/* The string HF's id_to_token gives: added tokens first, then the model. */
static const char *tok_id_string(const eng_tokenizer *t, int32_t id, int added, size_t *len) {
    if (added)
        for (size_t i = 0; i < t->n_added; i++)
            if (t->added[i].id == id) { *len = t->added[i].len; return t->added[i].content; }
    return eng_bpe_token(t->bpe, id, len);
}

/* Decoded bytes of a token string (HF ByteLevel decoder, per token): the byte
 * map undone when every character is in it, else the raw UTF-8. Writes at
 * most len bytes to out and returns the count. */
static size_t tok_string_bytes(const char *s, size_t len, char *out) {
    size_t i = 0, k = 0;
    while (i < len) {
        size_t cl;
        int32_t c = eng_utf8_decode((const unsigned char *)s + i, &cl);
        int b = eng_bpe_char_byte(c);
        if (b < 0 || i + cl > len) { memcpy(out, s, len); return len; }
        out[k++] = (char)b;
        i += cl;
    }
    return k;
}

static eng_status tok_build_bytes(eng_tokenizer *t) {
    int32_t max_id = eng_bpe_max_id(t->bpe);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id > max_id) max_id = t->added[i].id;
    t->n_ids = max_id + 1;
    t->has_bytes = eng_calloc((size_t)t->n_ids, 1);
    t->bytes_off = eng_alloc(((size_t)t->n_ids + 1) * sizeof *t->bytes_off);
    if (!t->has_bytes || !t->bytes_off) return ENG_ERR_NOMEM;
    for (size_t i = 0; i < t->n_added; i++) t->has_bytes[t->added[i].id] = 2; /* 2: an added token */
    size_t total = 0, len;
    for (int32_t id = 0; id < t->n_ids; id++)
        if (tok_id_string(t, id, t->has_bytes[id] == 2, &len)) total += len;
    if (total > UINT32_MAX) return ENG_ERR_UNSUPPORTED;
    t->bytes = eng_alloc(total ? total : 1);
    if (!t->bytes) return ENG_ERR_NOMEM;
    size_t pos = 0;
    for (int32_t id = 0; id < t->n_ids; id++) {
        t->bytes_off[id] = (uint32_t)pos;
        const char *s = tok_id_string(t, id, t->has_bytes[id] == 2, &len);
        if (!s) continue;
        t->has_bytes[id] = 1;
        pos += tok_string_bytes(s, len, t->bytes + pos);
    }
    t->bytes_off[t->n_ids] = (uint32_t)pos;
    return ENG_OK;
}

static void *tok_pcre_alloc(PCRE2_SIZE n, void *ud) { (void)ud; return eng_alloc(n); }
static void tok_pcre_free(void *p, void *ud) { (void)ud; eng_free(p); }

static eng_status tok_build_regex(eng_tokenizer *t, const char *label, char *err, size_t n_err) {
    eng_status st = ENG_OK;
    t->gctx = pcre2_general_context_create(tok_pcre_alloc, tok_pcre_free, NULL);
    if (!t->gctx) TOK_FAIL(ENG_ERR_NOMEM, "%s: pre_tokenizer: out of memory", label);
    pcre2_compile_context *cc = pcre2_compile_context_create(t->gctx);
    if (!cc) TOK_FAIL(ENG_ERR_NOMEM, "%s: pre_tokenizer: out of memory", label);
    int ec;
    PCRE2_SIZE eo;
    t->re = pcre2_compile((PCRE2_SPTR)tok_pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, cc);
    pcre2_compile_context_free(cc);
    if (!t->re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(ec, msg, sizeof msg);
        TOK_FAIL(ec == PCRE2_ERROR_HEAP_FAILED || ec == PCRE2_ERROR_NOMEMORY ? ENG_ERR_NOMEM : ENG_ERR_UNSUPPORTED,
                 "%s: pre_tokenizer: PCRE2 cannot compile the ByteLevel regex: %s", label, (char *)msg);
    }
    /* JIT when available (it may not be: no JIT support, no executable
     * memory); the interpreter gives the same matches, only slower. */
    t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    t->md = pcre2_match_data_create(1, t->gctx);
    if (!t->md) TOK_FAIL(ENG_ERR_NOMEM, "%s: pre_tokenizer: out of memory", label);
    return ENG_OK;
fail:
    return st;
}

eng_status eng_tokenizer_load_mem(eng_tokenizer **out, const char *json, size_t len, const char *label, char *err,
                                  size_t n_err) {
    eng_status st = ENG_OK;
    json_t *root = NULL;
    eng_tokenizer *t = NULL;
    if (!label) label = "tokenizer.json";
    if (err && n_err) err[0] = 0;
    if (!out || (!json && len)) {
        eng_errf(err, n_err, "%s: invalid argument", label);
        return ENG_ERR_INVAL;
    }
    *out = NULL;
    json_error_t je;
    root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        TOK_FAIL(ENG_ERR_FORMAT, "%s: line %d column %d: %s", label, je.line, je.column, je.text);
    if (!json_is_object(root)) TOK_FAIL(ENG_ERR_FORMAT, "%s: top level: expected an object", label);
    json_t *model = json_object_get(root, "model");
    if (!model) TOK_FAIL(ENG_ERR_FORMAT, "%s: model: missing", label);
    if (!json_is_object(model)) TOK_FAIL(ENG_ERR_FORMAT, "%s: model: expected an object", label);
    json_t *ty = json_object_get(model, "type");
    if (ty && !json_is_string(ty)) TOK_FAIL(ENG_ERR_FORMAT, "%s: model.type: expected a string", label);
    if (ty && strcmp(json_string_value(ty), "BPE") != 0)
        TOK_FAIL(ENG_ERR_UNSUPPORTED, "%s: model.type: \"%.40s\" is not supported (BPE only)", label,
                 json_string_value(ty));
    t = eng_calloc(1, sizeof *t);
    if (!t) TOK_FAIL(ENG_ERR_NOMEM, "%s: out of memory", label);
    if ((st = tok_parse_sections(t, root, label, err, n_err)) != ENG_OK) goto fail;
    if ((st = eng_bpe_load(&t->bpe, model, label, err, n_err)) != ENG_OK) goto fail;
    if ((st = tok_parse_added(t, tok_opt(root, "added_tokens"), label, err, n_err)) != ENG_OK) goto fail;
    if ((st = tok_build_tries(t)) != ENG_OK) TOK_FAIL(st, "%s: added_tokens: out of memory", label);
    if ((st = tok_build_bytes(t)) != ENG_OK)
        TOK_FAIL(st, "%s: model.vocab: %s", label, st == ENG_ERR_NOMEM ? "out of memory" : "strings too large");
    if ((st = tok_build_regex(t, label, err, n_err)) != ENG_OK) goto fail;
    json_decref(root);
    *out = t;
    return ENG_OK;
fail:
    json_decref(root);
    eng_tokenizer_free(t);
    return st;
}

eng_status eng_tokenizer_load(eng_tokenizer **out, const char *path, char *err, size_t n_err) {
    if (err && n_err) err[0] = 0;
    if (!out || !path) {
        eng_errf(err, n_err, "tokenizer: invalid argument");
        return ENG_ERR_INVAL;
    }
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        eng_errf(err, n_err, "%s: cannot open: %s", path, strerror(errno));
        return ENG_ERR_IO;
    }
    eng_buf b = {0};
    eng_status st = ENG_OK;
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        if ((st = eng_buf_append(&b, chunk, got)) != ENG_OK) break;
    if (st == ENG_OK && ferror(f)) {
        eng_errf(err, n_err, "%s: read error: %s", path, strerror(errno));
        st = ENG_ERR_IO;
    } else if (st != ENG_OK) {
        eng_errf(err, n_err, "%s: out of memory reading the file", path);
    }
    fclose(f);
    if (st == ENG_OK) st = eng_tokenizer_load_mem(out, b.v, b.n, path, err, n_err);
    eng_buf_free(&b);
    return st;
}

void eng_tokenizer_free(eng_tokenizer *t) {
    if (!t) return;
    eng_bpe_free(t->bpe);
    for (size_t i = 0; i < t->n_added; i++) eng_free(t->added[i].content);
    eng_free(t->added);
    tok_trie_free(&t->raw_trie);
    tok_trie_free(&t->norm_trie);
    eng_free(t->bytes);
    eng_free(t->bytes_off);
    eng_free(t->has_bytes);
    pcre2_match_data_free(t->md);
    pcre2_code_free(t->re);
    pcre2_general_context_free(t->gctx);
    eng_buf_free(&t->repair);
    eng_buf_free(&t->norm);
    eng_utf8_scratch_free(&t->nfc_scratch);
    eng_free(t);
}

/* ---- encode ---- */

static int tok_is_ascii(const unsigned char *s, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & 0x8080808080808080ull) return 0;
    }
    for (; i < n; i++)
        if (s[i] & 0x80) return 0;
    return 1;
}

static eng_status tok_fail(eng_tokenizer *t, eng_status st, const char *what) {
    snprintf(t->err, sizeof t->err, "%s: %s", what, eng_status_str(st));
    return st;
}

/* Step 4-5: regex words of one piece, each through BPE. */
static eng_status tok_encode_piece(eng_tokenizer *t, const unsigned char *s, size_t n, eng_ids *ids) {
    eng_status st;
    size_t off = 0;
    while (off < n) {
        int rc = t->jit ? pcre2_jit_match(t->re, s, n, off, 0, t->md, NULL)
                        : pcre2_match(t->re, s, n, off, PCRE2_NO_UTF_CHECK, t->md, NULL);
        size_t ms = n, me = n;
        if (rc >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
            ms = ov[0];
            me = ov[1];
        } else if (rc != PCRE2_ERROR_NOMATCH) {
            return rc == PCRE2_ERROR_NOMEMORY || rc == PCRE2_ERROR_HEAPLIMIT ? ENG_ERR_NOMEM : ENG_ERR_INVAL;
        }
        /* The regex matches at every position of valid UTF-8; should it not,
         * the gap is a word of its own (HF's Split keeps gaps too). */
        if (ms > off && (st = eng_bpe_encode_word(t->bpe, s + off, ms - off, ids)) != ENG_OK) return st;
        if (me == ms && me < n) { /* empty match: cannot happen, but never loop */
            size_t cl;
            eng_utf8_decode(s + me, &cl);
            me += cl;
        }
        if (me > ms && (st = eng_bpe_encode_word(t->bpe, s + ms, me - ms, ids)) != ENG_OK) return st;
        off = me;
    }
    return ENG_OK;
}

/* Step 3: NFC, then normalized added tokens, on a piece between raw ones. */
static eng_status tok_encode_normalize(eng_tokenizer *t, const unsigned char *s, size_t n, eng_ids *ids) {
    eng_status st;
    if (n == 0) return ENG_OK;
    if (t->nfc && !tok_is_ascii(s, n)) {
        t->norm.n = 0;
        if ((st = eng_utf8_nfc((const char *)s, n, &t->norm, &t->nfc_scratch)) != ENG_OK) return st;
        s = (const unsigned char *)t->norm.v;
        n = t->norm.n;
    }
    size_t pos = 0, ms, ml;
    int32_t id;
    while (tok_trie_find(&t->norm_trie, s, n, pos, &ms, &ml, &id)) {
        if ((st = tok_encode_piece(t, s + pos, ms - pos, ids)) != ENG_OK) return st;
        if ((st = eng_ids_push(ids, id)) != ENG_OK) return st;
        pos = ms + ml;
    }
    return tok_encode_piece(t, s + pos, n - pos, ids);
}

eng_status eng_tokenizer_encode(eng_tokenizer *t, const char *text, size_t len, eng_ids *ids) {
    eng_status st;
    if (!t) return ENG_ERR_INVAL;
    t->n_replaced = 0;
    t->err[0] = 0;
    if (!ids || (!text && len)) {
        snprintf(t->err, sizeof t->err, "encode: invalid argument");
        return ENG_ERR_INVAL;
    }
    const unsigned char *s = (const unsigned char *)(text ? text : "");
    size_t n = len;
    if (eng_utf8_valid_prefix(text, len) < len) {
        t->repair.n = 0;
        if ((st = eng_utf8_repair(text, len, &t->repair, &t->n_replaced)) != ENG_OK)
            return tok_fail(t, st, "encode: repairing UTF-8");
        s = (const unsigned char *)t->repair.v;
        n = t->repair.n;
    }
    size_t pos = 0, ms, ml;
    int32_t id;
    while (tok_trie_find(&t->raw_trie, s, n, pos, &ms, &ml, &id)) {
        if ((st = tok_encode_normalize(t, s + pos, ms - pos, ids)) != ENG_OK) return tok_fail(t, st, "encode");
        if ((st = eng_ids_push(ids, id)) != ENG_OK) return tok_fail(t, st, "encode");
        pos = ms + ml;
    }
    if ((st = tok_encode_normalize(t, s + pos, n - pos, ids)) != ENG_OK) return tok_fail(t, st, "encode");
    return ENG_OK;
}

/* ---- decode and accessors ---- */

eng_status eng_tokenizer_decode(eng_tokenizer *t, const int32_t *ids, size_t n, eng_buf *out) {
    eng_status st;
    if (!t) return ENG_ERR_INVAL;
    t->err[0] = 0;
    if (!out || (!ids && n)) {
        snprintf(t->err, sizeof t->err, "decode: invalid argument");
        return ENG_ERR_INVAL;
    }
    size_t total = 0, start = out->n;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < t->n_ids) total += t->bytes_off[ids[i] + 1] - t->bytes_off[ids[i]];
    if ((st = eng_buf_reserve(out, total)) != ENG_OK) return tok_fail(t, st, "decode");
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids) continue;
        size_t a = t->bytes_off[ids[i]], b = t->bytes_off[ids[i] + 1];
        memcpy(out->v + out->n, t->bytes + a, b - a);
        out->n += b - a;
    }
    out->v[out->n] = 0;
    if (eng_utf8_valid_prefix(out->v + start, out->n - start) == out->n - start) return ENG_OK;
    t->repair.n = 0;
    if ((st = eng_buf_append(&t->repair, out->v + start, out->n - start)) != ENG_OK) {
        out->n = start;
        out->v[start] = 0;
        return tok_fail(t, st, "decode");
    }
    out->n = start;
    if ((st = eng_utf8_repair(t->repair.v, t->repair.n, out, NULL)) != ENG_OK) {
        out->v[start] = 0;
        return tok_fail(t, st, "decode");
    }
    return ENG_OK;
}

int eng_tokenizer_n_vocab(const eng_tokenizer *t) { return t ? t->n_ids : 0; }

const char *eng_tokenizer_token_bytes(const eng_tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || id >= t->n_ids || !t->has_bytes[id]) return NULL;
    if (len) *len = t->bytes_off[id + 1] - t->bytes_off[id];
    return t->bytes + t->bytes_off[id];
}

int32_t eng_tokenizer_find(const eng_tokenizer *t, const char *token) {
    if (!t || !token) return -1;
    size_t n = strlen(token);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && memcmp(t->added[i].content, token, n) == 0) return t->added[i].id;
    return eng_bpe_lookup(t->bpe, token, n);
}

size_t eng_tokenizer_n_replaced(const eng_tokenizer *t) { return t ? t->n_replaced : 0; }

const char *eng_tokenizer_errmsg(const eng_tokenizer *t) { return t ? t->err : "no tokenizer"; }
