/* test_model.c — config.json parsing and checkpoint loading.
 *
 * Config: the three spellings of the rotary settings (Pythia's rotary_pct /
 * rotary_emb_base, top-level partial_rotary_factor / rope_theta, and
 * transformers 5.x's rope_parameters) and their precedence, the defaults,
 * HF's int(head_dim * factor), and one case per bad field (the message must
 * name the field). Loading: tiny models assembled here with st_file_write
 * (F32/F16/BF16, single file and two shards) checked value by value,
 * including the query_key_value row permutation; every way a directory can
 * be wrong (missing or misshaped or non-float parameter, bad index, unsafe or
 * missing shard) names the tensor and the file; unknown tensors and the old
 * buffers are skipped and counted; an allocation-failure sweep; and, when
 * present, the HF-written fixtures of tests/data/models. */
#include <CUnit/Basic.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"
#include "safetensors.h"
#include "testutil.h"

static char g_tmp[256];

static const char *tpath(const char *fmt, const char *a) {
    static char buf[8][600];
    static int slot;
    char *p = buf[slot++ % 8], rel[300];
    snprintf(rel, sizeof rel, fmt, a);
    snprintf(p, sizeof buf[0], "%s/%s", g_tmp, rel);
    return p;
}

static int tmp_init(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/kvsweep_test_model_XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int tmp_clean(void) { return nftw(g_tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
}

/* ------------------------------------------------------------ config.json */

#define CFG_BASE                                                                                  \
    "\"hidden_size\": 160, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, "                \
    "\"intermediate_size\": 640, \"vocab_size\": 512, \"max_position_embeddings\": 256"

static eng_status cfg_parse(eng_config *c, const char *json, char *err, size_t n) {
    memset(c, 0x5a, sizeof *c);
    return eng_config_parse(c, json, strlen(json), "dir/config.json", err, n);
}

static void test_config_spellings(void) {
    const char *texts[] = {
        "{\"model_type\": \"gpt_neox\", " CFG_BASE ", \"rotary_pct\": 0.25, \"rotary_emb_base\": 5000}",
        "{" CFG_BASE ", \"partial_rotary_factor\": 0.25, \"rope_theta\": 5000.0}",
        "{" CFG_BASE ", \"rope_parameters\": {\"partial_rotary_factor\": 0.25, \"rope_theta\": 5000.0, "
        "\"rope_type\": \"default\"}, \"rope_scaling\": null}",
        // precedence as transformers 5.23: rope_parameters > rotary_pct > top level
        "{" CFG_BASE ", \"rotary_pct\": 0.25, \"rotary_emb_base\": 5000, \"partial_rotary_factor\": 0.5, "
        "\"rope_theta\": 7.0}",
        "{" CFG_BASE ", \"rotary_pct\": 0.5, \"rotary_emb_base\": 7, \"rope_parameters\": "
        "{\"partial_rotary_factor\": 0.25, \"rope_theta\": 5000}}",
    };
    for (int i = 0; i < 5; i++) {
        eng_config c;
        char err[512] = "";
        CU_ASSERT_EQUAL(cfg_parse(&c, texts[i], err, sizeof err), ENG_OK);
        if (err[0]) printf("\n    case %d: %s", i, err);
        CU_ASSERT_EQUAL(c.n_embd, 160);
        CU_ASSERT_EQUAL(c.head_dim, 80);
        CU_ASSERT_EQUAL(c.n_rot, 20);  // Pythia-2.8b's odd one: int(80 * 0.25)
        CU_ASSERT_EQUAL(c.rope_base, 5000.0f);
        CU_ASSERT_EQUAL(c.rotary_pct, 0.25f);
    }
}

static void test_config_defaults(void) {
    eng_config c;
    char err[512];
    CU_ASSERT_EQUAL_FATAL(cfg_parse(&c, "{" CFG_BASE "}", err, sizeof err), ENG_OK);
    CU_ASSERT_EQUAL(c.n_layer, 2);
    CU_ASSERT_EQUAL(c.n_head, 2);
    CU_ASSERT_EQUAL(c.n_ff, 640);
    CU_ASSERT_EQUAL(c.n_vocab, 512);
    CU_ASSERT_EQUAL(c.n_ctx_train, 256);
    CU_ASSERT_EQUAL(c.ln_eps, 1e-5f);
    CU_ASSERT_EQUAL(c.parallel_residual, 1);
    CU_ASSERT_EQUAL(c.rotary_pct, 0.25f);
    CU_ASSERT_EQUAL(c.rope_base, 10000.0f);
    CU_ASSERT_EQUAL(c.bos_id, -1);
    CU_ASSERT_EQUAL(c.eos_id, -1);
    CU_ASSERT_EQUAL_FATAL(cfg_parse(&c, "{" CFG_BASE ", \"layer_norm_eps\": 1e-6, \"use_parallel_residual\": false, "
                                        "\"bos_token_id\": 3, \"eos_token_id\": [7, 2], \"hidden_act\": \"gelu\", "
                                        "\"attention_bias\": true, \"rotary_pct\": 0.33, \"pad_token_id\": null, "
                                        "\"rope_scaling\": {}, \"head_dim\": 80}", err, sizeof err), ENG_OK);
    CU_ASSERT_EQUAL(c.ln_eps, 1e-6f);
    CU_ASSERT_EQUAL(c.parallel_residual, 0);
    CU_ASSERT_EQUAL(c.bos_id, 3);
    CU_ASSERT_EQUAL(c.eos_id, 7);
    CU_ASSERT_EQUAL(c.n_rot, 26);  // int(26.400000000000002)
    CU_ASSERT_EQUAL(cfg_parse(&c, "{" CFG_BASE ", \"rotary_pct\": 0.3}", err, sizeof err), ENG_OK);
    CU_ASSERT_EQUAL(c.n_rot, 24);  // 80 * 0.3 = 24.0 in double
    // Python: int(64 * 0.3) = int(19.2) = 19, odd -> refused
    CU_ASSERT_EQUAL(cfg_parse(&c, "{\"hidden_size\": 128, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
                                  "\"intermediate_size\": 4, \"vocab_size\": 4, \"max_position_embeddings\": 4, "
                                  "\"rotary_pct\": 0.3}", err, sizeof err), ENG_ERR_FORMAT);
    CU_ASSERT(strstr(err, "field 'rotary_pct': 0.3 x head_dim 64 gives 19 rotary dims") != NULL);
}

typedef struct bad_cfg { const char *extra; eng_status st; const char *sub; } bad_cfg;

static void test_config_errors(void) {
    static const bad_cfg cases[] = {
        {", \"model_type\": \"llama\"", ENG_ERR_UNSUPPORTED, "field 'model_type': 'llama'"},
        {", \"model_type\": 3", ENG_ERR_FORMAT, "field 'model_type'"},
        {", \"hidden_act\": \"gelu_new\"", ENG_ERR_UNSUPPORTED, "field 'hidden_act': 'gelu_new'"},
        {", \"hidden_act\": 1", ENG_ERR_FORMAT, "field 'hidden_act': expected a string"},
        {", \"attention_bias\": false", ENG_ERR_UNSUPPORTED, "field 'attention_bias'"},
        {", \"attention_bias\": \"yes\"", ENG_ERR_FORMAT, "field 'attention_bias': expected true or false"},
        {", \"use_parallel_residual\": 1", ENG_ERR_FORMAT, "field 'use_parallel_residual'"},
        {", \"tie_word_embeddings\": true", ENG_ERR_UNSUPPORTED, "field 'tie_word_embeddings'"},
        {", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}", ENG_ERR_UNSUPPORTED, "field 'rope_scaling'"},
        {", \"rope_parameters\": {\"rope_type\": \"yarn\"}", ENG_ERR_UNSUPPORTED, "'yarn'"},
        {", \"rope_parameters\": {\"type\": \"dynamic\"}", ENG_ERR_UNSUPPORTED, "'dynamic'"},
        {", \"rope_parameters\": {\"rope_type\": 1}", ENG_ERR_FORMAT, "field 'rope_parameters.rope_type'"},
        {", \"rope_parameters\": [1]", ENG_ERR_FORMAT, "field 'rope_parameters': expected an object"},
        {", \"rope_parameters\": {\"full_attention\": {\"rope_type\": \"default\"}}", ENG_ERR_UNSUPPORTED,
         "per-layer"},
        {", \"rope_parameters\": {\"partial_rotary_factor\": \"0.25\"}", ENG_ERR_FORMAT,
         "field 'rope_parameters.partial_rotary_factor': expected a number"},
        {", \"rope_parameters\": {\"rope_theta\": -1}", ENG_ERR_FORMAT, "field 'rope_parameters.rope_theta'"},
        {", \"rotary_pct\": 0", ENG_ERR_FORMAT, "field 'rotary_pct': expected a number in (0, 1]"},
        {", \"rotary_pct\": 1.5", ENG_ERR_FORMAT, "field 'rotary_pct'"},
        {", \"rotary_pct\": 0.0125", ENG_ERR_FORMAT, "gives 1 rotary dims"},
        {", \"partial_rotary_factor\": true", ENG_ERR_FORMAT, "field 'partial_rotary_factor': expected a number"},
        {", \"rotary_emb_base\": 0", ENG_ERR_FORMAT, "field 'rotary_emb_base': expected a positive number"},
        {", \"rope_theta\": \"1e4\"", ENG_ERR_FORMAT, "field 'rope_theta'"},
        {", \"layer_norm_eps\": -1", ENG_ERR_FORMAT, "field 'layer_norm_eps'"},
        {", \"layer_norm_eps\": \"1e-5\"", ENG_ERR_FORMAT, "field 'layer_norm_eps': expected a number"},
        {", \"bos_token_id\": -1", ENG_ERR_FORMAT, "field 'bos_token_id'"},
        {", \"eos_token_id\": \"0\"", ENG_ERR_FORMAT, "field 'eos_token_id'"},
        {", \"head_dim\": 64", ENG_ERR_UNSUPPORTED, "field 'head_dim'"},
    };
    char text[1024], err[512];
    eng_config c;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(text, sizeof text, "{" CFG_BASE "%s}", cases[i].extra);
        err[0] = 0;
        eng_status st = cfg_parse(&c, text, err, sizeof err);
        int ok = st == cases[i].st && strstr(err, cases[i].sub) && strstr(err, "dir/config.json");
        if (!ok) printf("\n    %s -> %d: %s", cases[i].extra, st, err);
        CU_ASSERT(ok);
    }
    // each required integer: missing, zero, negative, real, string, too big
    static const char *req[] = {"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                                "intermediate_size", "max_position_embeddings"};
    static const char *vals[] = {"0", "-4", "64.0", "\"64\"", "4294967296", "null"};
    for (int r = 0; r < 6; r++)
        for (int v = 0; v < 7; v++) {
            char body[512] = "";
            const char *all[] = {"\"hidden_size\": 64", "\"num_hidden_layers\": 2", "\"num_attention_heads\": 2",
                                 "\"vocab_size\": 512", "\"intermediate_size\": 256",
                                 "\"max_position_embeddings\": 256"};
            for (int k = 0; k < 6; k++) {
                char item[64];
                if (k == r && v == 6) continue;  // absent
                if (k == r) snprintf(item, sizeof item, "\"%s\": %s", req[k], vals[v]);
                else snprintf(item, sizeof item, "%s", all[k]);
                strcat(body, body[0] ? ", " : "");
                strcat(body, item);
            }
            snprintf(text, sizeof text, "{%s}", body);
            eng_status st = cfg_parse(&c, text, err, sizeof err);
            char want[128];
            if (v >= 5) snprintf(want, sizeof want, "missing required field '%s'", req[r]);
            else snprintf(want, sizeof want, "field '%s': expected a positive integer", req[r]);
            int ok = st == ENG_ERR_FORMAT && strstr(err, want);
            if (!ok) printf("\n    %s -> %d: %s", text, st, err);
            CU_ASSERT(ok);
        }
    CU_ASSERT_EQUAL(cfg_parse(&c, "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 3, "
                                  "\"vocab_size\": 512, \"intermediate_size\": 256, \"max_position_embeddings\": 8}",
                              err, sizeof err), ENG_ERR_FORMAT);
    CU_ASSERT(strstr(err, "not divisible by num_attention_heads 3") != NULL);
    CU_ASSERT_EQUAL(cfg_parse(&c, "{\n  \"hidden_size\": 64,,\n}", err, sizeof err), ENG_ERR_FORMAT);
    CU_ASSERT(strstr(err, "dir/config.json: JSON error at line 2, column") != NULL);
    CU_ASSERT_EQUAL(cfg_parse(&c, "[1]", err, sizeof err), ENG_ERR_FORMAT);
    CU_ASSERT(strstr(err, "not a JSON object") != NULL);
    CU_ASSERT_EQUAL(cfg_parse(&c, "{" CFG_BASE ", \"hidden_size\": 1}", err, sizeof err), ENG_ERR_FORMAT);
    CU_ASSERT(strstr(err, "duplicate") != NULL);
    // a failed parse leaves the output untouched
    eng_config keep;
    memset(&keep, 0x5a, sizeof keep);
    CU_ASSERT_EQUAL(memcmp(&c, &keep, sizeof c), 0);
}

/* ----------------------------------------------------- tiny model builder */

enum { TC = 8, TNH = 2, TD = 4, TL = 2, TF = 12, TV = 10, TP = 4 + 12 * TL };
static const char *const g_kinds[16] = {
    "gpt_neox.embed_in.weight", "input_layernorm.weight", "input_layernorm.bias",
    "post_attention_layernorm.weight", "post_attention_layernorm.bias", "attention.query_key_value.weight",
    "attention.query_key_value.bias", "attention.dense.weight", "attention.dense.bias",
    "mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias", "mlp.dense_4h_to_h.weight", "mlp.dense_4h_to_h.bias",
    "gpt_neox.final_layer_norm.weight", "gpt_neox.final_layer_norm.bias", "embed_out.weight"};
static const int64_t g_shapes[16][2] = {{TV, TC}, {TC}, {TC}, {TC}, {TC}, {3 * TC, TC}, {3 * TC}, {TC, TC}, {TC},
                                        {TF, TC}, {TF}, {TC, TF}, {TC}, {TC}, {TC}, {TV, TC}};
#define PER_LAYER(k) ((k) >= 1 && (k) <= 12)

static const char *g_tiny_cfg =
    "{\"model_type\": \"gpt_neox\", \"hidden_size\": 8, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, "
    "\"intermediate_size\": 12, \"vocab_size\": 10, \"max_position_embeddings\": 32, \"rotary_pct\": 0.5, "
    "\"rotary_emb_base\": 10000, \"use_parallel_residual\": true, \"bos_token_id\": 0, \"eos_token_id\": 0}";

/* Element i of parameter (kind, layer): unique in fp32; small integers
 * (exact in F16 and BF16) otherwise. */
static float tval(int kind, int layer, int64_t i, int small) {
    if (small) return (float)((kind * 7 + layer * 13 + i * 5) % 61 - 30);
    return (float)(kind * 100000 + layer * 10000 + i);
}

typedef struct tgen { int kind, layer, small; } tgen;
static void tfill(float *dst, uint64_t first, uint64_t n, void *ud) {
    const tgen *g = ud;
    for (uint64_t i = 0; i < n; i++) dst[i] = tval(g->kind, g->layer, (int64_t)(first + i), g->small);
}

typedef struct tiny_opts {
    st_dtype dtype;
    const char *skip;     /* leave this tensor out */
    const char *reshape;  /* write this tensor with a wrong first dim */
    int extras;           /* add an unknown tensor and the three old buffers per layer */
    int shards;           /* 0: model.safetensors; 2: two shards + index */
    const char *index;    /* override the index text (with shards) */
} tiny_opts;

static void tiny_write(const char *dir, const tiny_opts *o) {
    static char names[TP + 8][96];
    static tgen gens[TP + 8];
    static float zeros[64];
    st_write_entry e[TP + 8];
    int n = 0;
    mkdir(dir, 0755);
    for (int k = 0; k < 16; k++)
        for (int l = 0; l < (PER_LAYER(k) ? TL : 1); l++) {
            if (PER_LAYER(k)) snprintf(names[n], sizeof names[n], "gpt_neox.layers.%d.%s", l, g_kinds[k]);
            else snprintf(names[n], sizeof names[n], "%s", g_kinds[k]);
            if (o->skip && strcmp(o->skip, names[n]) == 0) continue;
            gens[n] = (tgen){k, l, o->dtype != ST_F32};
            e[n] = (st_write_entry){.name = names[n], .dtype = o->dtype, .n_dims = g_shapes[k][1] ? 2 : 1,
                                    .shape = {g_shapes[k][0], g_shapes[k][1]}, .fill = tfill, .fill_ud = &gens[n]};
            if (o->reshape && strcmp(o->reshape, names[n]) == 0) e[n].shape[0]--;
            n++;
        }
    if (o->extras) {
        static const char *x[] = {"gpt_neox.layers.0.attention.bias", "gpt_neox.layers.0.attention.masked_bias",
                                  "gpt_neox.layers.0.attention.rotary_emb.inv_freq", "gpt_neox.layers.1.attention.bias",
                                  "gpt_neox.layers.1.attention.masked_bias",
                                  "gpt_neox.layers.1.attention.rotary_emb.inv_freq", "lm_head.something_new"};
        for (int i = 0; i < 7; i++)
            e[n++] = (st_write_entry){.name = x[i], .dtype = ST_BF16, .n_dims = i % 3 == 1 ? 0 : 2,
                                      .shape = {4, 8}, .data = zeros};
    }
    char err[512] = "";
    char cfgp[600];
    snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
    write_text(cfgp, g_tiny_cfg);
    char p[600];
    if (!o->shards) {
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        CU_ASSERT_EQUAL_FATAL(st_file_write(p, e, n, err, sizeof err), ENG_OK);
        return;
    }
    int half = n / 2;
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    CU_ASSERT_EQUAL_FATAL(st_file_write(p, e, half, err, sizeof err), ENG_OK);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    CU_ASSERT_EQUAL_FATAL(st_file_write(p, e + half, n - half, err, sizeof err), ENG_OK);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    if (o->index) {
        write_text(p, o->index);
        return;
    }
    json_t *wm = json_object(), *root = json_pack("{s{si}so}", "metadata", "total_size", 0, "weight_map", wm);
    for (int i = 0; i < n; i++)
        json_object_set_new(wm, e[i].name, json_string(i < half ? "model-00001-of-00002.safetensors"
                                                                : "model-00002-of-00002.safetensors"));
    CU_ASSERT_EQUAL(json_dump_file(root, p, JSON_INDENT(2)), 0);
    json_decref(root);
}

static eng_model *tiny_load(const char *dir, eng_status want, const char *sub1, const char *sub2) {
    eng_model *m = (eng_model *)1;
    char err[1024] = "";
    eng_status st = eng_model_load(&m, dir, err, sizeof err);
    int ok = st == want && (st == ENG_OK ? m != NULL : m == NULL) && (!sub1 || strstr(err, sub1)) &&
             (!sub2 || strstr(err, sub2));
    if (!ok) printf("\n    %s: status %d (want %d): %s", dir, st, want, err);
    CU_ASSERT(ok);
    return st == ENG_OK ? m : NULL;
}

/* Every parameter value, the carving order, and the QKV permutation. */
static void tiny_check(const eng_model *m, int small) {
    const eng_weights *w = &m->w;
    const float *slot[16] = {w->embed_in, w->ln1_w, w->ln1_b, w->ln2_w, w->ln2_b, w->qkv_w, w->qkv_b, w->o_w,
                             w->o_b, w->fc1_w, w->fc1_b, w->fc2_w, w->fc2_b, w->lnf_w, w->lnf_b, w->embed_out};
    const float *at = m->mem;
    int bad = 0;
    for (int k = 0; k < 16; k++) {
        int64_t per = g_shapes[k][0] * (g_shapes[k][1] ? g_shapes[k][1] : 1);
        CU_ASSERT_PTR_EQUAL(slot[k], at);  // one allocation, carved in eng_weights order
        for (int l = 0; l < (PER_LAYER(k) ? TL : 1); l++) {
            const float *p = slot[k] + l * per;
            for (int64_t i = 0; i < per; i++) {
                int64_t dst = i;
                if (k == 5 || k == 6) {  // HF row r = h*3D + t*D + d  ->  our row t*C + h*D + d
                    int64_t cols = k == 5 ? TC : 1, r = i / cols, c = i % cols;
                    int64_t h = r / (3 * TD), t = (r / TD) % 3, d = r % TD;
                    dst = ((t * TC) + h * TD + d) * cols + c;
                }
                bad += p[dst] != tval(k, l, i, small);
            }
        }
        at += per * (PER_LAYER(k) ? TL : 1);
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL((size_t)(at - m->mem), m->n_params);
    CU_ASSERT_EQUAL(m->n_params, (size_t)(TL * (4 * TC * TC + 2 * TF * TC + 9 * TC + TF) + 2 * TC + 2 * TV * TC));
    if (!small) {
        // by hand: layer 1, Q of head 1 dim 2 is our row 1*D+2 = 6, HF row 1*3D + 0*D + 2 = 14
        CU_ASSERT_EQUAL(w->qkv_w[(size_t)3 * TC * TC + 6 * TC + 5], tval(5, 1, 14 * TC + 5, 0));
        // K of head 0 dim 3: our row C + 3 = 11, HF row 0*3D + 1*D + 3 = 7
        CU_ASSERT_EQUAL(w->qkv_w[11 * TC + 0], tval(5, 0, 7 * TC, 0));
        // V of head 1 dim 0: our row 2C + D = 20, HF row 1*3D + 2*D + 0 = 20 (a fixed point)
        CU_ASSERT_EQUAL(w->qkv_b[20], tval(6, 0, 20, 0));
        // V of head 0 dim 1 (bias): our row 2C + 1 = 17, HF row 2*D + 1 = 9
        CU_ASSERT_EQUAL(w->qkv_b[3 * TC + 17], tval(6, 1, 9, 0));
    }
}

static void test_load_tiny(void) {
    static const st_dtype dts[3] = {ST_F32, ST_F16, ST_BF16};
    for (int i = 0; i < 3; i++) {
        const char *dir = tpath("tiny-%s", st_dtype_name(dts[i]));
        tiny_write(dir, &(tiny_opts){.dtype = dts[i]});
        eng_model *m = tiny_load(dir, ENG_OK, NULL, NULL);
        if (!m) continue;
        CU_ASSERT_EQUAL(m->cfg.n_embd, TC);
        CU_ASSERT_EQUAL(m->cfg.n_rot, 2);
        CU_ASSERT_EQUAL(m->src_dtype, (int)dts[i]);
        CU_ASSERT_EQUAL(m->n_ignored, 0);
        CU_ASSERT_STRING_EQUAL(m->dir, dir);
        tiny_check(m, dts[i] != ST_F32);
        eng_model_free(m);
    }
    eng_model_free(NULL);
}

static void test_load_ignored_and_sharded(void) {
    const char *dir = tpath("extras", "");
    tiny_write(dir, &(tiny_opts){.dtype = ST_F32, .extras = 1});
    eng_model *m = tiny_load(dir, ENG_OK, NULL, NULL);
    if (m) {
        CU_ASSERT_EQUAL(m->n_ignored, 7);
        tiny_check(m, 0);
        eng_model_free(m);
    }
    dir = tpath("sharded", "");
    tiny_write(dir, &(tiny_opts){.dtype = ST_F32, .extras = 1, .shards = 2});
    if ((m = tiny_load(dir, ENG_OK, NULL, NULL))) {
        CU_ASSERT_EQUAL(m->n_ignored, 7);
        tiny_check(m, 0);
        eng_model_free(m);
    }
}

/* Rewrite the dtype string of one tensor in a safetensors header in place. */
static void patch_dtype(const char *path, const char *name, const char *from, const char *to) {
    size_t len;
    char *b = tu_read_file(path, &len), key[160];
    CU_ASSERT_FATAL(b != NULL);
    snprintf(key, sizeof key, "\"%s\":{\"dtype\":\"%s\"", name, from);
    char *p = memmem(b, len, key, strlen(key));
    CU_ASSERT_FATAL(p != NULL && strlen(from) == strlen(to));
    memcpy(p + strlen(key) - strlen(from) - 1, to, strlen(to));
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, len, f);
    fclose(f);
    free(b);
}

static void test_load_errors(void) {
    const char *qkv1 = "gpt_neox.layers.1.attention.query_key_value.weight";
    const char *dir = tpath("missing", "");
    tiny_write(dir, &(tiny_opts){.dtype = ST_F16, .skip = "gpt_neox.layers.1.mlp.dense_4h_to_h.bias"});
    tiny_load(dir, ENG_ERR_FORMAT, "missing/model.safetensors: missing tensor 'gpt_neox.layers.1.mlp.dense_4h_to_h.bias'",
              NULL);
    dir = tpath("shape", "");
    tiny_write(dir, &(tiny_opts){.dtype = ST_F32, .reshape = qkv1});
    tiny_load(dir, ENG_ERR_FORMAT, "shape/model.safetensors: tensor 'gpt_neox.layers.1.attention.query_key_value.weight' "
              "has shape [23, 8], expected [24, 8]", NULL);
    dir = tpath("shape2", "");
    tiny_write(dir, &(tiny_opts){.dtype = ST_F32, .reshape = "embed_out.weight"});
    tiny_load(dir, ENG_ERR_FORMAT, "tensor 'embed_out.weight' has shape [9, 8], expected [10, 8]", NULL);
    dir = tpath("dtype", "");
    tiny_write(dir, &(tiny_opts){.dtype = ST_F32});
    patch_dtype(tpath("dtype/model.safetensors", ""), "gpt_neox.layers.0.attention.dense.bias", "F32", "I32");
    tiny_load(dir, ENG_ERR_FORMAT, "dtype/model.safetensors: tensor 'gpt_neox.layers.0.attention.dense.bias' has dtype I32",
              NULL);
    // the directory itself
    tiny_load(tpath("nowhere", ""), ENG_ERR_IO, "nowhere/config.json", NULL);
    dir = tpath("noweights", "");
    mkdir(dir, 0755);
    write_text(tpath("noweights/config.json", ""), g_tiny_cfg);
    tiny_load(dir, ENG_ERR_IO, "noweights/model.safetensors", NULL);
    write_text(tpath("noweights/config.json", ""), "{\"hidden_size\": 8}");
    tiny_load(dir, ENG_ERR_FORMAT, "noweights/config.json: missing required field 'num_hidden_layers'", NULL);
    dir = tpath("corrupt", "");
    tiny_write(dir, &(tiny_opts){.dtype = ST_F32});
    CU_ASSERT_EQUAL(truncate(tpath("corrupt/model.safetensors", ""), 1000), 0);
    tiny_load(dir, ENG_ERR_FORMAT, "corrupt/model.safetensors", "past the end");
}

static void test_load_index_errors(void) {
    const char *s1 = "model-00001-of-00002.safetensors";
    char idx[512];
    struct { const char *name, *index; eng_status st; const char *sub1, *sub2; } cases[] = {
        {"idx-dotdot", "{\"weight_map\": {\"gpt_neox.embed_in.weight\": \"../model-00001-of-00002.safetensors\"}}",
         ENG_ERR_FORMAT, "idx-dotdot/model.safetensors.index.json", "not a plain file name"},
        {"idx-dotdot2", "{\"weight_map\": {\"gpt_neox.embed_in.weight\": \"..\"}}", ENG_ERR_FORMAT,
         "model.safetensors.index.json", "'..'"},
        {"idx-slash", "{\"weight_map\": {\"gpt_neox.embed_in.weight\": \"/etc/passwd\"}}", ENG_ERR_FORMAT,
         "not a plain file name", NULL},
        {"idx-noshard", "{\"weight_map\": {\"gpt_neox.embed_in.weight\": \"model-00009-of-00009.safetensors\"}}",
         ENG_ERR_IO, "idx-noshard/model-00009-of-00009.safetensors: cannot open", NULL},
        {"idx-notinshard", NULL, ENG_ERR_FORMAT, "idx-notinshard/model-00001-of-00002.safetensors: tensor "
         "'embed_out.weight' is listed in the index but missing from this shard", NULL},
        {"idx-missing", "{\"weight_map\": {\"gpt_neox.embed_in.weight\": \"model-00001-of-00002.safetensors\"}}",
         ENG_ERR_FORMAT, "idx-missing/model.safetensors.index.json: missing tensor 'gpt_neox.layers.0", NULL},
        {"idx-nomap", "{\"metadata\": {}}", ENG_ERR_FORMAT, "field 'weight_map': expected an object", NULL},
        {"idx-badvalue", "{\"weight_map\": {\"gpt_neox.embed_in.weight\": 1}}", ENG_ERR_FORMAT, "(not a string)",
         NULL},
        {"idx-json", "{\"weight_map\": {\n\"a\": \"b\",,}}", ENG_ERR_FORMAT, "index.json: JSON error at line 2", NULL},
        {"idx-array", "[]", ENG_ERR_FORMAT, "'weight_map'", NULL},
    };
    snprintf(idx, sizeof idx, "{\"weight_map\": {\"gpt_neox.embed_in.weight\": \"%s\", \"embed_out.weight\": \"%s\"}}",
             s1, s1);
    cases[4].index = idx;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *dir = tpath("%s", cases[i].name);
        tiny_write(dir, &(tiny_opts){.dtype = ST_F32, .shards = 2, .index = cases[i].index});
        tiny_load(dir, cases[i].st, cases[i].sub1, cases[i].sub2);
    }
}

/* Every allocation eng_model_load makes (jansson's included) may fail. */
static void test_load_alloc_failures(void) {
    const char *dirs[2] = {tpath("oom-single", ""), tpath("oom-sharded", "")};
    tiny_write(dirs[0], &(tiny_opts){.dtype = ST_BF16, .extras = 1});
    tiny_write(dirs[1], &(tiny_opts){.dtype = ST_F16, .extras = 1, .shards = 2});
    for (int d = 0; d < 2; d++) {
        long k;
        char err[1024];
        for (k = 0; k < 100000; k++) {
            eng_model *m = (eng_model *)1;
            eng_alloc_fail_after(k);
            eng_status st = eng_model_load(&m, dirs[d], err, sizeof err);
            eng_alloc_fail_after(-1);
            if (st == ENG_OK) {
                tiny_check(m, 1);
                eng_model_free(m);
                break;
            }
            // jansson reports some of its allocation failures as parse errors
            CU_ASSERT(st == ENG_ERR_NOMEM || st == ENG_ERR_FORMAT);
            CU_ASSERT_PTR_NULL(m);
            CU_ASSERT(strstr(err, dirs[d]) != NULL);
        }
        printf("\n    %s: %ld failure points", dirs[d], k);
        CU_ASSERT(k > 10 && k < 100000);
    }
}

/* ------------------------------------------------- HF-written fixtures */

typedef struct fixture {
    const char *name;
    int L, C, NH, F, V, n_rot;
    float base;
    int parallel;
    size_t n_params;
    int n_ignored;
    st_dtype dtype;
} fixture;

/* Expected values from each config.json and the safetensors headers (counted
 * with Python safetensors). */
static const fixture g_fix[] = {
    {"m256-f16", 1, 256, 1, 512, 256, 64, 10000.0f, 1, 658688u, 0, ST_F16},
    {"m32-f16", 2, 64, 2, 256, 512, 8, 10000.0f, 1, 165632u, 0, ST_F16},
    {"m32-f32-sharded", 2, 64, 2, 256, 512, 8, 10000.0f, 1, 165632u, 0, ST_F32},
    {"m64-f32", 2, 128, 2, 256, 512, 16, 10000.0f, 1, 396288u, 0, ST_F32},
    {"m80-bf16", 2, 160, 2, 640, 512, 20, 5000.0f, 1, 782720u, 0, ST_BF16},
    {"seqres-f32", 2, 32, 1, 128, 256, 8, 10000.0f, 0, 41856u, 6, ST_F32},
    {"vocab-full-f16", 1, 8, 1, 32, 50304, 2, 10000.0f, 1, 805752u, 0, ST_F16},
};

static double half_round(double x) {  // round to the nearest fp16 value, ties to even
    if (x == 0) return x;
    int e;
    frexp(x, &e);
    double q = ldexp(1.0, e - 11 < -24 ? -24 : e - 11);
    return nearbyint(x / q) * q;
}

static void test_fixtures(void) {
    char err[1024], rel[300];
    eng_model *ms[7] = {0};
    for (int i = 0; i < 7; i++) {
        const fixture *x = &g_fix[i];
        snprintf(rel, sizeof rel, "models/%s", x->name);
        if (access(tu_data(rel), R_OK) != 0) {
            tu_skip(x->name, "fixture not present (run ops/golden/make_goldens.py)");
            continue;
        }
        eng_model *m = NULL;
        eng_status st = eng_model_load(&m, tu_data(rel), err, sizeof err);
        if (st != ENG_OK) printf("\n    %s: %s", x->name, err);
        CU_ASSERT_EQUAL_FATAL(st, ENG_OK);
        const eng_config *c = &m->cfg;
        CU_ASSERT(c->n_layer == x->L && c->n_embd == x->C && c->n_head == x->NH && c->n_ff == x->F &&
                  c->n_vocab == x->V && c->head_dim == x->C / x->NH && c->n_rot == x->n_rot);
        CU_ASSERT(c->rope_base == x->base && c->rotary_pct == 0.25f && c->ln_eps == 1e-5f);
        CU_ASSERT(c->parallel_residual == x->parallel && c->n_ctx_train == 256 && c->bos_id == 0 && c->eos_id == 0);
        CU_ASSERT_EQUAL(m->n_params, x->n_params);
        CU_ASSERT_EQUAL(m->n_ignored, x->n_ignored);
        CU_ASSERT_EQUAL(m->src_dtype, (int)x->dtype);
        printf("\n    %-16s %8zu params, %d ignored, %s", x->name, m->n_params, m->n_ignored,
               st_dtype_name((st_dtype)m->src_dtype));
        ms[i] = m;
    }
    // m32-f16 and m32-f32-sharded come from the same seed: the fp16 file must
    // hold exactly the fp16 rounding of the fp32 one, after the same permutation.
    json_t *a = json_load_file(tu_data("golden/m32-f16/golden.json"), 0, NULL);
    json_t *b = json_load_file(tu_data("golden/m32-f32-sharded/golden.json"), 0, NULL);
    if (ms[1] && ms[2] && a && b && json_equal(json_object_get(a, "seed"), json_object_get(b, "seed"))) {
        size_t bad = 0;
        for (size_t i = 0; i < ms[1]->n_params; i++) bad += ms[1]->mem[i] != (float)half_round(ms[2]->mem[i]);
        CU_ASSERT_EQUAL(bad, 0);
    }
    json_decref(a);
    json_decref(b);
    for (int i = 0; i < 7; i++) eng_model_free(ms[i]);
}

static void test_decode_bytes(void) {
    eng_config c = {.n_layer = 16, .n_embd = 2048, .n_ff = 8192, .n_vocab = 50304};  // pythia-1b
    double all = 1011781632.0, embed = 50304.0 * 2048;
    CU_ASSERT_DOUBLE_EQUAL(eng_model_decode_bytes(&c, 2.0), (all - embed) * 2, 0.5);
    eng_config d = {.n_layer = TL, .n_embd = TC, .n_ff = TF, .n_vocab = TV};
    CU_ASSERT_DOUBLE_EQUAL(eng_model_decode_bytes(&d, 1.0),
                           TL * (4 * TC * TC + 2 * TF * TC + 9 * TC + TF) + 2 * TC + TV * TC, 0.5);
}

int main(void) {
    json_set_alloc_funcs(eng_alloc, eng_free);  // jansson's allocations join the failure sweep
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("config", NULL, NULL);
    CU_add_test(s, "three rotary spellings, precedence, head_dim 80", test_config_spellings);
    CU_add_test(s, "defaults and optional fields", test_config_defaults);
    CU_add_test(s, "each bad field is named", test_config_errors);
    s = CU_add_suite("model", tmp_init, tmp_clean);
    CU_add_test(s, "tiny F32/F16/BF16 models: values, carving, QKV permutation", test_load_tiny);
    CU_add_test(s, "ignored buffers, unknown tensors, two shards", test_load_ignored_and_sharded);
    CU_add_test(s, "missing / misshaped / non-float tensors, bad dirs", test_load_errors);
    CU_add_test(s, "sharded index errors: '..', missing shard, absent tensor", test_load_index_errors);
    CU_add_test(s, "allocation-failure sweep over eng_model_load", test_load_alloc_failures);
    CU_add_test(s, "HF fixtures: config fields and n_params", test_fixtures);
    CU_add_test(s, "decode bytes", test_decode_bytes);
    return tu_run();
}
