/* model.c — loads a GPT-NeoX / Pythia checkpoint directory into memory.
 *
 * The story: config.json becomes an eng_config (every field type- and
 * range-checked, the rotary settings accepted in all three spellings HF has
 * used), then the weights come from model.safetensors, or from the shards
 * named by model.safetensors.index.json, each opened (mmap'd) once. Every
 * expected parameter is looked up and its dtype and shape checked before
 * anything big is allocated; then ONE fp32 buffer is allocated, carved by an
 * offset table into eng_weights (llm.c's malloc_and_point), and filled by
 * converting straight from the mappings, so peak memory is the fp32 weights
 * plus clean page cache, never two private copies. query_key_value rows (and
 * bias) are permuted from HF's per-head [NH][3][D] interleave to contiguous
 * [Q(all heads); K; V] on the way in.
 *
 * What it does not do: keep the files open after loading, interpret tensors
 * it does not know (attention.bias, masked_bias, rotary_emb.inv_freq and any
 * other name are skipped and counted), or support configs we cannot run
 * faithfully (non-gelu activations, rope scaling, tied embeddings, no
 * attention bias): those are refused with ENG_ERR_UNSUPPORTED.
 *
 * Dimension legend: L = n_layer, C = n_embd, NH = n_head, D = head_dim,
 * F = n_ff, V = n_vocab. */
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"

/* ------------------------------------------------------------ config.json */

typedef struct cfg_ctx { const char *path; char *err; size_t n_err; } cfg_ctx;

/* The field's value; NULL when absent or JSON null (both mean "use the default"). */
static json_t *cfg_get(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

static eng_status cfg_bad(const cfg_ctx *c, eng_status st, const char *field, const char *what) {
    eng_errf(c->err, c->n_err, "%s: field '%s': %s", c->path, field, what);
    return st;
}

/* Integer field in [lo, hi]; absent keeps *out unless required. */
static eng_status cfg_int(const cfg_ctx *c, json_t *root, const char *key, int required, int lo, int hi,
                          int *out) {
    json_t *v = cfg_get(root, key);
    if (!v) {
        if (!required) return ENG_OK;
        eng_errf(c->err, c->n_err, "%s: missing required field '%s'", c->path, key);
        return ENG_ERR_FORMAT;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return cfg_bad(c, ENG_ERR_FORMAT, key, lo > 0 ? "expected a positive integer" : "expected a non-negative integer");
    *out = (int)json_integer_value(v);
    return ENG_OK;
}

/* Number (JSON integer or real) field; *present tells whether it was there. */
static eng_status cfg_num(const cfg_ctx *c, json_t *obj, const char *key, const char *field, double *out,
                          int *present) {
    json_t *v = cfg_get(obj, key);
    *present = v != NULL;
    if (!v) return ENG_OK;
    if (!json_is_number(v)) return cfg_bad(c, ENG_ERR_FORMAT, field, "expected a number");
    *out = json_number_value(v);
    return ENG_OK;
}

static eng_status cfg_bool(const cfg_ctx *c, json_t *root, const char *key, int *out) {
    json_t *v = cfg_get(root, key);
    if (!v) return ENG_OK;
    if (!json_is_boolean(v)) return cfg_bad(c, ENG_ERR_FORMAT, key, "expected true or false");
    *out = json_is_true(v);
    return ENG_OK;
}

/* bos/eos: an integer, or a list whose first element is used (HF allows
 * eos_token_id to be a list); absent or null gives -1. */
static eng_status cfg_token(const cfg_ctx *c, json_t *root, const char *key, int *out) {
    json_t *v = cfg_get(root, key);
    *out = -1;
    if (!v) return ENG_OK;
    if (json_is_array(v) && json_array_size(v) > 0) v = json_array_get(v, 0);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT_MAX)
        return cfg_bad(c, ENG_ERR_FORMAT, key, "expected a non-negative integer");
    *out = (int)json_integer_value(v);
    return ENG_OK;
}

/* The rotary fraction and base. transformers 5.x reads rope_parameters
 * first, then falls back to the Pythia names rotary_pct/rotary_emb_base
 * (GPTNeoXConfig.convert_rope_params_to_dict uses setdefault); it ignores the
 * top-level partial_rotary_factor/rope_theta that 4.x wrote, which we accept
 * as the last resort before HF's defaults (0.25, 10000). */
static eng_status cfg_rope(const cfg_ctx *c, json_t *root, eng_config *cfg) {
    eng_status st;
    json_t *rs = cfg_get(root, "rope_scaling");
    if (rs && !(json_is_object(rs) && json_object_size(rs) == 0))
        return cfg_bad(c, ENG_ERR_UNSUPPORTED, "rope_scaling", "RoPE scaling is not supported (expected null)");
    double pct = 0.25, base = 10000.0, v;
    const char *pct_field = "rotary_pct", *base_field = "rotary_emb_base";
    int have;
    static const char *const spell[2][2] = {{"partial_rotary_factor", "rope_theta"},
                                            {"rotary_pct", "rotary_emb_base"}};
    for (int s = 0; s < 2; s++) {  // later spellings override earlier ones
        if ((st = cfg_num(c, root, spell[s][0], spell[s][0], &v, &have)) != ENG_OK) return st;
        if (have) pct = v, pct_field = spell[s][0];
        if ((st = cfg_num(c, root, spell[s][1], spell[s][1], &v, &have)) != ENG_OK) return st;
        if (have) base = v, base_field = spell[s][1];
    }
    json_t *rp = cfg_get(root, "rope_parameters");
    if (rp) {
        if (!json_is_object(rp)) return cfg_bad(c, ENG_ERR_FORMAT, "rope_parameters", "expected an object");
        const char *k;
        json_t *x;
        json_object_foreach(rp, k, x) {
            if (json_is_object(x))
                return cfg_bad(c, ENG_ERR_UNSUPPORTED, "rope_parameters", "per-layer-type RoPE is not supported");
        }
        json_t *ty = cfg_get(rp, "rope_type");
        if (!ty) ty = cfg_get(rp, "type");
        if (ty && !json_is_string(ty))
            return cfg_bad(c, ENG_ERR_FORMAT, "rope_parameters.rope_type", "expected a string");
        if (ty && strcmp(json_string_value(ty), "default") != 0) {
            eng_errf(c->err, c->n_err, "%s: field 'rope_parameters.rope_type': '%.64s' is not supported (only "
                     "'default')", c->path, json_string_value(ty));
            return ENG_ERR_UNSUPPORTED;
        }
        const char *f_pct = "rope_parameters.partial_rotary_factor", *f_base = "rope_parameters.rope_theta";
        if ((st = cfg_num(c, rp, "partial_rotary_factor", f_pct, &v, &have)) != ENG_OK) return st;
        if (have) pct = v, pct_field = f_pct;
        if ((st = cfg_num(c, rp, "rope_theta", f_base, &v, &have)) != ENG_OK) return st;
        if (have) base = v, base_field = f_base;
    }
    if (!(pct > 0.0 && pct <= 1.0)) return cfg_bad(c, ENG_ERR_FORMAT, pct_field, "expected a number in (0, 1]");
    if (!(base >= 1e-30 && base <= 3.4e38))  // a positive number that survives the cast to float
        return cfg_bad(c, ENG_ERR_FORMAT, base_field, "expected a positive number");
    // HF: dim = int(head_dim * partial_rotary_factor), in Python (double) arithmetic.
    double r = (double)cfg->head_dim * pct;
    cfg->n_rot = (int)r;
    if (cfg->n_rot <= 0 || cfg->n_rot % 2 || cfg->n_rot > cfg->head_dim) {
        eng_errf(c->err, c->n_err, "%s: field '%s': %g x head_dim %d gives %d rotary dims; need a positive even "
                 "number", c->path, pct_field, pct, cfg->head_dim, cfg->n_rot);
        return ENG_ERR_FORMAT;
    }
    cfg->rotary_pct = (float)pct;
    cfg->rope_base = (float)base;
    return ENG_OK;
}

/* Parse config.json text; `path` labels errors. On failure *cfg is untouched. */
eng_status eng_config_parse(eng_config *cfg, const char *json, size_t len, const char *path, char *err,
                            size_t n_err) {
    cfg_ctx c = {path ? path : "config.json", err, n_err};
    eng_config k = {0};
    eng_status st = ENG_ERR_FORMAT;
    json_error_t je;
    json_t *root = json ? json_loadb(json, len, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (!root) {
        // jansson 2.14 reports most allocation failures with no text at all.
        if (json && (json_error_code(&je) == json_error_out_of_memory || je.text[0] == 0)) {
            eng_errf(err, n_err, "%s: out of memory", c.path);
            return ENG_ERR_NOMEM;
        }
        eng_errf(err, n_err, "%s: JSON error at line %d, column %d: %s", c.path, json ? je.line : 0,
                 json ? je.column : 0, json ? je.text : "no text");
        return ENG_ERR_FORMAT;
    }
    if (!json_is_object(root)) {
        eng_errf(err, n_err, "%s: not a JSON object", c.path);
        goto fail;
    }
    json_t *mt = cfg_get(root, "model_type");
    if (mt && !json_is_string(mt)) {
        st = cfg_bad(&c, ENG_ERR_FORMAT, "model_type", "expected a string");
        goto fail;
    }
    if (mt && strcmp(json_string_value(mt), "gpt_neox") != 0) {
        eng_errf(err, n_err, "%s: field 'model_type': '%.64s' is not supported (only 'gpt_neox')", c.path,
                 json_string_value(mt));
        st = ENG_ERR_UNSUPPORTED;
        goto fail;
    }
    if ((st = cfg_int(&c, root, "hidden_size", 1, 1, INT_MAX / 4, &k.n_embd)) != ENG_OK ||
        (st = cfg_int(&c, root, "num_hidden_layers", 1, 1, INT_MAX, &k.n_layer)) != ENG_OK ||
        (st = cfg_int(&c, root, "num_attention_heads", 1, 1, INT_MAX, &k.n_head)) != ENG_OK ||
        (st = cfg_int(&c, root, "vocab_size", 1, 1, INT_MAX, &k.n_vocab)) != ENG_OK ||
        (st = cfg_int(&c, root, "intermediate_size", 1, 1, INT_MAX, &k.n_ff)) != ENG_OK ||
        (st = cfg_int(&c, root, "max_position_embeddings", 1, 1, INT_MAX, &k.n_ctx_train)) != ENG_OK)
        goto fail;
    if (k.n_embd % k.n_head != 0) {
        eng_errf(err, n_err, "%s: field 'hidden_size': %d is not divisible by num_attention_heads %d", c.path,
                 k.n_embd, k.n_head);
        st = ENG_ERR_FORMAT;
        goto fail;
    }
    k.head_dim = k.n_embd / k.n_head;
    int hd = k.head_dim;
    if ((st = cfg_int(&c, root, "head_dim", 0, 1, INT_MAX, &hd)) != ENG_OK) goto fail;
    if (hd != k.head_dim) {
        st = cfg_bad(&c, ENG_ERR_UNSUPPORTED, "head_dim", "differs from hidden_size / num_attention_heads");
        goto fail;
    }
    double eps = 1e-5;
    int have, attn_bias = 1, tied = 0;
    k.parallel_residual = 1;
    if ((st = cfg_num(&c, root, "layer_norm_eps", "layer_norm_eps", &eps, &have)) != ENG_OK) goto fail;
    if (!(eps >= 1e-30 && eps < 1.0)) {
        st = cfg_bad(&c, ENG_ERR_FORMAT, "layer_norm_eps", "expected a positive number below 1");
        goto fail;
    }
    k.ln_eps = (float)eps;
    if ((st = cfg_bool(&c, root, "use_parallel_residual", &k.parallel_residual)) != ENG_OK ||
        (st = cfg_bool(&c, root, "attention_bias", &attn_bias)) != ENG_OK ||
        (st = cfg_bool(&c, root, "tie_word_embeddings", &tied)) != ENG_OK)
        goto fail;
    if (!attn_bias) {
        st = cfg_bad(&c, ENG_ERR_UNSUPPORTED, "attention_bias", "false is not supported (Pythia has biases)");
        goto fail;
    }
    if (tied) {
        st = cfg_bad(&c, ENG_ERR_UNSUPPORTED, "tie_word_embeddings", "tied embeddings are not supported");
        goto fail;
    }
    json_t *act = cfg_get(root, "hidden_act");
    if (act && !json_is_string(act)) {
        st = cfg_bad(&c, ENG_ERR_FORMAT, "hidden_act", "expected a string");
        goto fail;
    }
    if (act && strcmp(json_string_value(act), "gelu") != 0) {
        eng_errf(err, n_err, "%s: field 'hidden_act': '%.64s' is not supported (only 'gelu')", c.path,
                 json_string_value(act));
        st = ENG_ERR_UNSUPPORTED;
        goto fail;
    }
    if ((st = cfg_rope(&c, root, &k)) != ENG_OK ||
        (st = cfg_token(&c, root, "bos_token_id", &k.bos_id)) != ENG_OK ||
        (st = cfg_token(&c, root, "eos_token_id", &k.eos_id)) != ENG_OK)
        goto fail;
    *cfg = k;
    st = ENG_OK;
fail:
    json_decref(root);
    return st;
}

/* ------------------------------------------------------------ the weights */

/* Parameter kinds, in eng_weights field order (the offset table's order). */
enum {
    P_EMBED_IN, P_LN1_W, P_LN1_B, P_LN2_W, P_LN2_B, P_QKV_W, P_QKV_B, P_O_W, P_O_B,
    P_FC1_W, P_FC1_B, P_FC2_W, P_FC2_B, P_LNF_W, P_LNF_B, P_EMBED_OUT, P_N
};
#define P_PER_LAYER(k) ((k) >= P_LN1_W && (k) <= P_FC2_B)

static const char *const g_param_names[P_N] = {
    "gpt_neox.embed_in.weight",
    "input_layernorm.weight", "input_layernorm.bias",
    "post_attention_layernorm.weight", "post_attention_layernorm.bias",
    "attention.query_key_value.weight", "attention.query_key_value.bias",
    "attention.dense.weight", "attention.dense.bias",
    "mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias",
    "mlp.dense_4h_to_h.weight", "mlp.dense_4h_to_h.bias",
    "gpt_neox.final_layer_norm.weight", "gpt_neox.final_layer_norm.bias",
    "embed_out.weight",
};

/* Expected shape of one instance of parameter kind k; returns n_dims. */
static int model_param_shape(const eng_config *c, int k, int64_t s[2]) {
    int64_t C = c->n_embd, F = c->n_ff, V = c->n_vocab;
    switch (k) {
    case P_EMBED_IN: case P_EMBED_OUT: s[0] = V, s[1] = C; return 2;
    case P_QKV_W: s[0] = 3 * C, s[1] = C; return 2;
    case P_QKV_B: s[0] = 3 * C; return 1;
    case P_O_W: s[0] = C, s[1] = C; return 2;
    case P_FC1_W: s[0] = F, s[1] = C; return 2;
    case P_FC1_B: s[0] = F; return 1;
    case P_FC2_W: s[0] = C, s[1] = F; return 2;
    default: s[0] = C; return 1;  // LayerNorm weights/biases, dense and fc2 biases
    }
}

/* One tensor to convert: source view, destination and whether its rows are
 * the interleaved QKV ones. */
typedef struct model_job {
    const st_tensor *t;
    const char *label;
    float *dst;        /* fp32 destination, or NULL when dst_h is used */
    uint16_t *dst_h;   /* 16-bit destination (raw copy, no conversion) */
    int perm;
} model_job;

/* Where the tensors come from: one file, or shards plus the index JSON. */
typedef struct model_src {
    st_file **files;
    const char **shard_names;  /* (n_files) borrowed from index, NULL for one file */
    char **labels;             /* (n_files) path of each file */
    int n_files;
    json_t *wmap;              /* weight_map, or NULL */
    char index_path[2048];
} model_src;

static void model_src_free(model_src *s, json_t *index) {
    for (int i = 0; i < s->n_files; i++) {
        st_file_close(s->files[i]);
        eng_free(s->labels[i]);
    }
    eng_free(s->files);
    eng_free(s->labels);
    eng_free(s->shard_names);
    json_decref(index);
}

/* Read a small text file whole; ENG_ERR_IO naming the path when it cannot. */
static eng_status model_read_text(const char *path, char **out, size_t *len, char *err, size_t n_err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        eng_errf(err, n_err, "%s: cannot open: %s", path, fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0) close(fd);
        return ENG_ERR_IO;
    }
    if (sb.st_size > (1 << 30)) {
        eng_errf(err, n_err, "%s: %lld bytes is too large", path, (long long)sb.st_size);
        close(fd);
        return ENG_ERR_FORMAT;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    char *b = eng_alloc(n + 1);
    if (!b) {
        eng_errf(err, n_err, "%s: out of memory", path);
        close(fd);
        return ENG_ERR_NOMEM;
    }
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != n) {
        eng_errf(err, n_err, "%s: short read", path);
        eng_free(b);
        return ENG_ERR_IO;
    }
    b[n] = 0;
    *out = b;
    *len = n;
    return ENG_OK;
}

static eng_status model_src_add(model_src *s, const char *path, const char *shard, char *err, size_t n_err) {
    s->labels[s->n_files] = eng_strdup(path);
    if (!s->labels[s->n_files]) {
        eng_errf(err, n_err, "%s: out of memory", path);
        return ENG_ERR_NOMEM;
    }
    s->shard_names[s->n_files] = shard;
    eng_status st = st_file_open(&s->files[s->n_files], path, err, n_err);
    if (st != ENG_OK) {
        eng_free(s->labels[s->n_files]);
        return st;
    }
    s->n_files++;
    return ENG_OK;
}

/* A shard name must be a plain file name inside the model directory. */
static int model_plain_name(const char *s) {
    return *s && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 && !strchr(s, '/') && !strchr(s, '\\');
}

/* Open the sharded checkpoint described by `index` (parsed JSON root). */
static eng_status model_src_open_index(model_src *s, json_t *index, const char *dir, char *err, size_t n_err) {
    const char *ip = s->index_path;
    s->wmap = json_is_object(index) ? json_object_get(index, "weight_map") : NULL;
    if (!json_is_object(s->wmap)) {
        eng_errf(err, n_err, "%s: field 'weight_map': expected an object", ip);
        return ENG_ERR_FORMAT;
    }
    size_t n = json_object_size(s->wmap);
    s->files = eng_calloc(n ? n : 1, sizeof *s->files);
    s->labels = eng_calloc(n ? n : 1, sizeof *s->labels);
    s->shard_names = eng_calloc(n ? n : 1, sizeof *s->shard_names);
    if (!s->files || !s->labels || !s->shard_names) {
        eng_errf(err, n_err, "%s: out of memory", ip);
        return ENG_ERR_NOMEM;
    }
    const char *key;
    json_t *v;
    char path[2048];
    json_object_foreach(s->wmap, key, v) {
        if (!json_is_string(v) || !model_plain_name(json_string_value(v))) {
            eng_errf(err, n_err, "%s: weight_map['%s']: shard '%.200s' is not a plain file name in the model "
                     "directory", ip, key, json_is_string(v) ? json_string_value(v) : "(not a string)");
            return ENG_ERR_FORMAT;
        }
        const char *shard = json_string_value(v);
        int seen = 0;
        for (int i = 0; i < s->n_files && !seen; i++) seen = strcmp(s->shard_names[i], shard) == 0;
        if (seen) continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, shard) >= sizeof path) {
            eng_errf(err, n_err, "%s: shard path too long", ip);
            return ENG_ERR_INVAL;
        }
        eng_status st = model_src_add(s, path, shard, err, n_err);
        if (st != ENG_OK) return st;
    }
    json_object_foreach(s->wmap, key, v) {
        for (int i = 0; i < s->n_files; i++)
            if (strcmp(s->shard_names[i], json_string_value(v)) == 0 && !st_file_find(s->files[i], key)) {
                eng_errf(err, n_err, "%s: tensor '%s' is listed in the index but missing from this shard",
                         s->labels[i], key);
                return ENG_ERR_FORMAT;
            }
    }
    return ENG_OK;
}

/* The tensor `name` and the label of its file; NULL if absent. */
static const st_tensor *model_src_find(const model_src *s, const char *name, const char **label) {
    int f = 0;
    if (s->wmap) {
        json_t *v = json_object_get(s->wmap, name);
        if (!v) return NULL;
        for (f = 0; f < s->n_files; f++)
            if (strcmp(s->shard_names[f], json_string_value(v)) == 0) break;
        if (f == s->n_files) return NULL;
    }
    *label = s->labels[f];
    return st_file_find(s->files[f], name);
}

/* Check one expected parameter and record its conversion job. */
static eng_status model_job_plan(model_job *j, const model_src *s, const eng_config *c, int kind, int layer,
                                 char *err, size_t n_err) {
    char name[256];
    if (P_PER_LAYER(kind)) snprintf(name, sizeof name, "gpt_neox.layers.%d.%s", layer, g_param_names[kind]);
    else snprintf(name, sizeof name, "%s", g_param_names[kind]);
    const char *label = s->wmap ? s->index_path : s->labels[0];
    const st_tensor *t = model_src_find(s, name, &label);
    if (!t) {
        eng_errf(err, n_err, "%s: missing tensor '%s'", label, name);
        return ENG_ERR_FORMAT;
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) {
        eng_errf(err, n_err, "%s: tensor '%s' has dtype %s; parameters must be F32, F16 or BF16", label, name,
                 st_dtype_name(t->dtype));
        return ENG_ERR_FORMAT;
    }
    int64_t want[2];
    int nd = model_param_shape(c, kind, want);
    if (t->n_dims != nd || t->shape[0] != want[0] || (nd == 2 && t->shape[1] != want[1])) {
        char got[160] = "[", exp[64];
        for (int i = 0; i < t->n_dims; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        snprintf(got + strlen(got), sizeof got - strlen(got), "]");
        if (nd == 2) snprintf(exp, sizeof exp, "[%lld, %lld]", (long long)want[0], (long long)want[1]);
        else snprintf(exp, sizeof exp, "[%lld]", (long long)want[0]);
        eng_errf(err, n_err, "%s: tensor '%s' has shape %s, expected %s", label, name, got, exp);
        return ENG_ERR_FORMAT;
    }
    j->t = t;
    j->label = label;
    j->perm = kind == P_QKV_W || kind == P_QKV_B;
    return ENG_OK;
}

#define MODEL_CHUNK ((int64_t)1 << 16)

/* Drop a converted tensor's pages from our resident set. Safe only because
 * every st_file here comes from st_file_open: a read-only private file
 * mapping, which re-reads the file if touched again. The pages stay in the
 * page cache; this just keeps RSS near the fp32 size while loading. */
static void model_job_release(const st_tensor *t) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)t->data + page - 1) & ~(page - 1);
    uintptr_t b = ((uintptr_t)t->data + (uintptr_t)(t->end - t->begin)) & ~(page - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Convert one tensor into its slot. QKV rows: HF row r = h*3D + t*D + d
 * (head h, t in q/k/v, dim d) goes to row t*C + h*D + d. */
static void model_job_run(const model_job *j, const eng_config *c) {
    const st_tensor *t = j->t;
    size_t es = st_dtype_size(t->dtype);
    if (j->dst_h) {   /* kept 16-bit: copy bytes, permuting QKV rows the same way */
        int64_t rows = t->shape[0], cols = t->n_dims == 2 ? t->shape[1] : 1;
        int64_t D = c->head_dim, C = c->n_embd;
#pragma omp parallel for schedule(static) if (rows * cols > MODEL_CHUNK)
        for (int64_t r = 0; r < rows; r++) {
            int64_t to = r;
            if (j->perm) to = ((r / D) % 3) * C + (r / (3 * D)) * D + r % D;
            memcpy(j->dst_h + to * cols, t->data + (size_t)(r * cols) * es, (size_t)cols * 2);
        }
        return;
    }
    if (j->perm) {
        int64_t rows = 3 * (int64_t)c->n_embd, cols = t->n_dims == 2 ? t->shape[1] : 1;
        int64_t D = c->head_dim, C = c->n_embd;
#pragma omp parallel for schedule(static) if (rows * cols > MODEL_CHUNK)
        for (int64_t r = 0; r < rows; r++) {
            int64_t h = r / (3 * D), q = (r / D) % 3, d = r % D;
            float *dst = j->dst + (q * C + h * D + d) * cols;
            st_to_f32(dst, t->data + (size_t)(r * cols) * es, t->dtype, (uint64_t)cols);
        }
        return;
    }
    int64_t n = (int64_t)t->n_elems, n_chunks = (n + MODEL_CHUNK - 1) / MODEL_CHUNK;
#pragma omp parallel for schedule(dynamic) if (n_chunks > 1)
    for (int64_t i = 0; i < n_chunks; i++) {
        int64_t first = i * MODEL_CHUNK, k = n - first < MODEL_CHUNK ? n - first : MODEL_CHUNK;
        st_to_f32(j->dst + first, t->data + (size_t)first * es, t->dtype, (uint64_t)k);
    }
}

/* Elements per kind (all layers), overflow-checked; returns total or 0. */
static size_t model_param_counts(const eng_config *c, size_t count[P_N]) {
    size_t total = 0;
    for (int k = 0; k < P_N; k++) {
        int64_t s[2] = {1, 1};
        model_param_shape(c, k, s);
        size_t n;
        if (__builtin_mul_overflow((size_t)s[0], (size_t)s[1], &n) ||
            (P_PER_LAYER(k) && __builtin_mul_overflow(n, (size_t)c->n_layer, &n)) ||
            __builtin_add_overflow(total, n, &total))
            return 0;
        count[k] = n;
    }
    return total > SIZE_MAX / sizeof(float) ? 0 : total;
}

/* Load `dir`: config.json, then model.safetensors or the sharded
 * model.safetensors.index.json. On failure *out is NULL, nothing is leaked,
 * and err names the file and the field or tensor. */
eng_status eng_model_load(eng_model **out, const char *dir, char *err, size_t n_err) {
    return eng_model_load_ex(out, dir, NULL, err, n_err);
}

static int model_kind_is_matrix(int k) {
    return k == P_EMBED_IN || k == P_QKV_W || k == P_O_W || k == P_FC1_W || k == P_FC2_W || k == P_EMBED_OUT;
}

double eng_model_weight_bytes(const eng_model *m) { return m->w.wtype == KN_W_F32 ? 4.0 : 2.0; }

eng_status eng_model_load_ex(eng_model **out, const char *dir, const eng_load_opts *opts, char *err,
                             size_t n_err) {
    eng_status st;
    eng_model *m = NULL;
    model_src src = {0};
    json_t *index = NULL;
    model_job *jobs = NULL;
    char *text = NULL, path[2048];
    size_t len;
    *out = NULL;
    if (!dir || strlen(dir) >= sizeof m->dir) {
        eng_errf(err, n_err, "model directory path missing or too long");
        return ENG_ERR_INVAL;
    }
    if (!(m = eng_calloc(1, sizeof *m))) {
        eng_errf(err, n_err, "%s: out of memory", dir);
        return ENG_ERR_NOMEM;
    }
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((st = model_read_text(path, &text, &len, err, n_err)) != ENG_OK) goto fail;
    if ((st = eng_config_parse(&m->cfg, text, len, path, err, n_err)) != ENG_OK) goto fail;
    eng_free(text);
    text = NULL;
    const eng_config *c = &m->cfg;

    struct stat sb;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(src.index_path, sizeof src.index_path, "%s/model.safetensors.index.json", dir);
    if (stat(path, &sb) != 0 && stat(src.index_path, &sb) == 0) {
        if ((st = model_read_text(src.index_path, &text, &len, err, n_err)) != ENG_OK) goto fail;
        json_error_t je;
        if (!(index = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je))) {
            int oom = json_error_code(&je) == json_error_out_of_memory || je.text[0] == 0;
            eng_errf(err, n_err, "%s: JSON error at line %d, column %d: %s", src.index_path, je.line, je.column,
                     je.text);
            st = oom ? ENG_ERR_NOMEM : ENG_ERR_FORMAT;
            goto fail;
        }
        if ((st = model_src_open_index(&src, index, dir, err, n_err)) != ENG_OK) goto fail;
    } else {
        src.files = eng_calloc(1, sizeof *src.files);
        src.labels = eng_calloc(1, sizeof *src.labels);
        src.shard_names = eng_calloc(1, sizeof *src.shard_names);
        if (!src.files || !src.labels || !src.shard_names) {
            eng_errf(err, n_err, "%s: out of memory", path);
            st = ENG_ERR_NOMEM;
            goto fail;
        }
        if ((st = model_src_add(&src, path, NULL, err, n_err)) != ENG_OK) goto fail;
    }

    // Plan every parameter (lookup, dtype, shape) before the big allocation.
    int n_jobs = 4 + 12 * c->n_layer;
    if (c->n_layer > (INT_MAX - 4) / 12 || !(jobs = eng_calloc((size_t)n_jobs, sizeof *jobs))) {
        eng_errf(err, n_err, "%s: out of memory planning %d layers", dir, c->n_layer);
        st = ENG_ERR_NOMEM;
        goto fail;
    }
    size_t count[P_N], off = 0;
    if (!(m->n_params = model_param_counts(c, count))) {
        eng_errf(err, n_err, "%s/config.json: parameter count overflows", dir);
        st = ENG_ERR_FORMAT;
        goto fail;
    }
    int nj = 0;
    for (int k = 0; k < P_N; k++)
        for (int l = 0; l < (P_PER_LAYER(k) ? c->n_layer : 1); l++)
            if ((st = model_job_plan(&jobs[nj++], &src, c, k, l, err, n_err)) != ENG_OK) goto fail;
    // Keep the matrices 16-bit when asked and they all share one 16-bit dtype.
    st_dtype mat_dt = jobs[0].t->dtype;
    int keep = opts && opts->keep_16bit && (mat_dt == ST_F16 || mat_dt == ST_BF16);
    size_t n_h = 0;
    nj = 0;
    for (int k = 0; k < P_N; k++)
        for (int l = 0; l < (P_PER_LAYER(k) ? c->n_layer : 1); l++, nj++)
            if (model_kind_is_matrix(k)) keep &= jobs[nj].t->dtype == mat_dt;
    for (int k = 0; keep && k < P_N; k++)
        if (model_kind_is_matrix(k)) n_h += count[k];
    size_t n_f = m->n_params - n_h;
    if (!(m->mem = eng_alloc(n_f * sizeof(float) + n_h * sizeof(uint16_t)))) {
        eng_errf(err, n_err, "%s: out of memory for %zu parameters (%.2f GB)", dir, m->n_params,
                 ((double)n_f * 4 + (double)n_h * 2) * 1e-9);
        st = ENG_ERR_NOMEM;
        goto fail;
    }
    m->w.wtype = keep ? (mat_dt == ST_F16 ? KN_W_F16 : KN_W_BF16) : KN_W_F32;
    // Carve the single allocation by the offset table, in eng_weights order:
    // fp32 parameters first, then (when kept) the 16-bit matrices.
    float **slot[P_N] = {&m->w.embed_in, &m->w.ln1_w, &m->w.ln1_b, &m->w.ln2_w, &m->w.ln2_b, &m->w.qkv_w,
                         &m->w.qkv_b, &m->w.o_w, &m->w.o_b, &m->w.fc1_w, &m->w.fc1_b, &m->w.fc2_w,
                         &m->w.fc2_b, &m->w.lnf_w, &m->w.lnf_b, &m->w.embed_out};
    uint16_t **slot_h[P_N] = {[P_EMBED_IN] = &m->w.embed_in_h, [P_QKV_W] = &m->w.qkv_w_h, [P_O_W] = &m->w.o_w_h,
                              [P_FC1_W] = &m->w.fc1_w_h, [P_FC2_W] = &m->w.fc2_w_h,
                              [P_EMBED_OUT] = &m->w.embed_out_h};
    uint16_t *mem_h = (uint16_t *)(m->mem + n_f);
    size_t off_h = 0;
    nj = 0;
    for (int k = 0; k < P_N; k++) {
        int reps = P_PER_LAYER(k) ? c->n_layer : 1;
        if (keep && model_kind_is_matrix(k)) {
            *slot_h[k] = mem_h + off_h;
            for (int l = 0; l < reps; l++) jobs[nj++].dst_h = mem_h + off_h + count[k] / (size_t)reps * (size_t)l;
            off_h += count[k];
            continue;
        }
        *slot[k] = m->mem + off;
        for (int l = 0; l < reps; l++) jobs[nj++].dst = m->mem + off + count[k] / (size_t)reps * (size_t)l;
        off += count[k];
    }
    for (int i = 0; i < n_jobs; i++) {
        model_job_run(&jobs[i], c);
        model_job_release(jobs[i].t);
    }
    m->src_dtype = jobs[0].t->dtype;
    int n_tensors = 0;
    for (int i = 0; i < src.n_files; i++) n_tensors += st_file_n_tensors(src.files[i]);
    m->n_ignored = n_tensors - n_jobs;
    st = ENG_OK;
    *out = m;
    m = NULL;
fail:
    eng_free(jobs);
    eng_free(text);
    model_src_free(&src, index);
    eng_model_free(m);
    return st;
}

void eng_model_free(eng_model *m) {
    if (!m) return;
    eng_free(m->mem);
    eng_free(m);
}

/* Bytes read per decoded token: every parameter except embed_in (a decode
 * step reads one of its rows) at `bytes_per_param`. */
double eng_model_decode_bytes(const eng_config *c, double bytes_per_param) {
    double L = c->n_layer, C = c->n_embd, F = c->n_ff, V = c->n_vocab;
    double per_layer = 4 * C * C + 2 * F * C + 9 * C + F;
    return (L * per_layer + 2 * C + V * C) * bytes_per_param;
}
