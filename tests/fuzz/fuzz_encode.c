/* fuzz_encode.c — libFuzzer target for eng_tokenizer_encode/decode on the real
 * Pythia tokenizer (KV_TOKENIZER, else ../shared/data/pythia-tokenizer.json,
 * loaded once). Any byte string must encode, and decode(encode(x)) must equal
 * x with invalid UTF-8 replaced by U+FFFD and NFC applied to each piece
 * between <|endoftext|> / <|padding|> (HF normalizes the pieces, not the
 * whole text), with n_replaced equal to the number of U+FFFD inserted. Without
 * the real file it falls back to tests/data/tokenizer/small.json and checks
 * only that nothing crashes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "utf8.h"

static eng_tokenizer *g_tok;
static int g_real;

static void load_once(void) {
    static int done;
    if (done) return;
    done = 1;
    const char *env = getenv("KV_TOKENIZER");
    const char *cand[] = {env, "../shared/data/pythia-tokenizer.json", "tests/data/tokenizer/small.json"};
    char err[512];
    for (int i = 0; i < 3 && !g_tok; i++) {
        if (!cand[i] || !*cand[i]) continue;
        if (eng_tokenizer_load(&g_tok, cand[i], err, sizeof err) == ENG_OK) {
            g_real = i < 2;
            fprintf(stderr, "fuzz_encode: %s (%s)\n", cand[i], g_real ? "round-trip checked" : "crash checks only");
        }
    }
    if (!g_tok) {
        fprintf(stderr, "fuzz_encode: no tokenizer could be loaded\n");
        abort();
    }
}

/* The text HF would decode back: pieces between the raw added tokens, NFC'd. */
static void expected(const char *s, size_t n, eng_buf *want) {
    static const char *specials[] = {"<|endoftext|>", "<|padding|>"};
    eng_utf8_scratch sc = {0};
    size_t pos = 0;
    while (pos <= n) {
        size_t best = n, blen = 0;
        for (int k = 0; k < 2; k++) {
            size_t l = strlen(specials[k]);
            for (size_t i = pos; i + l <= n && i < best; i++)
                if (memcmp(s + i, specials[k], l) == 0) { best = i; blen = l; break; }
        }
        if (eng_utf8_nfc(s + pos, best - pos, want, &sc) != ENG_OK) abort();
        if (!blen) break;
        eng_buf_append(want, s + best, blen);
        pos = best + blen;
    }
    eng_utf8_scratch_free(&sc);
}

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len);
int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len) {
    load_once();
    eng_ids ids = {0};
    eng_buf out = {0}, fixed = {0}, want = {0};
    if (eng_tokenizer_encode(g_tok, (const char *)buf, len, &ids) != ENG_OK) abort();
    size_t reps = eng_tokenizer_n_replaced(g_tok), my_reps = 0;
    if (eng_tokenizer_decode(g_tok, ids.v, ids.n, &out) != ENG_OK) abort();
    if (g_real) {
        eng_utf8_repair((const char *)buf, len, &fixed, &my_reps);
        if (reps != my_reps) abort();
        expected(fixed.v, fixed.n, &want);
        if (out.n != want.n || memcmp(out.v, want.v, out.n) != 0) abort();
    }
    eng_ids_free(&ids);
    eng_buf_free(&out);
    eng_buf_free(&fixed);
    eng_buf_free(&want);
    return 0;
}
