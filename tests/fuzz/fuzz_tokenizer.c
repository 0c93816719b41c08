/* fuzz_tokenizer.c — libFuzzer target for eng_tokenizer_load_mem: any input
 * either loads, or fails with FORMAT / UNSUPPORTED / NOMEM and a message naming
 * the label. A tokenizer that loads must encode and decode without crashing:
 * fixed texts, the tail of the input as text, and ids taken from the input;
 * re-encoding the same text must give the same ids (cache consistency), and
 * decode output must be valid UTF-8 of the declared length. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "utf8.h"

static void exercise(eng_tokenizer *t, const char *s, size_t n) {
    eng_ids a = {0}, b = {0};
    eng_buf out = {0};
    if (eng_tokenizer_encode(t, s, n, &a) != ENG_OK) abort();
    if (eng_tokenizer_encode(t, s, n, &b) != ENG_OK) abort();
    if (a.n != b.n || (a.n && memcmp(a.v, b.v, a.n * sizeof *a.v) != 0)) abort();
    for (size_t i = 0; i < a.n; i++)
        if (a.v[i] < 0 || a.v[i] >= eng_tokenizer_n_vocab(t)) abort();
    if (eng_tokenizer_decode(t, a.v, a.n, &out) != ENG_OK) abort();
    if (strlen(out.v) > out.n || eng_utf8_valid_prefix(out.v, out.n) != out.n) abort();
    eng_ids_free(&a);
    eng_ids_free(&b);
    eng_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len);
int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len) {
    char err[512] = "";
    eng_tokenizer *t = NULL;
    eng_status st = eng_tokenizer_load_mem(&t, (const char *)buf, len, "fuzz/tokenizer.json", err, sizeof err);
    if (st != ENG_OK) {
        if (t) abort();
        if (st != ENG_ERR_FORMAT && st != ENG_ERR_UNSUPPORTED && st != ENG_ERR_NOMEM) abort();
        if (!strstr(err, "fuzz/tokenizer.json")) abort();
        return 0;
    }
    static const char *texts[] = {"hello world", "", "  a    b\n\n\t x", "<|endoftext|>it's 123 caf\xc3\xa9 e\xcc\x81",
                                  "\xff\xfe\xc3", "\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80!!"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) exercise(t, texts[i], strlen(texts[i]));
    size_t tail = len > 64 ? 64 : len;
    exercise(t, (const char *)buf + len - tail, tail);
    /* decode ids from the input bytes, including out-of-range ones */
    int32_t ids[32];
    size_t n = 0;
    for (size_t i = 0; i + 4 <= len && n < 32; i += 4) {
        uint32_t v;
        memcpy(&v, buf + i, 4);
        ids[n++] = (int32_t)(v % (uint32_t)(eng_tokenizer_n_vocab(t) + 8)) - 2;
    }
    eng_buf out = {0};
    if (eng_tokenizer_decode(t, ids, n, &out) != ENG_OK) abort();
    if (eng_utf8_valid_prefix(out.v, out.n) != out.n) abort();
    int32_t nv = eng_tokenizer_n_vocab(t);
    for (int32_t id = -1; id <= nv && id < 300; id++) {
        size_t l = 0;
        if (eng_tokenizer_token_bytes(t, id, &l) && (id < 0 || id >= nv)) abort();
    }
    if (eng_tokenizer_token_bytes(t, nv, NULL)) abort();
    eng_buf_free(&out);
    eng_tokenizer_free(t);
    return 0;
}
