/* tokenizer_bpe.h — the byte-level BPE model of a tokenizer.json ("model":
 * {"type": "BPE", ...}): vocab, merges by rank, the GPT-2 byte map and the
 * per-word cache. Internal to the engine (tokenizer.c, tests); callers use
 * tokenizer.h. */
#ifndef ENGINE_TOKENIZER_BPE_H
#define ENGINE_TOKENIZER_BPE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "eng.h"
#include "tokenizer.h"

typedef struct eng_bpe eng_bpe;

/* Largest token id accepted in a tokenizer.json (ids index dense tables). */
#define ENG_BPE_MAX_ID ((1 << 22) - 1)

/* Builds the model from the parsed "model" object. Errors are FORMAT or
 * UNSUPPORTED with "<label>: model.<field>: ..." in err; *out stays NULL. */
eng_status eng_bpe_load(eng_bpe **out, json_t *model, const char *label, char *err, size_t n_err);
void eng_bpe_free(eng_bpe *b);

/* Id of a vocab string (byte-level form, e.g. "Ġthe"), or -1. */
int32_t eng_bpe_lookup(const eng_bpe *b, const char *s, size_t n);
/* Vocab string of an id (NUL-terminated), or NULL when the id has none. */
const char *eng_bpe_token(const eng_bpe *b, int32_t id, size_t *len);
/* Largest id in the vocab, and the number of vocab entries. */
int32_t eng_bpe_max_id(const eng_bpe *b);
size_t eng_bpe_size(const eng_bpe *b);

/* Appends the ids of one pre-tokenized word (raw UTF-8 bytes, before the byte
 * map) to *ids. Uses and fills the word cache; allocates only when ids or the
 * merge scratch must grow. Not thread-safe (the cache and scratch are per
 * model). */
eng_status eng_bpe_encode_word(eng_bpe *b, const unsigned char *w, size_t n, eng_ids *ids);

/* Test hook: words longer than this use the heap merge, others the quadratic
 * scan (both give HF's result); returns the previous value. */
size_t eng_bpe_set_heap_min(eng_bpe *b, size_t n);
/* Test hook: turns the word cache off (0) or on (1); returns the previous. */
int eng_bpe_set_cache(eng_bpe *b, int on);

/* The GPT-2 bytes_to_unicode map: code point of byte b, and the byte of code
 * point c (-1 when c is not in the map). */
int32_t eng_bpe_byte_char(unsigned char b);
int eng_bpe_char_byte(int32_t c);

/* A fast 64-bit hash for short byte strings (vocab and cache keys). */
uint64_t eng_bpe_hash(const void *p, size_t n);

#endif /* ENGINE_TOKENIZER_BPE_H */
