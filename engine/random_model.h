/* random_model.h — HF-format checkpoints with random weights in the exact
 * shapes of the Pythia suite, for benchmarks and demos where no trained
 * weights are available. The directory gets config.json in Pythia's own
 * spelling (marked "kvsweep_random_init" so nobody mistakes it for a trained
 * model), model.safetensors in F32/F16/BF16, a README.txt saying what it is,
 * and, when given, a copy of tokenizer.json. */
#ifndef ENGINE_RANDOM_MODEL_H
#define ENGINE_RANDOM_MODEL_H

#include "model.h"

typedef struct eng_pythia_shape {
    const char *name;     /* "pythia-160m" */
    int n_layer, n_embd, n_head, n_vocab;
} eng_pythia_shape;

/* NULL-terminated table: 14m, 31m, 70m, 160m, 410m, 1b, 1.4b, 2.8b, 6.9b, 12b. */
const eng_pythia_shape *eng_pythia_shapes(void);
/* Lookup by "pythia-160m" or "160m"; NULL if unknown. */
const eng_pythia_shape *eng_pythia_shape_find(const char *name);

/* dtype: "f32", "f16" or "bf16". tokenizer may be NULL. */
eng_status eng_random_model_write(const char *dir, const eng_pythia_shape *shape, const char *dtype,
                                  uint64_t seed, const char *tokenizer, char *err, size_t n_err);

#endif /* ENGINE_RANDOM_MODEL_H */
