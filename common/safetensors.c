#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const DTYPE_NAMES[] = {"F64", "F32", "I32"};

size_t st_dtype_size(StDtype d) { return d == ST_F64 ? 8 : 4; }

static size_t st_bytes(const StTensor *t) {
    size_t n = st_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

unsigned char *safetensors_encode(const StTensor *t, int n, const char *const *meta, int n_meta, size_t *len,
                                  char *err, size_t errlen) {
    StrIndex seen = {0};   // the names so far: none twice
    cJSON *h = cJSON_CreateObject();
    if (!h) goto oom;
    if (n_meta > 0) {
        cJSON *m = cJSON_AddObjectToObject(h, "__metadata__");
        for (int i = 0; i < n_meta; i++)
            if (!m || !cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1])) goto oom_h;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(t[i].name, "__metadata__") || strindex_put(&seen, t[i].name, i) >= 0) {
            snprintf(err, errlen, "safetensors: tensor name '%s' is reserved or repeated", text_safe(t[i].name));
            strindex_free(&seen);
            cJSON_Delete(h);
            return NULL;
        }
        if (t[i].ndim < 0 || t[i].ndim > ST_MAX_DIMS || (unsigned)t[i].dtype > ST_I32) {
            snprintf(err, errlen, "safetensors: tensor '%s' has a bad dtype or rank", text_safe(t[i].name));
            strindex_free(&seen);
            cJSON_Delete(h);
            return NULL;
        }
        cJSON *o = cJSON_AddObjectToObject(h, t[i].name);
        if (!o || !cJSON_AddStringToObject(o, "dtype", DTYPE_NAMES[t[i].dtype])) goto oom_h;
        cJSON *shape = cJSON_AddArrayToObject(o, "shape"), *range = cJSON_AddArrayToObject(o, "data_offsets");
        if (!shape || !range) goto oom_h;
        for (int d = 0; d < t[i].ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t[i].shape[d]));
        size_t b = st_bytes(&t[i]);
        cJSON_AddItemToArray(range, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(range, cJSON_CreateNumber((double)(off + b)));
        off += b;
    }
    strindex_free(&seen);
    char *json = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!json) goto oom;
    // the header is padded with spaces so that the data starts 8-byte aligned
    size_t hl = strlen(json), hpad = (hl + 7) / 8 * 8;
    unsigned char *buf = malloc(8 + hpad + off);
    if (!buf) {
        free(json);
        goto oom;
    }
    uint64_t hl64 = hpad;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hl64 >> (8 * i));
    memcpy(buf + 8, json, hl);
    memset(buf + 8 + hl, ' ', hpad - hl);
    free(json);
    unsigned char *p = buf + 8 + hpad;
    for (int i = 0; i < n; i++) {
        size_t b = st_bytes(&t[i]);
        if (b) memcpy(p, t[i].data, b);
        p += b;
    }
    *len = 8 + hpad + off;
    return buf;
oom_h:
    cJSON_Delete(h);
oom:
    strindex_free(&seen);
    snprintf(err, errlen, "safetensors: out of memory");
    return NULL;
}

// ---- decoding ----

static int st_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int st_fail(char *err, size_t errlen, const char *fmt, ...) {
    int k = snprintf(err, errlen, "safetensors: ");
    va_list ap;
    va_start(ap, fmt);
    if (k >= 0 && (size_t)k < errlen) vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

// The largest integer a JSON number holds exactly (a double): sizes and
// offsets above it are refused as too large.
#define ST_MAX_INDEX 9007199254740992.0   // 2^53

// A JSON number that is a non-negative integer: 0 with *out, -1 when it is
// not one, -2 when it is above ST_MAX_INDEX.
static int st_index(const cJSON *x, size_t *out) {
    if (!cJSON_IsNumber(x)) return -1;
    double v = x->valuedouble;
    if (!(v >= 0) || v != floor(v)) return -1;
    if (v > ST_MAX_INDEX) return -2;
    *out = (size_t)v;
    return 0;
}

void st_file_free(StFile *f) {
    for (int i = 0; i < f->n; i++) free(f->names[i]);
    free(f->names);
    free(f->t);
    strindex_free(&f->index);
    memset(f, 0, sizeof *f);
}

static int by_offset(const void *a, const void *b) {
    const unsigned char *x = ((const StTensor *)a)->data, *y = ((const StTensor *)b)->data;
    return x < y ? -1 : x > y;
}

// A name as messages show it (another program wrote it).
static const char *shown(const char *name) { return text_safe_n(name, (size_t)-1, 100); }

// One tensor's entry x of the header into t: 0, or -1 with the message.
static int st_entry(const cJSON *x, const char *name, StTensor *t, size_t dlen, size_t *b0, char *err, size_t errlen) {
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(x, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(x, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(x, "data_offsets");
    if (!cJSON_IsObject(x) || !cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off))
        return st_fail(err, errlen, "tensor '%s' lacks a dtype, a shape or data_offsets", shown(name));
    int d = 0;
    for (; d < 3 && strcmp(dt->valuestring, DTYPE_NAMES[d]); d++) {}
    if (d == 3)
        return st_fail(err, errlen, "tensor '%s' has dtype %s (F64, F32 or I32 are read)", shown(name),
                       text_safe_n(dt->valuestring, (size_t)-1, 40));
    t->dtype = (StDtype)d;
    int ndim = 0;
    for (const cJSON *s = sh->child; s && ndim <= ST_MAX_DIMS; s = s->next) ndim++;
    if (ndim > ST_MAX_DIMS)
        return st_fail(err, errlen, "tensor '%s' has %d dimensions (at most %d)", shown(name), cJSON_GetArraySize(sh),
                       ST_MAX_DIMS);
    t->ndim = ndim;
    size_t bytes = st_dtype_size(t->dtype);
    int k = 0;
    for (const cJSON *s = sh->child; s; s = s->next, k++) {
        int r = st_index(s, &t->shape[k]);
        if (r == -1)
            return st_fail(err, errlen, "tensor '%s': dimension %d is not a non-negative integer", shown(name), k);
        if (r == -2)
            return st_fail(err, errlen, "tensor '%s': dimension %d (%.17g) is too large: the limit is 2^53 = %.0f",
                           shown(name), k, s->valuedouble, ST_MAX_INDEX);
        if (t->shape[k] && bytes > SIZE_MAX / t->shape[k])
            return st_fail(err, errlen, "tensor '%s': dimension %d (%zu) is too large: the tensor's bytes (the "
                           "product of its dimensions times %zu) would exceed the limit 2^64-1 = %zu", shown(name), k,
                           t->shape[k], st_dtype_size(t->dtype), (size_t)SIZE_MAX);
        bytes *= t->shape[k];
    }
    size_t b1 = 0;
    int r0 = -1, r1 = -1;
    if (off->child && off->child->next && !off->child->next->next)
        r0 = st_index(off->child, b0), r1 = st_index(off->child->next, &b1);
    if (r0 == -2 || r1 == -2)
        return st_fail(err, errlen, "tensor '%s': data_offsets [%.17g, %.17g] are too large: the limit is 2^53 = %.0f",
                       shown(name), off->child->valuedouble, off->child->next->valuedouble, ST_MAX_INDEX);
    if (r0 || r1 || b1 < *b0)
        return st_fail(err, errlen, "tensor '%s': data_offsets is not [begin, end] with begin <= end", shown(name));
    if (b1 - *b0 != bytes)
        return st_fail(err, errlen, "tensor '%s': data_offsets [%zu, %zu] hold %zu bytes, its dtype and shape need %zu",
                       shown(name), *b0, b1, b1 - *b0, bytes);
    if (b1 > dlen)
        return st_fail(err, errlen, "tensor '%s': data_offsets end at %zu, past the %zu data bytes (short file?)",
                       shown(name), b1, dlen);
    return 0;
}

int safetensors_decode(const unsigned char *buf, size_t len, StFile *f, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    if (len < 8) return st_fail(err, errlen, "%zu bytes: shorter than the 8-byte header length", len);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)buf[i] << (8 * i);
    if (hl > len - 8)
        return st_fail(err, errlen, "the header length %llu is more than the %zu bytes after it",
                       (unsigned long long)hl, len - 8);
    if (hl == 0 || buf[8] != '{') return st_fail(err, errlen, "the header does not start with '{'");
    cJSON *h = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hl);
    if (!cJSON_IsObject(h)) {
        cJSON_Delete(h);
        return st_fail(err, errlen, "the %llu-byte header is not a JSON object", (unsigned long long)hl);
    }
    // a key twice: cJSON would read the first, Python's safetensors the last
    const char *dup;
    char where[160];
    if (json_duplicate_key(h, &dup, where, sizeof where)) {
        if (!where[0]) st_fail(err, errlen, "tensor '%s' appears twice in the header", shown(dup));
        else st_fail(err, errlen, "%s%s%s: the key '%s' appears twice", strcmp(where, "__metadata__") ? "tensor '" : "",
                     shown(where), strcmp(where, "__metadata__") ? "'" : "", shown(dup));
        cJSON_Delete(h);
        return -1;
    }
    const unsigned char *data = buf + 8 + hl;
    const size_t dlen = len - 8 - (size_t)hl;
    int n = 0;
    for (cJSON *x = h->child; x; x = x->next) n += strcmp(x->string, "__metadata__") != 0;
    f->t = calloc((size_t)n + 1, sizeof *f->t);
    f->names = calloc((size_t)n + 1, sizeof *f->names);
    if (!f->t || !f->names) {
        cJSON_Delete(h);
        st_file_free(f);
        return st_fail(err, errlen, "out of memory");
    }
    int rc = 0;
    for (cJSON *x = h->child; x && !rc; x = x->next) {
        const char *name = x->string;
        if (!strcmp(name, "__metadata__")) {
            if (!cJSON_IsObject(x)) rc = st_fail(err, errlen, "__metadata__ is not an object");
            for (cJSON *m = x->child; m && !rc; m = m->next)
                if (!cJSON_IsString(m)) rc = st_fail(err, errlen, "__metadata__ '%s' is not a string", shown(m->string));
            continue;
        }
        StTensor *t = &f->t[f->n];
        size_t b0 = 0;
        if ((rc = st_entry(x, name, t, dlen, &b0, err, errlen))) break;
        f->names[f->n] = strdup(name);
        if (!f->names[f->n]) {
            rc = st_fail(err, errlen, "out of memory");
            break;
        }
        t->name = f->names[f->n];
        t->data = data + b0;
        f->n++;
    }
    cJSON_Delete(h);
    if (!rc) {
        // the tensors must tile the data: sorted by offset, each begins where
        // the one before ends, and the last ends at the end of the buffer
        qsort(f->t, (size_t)f->n, sizeof *f->t, by_offset);
        size_t at = 0;
        for (int i = 0; i < f->n && !rc; i++) {
            size_t b0 = (size_t)((const unsigned char *)f->t[i].data - data);
            if (b0 < at) rc = st_fail(err, errlen, "tensor '%s' overlaps the tensor before it (bytes %zu < %zu)",
                                      shown(f->t[i].name), b0, at);
            else if (b0 > at)
                rc = st_fail(err, errlen, "a hole of %zu bytes before tensor '%s'", b0 - at, shown(f->t[i].name));
            at = b0 + st_bytes(&f->t[i]);
        }
        if (!rc && at != dlen) rc = st_fail(err, errlen, "%zu bytes after the last tensor", dlen - at);
        for (int i = 0; i < f->n; i++) {
            f->names[i] = (char *)f->t[i].name;  // keep names[i] == t[i].name
            strindex_put(&f->index, f->names[i], i);
        }
    }
    if (rc) st_file_free(f);
    return rc;
}

const StTensor *st_find(const StFile *f, const char *name) {
    int i = strindex_get(&f->index, name);
    return i >= 0 ? &f->t[i] : NULL;
}

size_t st_numel(const StTensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int st_read_f64(const StTensor *t, double *out) {
    const size_t n = st_numel(t);
    const unsigned char *p = t->data;
    if (t->dtype == ST_F64) {
        if (n) memcpy(out, p, n * sizeof(double));
    } else if (t->dtype == ST_F32) {
        for (size_t i = 0; i < n; i++) {
            float x;
            memcpy(&x, p + 4 * i, 4);
            out[i] = x;
        }
    } else {
        return -1;
    }
    return 0;
}

int st_read_i32(const StTensor *t, int *out) {
    if (t->dtype != ST_I32) return -1;
    const size_t n = st_numel(t);
    for (size_t i = 0; i < n; i++) {
        int32_t x;
        memcpy(&x, (const unsigned char *)t->data + 4 * i, 4);
        out[i] = x;
    }
    return 0;
}

void st_describe(const StTensor *t, char *out, size_t n) {
    int k = snprintf(out, n, "%s [", DTYPE_NAMES[t->dtype]);
    for (int i = 0; i < t->ndim && k >= 0 && (size_t)k < n; i++)
        k += snprintf(out + k, n - (size_t)k, "%s%zu", i ? "," : "", t->shape[i]);
    if (k >= 0 && (size_t)k < n) snprintf(out + k, n - (size_t)k, "]");
}

int safetensors_read_file(const char *path, StFile *f, unsigned char **buf, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    *buf = NULL;
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return snprintf(err, errlen, "cannot open %s: %s", path_short(path), strerror(errno)), -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return snprintf(err, errlen, "cannot read %s: %s", path_short(path), strerror(e)), -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return snprintf(err, errlen, "%s is %s, not a safetensors file: give the path of a regular file (save what "
                        "a pipe or a device gives to a file first)", path_short(path), file_kind(st.st_mode)), -1;
    }
    // the size is known before reading: a file over what a size_t holds or
    // what memory can take is refused without reading it
    if ((uintmax_t)st.st_size > SIZE_MAX - 1)
        return close(fd), snprintf(err, errlen, "%s: %jd bytes, too large to read", path_short(path),
                                   (intmax_t)st.st_size), -1;
    const size_t size = (size_t)st.st_size;
    unsigned char *b = malloc(size ? size : 1);
    if (!b) {
        close(fd);
        return snprintf(err, errlen, "%s: not enough memory to read its %zu bytes", path_short(path), size), -1;
    }
    size_t len = 0;
    while (len < size) {   // a file that shrinks meanwhile is read as it is now
        ssize_t k = read(fd, b + len, size - len);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (k < 0) {
            int e = errno;
            free(b);
            close(fd);
            return snprintf(err, errlen, "cannot read %s: %s", path_short(path), strerror(e)), -1;
        }
        if (k == 0) break;
        len += (size_t)k;
    }
    close(fd);
    char e[400];
    if (safetensors_decode(b, len, f, e, sizeof e)) {
        free(b);
        return snprintf(err, errlen, "%s: %s", path_short(path), e), -1;
    }
    *buf = b;
    return 0;
}
