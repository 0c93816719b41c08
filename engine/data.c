/* data.c — dataset layouts for evaluation text (see data.h). A directory is
 * listed once at open; a JSONL file is parsed once at open (every line must
 * be valid, so a bad line is reported before any compute is spent); a plain
 * file is read when its document is asked for. */
#include "data.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef enum { DS_TEXT, DS_DIR, DS_JSONL } ds_kind;

struct eng_dataset {
    ds_kind kind;
    char path[1024];
    int n_docs;
    char **names;     /* (n_docs) file names or "<file>:<line>" */
    char **texts;     /* JSONL: (n_docs) owned texts; else NULL */
    size_t *lens;     /* JSONL: (n_docs) */
    char *buf;        /* current document for DS_TEXT / DS_DIR */
    size_t buf_len;
    char err[512];
};

static eng_status read_file(const char *path, char **out, size_t *len, char *err, size_t n_err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        eng_errf(err, n_err, "%s: cannot open", path);
        return ENG_ERR_IO;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        eng_errf(err, n_err, "%s: not a regular file", path);
        return ENG_ERR_IO;
    }
    char *b = eng_alloc((size_t)sb.st_size + 1);
    if (!b) {
        fclose(f);
        eng_errf(err, n_err, "%s: out of memory reading %lld bytes", path, (long long)sb.st_size);
        return ENG_ERR_NOMEM;
    }
    size_t got = fread(b, 1, (size_t)sb.st_size, f);
    fclose(f);
    if (got != (size_t)sb.st_size) {
        eng_free(b);
        eng_errf(err, n_err, "%s: short read", path);
        return ENG_ERR_IO;
    }
    b[got] = 0;
    if (memchr(b, 0, got)) {
        eng_free(b);
        eng_errf(err, n_err, "%s: contains NUL bytes: not a UTF-8 text file (use .txt, a folder of .txt, or .jsonl)", path);
        return ENG_ERR_FORMAT;
    }
    *out = b;
    *len = got;
    return ENG_OK;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static eng_status push_doc(eng_dataset *d, const char *name, char *text, size_t len, int *cap) {
    if (d->n_docs == *cap) {
        int nc = *cap ? *cap * 2 : 16;
        char **nn = eng_realloc(d->names, (size_t)nc * sizeof(char *));
        if (!nn) return ENG_ERR_NOMEM;
        d->names = nn;
        if (d->kind == DS_JSONL) {
            char **nt = eng_realloc(d->texts, (size_t)nc * sizeof(char *));
            if (!nt) return ENG_ERR_NOMEM;
            d->texts = nt;
            size_t *nl = eng_realloc(d->lens, (size_t)nc * sizeof(size_t));
            if (!nl) return ENG_ERR_NOMEM;
            d->lens = nl;
        }
        *cap = nc;
    }
    d->names[d->n_docs] = eng_strdup(name);
    if (!d->names[d->n_docs]) return ENG_ERR_NOMEM;
    if (d->kind == DS_JSONL) {
        d->texts[d->n_docs] = text;
        d->lens[d->n_docs] = len;
    }
    d->n_docs++;
    return ENG_OK;
}

static eng_status open_dir(eng_dataset *d) {
    DIR *dir = opendir(d->path);
    if (!dir) {
        eng_errf(d->err, sizeof d->err, "%s: cannot list directory", d->path);
        return ENG_ERR_IO;
    }
    int cap = 0;
    eng_status st = ENG_OK;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, ".txt")) continue;
        if ((st = push_doc(d, e->d_name, NULL, 0, &cap)) != ENG_OK) break;
    }
    closedir(dir);
    if (st != ENG_OK) {
        eng_errf(d->err, sizeof d->err, "%s: out of memory", d->path);
        return st;
    }
    if (d->n_docs == 0) {
        eng_errf(d->err, sizeof d->err, "%s: directory holds no .txt files", d->path);
        return ENG_ERR_FORMAT;
    }
    qsort(d->names, (size_t)d->n_docs, sizeof(char *), cmp_str);
    return ENG_OK;
}

static eng_status open_jsonl(eng_dataset *d) {
    char *buf;
    size_t len;
    eng_status st = read_file(d->path, &buf, &len, d->err, sizeof d->err);
    if (st != ENG_OK) return st;
    int cap = 0, line = 0;
    char name[1100];
    for (char *p = buf; p < buf + len;) {
        char *nl = memchr(p, '\n', (size_t)(buf + len - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(buf + len - p);
        line++;
        size_t k = 0;
        while (k < n && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r')) k++;
        if (k < n) {
            json_error_t je;
            json_t *o = json_loadb(p, n, 0, &je);
            json_t *t = o && json_is_object(o) ? json_object_get(o, "text") : NULL;
            if (!o || !json_is_string(t)) {
                if (!o)
                    eng_errf(d->err, sizeof d->err, "%s: line %d: invalid JSON: %s (column %d)", d->path, line,
                             je.text, je.column);
                else
                    eng_errf(d->err, sizeof d->err, "%s: line %d: expected an object with a string field \"text\"",
                             d->path, line);
                json_decref(o);
                eng_free(buf);
                return ENG_ERR_FORMAT;
            }
            size_t tl = json_string_length(t);
            char *text = eng_alloc(tl + 1);
            if (text) {
                memcpy(text, json_string_value(t), tl);
                text[tl] = 0;
            }
            json_decref(o);
            snprintf(name, sizeof name, "%s:%d", d->path, line);
            if (!text || push_doc(d, name, text, tl, &cap) != ENG_OK) {
                eng_free(text);
                eng_free(buf);
                eng_errf(d->err, sizeof d->err, "%s: out of memory", d->path);
                return ENG_ERR_NOMEM;
            }
        }
        p += n + 1;
    }
    eng_free(buf);
    if (d->n_docs == 0) {
        eng_errf(d->err, sizeof d->err, "%s: no documents (every line blank)", d->path);
        return ENG_ERR_FORMAT;
    }
    return ENG_OK;
}

eng_status eng_dataset_open(eng_dataset **out, const char *path, char *err, size_t n_err) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        eng_errf(err, n_err, "%s: no such file or directory", path);
        return ENG_ERR_IO;
    }
    eng_dataset *d = eng_calloc(1, sizeof *d);
    if (!d) {
        eng_errf(err, n_err, "%s: out of memory", path);
        return ENG_ERR_NOMEM;
    }
    snprintf(d->path, sizeof d->path, "%s", path);
    eng_status st;
    int cap = 0;
    if (S_ISDIR(sb.st_mode)) {
        d->kind = DS_DIR;
        st = open_dir(d);
    } else if (ends_with(path, ".jsonl")) {
        d->kind = DS_JSONL;
        st = open_jsonl(d);
    } else if (S_ISREG(sb.st_mode)) {
        d->kind = DS_TEXT;
        st = push_doc(d, path, NULL, 0, &cap);
        if (st != ENG_OK) eng_errf(d->err, sizeof d->err, "%s: out of memory", path);
    } else {
        eng_errf(d->err, sizeof d->err, "%s: not a file or directory", path);
        st = ENG_ERR_FORMAT;
    }
    if (st != ENG_OK) {
        eng_errf(err, n_err, "%s", d->err);
        eng_dataset_free(d);
        return st;
    }
    *out = d;
    return ENG_OK;
}

void eng_dataset_free(eng_dataset *d) {
    if (!d) return;
    for (int i = 0; i < d->n_docs; i++) {
        eng_free(d->names[i]);
        if (d->texts) eng_free(d->texts[i]);
    }
    eng_free(d->names);
    eng_free(d->texts);
    eng_free(d->lens);
    eng_free(d->buf);
    eng_free(d);
}

int eng_dataset_n_docs(const eng_dataset *d) { return d->n_docs; }

const char *eng_dataset_doc_name(const eng_dataset *d, int i) {
    return i >= 0 && i < d->n_docs ? d->names[i] : NULL;
}

const char *eng_dataset_errmsg(const eng_dataset *d) { return d ? d->err : "no dataset"; }

eng_status eng_dataset_doc(eng_dataset *d, int i, const char **text, size_t *len) {
    if (i < 0 || i >= d->n_docs) {
        eng_errf(d->err, sizeof d->err, "%s: document %d out of range (it has %d)", d->path, i, d->n_docs);
        return ENG_ERR_INVAL;
    }
    if (d->kind == DS_JSONL) {
        *text = d->texts[i];
        *len = d->lens[i];
        return ENG_OK;
    }
    char path[2200];
    if (d->kind == DS_DIR)
        snprintf(path, sizeof path, "%s/%s", d->path, d->names[i]);
    else
        snprintf(path, sizeof path, "%s", d->path);
    eng_free(d->buf);
    d->buf = NULL;
    eng_status st = read_file(path, &d->buf, &d->buf_len, d->err, sizeof d->err);
    if (st != ENG_OK) return st;
    *text = d->buf;
    *len = d->buf_len;
    return ENG_OK;
}
