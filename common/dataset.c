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

// One code point of strict UTF-8 as Python's 'utf-8' codec decodes it (no
// overlong forms, no surrogates, nothing above U+10FFFF): its length in
// bytes, or 0 for an invalid sequence at s[0].
static int utf8_next(const unsigned char *s, size_t n, uint32_t *out) {
    unsigned c = s[0];
    uint32_t cp;
    int len;
    unsigned lo = 0x80, hi = 0xbf;  // allowed range of the second byte
    if (c < 0x80) { *out = c; return 1; }
    else if (c >= 0xc2 && c <= 0xdf) { cp = c & 0x1f; len = 2; }
    else if (c >= 0xe0 && c <= 0xef) {
        cp = c & 0x0f; len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        cp = c & 0x07; len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else return 0;
    if ((size_t)len > n) return 0;
    for (int j = 1; j < len; j++) {
        unsigned b = s[j];
        if (b < (j == 1 ? lo : 0x80) || b > (j == 1 ? hi : 0xbf)) return 0;
        cp = (cp << 6) | (b & 0x3f);
    }
    *out = cp;
    return len;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

// Pass 1: check the UTF-8, split into lines (universal newlines: "\r\n" and
// a lone "\r" end a line too), strip each, record the non-empty ones as
// byte ranges [start, start+bytes) with their length in code points.
typedef struct {
    size_t *start, *bytes;
    int *chars;
    int n, cap;
} DocSpans;

static int split_docs(const char *name, const unsigned char *t, size_t n, DocSpans *ds, size_t *n_chars,
                      char *err, size_t errlen) {
    size_t i = 0, line_start = 0;
    long line = 1;
    *n_chars = 0;
    while (i <= n) {
        // one line: [line_start, end of line)
        size_t first = SIZE_MAX, last_end = 0;   // bytes of the first/after the last non-space
        long cps = 0, first_cp = 0, last_cp = 0;  // code point counts at those places
        while (i < n && t[i] != '\n' && t[i] != '\r') {
            uint32_t cp;
            int k = utf8_next(t + i, n - i, &cp);
            if (!k)
                return fail(err, errlen,
                            "%s: line %ld: invalid UTF-8 (byte 0x%02x at offset %zu); the data must be "
                            "UTF-8 text, one document per line",
                            name, line, t[i], i);
            if (!py_isspace(cp)) {
                if (first == SIZE_MAX) {
                    first = i;
                    first_cp = cps;
                }
                last_end = i + (size_t)k;
                last_cp = cps + 1;
            }
            i += (size_t)k;
            cps++;
        }
        if (i - line_start > DATASET_MAX_LINE)
            return fail(err, errlen,
                        "%s: line %ld is longer than %d bytes (the limit for one document); is it the "
                        "right file?",
                        name, line, DATASET_MAX_LINE);
        if (first != SIZE_MAX) {
            if (ds->n == ds->cap) {
                ds->cap = ds->cap ? 2 * ds->cap : 64;
                ds->start = xrealloc(ds->start, (size_t)ds->cap * sizeof *ds->start);
                ds->bytes = xrealloc(ds->bytes, (size_t)ds->cap * sizeof *ds->bytes);
                ds->chars = xrealloc(ds->chars, (size_t)ds->cap * sizeof *ds->chars);
            }
            ds->start[ds->n] = first;
            ds->bytes[ds->n] = last_end - first;
            ds->chars[ds->n] = (int)(last_cp - first_cp);
            *n_chars += (size_t)(last_cp - first_cp);
            ds->n++;
        }
        if (i < n && t[i] == '\r' && i + 1 < n && t[i + 1] == '\n') i++;
        i++;
        line_start = i;
        line++;
    }
    return 0;
}

int dataset_from_text(Dataset *d, const char *name, const char *text, size_t n, char *err,
                      size_t errlen) {
    memset(d, 0, sizeof *d);
    if (n > DATASET_MAX_BYTES)
        return fail(err, errlen, "%s: larger than %d MiB, the limit for training data", name,
                    DATASET_MAX_BYTES >> 20);
    const unsigned char *t = (const unsigned char *)text;
    DocSpans ds = {0};
    size_t n_chars = 0;
    int rc = split_docs(name, t, n, &ds, &n_chars, err, errlen);
    if (!rc && ds.n == 0)
        rc = fail(err, errlen,
                  "%s: no documents: the file is empty or holds only whitespace; it must hold "
                  "one document (e.g. a name) per line",
                  name);
    if (rc) {
        free(ds.start);
        free(ds.bytes);
        free(ds.chars);
        return rc;
    }
    d->path = xstrdup(name);
    d->n_bytes = n;
    sha256_hex(text, n, d->sha256);
    // Pass 2: the vocabulary, the sorted set of code points, from a bitmap
    // over all of Unicode (136 KiB), whatever the size of the text.
    uint8_t *seen = xcalloc(0x110000 / 8, 1);
    uint32_t lo = 0x10ffff, hi = 0;  // the range to scan
    for (int k = 0; k < ds.n; k++)
        for (size_t i = ds.start[k], e = i + ds.bytes[k]; i < e;) {
            uint32_t cp;
            i += (size_t)utf8_next(t + i, e - i, &cp);
            seen[cp >> 3] |= (uint8_t)(1u << (cp & 7));
            if (cp < lo) lo = cp;
            if (cp > hi) hi = cp;
        }
    size_t nv = 0;
    for (uint32_t c = lo; c <= hi; c++) nv += (seen[c >> 3] >> (c & 7)) & 1;
    d->vocab = xmalloc((nv ? nv : 1) * sizeof *d->vocab);
    nv = 0;
    for (uint32_t c = lo; c <= hi; c++)
        if ((seen[c >> 3] >> (c & 7)) & 1) d->vocab[nv++] = c;
    free(seen);
    d->n_chars = (int)nv;
    d->bos = (int)nv;
    d->vocab_size = (int)nv + 1;
    // Pass 3: token ids, documents back to back.
    d->n_docs = ds.n;
    d->doc_start = xmalloc((size_t)ds.n * sizeof(int));
    d->doc_len = xmalloc((size_t)ds.n * sizeof(int));
    d->tokens = xmalloc((n_chars + 1) * sizeof(int));
    size_t pos = 0;
    for (int k = 0; k < ds.n; k++) {
        d->doc_start[k] = (int)pos;
        d->doc_len[k] = ds.chars[k];
        for (size_t i = ds.start[k], e = i + ds.bytes[k]; i < e;) {
            uint32_t cp;
            i += (size_t)utf8_next(t + i, e - i, &cp);
            const uint32_t *p = bsearch(&cp, d->vocab, nv, sizeof *d->vocab, cmp_u32);
            d->tokens[pos++] = (int)(p - d->vocab);
        }
    }
    free(ds.start);
    free(ds.bytes);
    free(ds.chars);
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
    // Read at most the limit (+1 to see that there is more), and stop at the
    // first line over its limit: /dev/zero is refused after a megabyte.
    size_t cap = 1 << 16, n = 0, line = 0;
    long lines = 1;
    char *buf = xmalloc(cap);
    const char *too = NULL;
    for (;;) {
        if (n == cap) buf = xrealloc(buf, cap *= 2);
        size_t want = cap - n;
        if (want > (size_t)DATASET_MAX_BYTES + 1 - n) want = (size_t)DATASET_MAX_BYTES + 1 - n;
        size_t got = fread(buf + n, 1, want, f);
        for (size_t i = n; i < n + got; i++) {
            if (buf[i] == '\n' || buf[i] == '\r') {
                line = 0;
                lines += buf[i] == '\n' || i + 1 == n + got || buf[i + 1] != '\n';
            } else if (++line > DATASET_MAX_LINE) {
                too = "line";
                break;
            }
        }
        n += got;
        if (too || got == 0) break;
        if (n > (size_t)DATASET_MAX_BYTES) {
            too = "file";
            break;
        }
    }
    int read_error = ferror(f);
    fclose(f);
    if (too) {
        free(buf);
        if (*too == 'l')
            return fail(err, errlen,
                        "%s: line %ld is longer than %d bytes (the limit for one document); is it the "
                        "right file?",
                        path, lines, DATASET_MAX_LINE);
        return fail(err, errlen, "%s: larger than %d MiB, the limit for training data", path,
                    DATASET_MAX_BYTES >> 20);
    }
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
