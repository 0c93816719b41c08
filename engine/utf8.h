/* utf8.h — growable id/byte buffers and the UTF-8 text steps of the tokenizer: repair of
 * invalid UTF-8 (Python's bytes.decode("utf-8", "replace")) and NFC as Hugging
 * Face `tokenizers` computes it. Internal to the engine (tokenizer*.c, tests);
 * callers outside the engine use tokenizer.h. */
#ifndef ENGINE_UTF8_H
#define ENGINE_UTF8_H

#include <stddef.h>
#include <stdint.h>

#include "eng.h"
#include "tokenizer.h"

/* Makes room for `extra` more ids after ids->n (grow-only, doubling). */
eng_status eng_ids_reserve(eng_ids *ids, size_t extra);
/* Makes room for `extra` more bytes plus a NUL after b->n (grow-only). */
eng_status eng_buf_reserve(eng_buf *b, size_t extra);
/* Appends s[0..n) and keeps b NUL-terminated. */
eng_status eng_buf_append(eng_buf *b, const char *s, size_t n);

/* Length of the longest prefix of s[0..n) that is valid UTF-8 (n if all). */
size_t eng_utf8_valid_prefix(const char *s, size_t n);

/* Appends s[0..n) to out with every maximal invalid subpart replaced by
 * U+FFFD (Unicode §3.9 "substitution of maximal subparts", which is what
 * CPython's "replace" handler and Rust's from_utf8_lossy do). Adds the number
 * of replacements to *n_replaced when it is not NULL. */
eng_status eng_utf8_repair(const char *s, size_t n, eng_buf *out, size_t *n_replaced);

/* Scratch space for eng_utf8_nfc (code points); grow-only, caller-owned. */
typedef struct eng_utf8_scratch { int32_t *v; size_t cap; } eng_utf8_scratch;
void eng_utf8_scratch_free(eng_utf8_scratch *s);

/* Appends NFC(s[0..n)) to out, as HF `tokenizers` normalizers.NFC computes it
 * (see utf8.c for the Unicode-version difference this handles). s must be
 * valid UTF-8. Allocates only when out or scratch must grow. */
eng_status eng_utf8_nfc(const char *s, size_t n, eng_buf *out, eng_utf8_scratch *scratch);

/* Code point at s (valid UTF-8 assumed), its length in *len. */
int32_t eng_utf8_decode(const unsigned char *s, size_t *len);
/* Writes the UTF-8 of c (< 0x110000) to out[0..4); returns its length. */
size_t eng_utf8_encode(int32_t c, char *out);

#endif /* ENGINE_UTF8_H */
