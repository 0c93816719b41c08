/* tokenizer.h — the GPT-NeoX-20B byte-level BPE tokenizer (tokenizer.json),
 * bit-for-bit equal to Hugging Face `tokenizers` on the same file.
 *
 * Encode: added tokens with normalized:false (<|endoftext|>, <|padding|>) are
 * split out of the raw text first (leftmost-longest); each remaining piece is
 * NFC-normalized (utf8proc) and split again on the normalized:true added
 * tokens (the 23 whitespace runs); the rest is pre-tokenized with the GPT-2
 * regex (PCRE2, Unicode properties), byte-mapped and merged by BPE rank.
 * Invalid UTF-8 in the input is replaced by U+FFFD exactly as Python's
 * bytes.decode("utf-8", "replace") does (so HF on the repaired text is the
 * reference); eng_tokenizer_n_replaced() tells how many were replaced.
 * Decode: token strings are mapped back to bytes; invalid UTF-8 in the joined
 * bytes is repaired with U+FFFD the same way. Ids without a string (embedding
 * padding rows >= vocab size) decode to nothing. */
#ifndef ENGINE_TOKENIZER_H
#define ENGINE_TOKENIZER_H

#include "eng.h"

typedef struct eng_tokenizer eng_tokenizer;

/* A growable id vector owned by the caller (free with eng_ids_free). */
typedef struct eng_ids { int32_t *v; size_t n, cap; } eng_ids;
void eng_ids_free(eng_ids *ids);
eng_status eng_ids_push(eng_ids *ids, int32_t id);

/* A growable byte buffer owned by the caller (free with eng_buf_free). */
typedef struct eng_buf { char *v; size_t n, cap; } eng_buf;
void eng_buf_free(eng_buf *b);

eng_status eng_tokenizer_load(eng_tokenizer **out, const char *path, char *err, size_t n_err);
/* Same from memory; `label` names the source in errors (used by the fuzzer). */
eng_status eng_tokenizer_load_mem(eng_tokenizer **out, const char *json, size_t len,
                                  const char *label, char *err, size_t n_err);
void eng_tokenizer_free(eng_tokenizer *t);

/* Appends the ids of text[0..len) to *ids (ids->n grows). */
eng_status eng_tokenizer_encode(eng_tokenizer *t, const char *text, size_t len, eng_ids *ids);
/* Appends the UTF-8 text of ids to *out (out->n grows; kept NUL-terminated). */
eng_status eng_tokenizer_decode(eng_tokenizer *t, const int32_t *ids, size_t n, eng_buf *out);

/* Number of ids with a string (50277 for Pythia). */
int eng_tokenizer_n_vocab(const eng_tokenizer *t);
/* Raw bytes of one token (after the byte map is undone); NULL for unknown ids. */
const char *eng_tokenizer_token_bytes(const eng_tokenizer *t, int32_t id, size_t *len);
/* Id of an exact token string (e.g. "<|endoftext|>"), or -1. */
int32_t eng_tokenizer_find(const eng_tokenizer *t, const char *token);
/* U+FFFD replacements made by the last encode call. */
size_t eng_tokenizer_n_replaced(const eng_tokenizer *t);
/* Last detailed error; owned by t, valid until the next call on t. */
const char *eng_tokenizer_errmsg(const eng_tokenizer *t);

#endif /* ENGINE_TOKENIZER_H */
