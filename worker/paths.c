/* paths.c — see paths.h. Validation happens on the bytes first (cheap and
 * kernel-independent), then the kernel resolves the name beneath an O_PATH
 * descriptor of the root, so the check and the resolution agree on what
 * "beneath" means. Nothing here follows a symlink inside the name. */
#include "paths.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "job.h"

static int force_fallback;

void kv_path_force_fallback(int on) { force_fallback = on; }

/* A printable, truncated copy of an untrusted name for messages. */
static void shown_name(char *out, size_t cap, const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 5 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\'') out[k++] = (char)ch;
        else k += (size_t)snprintf(out + k, cap - k, "\\x%02x", ch);
        if (i == 60 && n > 64) {
            snprintf(out + k, cap - k, "...(%zu bytes)", n);
            return;
        }
    }
    out[k < cap ? k : cap - 1] = 0;
}

static int reject(char *err, size_t n_err, const char *what, const char *name, size_t n, const char *why) {
    char sh[128];
    shown_name(sh, sizeof sh, name, n);
    snprintf(err, n_err, "path_rejected: %s '%s': %s", what, sh, why);
    return KV_ERR_INVAL;
}

/* Byte-level rules, before any system call. */
static const char *lexical_check(const char *name, size_t n) {
    if (n == 0) return "empty name";
    if (n > KV_PATH_NAME_MAX) return "name too long";
    if (memchr(name, 0, n)) return "NUL byte in name";
    if (name[0] == '/') return "absolute path";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f || name[i] == '\\') return "control or backslash character";
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && name[i] != '/') continue;
        size_t len = i - start;
        if (len == 0) return "empty path component";
        if (len == 1 && name[start] == '.') return "'.' component";
        if (len == 2 && name[start] == '.' && name[start + 1] == '.') return "'..' component";
        start = i + 1;
    }
    return NULL;
}

static int open_beneath_openat2(int root_fd, const char *name) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, root_fd, name, &how, sizeof how);
}

/* Fallback: one component at a time with O_NOFOLLOW (a symlink is opened as
 * itself and refused), then a realpath prefix check as a second opinion. */
static int open_beneath_walk(int root_fd, const char *root_real, const char *name) {
    char comp[KV_PATH_NAME_MAX + 1];
    int fd = dup(root_fd);
    if (fd < 0) return -1;
    const char *p = name;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        memcpy(comp, p, len);
        comp[len] = 0;
        int next = openat(fd, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        close(fd);
        if (next < 0) return -1;
        struct stat st;
        if (fstat(next, &st) != 0 || S_ISLNK(st.st_mode)) {
            close(next);
            errno = ELOOP;
            return -1;
        }
        fd = next;
        p += len;
        if (*p == '/') p++;
    }
    char proc[64], real[PATH_MAX];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    size_t rl = strlen(root_real);
    if (!realpath(proc, real) || strncmp(real, root_real, rl) != 0 || (real[rl] != '/' && real[rl] != 0)) {
        close(fd);
        errno = EXDEV;
        return -1;
    }
    return fd;
}

int kv_path_resolve(const char *root, const char *what, const char *name, size_t name_len, char *out, size_t n_out,
                    char *err, size_t n_err) {
    if (out && n_out) out[0] = 0;
    const char *why = lexical_check(name, name_len);
    if (why) return reject(err, n_err, what, name, name_len, why);
    char root_real[PATH_MAX];
    if (!root || !realpath(root, root_real)) {
        snprintf(err, n_err, "path_rejected: %s root '%s': %s", what, root ? root : "(none)",
                 root ? strerror(errno) : "not configured");
        return KV_ERR_IO;
    }
    int root_fd = open(root_real, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) {
        snprintf(err, n_err, "path_rejected: %s root '%s': %s", what, root_real, strerror(errno));
        return KV_ERR_IO;
    }
    int fd = -1;
    if (!force_fallback) fd = open_beneath_openat2(root_fd, name);
    if (force_fallback || (fd < 0 && errno == ENOSYS)) fd = open_beneath_walk(root_fd, root_real, name);
    int e = errno;
    close(root_fd);
    if (fd < 0) {
        switch (e) {
        case ENOENT: case ENOTDIR: return reject(err, n_err, what, name, name_len, "no such file under the root");
        case ELOOP: return reject(err, n_err, what, name, name_len, "symbolic links are not allowed");
        case EXDEV: return reject(err, n_err, what, name, name_len, "escapes the root");
        default: return reject(err, n_err, what, name, name_len, strerror(e));
        }
    }
    close(fd);
    if ((size_t)snprintf(out, n_out, "%s/%.*s", root_real, (int)name_len, name) >= n_out)
        return reject(err, n_err, what, name, name_len, "resolved path too long");
    return KV_OK;
}
