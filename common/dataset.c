#include "dataset.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomic_file.h"
#include "sha256.h"
#include "util.h"

int py_isspace(uint32_t c) {
    // The code points for which CPython's str.isspace() is true.
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

int utf8_encode(uint32_t c, char out[4]) {
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xc0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xe0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3f));
        out[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3f));
    out[3] = (char)(0x80 | (c & 0x3f));
    return 4;
}

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

// Strict UTF-8 decoding as Python's 'utf-8' codec: no overlong forms, no
// surrogates, nothing above U+10FFFF. Returns the number of code points, or -1
// and the offset of the first bad byte.
static long utf8_decode(const unsigned char *s, size_t n, uint32_t *out, size_t *bad) {
    size_t i = 0;
    long k = 0;
    while (i < n) {
        unsigned c = s[i];
        uint32_t cp;
        int len;
        unsigned lo = 0x80, hi = 0xbf;  // allowed range of the second byte
        if (c < 0x80) { cp = c; len = 1; }
        else if (c >= 0xc2 && c <= 0xdf) { cp = c & 0x1f; len = 2; }
        else if (c >= 0xe0 && c <= 0xef) {
            cp = c & 0x0f; len = 3;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            cp = c & 0x07; len = 4;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else { *bad = i; return -1; }
        for (int j = 1; j < len; j++) {
            if (i + (size_t)j >= n) { *bad = i; return -1; }
            unsigned b = s[i + j];
            if (b < (j == 1 ? lo : 0x80) || b > (j == 1 ? hi : 0xbf)) { *bad = i; return -1; }
            cp = (cp << 6) | (b & 0x3f);
        }
        out[k++] = cp;
        i += (size_t)len;
    }
    return k;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int dataset_from_text(Dataset *d, const char *name, const char *text, size_t n, char *err,
                      size_t errlen) {
    memset(d, 0, sizeof *d);
    d->path = xstrdup(name);
    d->n_bytes = n;
    sha256_hex(text, n, d->sha256);

    uint32_t *cp = xmalloc((n + 1) * sizeof *cp);
    size_t bad = 0;
    long m = utf8_decode((const unsigned char *)text, n, cp, &bad);
    if (m < 0) {
        long line = 1;
        for (size_t i = 0; i < bad; i++) line += text[i] == '\n';
        free(cp);
        dataset_free(d);
        return fail(err, errlen,
                    "%s: line %ld: invalid UTF-8 (byte 0x%02x at offset %zu); the data must be "
                    "UTF-8 text, one document per line",
                    name, line, (unsigned char)text[bad], bad);
    }
    // Universal newlines: "\r\n" and a lone "\r" both become "\n".
    size_t len = 0;
    for (long i = 0; i < m; i++) {
        if (cp[i] == '\r') {
            cp[len++] = '\n';
            if (i + 1 < m && cp[i + 1] == '\n') i++;
        } else {
            cp[len++] = cp[i];
        }
    }
    // Split on "\n", strip each line, keep the non-empty ones. (Stripping the
    // whole text first changes nothing: it only removes empty lines and the
    // ends of the first and last line, which their own strip removes too.)
    int cap = 64;
    d->doc_start = xmalloc((size_t)cap * sizeof(int));
    d->doc_len = xmalloc((size_t)cap * sizeof(int));
    uint32_t *chars = xmalloc((len + 1) * sizeof *chars);
    size_t n_chars_total = 0;
    size_t a = 0;
    while (a <= len) {
        size_t b = a;
        while (b < len && cp[b] != '\n') b++;
        size_t s = a, e = b;
        while (s < e && py_isspace(cp[s])) s++;
        while (e > s && py_isspace(cp[e - 1])) e--;
        if (e > s) {
            if (d->n_docs == cap) {
                cap *= 2;
                d->doc_start = xrealloc(d->doc_start, (size_t)cap * sizeof(int));
                d->doc_len = xrealloc(d->doc_len, (size_t)cap * sizeof(int));
            }
            if (n_chars_total + (e - s) > (size_t)0x7fffffff) {
                free(cp);
                free(chars);
                dataset_free(d);
                return fail(err, errlen, "%s: too large (more than 2^31 characters)", name);
            }
            d->doc_start[d->n_docs] = (int)n_chars_total;
            d->doc_len[d->n_docs] = (int)(e - s);
            memcpy(chars + n_chars_total, cp + s, (e - s) * sizeof *chars);
            n_chars_total += e - s;
            d->n_docs++;
        }
        a = b + 1;
    }
    free(cp);
    if (d->n_docs == 0) {
        free(chars);
        dataset_free(d);
        return fail(err, errlen,
                    "%s: no documents: the file is empty or holds only whitespace; it must hold "
                    "one document (e.g. a name) per line",
                    name);
    }
    // Vocabulary: sorted distinct code points.
    uint32_t *sorted = xmalloc((n_chars_total + 1) * sizeof *sorted);
    memcpy(sorted, chars, n_chars_total * sizeof *sorted);
    qsort(sorted, n_chars_total, sizeof *sorted, cmp_u32);
    size_t nv = 0;
    for (size_t i = 0; i < n_chars_total; i++)
        if (nv == 0 || sorted[nv - 1] != sorted[i]) sorted[nv++] = sorted[i];
    d->vocab = xrealloc(sorted, (nv ? nv : 1) * sizeof *sorted);
    d->n_chars = (int)nv;
    d->bos = (int)nv;
    d->vocab_size = (int)nv + 1;
    d->tokens = xmalloc((n_chars_total + 1) * sizeof(int));
    for (size_t i = 0; i < n_chars_total; i++) {
        uint32_t *p = bsearch(&chars[i], d->vocab, nv, sizeof *d->vocab, cmp_u32);
        d->tokens[i] = (int)(p - d->vocab);
    }
    free(chars);
    d->order = xmalloc((size_t)d->n_docs * sizeof(int));
    for (int i = 0; i < d->n_docs; i++) d->order[i] = i;
    return 0;
}

int dataset_load(Dataset *d, const char *path, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, errlen, "%s: cannot open: %s%s", path, strerror(errno),
                    errno == ENOENT ? " (run `make data` to fetch names.txt, or pass --data FILE)"
                                    : "");
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n == cap) buf = xrealloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int read_error = ferror(f);
    fclose(f);
    if (read_error) {
        free(buf);
        return fail(err, errlen, "%s: read error (is it a directory or unreadable?)", path);
    }
    outfile_note_input(path);
    int rc = dataset_from_text(d, path, buf, n, err, errlen);
    free(buf);
    return rc;
}

void dataset_free(Dataset *d) {
    free(d->path);
    free(d->order);
    free(d->doc_start);
    free(d->doc_len);
    free(d->tokens);
    free(d->vocab);
    memset(d, 0, sizeof *d);
}

void dataset_shuffle(Dataset *d, PyRandom *r) {
    pyrandom_shuffle(r, d->order, (size_t)d->n_docs, sizeof *d->order);
}

const int *dataset_doc(const Dataset *d, int i, int *len) {
    int k = d->order[i];
    *len = d->doc_len[k];
    return d->tokens + d->doc_start[k];
}
