/* test_tokenizer.c — the GPT-NeoX byte-level BPE tokenizer against HF
 * `tokenizers` fixtures (ops/golden/tokenizer_cases.py).
 *
 * With the real tokenizer (tu_tokenizer_path; SKIP without it): every case of
 * cases.jsonl gives HF's ids and decodes to HF's decode; invalid UTF-8 inputs
 * give HF's ids on the repaired text and the right replacement count; decode
 * of cut characters / ids past the vocab; every Unicode code point through
 * NFC and the pre-tokenizer (unicode_blocks.jsonl, per-block hashes); huge
 * runs; the heap and scan BPE merges agree; a warm second encode allocates
 * nothing. Always (small hand-written tokenizer.json files): HF's ids on the
 * small tokenizers, every file of bad/ fails with the right status and a
 * message naming the file and the field, allocation-failure sweeps over
 * load, encode and decode, argument checks. */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "tokenizer_bpe.h"
#include "testutil.h"
#include "utf8.h"

static eng_tokenizer *g_real; /* the real tokenizer, NULL when absent */
static int g_real_tried;

static eng_tokenizer *real_tok(const char *who) {
    if (!g_real_tried) {
        g_real_tried = 1;
        const char *path = tu_tokenizer_path(who);
        char err[512];
        if (path && eng_tokenizer_load(&g_real, path, err, sizeof err) != ENG_OK) {
            printf("\n  cannot load %s: %s\n", path, err);
            g_real = NULL;
            CU_FAIL("real tokenizer does not load");
        }
        return g_real;
    }
    if (!g_real) tu_skip(who, "no tokenizer");
    return g_real;
}

static eng_tokenizer *load_small(const char *name) {
    char err[512];
    eng_tokenizer *t = NULL;
    eng_status st = eng_tokenizer_load(&t, tu_data(name), err, sizeof err);
    if (st != ENG_OK) printf("\n  %s: %s\n", name, err);
    CU_ASSERT_EQUAL_FATAL(st, ENG_OK);
    return t;
}

/* Calls fn on every JSON object line of a fixture; returns the line count. */
static size_t each_line(const char *rel, void (*fn)(json_t *row, size_t line, void *ud), void *ud) {
    size_t len;
    char *buf = tu_read_file(tu_data(rel), &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    size_t n = 0, line = 0;
    for (char *p = buf; p < buf + len;) {
        char *nl = memchr(p, '\n', (size_t)(buf + len - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(buf + len - p);
        line++;
        if (l) {
            json_error_t je;
            json_t *row = json_loadb(p, l, JSON_ALLOW_NUL, &je);
            if (!row) printf("\n  %s:%zu: %s\n", rel, line, je.text);
            CU_ASSERT_PTR_NOT_NULL_FATAL(row);
            fn(row, line, ud);
            json_decref(row);
            n++;
        }
        p += l + 1;
    }
    free(buf);
    return n;
}

static int ids_equal(const eng_ids *got, json_t *want) {
    if (got->n != json_array_size(want)) return 0;
    for (size_t i = 0; i < got->n; i++)
        if (got->v[i] != (int32_t)json_integer_value(json_array_get(want, i))) return 0;
    return 1;
}

static void print_mismatch(const char *rel, size_t line, const eng_ids *got, json_t *want) {
    printf("\n  %s:%zu: got %zu ids [", rel, line, got->n);
    for (size_t i = 0; i < got->n && i < 16; i++) printf("%s%d", i ? "," : "", (int)got->v[i]);
    printf("], want %zu [", json_array_size(want));
    for (size_t i = 0; i < json_array_size(want) && i < 16; i++)
        printf("%s%lld", i ? "," : "", (long long)json_integer_value(json_array_get(want, i)));
    printf("]\n");
}

typedef struct case_ctx {
    eng_tokenizer *t;
    const char *rel;
    size_t n, ok_ids, ok_dec, ok_rep;
    eng_ids ids;
    eng_buf out;
} case_ctx;

/* {"text", "ids", "decoded"} or {"hex", "ids", "n_replaced", "decoded"} */
static void check_case(json_t *row, size_t line, void *ud) {
    case_ctx *c = ud;
    json_t *text = json_object_get(row, "text"), *hex = json_object_get(row, "hex");
    json_t *want = json_object_get(row, "ids"), *dec = json_object_get(row, "decoded");
    char *bytes = NULL;
    const char *s;
    size_t n;
    if (hex) {
        n = json_string_length(hex) / 2;
        bytes = malloc(n + 1);
        for (size_t i = 0; i < n; i++) sscanf(json_string_value(hex) + 2 * i, "%2hhx", (unsigned char *)&bytes[i]);
        s = bytes;
    } else {
        s = json_string_value(text);
        n = json_string_length(text);
    }
    c->n++;
    c->ids.n = 0;
    c->out.n = 0;
    CU_ASSERT_EQUAL(eng_tokenizer_encode(c->t, s, n, &c->ids), ENG_OK);
    if (ids_equal(&c->ids, want)) c->ok_ids++;
    else if (c->n - c->ok_ids <= 5) print_mismatch(c->rel, line, &c->ids, want);
    CU_ASSERT_EQUAL(eng_tokenizer_decode(c->t, c->ids.v, c->ids.n, &c->out), ENG_OK);
    if (c->out.n == json_string_length(dec) && memcmp(c->out.v, json_string_value(dec), c->out.n) == 0 &&
        c->out.v[c->out.n] == 0)
        c->ok_dec++;
    else if (c->n - c->ok_dec <= 5)
        printf("\n  %s:%zu: decode differs: \"%.80s\"\n", c->rel, line, c->out.v);
    json_t *rep = json_object_get(row, "n_replaced");
    size_t want_rep = rep ? (size_t)json_integer_value(rep) : 0;
    if (eng_tokenizer_n_replaced(c->t) == want_rep) c->ok_rep++;
    free(bytes);
}

static void run_cases(eng_tokenizer *t, const char *rel, size_t min_cases) {
    case_ctx c = {.t = t, .rel = rel};
    each_line(rel, check_case, &c);
    printf("\n  %s: %zu cases, ids %zu/%zu (%.2f%%), decode %zu/%zu, n_replaced %zu/%zu\n", rel, c.n, c.ok_ids, c.n,
           c.n ? 100.0 * (double)c.ok_ids / (double)c.n : 0.0, c.ok_dec, c.n, c.ok_rep, c.n);
    CU_ASSERT(c.n >= min_cases);
    CU_ASSERT_EQUAL(c.ok_ids, c.n);
    CU_ASSERT_EQUAL(c.ok_dec, c.n);
    CU_ASSERT_EQUAL(c.ok_rep, c.n);
    eng_ids_free(&c.ids);
    eng_buf_free(&c.out);
}

static void test_cases(void) {
    eng_tokenizer *t = real_tok("tokenizer cases");
    if (t) run_cases(t, "tokenizer/cases.jsonl", 2000);
}

static void test_invalid_utf8(void) {
    eng_tokenizer *t = real_tok("tokenizer invalid UTF-8");
    if (t) run_cases(t, "tokenizer/invalid_utf8.jsonl", 40);
}

static void check_decode(json_t *row, size_t line, void *ud) {
    case_ctx *c = ud;
    json_t *want_ids = json_object_get(row, "ids"), *dec = json_object_get(row, "decoded");
    c->ids.n = 0;
    c->out.n = 0;
    for (size_t i = 0; i < json_array_size(want_ids); i++)
        eng_ids_push(&c->ids, (int32_t)json_integer_value(json_array_get(want_ids, i)));
    c->n++;
    CU_ASSERT_EQUAL(eng_tokenizer_decode(c->t, c->ids.v, c->ids.n, &c->out), ENG_OK);
    if (c->out.n == json_string_length(dec) && memcmp(c->out.v, json_string_value(dec), c->out.n) == 0) c->ok_dec++;
    else printf("\n  decode.jsonl:%zu: got \"%.60s\"\n", line, c->out.v);
}

static void test_decode(void) {
    eng_tokenizer *t = real_tok("tokenizer decode");
    if (!t) return;
    case_ctx c = {.t = t};
    each_line("tokenizer/decode.jsonl", check_decode, &c);
    CU_ASSERT(c.n >= 100);
    CU_ASSERT_EQUAL(c.ok_dec, c.n);
    /* appends, keeps NUL-terminated; negative ids are skipped */
    eng_buf out = {0};
    int32_t a[] = {12092, -5, 0}, b[] = {1533};
    CU_ASSERT_EQUAL(eng_tokenizer_decode(t, a, 3, &out), ENG_OK);
    CU_ASSERT_EQUAL(eng_tokenizer_decode(t, b, 1, &out), ENG_OK);
    CU_ASSERT_STRING_EQUAL(out.v, "Hello<|endoftext|> world");
    CU_ASSERT_EQUAL(eng_tokenizer_decode(t, NULL, 0, &out), ENG_OK);
    CU_ASSERT_EQUAL(out.n, strlen("Hello<|endoftext|> world"));
    eng_buf_free(&out);
    eng_ids_free(&c.ids);
    eng_buf_free(&c.out);
}

static void test_vocab_api(void) {
    eng_tokenizer *t = real_tok("tokenizer vocab");
    if (!t) return;
    size_t len = 0;
    CU_ASSERT_EQUAL(eng_tokenizer_n_vocab(t), 50277);
    CU_ASSERT_EQUAL(eng_tokenizer_find(t, "<|endoftext|>"), 0);
    CU_ASSERT_EQUAL(eng_tokenizer_find(t, "<|padding|>"), 1);
    CU_ASSERT_EQUAL(eng_tokenizer_find(t, "  "), 50276);
    CU_ASSERT_EQUAL(eng_tokenizer_find(t, "\xc4\xa0the"), 253); /* "Ġthe" */
    CU_ASSERT_EQUAL(eng_tokenizer_find(t, "no such token here"), -1);
    const char *b = eng_tokenizer_token_bytes(t, 253, &len);
    CU_ASSERT(b && len == 4 && memcmp(b, " the", 4) == 0);
    b = eng_tokenizer_token_bytes(t, 50254, &len);
    CU_ASSERT(b && len == 24 && b[0] == ' ' && b[23] == ' ');
    b = eng_tokenizer_token_bytes(t, 0, &len);
    CU_ASSERT(b && len == 13 && memcmp(b, "<|endoftext|>", 13) == 0);
    CU_ASSERT_PTR_NULL(eng_tokenizer_token_bytes(t, 50277, &len));
    CU_ASSERT_PTR_NULL(eng_tokenizer_token_bytes(t, -1, &len));
}

/* ---- every code point: NFC and pre-tokenizer classes ---- */

static uint64_t fnv1a64(const void *p, size_t n, uint64_t h) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001B3ull;
    return h;
}

/* Same string as block_text() in ops/golden/tokenizer_cases.py. */
static void unicode_block_text(int32_t first, int32_t last, eng_buf *b) {
    b->n = 0;
    for (int32_t c = first; c <= last; c++) {
        if (c >= 0xD800 && c <= 0xDFFF) continue;
        char ch[4], acute[4], ovl[4];
        size_t nc = eng_utf8_encode(c, ch), na = eng_utf8_encode(0x301, acute), no = eng_utf8_encode(0x334, ovl);
        eng_buf_append(b, "(", 1);
        eng_buf_append(b, acute, na);
        eng_buf_append(b, ch, nc);
        eng_buf_append(b, "\n(", 2);
        eng_buf_append(b, ch, nc);
        eng_buf_append(b, ovl, no);
        eng_buf_append(b, "\n", 1);
        eng_buf_append(b, ch, nc);
        eng_buf_append(b, acute, na);
        eng_buf_append(b, " a", 2);
        eng_buf_append(b, ch, nc);
        eng_buf_append(b, "1", 1);
        eng_buf_append(b, ch, nc);
        eng_buf_append(b, " ", 1);
        eng_buf_append(b, ch, nc);
        eng_buf_append(b, "!", 1);
        eng_buf_append(b, ch, nc);
        eng_buf_append(b, ch, nc);
        eng_buf_append(b, "x\n", 2);
    }
}

typedef struct block_ctx {
    eng_tokenizer *t;
    eng_buf text, nfc;
    eng_utf8_scratch sc;
    eng_ids ids;
    size_t n, ok_nfc, ok_ids;
} block_ctx;

static void check_block(json_t *row, size_t line, void *ud) {
    block_ctx *c = ud;
    (void)line;
    int32_t first = (int32_t)json_integer_value(json_object_get(row, "first"));
    int32_t last = (int32_t)json_integer_value(json_object_get(row, "last"));
    unsigned long long want_nfc = strtoull(json_string_value(json_object_get(row, "nfc_fnv")), NULL, 16);
    unsigned long long want_ids = strtoull(json_string_value(json_object_get(row, "ids_fnv")), NULL, 16);
    unicode_block_text(first, last, &c->text);
    c->nfc.n = 0;
    CU_ASSERT_EQUAL(eng_utf8_nfc(c->text.v, c->text.n, &c->nfc, &c->sc), ENG_OK);
    c->ids.n = 0;
    CU_ASSERT_EQUAL(eng_tokenizer_encode(c->t, c->text.v, c->text.n, &c->ids), ENG_OK);
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < c->ids.n; i++) {
        unsigned char le[4];
        uint32_t v = (uint32_t)c->ids.v[i];
        for (int k = 0; k < 4; k++) le[k] = (unsigned char)(v >> (8 * k));
        h = fnv1a64(le, 4, h);
    }
    c->n++;
    if (fnv1a64(c->nfc.v, c->nfc.n, 0xCBF29CE484222325ull) == want_nfc) c->ok_nfc++;
    else printf("\n  NFC differs from HF in U+%04X..U+%04X\n", (unsigned)first, (unsigned)last);
    if (h == want_ids && c->ids.n == (size_t)json_integer_value(json_object_get(row, "n_ids"))) c->ok_ids++;
    else printf("\n  ids differ from HF in U+%04X..U+%04X\n", (unsigned)first, (unsigned)last);
}

static void test_unicode_blocks(void) {
    eng_tokenizer *t = real_tok("tokenizer unicode blocks");
    if (!t) return;
    block_ctx c = {.t = t};
    each_line("tokenizer/unicode_blocks.jsonl", check_block, &c);
    printf("\n  unicode_blocks: %zu blocks, NFC %zu ok, ids %zu ok\n", c.n, c.ok_nfc, c.ok_ids);
    CU_ASSERT(c.n > 1000);
    CU_ASSERT_EQUAL(c.ok_nfc, c.n);
    CU_ASSERT_EQUAL(c.ok_ids, c.n);
    eng_buf_free(&c.text);
    eng_buf_free(&c.nfc);
    eng_utf8_scratch_free(&c.sc);
    eng_ids_free(&c.ids);
}

/* ---- long inputs, merge algorithms, allocation counts ---- */

static void roundtrip_ok(eng_tokenizer *t, const char *s, size_t n) {
    eng_ids ids = {0};
    eng_buf out = {0};
    CU_ASSERT_EQUAL(eng_tokenizer_encode(t, s, n, &ids), ENG_OK);
    CU_ASSERT(ids.n > 0);
    CU_ASSERT_EQUAL(eng_tokenizer_decode(t, ids.v, ids.n, &out), ENG_OK);
    CU_ASSERT(out.n == n && memcmp(out.v, s, n) == 0);
    eng_ids_free(&ids);
    eng_buf_free(&out);
}

static void test_long_runs(void) {
    eng_tokenizer *t = real_tok("tokenizer long runs");
    if (!t) return;
    size_t n = (size_t)1 << 20;
    char *s = malloc(n);
    const char fill[] = {' ', 'a', '7', '!', '\n', '\t'};
    for (size_t k = 0; k < sizeof fill; k++) {
        memset(s, fill[k], n);
        roundtrip_ok(t, s, n);
    }
    for (size_t i = 0; i < n; i++) s[i] = "ab \n"[(i * 7 + i / 13) % 4];
    roundtrip_ok(t, s, n);
    /* a 1 MB run of one 3-byte letter, and of U+3000 (whitespace) */
    for (size_t i = 0; i + 3 <= n; i += 3) memcpy(s + i, "\xe6\x97\xa5", 3);
    roundtrip_ok(t, s, n - n % 3);
    for (size_t i = 0; i + 3 <= n; i += 3) memcpy(s + i, "\xe3\x80\x80", 3);
    roundtrip_ok(t, s, n - n % 3);
    free(s);
}

/* The heap merge (HF's algorithm) and the quadratic scan agree. */
static void test_merge_algorithms(void) {
    const char *path = tu_tokenizer_path("tokenizer merge algorithms");
    if (!path) return;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    eng_bpe *b = NULL;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(eng_bpe_load(&b, json_object_get(root, "model"), path, err, sizeof err), ENG_OK);
    json_decref(root);
    eng_bpe_set_cache(b, 0);
    eng_ids x = {0}, y = {0};
    unsigned seed = 12345;
    const char *alpha[] = {"e", "t", "a", "o", "in", "th", " ", "er", "\xc3\xa9", "1", "!", "\xe6\x97\xa5", "s", "'"};
    unsigned char w[400];
    size_t bad = 0;
    for (int it = 0; it < 3000; it++) {
        size_t n = 0, want = 1 + (it % 300);
        while (n < want) {
            seed = seed * 1103515245u + 12345u;
            const char *p = alpha[(seed >> 16) % (sizeof alpha / sizeof alpha[0])];
            size_t l = strlen(p);
            if (n + l > sizeof w) break;
            memcpy(w + n, p, l);
            n += l;
        }
        x.n = y.n = 0;
        eng_bpe_set_heap_min(b, 0);
        CU_ASSERT_EQUAL(eng_bpe_encode_word(b, w, n, &x), ENG_OK);
        eng_bpe_set_heap_min(b, 100000);
        CU_ASSERT_EQUAL(eng_bpe_encode_word(b, w, n, &y), ENG_OK);
        if (x.n != y.n || memcmp(x.v, y.v, x.n * sizeof *x.v) != 0) bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    eng_ids_free(&x);
    eng_ids_free(&y);
    eng_bpe_free(b);
}

static void warm_encode_allocs(eng_tokenizer *t, const char *s, size_t n) {
    eng_ids ids = {0}, again = {0};
    CU_ASSERT_EQUAL(eng_tokenizer_encode(t, s, n, &ids), ENG_OK);
    CU_ASSERT_EQUAL(eng_ids_reserve(&again, ids.n), ENG_OK);
    unsigned long before = eng_alloc_count();
    CU_ASSERT_EQUAL(eng_tokenizer_encode(t, s, n, &again), ENG_OK);
    unsigned long used = eng_alloc_count() - before;
    printf("\n  second encode of %zu bytes (%zu ids): %lu allocations\n", n, again.n, used);
    CU_ASSERT_EQUAL(used, 0);
    CU_ASSERT(ids.n == again.n && memcmp(ids.v, again.v, ids.n * sizeof *ids.v) == 0);
    /* and into an empty vector: only its growth (doublings from 64) */
    eng_ids fresh = {0};
    before = eng_alloc_count();
    CU_ASSERT_EQUAL(eng_tokenizer_encode(t, s, n, &fresh), ENG_OK);
    used = eng_alloc_count() - before;
    unsigned long growth = 1;
    for (size_t cap = 64; cap < fresh.n; cap *= 2) growth++;
    CU_ASSERT(used <= growth);
    eng_ids_free(&ids);
    eng_ids_free(&again);
    eng_ids_free(&fresh);
}

static void test_warm_no_alloc(void) {
    eng_tokenizer *t = real_tok("tokenizer warm allocations");
    if (t) {
        /* all fixture texts in one string: prose, code, every script */
        size_t len;
        char *buf = tu_read_file(tu_data("tokenizer/cases.jsonl"), &len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
        warm_encode_allocs(t, buf, len);
        free(buf);
    }
    eng_tokenizer *s = load_small("tokenizer/small.json");
    const char txt[] = "hello world  abc <|endoftext|> caf\xc3\xa9 e\xcc\x81 \xff\xfe 12 he's";
    warm_encode_allocs(s, txt, sizeof txt - 1);
    eng_tokenizer_free(s);
}

/* ---- small tokenizers (no real file needed) ---- */

typedef struct small_ctx { eng_tokenizer *a, *b; case_ctx c; } small_ctx;

static void check_small(json_t *row, size_t line, void *ud) {
    small_ctx *s = ud;
    s->c.t = strcmp(json_string_value(json_object_get(row, "tokenizer")), "small.json") == 0 ? s->a : s->b;
    check_case(row, line, &s->c);
}

static void test_small(void) {
    small_ctx s = {.a = load_small("tokenizer/small.json"), .b = load_small("tokenizer/small_unk.json")};
    s.c.rel = "tokenizer/small_cases.jsonl";
    each_line(s.c.rel, check_small, &s);
    CU_ASSERT(s.c.n >= 40);
    CU_ASSERT_EQUAL(s.c.ok_ids, s.c.n);
    CU_ASSERT_EQUAL(s.c.ok_dec, s.c.n);
    CU_ASSERT_EQUAL(eng_tokenizer_n_vocab(s.a), 34);
    CU_ASSERT_EQUAL(eng_tokenizer_find(s.a, "  "), 33);
    CU_ASSERT_EQUAL(eng_tokenizer_find(s.b, "xyz"), 13);
    eng_ids_free(&s.c.ids);
    eng_buf_free(&s.c.out);
    eng_tokenizer_free(s.a);
    eng_tokenizer_free(s.b);
}

static const struct bad_case {
    const char *file;
    eng_status st;
    const char *field; /* must appear in the message */
} bad_cases[] = {
    {"truncated.json", ENG_ERR_FORMAT, "line 14 column"},
    {"empty.json", ENG_ERR_FORMAT, "line 1"},
    {"not_object.json", ENG_ERR_FORMAT, "top level"},
    {"bad_utf8.json", ENG_ERR_FORMAT, "unable to decode byte 0xff"},
    {"dup_key.json", ENG_ERR_FORMAT, "duplicate"},
    {"no_model.json", ENG_ERR_FORMAT, "model: missing"},
    {"model_array.json", ENG_ERR_FORMAT, "model: expected an object"},
    {"model_type_wordpiece.json", ENG_ERR_UNSUPPORTED, "model.type"},
    {"model_type_number.json", ENG_ERR_FORMAT, "model.type"},
    {"no_vocab.json", ENG_ERR_FORMAT, "model.vocab: missing"},
    {"no_merges.json", ENG_ERR_FORMAT, "model.merges: missing"},
    {"vocab_array.json", ENG_ERR_FORMAT, "model.vocab: expected an object"},
    {"vocab_empty.json", ENG_ERR_FORMAT, "model.vocab: is empty"},
    {"vocab_string_id.json", ENG_ERR_FORMAT, "model.vocab: id of \"a\""},
    {"vocab_negative_id.json", ENG_ERR_FORMAT, "model.vocab: id -1"},
    {"vocab_float_id.json", ENG_ERR_FORMAT, "model.vocab: id of \"a\""},
    {"vocab_dup_id.json", ENG_ERR_FORMAT, "model.vocab: id 1"},
    {"vocab_huge_id.json", ENG_ERR_UNSUPPORTED, "model.vocab: id 100000000"},
    {"merges_not_array.json", ENG_ERR_FORMAT, "model.merges: expected an array"},
    {"merges_unknown_symbol.json", ENG_ERR_FORMAT, "model.merges[1]: symbol \"q\""},
    {"merges_unknown_result.json", ENG_ERR_FORMAT, "model.merges[0]: merged symbol \"lo\""},
    {"merges_three_parts.json", ENG_ERR_FORMAT, "model.merges[0]"},
    {"merges_no_space.json", ENG_ERR_FORMAT, "model.merges[0]"},
    {"merges_mixed.json", ENG_ERR_FORMAT, "model.merges[1]"},
    {"merges_number.json", ENG_ERR_FORMAT, "model.merges[0]"},
    {"normalizer_nfkc.json", ENG_ERR_UNSUPPORTED, "normalizer.type"},
    {"normalizer_seq_lowercase.json", ENG_ERR_UNSUPPORTED, "normalizer.normalizers[1].type"},
    {"normalizer_no_type.json", ENG_ERR_FORMAT, "normalizer.type"},
    {"pretok_whitespace.json", ENG_ERR_UNSUPPORTED, "pre_tokenizer.type"},
    {"pretok_prefix_space.json", ENG_ERR_UNSUPPORTED, "pre_tokenizer.add_prefix_space"},
    {"pretok_no_regex.json", ENG_ERR_UNSUPPORTED, "pre_tokenizer.use_regex"},
    {"pretok_null.json", ENG_ERR_UNSUPPORTED, "pre_tokenizer"},
    {"pretok_flag_type.json", ENG_ERR_FORMAT, "pre_tokenizer.add_prefix_space"},
    {"decoder_wordpiece.json", ENG_ERR_UNSUPPORTED, "decoder.type"},
    {"postproc_template.json", ENG_ERR_UNSUPPORTED, "post_processor.type"},
    {"added_lstrip.json", ENG_ERR_UNSUPPORTED, "added_tokens[1].lstrip"},
    {"added_missing_flag.json", ENG_ERR_FORMAT, "added_tokens[0].normalized"},
    {"added_wrong_id.json", ENG_ERR_FORMAT, "added_tokens[1].id"},
    {"added_dup.json", ENG_ERR_FORMAT, "added_tokens[2].content"},
    {"added_not_array.json", ENG_ERR_FORMAT, "added_tokens"},
    {"added_content_number.json", ENG_ERR_FORMAT, "added_tokens[0].content"},
    {"version_2.json", ENG_ERR_FORMAT, "version"},
    {"truncation_set.json", ENG_ERR_UNSUPPORTED, "truncation"},
    {"dropout.json", ENG_ERR_UNSUPPORTED, "model.dropout"},
    {"byte_fallback.json", ENG_ERR_UNSUPPORTED, "model.byte_fallback"},
    {"unk_missing.json", ENG_ERR_FORMAT, "model.unk_token"},
    {"suffix.json", ENG_ERR_UNSUPPORTED, "model.end_of_word_suffix"},
};

static void test_bad_files(void) {
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        char rel[128], err[512];
        snprintf(rel, sizeof rel, "tokenizer/bad/%s", bad_cases[i].file);
        const char *path = tu_data(rel);
        eng_tokenizer *t = (eng_tokenizer *)1;
        eng_status st = eng_tokenizer_load(&t, path, err, sizeof err);
        int ok = st == bad_cases[i].st && !t && strstr(err, path) && strstr(err, bad_cases[i].field);
        if (!ok) printf("\n  %s: status %d (want %d), message \"%s\"\n", rel, st, bad_cases[i].st, err);
        CU_ASSERT(ok);
        eng_tokenizer_free(t == (eng_tokenizer *)1 ? NULL : t);
    }
    /* a missing file: I/O error naming it */
    char err[512];
    eng_tokenizer *t = NULL;
    const char *missing = tu_data("tokenizer/bad/no_such_file.json");
    CU_ASSERT_EQUAL(eng_tokenizer_load(&t, missing, err, sizeof err), ENG_ERR_IO);
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, missing));
    /* a directory */
    CU_ASSERT_NOT_EQUAL(eng_tokenizer_load(&t, tu_data("tokenizer"), err, sizeof err), ENG_OK);
    /* load_mem names the label */
    CU_ASSERT_EQUAL(eng_tokenizer_load_mem(&t, "{\"model\": 1}", 12, "mem:label", err, sizeof err), ENG_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "mem:label: model"));
    /* a tiny err buffer is fine */
    CU_ASSERT_EQUAL(eng_tokenizer_load_mem(&t, "{", 1, "x", err, 4), ENG_ERR_FORMAT);
    CU_ASSERT_EQUAL(strlen(err), 3);
    CU_ASSERT_EQUAL(eng_tokenizer_load_mem(&t, "{", 1, "x", NULL, 0), ENG_ERR_FORMAT);
}

static void test_args(void) {
    eng_tokenizer *t = load_small("tokenizer/small.json");
    eng_ids ids = {0};
    eng_buf out = {0};
    CU_ASSERT_EQUAL(eng_tokenizer_encode(t, NULL, 0, &ids), ENG_OK);
    CU_ASSERT_EQUAL(ids.n, 0);
    CU_ASSERT_EQUAL(eng_tokenizer_encode(t, NULL, 3, &ids), ENG_ERR_INVAL);
    CU_ASSERT(strlen(eng_tokenizer_errmsg(t)) > 0);
    CU_ASSERT_EQUAL(eng_tokenizer_encode(t, "ab", 2, NULL), ENG_ERR_INVAL);
    CU_ASSERT_EQUAL(eng_tokenizer_encode(NULL, "ab", 2, &ids), ENG_ERR_INVAL);
    CU_ASSERT_EQUAL(eng_tokenizer_decode(t, NULL, 2, &out), ENG_ERR_INVAL);
    CU_ASSERT_EQUAL(eng_tokenizer_decode(t, NULL, 0, NULL), ENG_ERR_INVAL);
    CU_ASSERT_EQUAL(eng_tokenizer_decode(t, NULL, 0, &out), ENG_OK);
    CU_ASSERT(out.v && out.n == 0 && out.v[0] == 0);
    /* encode appends */
    CU_ASSERT_EQUAL(eng_tokenizer_encode(t, "hello", 5, &ids), ENG_OK);
    CU_ASSERT_EQUAL(eng_tokenizer_encode(t, " world", 6, &ids), ENG_OK);
    CU_ASSERT(ids.n == 2 && ids.v[0] == 16 && ids.v[1] == 21);
    /* n_replaced is per call */
    CU_ASSERT_EQUAL(eng_tokenizer_encode(t, "\xff\xfe" "a\xc3", 4, &ids), ENG_OK);
    CU_ASSERT_EQUAL(eng_tokenizer_n_replaced(t), 3);
    CU_ASSERT_EQUAL(eng_tokenizer_encode(t, "a", 1, &ids), ENG_OK);
    CU_ASSERT_EQUAL(eng_tokenizer_n_replaced(t), 0);
    CU_ASSERT_EQUAL(eng_tokenizer_load(NULL, "x", NULL, 0), ENG_ERR_INVAL);
    CU_ASSERT_EQUAL(eng_tokenizer_n_vocab(NULL), 0);
    CU_ASSERT_EQUAL(eng_tokenizer_find(t, NULL), -1);
    eng_tokenizer_free(NULL);
    eng_ids_free(NULL);
    eng_buf_free(NULL);
    eng_ids_free(&ids);
    eng_buf_free(&out);
    eng_tokenizer_free(t);
}

/* UTF-8 repair against hand-checked CPython results. */
static void test_utf8_repair(void) {
    static const struct { const char *in; size_t n; const char *out; size_t reps; } cases[] = {
        {"\xe0\x80\xaf", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 3},
        {"\xe2\x82", 2, "\xef\xbf\xbd", 1},
        {"\xf0\x9f\x98" "a", 4, "\xef\xbf\xbd" "a", 1},
        {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 3},
        {"\xf4\x90\x80\x80", 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 4},
        {"\xc3\xa9\xc3", 3, "\xc3\xa9\xef\xbf\xbd", 1},
        {"a\0b", 3, "a\0b", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eng_buf b = {0};
        size_t reps = 0;
        CU_ASSERT_EQUAL(eng_utf8_repair(cases[i].in, cases[i].n, &b, &reps), ENG_OK);
        size_t want = strlen(cases[i].out) + (i == 6 ? 2 : 0);
        CU_ASSERT(b.n == want && memcmp(b.v, cases[i].out, want) == 0);
        CU_ASSERT_EQUAL(reps, cases[i].reps);
        CU_ASSERT_EQUAL(eng_utf8_valid_prefix(cases[i].in, cases[i].n), i == 5 ? 2 : i == 6 ? 3 : 0);
        eng_buf_free(&b);
    }
}

/* Regressions found by fuzzing: NFC with an empty scratch buffer when the
 * text starts with a character HF's NFC does not know (U+11935), and a
 * scratch exactly full of 4-byte characters (utf8proc_reencode's NUL). */
static void test_nfc_edges(void) {
    eng_tokenizer *t = load_small("tokenizer/small.json");
    eng_ids ids = {0};
    const char inert[] = "\xf0\x91\xa4\xb5\xf0\x91\xa4\xb0\xb8";
    CU_ASSERT_EQUAL(eng_tokenizer_encode(t, inert, sizeof inert - 1, &ids), ENG_OK);
    CU_ASSERT_EQUAL(eng_tokenizer_n_replaced(t), 1);
    eng_ids_free(&ids);
    eng_tokenizer_free(t);
    for (size_t n = 1; n <= 300; n++) {
        eng_buf in = {0}, out = {0};
        eng_utf8_scratch sc = {0};
        for (size_t i = 0; i < n; i++) eng_buf_append(&in, "\xf0\x9f\x98\x80", 4);
        CU_ASSERT_EQUAL(eng_utf8_nfc(in.v, in.n, &out, &sc), ENG_OK);
        CU_ASSERT(out.n == in.n && memcmp(out.v, in.v, in.n) == 0);
        eng_buf_free(&in);
        eng_buf_free(&out);
        eng_utf8_scratch_free(&sc);
    }
}

/* ---- allocation failures: every failing allocation fails cleanly ---- */

/* Fails each allocation of a load in turn. A load may still succeed when the
 * failed allocation was PCRE2's JIT compiler (it falls back to the
 * interpreter); such a tokenizer must encode exactly like the reference. */
static void sweep_load(const char *rel) {
    const char *path = tu_data(rel);
    const char txt[] = "hello world  abc <|endoftext|> caf\xc3\xa9 e\xcc\x81 \xff\xfe 12 he's llll xyzab";
    eng_tokenizer *ref = load_small(rel);
    eng_ids want = {0}, got = {0};
    CU_ASSERT_EQUAL_FATAL(eng_tokenizer_encode(ref, txt, sizeof txt - 1, &want), ENG_OK);
    eng_tokenizer_free(ref);
    unsigned long before = eng_alloc_count();
    ref = load_small(rel);
    long n = (long)(eng_alloc_count() - before), fallbacks = 0;
    eng_tokenizer_free(ref);
    for (long k = 0; k < n; k++) {
        char err[512] = "";
        eng_tokenizer *t = (eng_tokenizer *)1;
        eng_alloc_fail_after(k);
        eng_status st = eng_tokenizer_load(&t, path, err, sizeof err);
        eng_alloc_fail_after(-1);
        if (st == ENG_OK) {
            fallbacks++;
            got.n = 0;
            CU_ASSERT_EQUAL(eng_tokenizer_encode(t, txt, sizeof txt - 1, &got), ENG_OK);
            CU_ASSERT(got.n == want.n && memcmp(got.v, want.v, got.n * sizeof *got.v) == 0);
            eng_tokenizer_free(t);
            continue;
        }
        if (st != ENG_ERR_NOMEM || t || !strstr(err, path)) printf("\n  k=%ld: %d %s\n", k, st, err);
        CU_ASSERT_EQUAL(st, ENG_ERR_NOMEM);
        CU_ASSERT_PTR_NULL(t);
        CU_ASSERT(strstr(err, path) != NULL);
    }
    printf("\n  %s: each of its %ld allocations failed in turn: %ld clean NOMEM, %ld JIT fallbacks\n", rel, n,
           n - fallbacks, fallbacks);
    CU_ASSERT(n > 5);
    eng_ids_free(&want);
    eng_ids_free(&got);
}

static void test_alloc_fail(void) {
    sweep_load("tokenizer/small.json");
    sweep_load("tokenizer/small_unk.json");
    /* encode and decode with a cold tokenizer each time */
    const char txt[] = "hello world  abc <|endoftext|> caf\xc3\xa9 e\xcc\x81 \xff\xfe 12 he's llll";
    eng_tokenizer *ref = load_small("tokenizer/small.json");
    eng_ids want = {0};
    CU_ASSERT_EQUAL_FATAL(eng_tokenizer_encode(ref, txt, sizeof txt - 1, &want), ENG_OK);
    long k;
    for (k = 0; k < 1000; k++) {
        eng_tokenizer *t = load_small("tokenizer/small.json");
        eng_ids ids = {0};
        eng_buf out = {0};
        eng_alloc_fail_after(k);
        eng_status st = eng_tokenizer_encode(t, txt, sizeof txt - 1, &ids);
        eng_status st2 = st == ENG_OK ? eng_tokenizer_decode(t, ids.v, ids.n, &out) : ENG_OK;
        eng_alloc_fail_after(-1);
        CU_ASSERT(st == ENG_OK || st == ENG_ERR_NOMEM);
        CU_ASSERT(st2 == ENG_OK || st2 == ENG_ERR_NOMEM);
        if (st != ENG_OK || st2 != ENG_OK) CU_ASSERT(strlen(eng_tokenizer_errmsg(t)) > 0);
        /* the tokenizer still works after the failure */
        ids.n = 0;
        CU_ASSERT_EQUAL(eng_tokenizer_encode(t, txt, sizeof txt - 1, &ids), ENG_OK);
        CU_ASSERT(ids.n == want.n && memcmp(ids.v, want.v, ids.n * sizeof *ids.v) == 0);
        eng_ids_free(&ids);
        eng_buf_free(&out);
        eng_tokenizer_free(t);
        if (st == ENG_OK && st2 == ENG_OK) break;
    }
    printf("\n  encode+decode survive failure of each of their %ld allocations\n", k);
    CU_ASSERT(k > 3);
    eng_ids_free(&want);
    eng_tokenizer_free(ref);
}

static int suite_clean(void) {
    eng_tokenizer_free(g_real);
    g_real = NULL;
    return 0;
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("tokenizer", NULL, suite_clean);
    CU_add_test(s, "small tokenizers: HF ids (unk, fuse_unk, ignore_merges, tuple merges)", test_small);
    CU_add_test(s, "malformed files: status and message name file and field", test_bad_files);
    CU_add_test(s, "arguments, appending, n_replaced", test_args);
    CU_add_test(s, "UTF-8 repair: maximal subparts", test_utf8_repair);
    CU_add_test(s, "NFC: empty and exactly full scratch", test_nfc_edges);
    CU_add_test(s, "allocation failures in load, encode, decode", test_alloc_fail);
    CU_add_test(s, "real: cases.jsonl ids and decode equal HF", test_cases);
    CU_add_test(s, "real: invalid UTF-8 inputs", test_invalid_utf8);
    CU_add_test(s, "real: decode of cut characters and unknown ids", test_decode);
    CU_add_test(s, "real: vocab, find, token bytes", test_vocab_api);
    CU_add_test(s, "real: every code point (NFC, regex classes)", test_unicode_blocks);
    CU_add_test(s, "real: 1 MB runs", test_long_runs);
    CU_add_test(s, "real: heap merge == scan merge", test_merge_algorithms);
    CU_add_test(s, "warm encode allocates nothing", test_warm_no_alloc);
    return tu_run();
}
