/* random_model.c — writes random Pythia-shaped checkpoints (random_model.h).
 *
 * Values come from a counter-based generator (splitmix64 of seed, tensor
 * index and element index), so any chunk of any tensor can be produced
 * independently: the safetensors writer pulls them chunk by chunk and a
 * 2.8b checkpoint never sits in memory whole. Scales keep activations O(1):
 * linear weights U(±√3/√in) (unit-variance rows), embeddings U(±√3), LayerNorm
 * gains 1 ± 0.2, biases ±0.1 — random, but every parameter matters. */
#include "random_model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "safetensors.h"

static const eng_pythia_shape g_shapes[] = {
    {"pythia-14m", 6, 128, 4, 50304},    {"pythia-31m", 6, 256, 8, 50304},
    {"pythia-70m", 6, 512, 8, 50304},    {"pythia-160m", 12, 768, 12, 50304},
    {"pythia-410m", 24, 1024, 16, 50304}, {"pythia-1b", 16, 2048, 8, 50304},
    {"pythia-1.4b", 24, 2048, 16, 50304}, {"pythia-2.8b", 32, 2560, 32, 50304},
    {"pythia-6.9b", 32, 4096, 32, 50432}, {"pythia-12b", 36, 5120, 40, 50688},
    {NULL, 0, 0, 0, 0},
};

const eng_pythia_shape *eng_pythia_shapes(void) { return g_shapes; }

const eng_pythia_shape *eng_pythia_shape_find(const char *name) {
    for (const eng_pythia_shape *s = g_shapes; s->name; s++)
        if (strcmp(s->name, name) == 0 || strcmp(s->name + 7, name) == 0) return s;
    return NULL;
}

typedef enum { INIT_LINEAR, INIT_EMBED, INIT_GAIN, INIT_BIAS } init_kind;

typedef struct tensor_gen {
    uint64_t seed;
    uint64_t index;   /* tensor number, mixed into the stream */
    init_kind kind;
    float scale;
} tensor_gen;

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void gen_fill(float *dst, uint64_t first, uint64_t n, void *ud) {
    const tensor_gen *g = ud;
    uint64_t key = splitmix64(g->seed ^ splitmix64(g->index));
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (uint64_t i = 0; i < n; i++) {
        double u = (double)(splitmix64(key + first + i) >> 11) * 0x1.0p-53 * 2.0 - 1.0;   /* U(-1, 1) */
        dst[i] = (float)(g->kind == INIT_GAIN ? 1.0 + g->scale * u : g->scale * u);
    }
}

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int ok = fputs(text, f) >= 0;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

static int copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = a ? fopen(to, "wb") : NULL;
    char buf[65536];
    size_t n;
    int ok = a && b;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
    if (a && ferror(a)) ok = 0;
    if (a) fclose(a);
    if (b && fclose(b) != 0) ok = 0;
    return ok ? 0 : -1;
}

eng_status eng_random_model_write(const char *dir, const eng_pythia_shape *sh, const char *dtype,
                                  uint64_t seed, const char *tokenizer, char *err, size_t n_err) {
    st_dtype dt;
    const char *torch_dt;
    if (strcmp(dtype, "f32") == 0) dt = ST_F32, torch_dt = "float32";
    else if (strcmp(dtype, "f16") == 0) dt = ST_F16, torch_dt = "float16";
    else if (strcmp(dtype, "bf16") == 0) dt = ST_BF16, torch_dt = "bfloat16";
    else {
        eng_errf(err, n_err, "random-model: dtype '%s' is not one of f32, f16, bf16", dtype);
        return ENG_ERR_INVAL;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        eng_errf(err, n_err, "%s: cannot create directory: %s", dir, strerror(errno));
        return ENG_ERR_IO;
    }
    int L = sh->n_layer, C = sh->n_embd, F = 4 * sh->n_embd, V = sh->n_vocab;
    char path[1200], text[2048];
    snprintf(text, sizeof text,
             "{\n  \"architectures\": [\"GPTNeoXForCausalLM\"],\n  \"model_type\": \"gpt_neox\",\n"
             "  \"kvsweep_random_init\": {\"shape\": \"%s\", \"seed\": %llu, \"note\": \"RANDOM WEIGHTS, not a trained model\"},\n"
             "  \"hidden_size\": %d,\n  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
             "  \"intermediate_size\": %d,\n  \"vocab_size\": %d,\n  \"max_position_embeddings\": 2048,\n"
             "  \"rotary_pct\": 0.25,\n  \"rotary_emb_base\": 10000,\n  \"layer_norm_eps\": 1e-05,\n"
             "  \"use_parallel_residual\": true,\n  \"hidden_act\": \"gelu\",\n  \"tie_word_embeddings\": false,\n"
             "  \"bos_token_id\": 0,\n  \"eos_token_id\": 0,\n  \"torch_dtype\": \"%s\"\n}\n",
             sh->name, (unsigned long long)seed, C, L, sh->n_head, F, V, torch_dt);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (write_text(path, text) != 0) goto io;
    snprintf(text, sizeof text,
             "RANDOM-WEIGHT checkpoint in the shape of %s (seed %llu, %s), written by `kvrun random-model`.\n"
             "Its outputs are meaningless; it exists for speed benchmarks and for exercising the pipeline.\n",
             sh->name, (unsigned long long)seed, dtype);
    snprintf(path, sizeof path, "%s/README.txt", dir);
    if (write_text(path, text) != 0) goto io;
    if (tokenizer) {
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        if (copy_file(tokenizer, path) != 0) {
            eng_errf(err, n_err, "random-model: cannot copy tokenizer %s to %s", tokenizer, path);
            return ENG_ERR_IO;
        }
    }

    int n_t = 2 + 12 * L + 3;
    st_write_entry *e = eng_calloc((size_t)n_t, sizeof *e);
    tensor_gen *g = eng_calloc((size_t)n_t, sizeof *g);
    char (*names)[96] = eng_calloc((size_t)n_t, sizeof *names);
    if (!e || !g || !names) {
        eng_free(e); eng_free(g); eng_free(names);
        eng_errf(err, n_err, "random-model: out of memory");
        return ENG_ERR_NOMEM;
    }
    int k = 0;
#define ADD(nm, kind_, scale_, nd, d0, d1)                                                        \
    do {                                                                                        \
        snprintf(names[k], sizeof names[k], "%s", nm);                                         \
        g[k] = (tensor_gen){seed, (uint64_t)k, kind_, scale_};                                  \
        e[k] = (st_write_entry){.name = names[k], .dtype = dt, .n_dims = nd, .shape = {d0, d1}, \
                                .fill = gen_fill, .fill_ud = &g[k]};                            \
        k++;                                                                                    \
    } while (0)
    float s3 = sqrtf(3.0f);
    ADD("gpt_neox.embed_in.weight", INIT_EMBED, s3, 2, V, C);
    char nm[96];
    for (int l = 0; l < L; l++) {
        const char *pre = "gpt_neox.layers";
#define LNAME(suffix) (snprintf(nm, sizeof nm, "%s.%d.%s", pre, l, suffix), nm)
        ADD(LNAME("input_layernorm.weight"), INIT_GAIN, 0.2f, 1, C, 0);
        ADD(LNAME("input_layernorm.bias"), INIT_BIAS, 0.1f, 1, C, 0);
        ADD(LNAME("post_attention_layernorm.weight"), INIT_GAIN, 0.2f, 1, C, 0);
        ADD(LNAME("post_attention_layernorm.bias"), INIT_BIAS, 0.1f, 1, C, 0);
        ADD(LNAME("attention.query_key_value.weight"), INIT_LINEAR, s3 / sqrtf((float)C), 2, 3 * C, C);
        ADD(LNAME("attention.query_key_value.bias"), INIT_BIAS, 0.1f, 1, 3 * C, 0);
        ADD(LNAME("attention.dense.weight"), INIT_LINEAR, s3 / sqrtf((float)C), 2, C, C);
        ADD(LNAME("attention.dense.bias"), INIT_BIAS, 0.1f, 1, C, 0);
        ADD(LNAME("mlp.dense_h_to_4h.weight"), INIT_LINEAR, s3 / sqrtf((float)C), 2, F, C);
        ADD(LNAME("mlp.dense_h_to_4h.bias"), INIT_BIAS, 0.1f, 1, F, 0);
        ADD(LNAME("mlp.dense_4h_to_h.weight"), INIT_LINEAR, s3 / sqrtf((float)F), 2, C, F);
        ADD(LNAME("mlp.dense_4h_to_h.bias"), INIT_BIAS, 0.1f, 1, C, 0);
#undef LNAME
    }
    ADD("gpt_neox.final_layer_norm.weight", INIT_GAIN, 0.2f, 1, C, 0);
    ADD("gpt_neox.final_layer_norm.bias", INIT_BIAS, 0.1f, 1, C, 0);
    ADD("embed_out.weight", INIT_LINEAR, s3 / sqrtf((float)C), 2, V, C);
#undef ADD
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    eng_status st = st_file_write(path, e, k, err, n_err);
    eng_free(e); eng_free(g); eng_free(names);
    return st;
io:
    eng_errf(err, n_err, "%s: cannot write: %s", path, strerror(errno));
    return ENG_ERR_IO;
}
