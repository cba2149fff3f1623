#include "trace_read.h"

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

#include "common/atomic_file.h"
#include "common/util.h"
#include "trace.h"

const char *trace_kind_name(TraceKind k) {
    return k == TRACE_KIND_COMPARE ? "compare" : k == TRACE_KIND_BENCH ? "bench" : "train";
}

#define N_QUANTITIES N_TRACE_QUANTITIES
static const char *const QUANTITIES[N_QUANTITIES] = {"loss", "logits", "grads", "params", "m", "v", "acts", "dacts"};
static const char *const SUFFIX[N_QUANTITIES] = {"", "", ".grad", "", ".m", ".v", ".act", ".dact"};

int trace_quantity_index(const char *quantity) {
    for (int q = 0; q < N_QUANTITIES; q++)
        if (quantity == QUANTITIES[q] || !strcmp(quantity, QUANTITIES[q])) return q;
    return 3;
}

const char *trace_key_quantity(const char *key, char tensor[64]) {
    snprintf(tensor, 64, "%s", key);
    for (int q = 0; q < N_QUANTITIES; q++)
        if (!strcmp(key, QUANTITIES[q])) return QUANTITIES[q];
    size_t n = strlen(key);
    for (int q = 2; q < N_QUANTITIES; q++) {
        size_t k = strlen(SUFFIX[q]);
        if (k && n > k && !strcmp(key + n - k, SUFFIX[q])) {
            snprintf(tensor, 64, "%.*s", (int)(n - k), key);
            return QUANTITIES[q];
        }
    }
    return "params";
}

void trace_format_number(double x, char buf[32]) {
    if (!isfinite(x)) {
        snprintf(buf, 32, "null");
        return;
    }
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, 32, "%.*g", digits, x);
        if (strtod(buf, NULL) == x) return;
    }
}

int trace_get_number(const cJSON *obj, const char *name, double *out) {
    const cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
    if (!it) return 1;
    if (cJSON_IsNull(it)) {
        *out = NAN;
        return 0;
    }
    if (!cJSON_IsNumber(it)) return -1;
    *out = it->valuedouble;
    return 0;
}

const char *trace_get_string(const cJSON *obj, const char *name) {
    const cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static int fail(char *err, size_t errlen, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, const char *path, const char *fmt, ...) {
    int k = snprintf(err, errlen, "%s: ", path_short(path));
    if (k >= 0 && (size_t)k < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return -1;
}

#define MAX_TRACE_BYTES ((size_t)2 << 30)   // 2 GiB

// The whole file, NUL-terminated; NULL with a message on failure. Only a
// regular file is read, and its size is checked before anything is read: a
// FIFO (which would block) or /dev/zero (which never ends) is refused at once.
static char *read_all(const char *path, size_t *len, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        fail(err, errlen, path, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        fail(err, errlen, path, "cannot read: %s", strerror(e));
        return NULL;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        fail(err, errlen, path, "is a directory, not a trace file");
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        fail(err, errlen, path, "is %s, not a trace file: give the path of a regular file (save what a pipe or a "
             "device gives to a file first)", file_kind(st.st_mode));
        return NULL;
    }
    if ((uintmax_t)st.st_size > MAX_TRACE_BYTES) {
        close(fd);
        fail(err, errlen, path, "too large for a trace (%jd bytes, over 2 GiB)", (intmax_t)st.st_size);
        return NULL;
    }
    const size_t size = (size_t)st.st_size;
    char *buf = xmalloc(size + 1);
    size_t n = 0;
    while (n < size) {   // a file that shrinks meanwhile is read as it is now
        ssize_t got = read(fd, buf + n, size - n);
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            int e = errno;
            free(buf);
            close(fd);
            fail(err, errlen, path, "cannot read: %s", strerror(e));
            return NULL;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int check_object(const cJSON *root, const char *name, char *err, size_t errlen,
                        const char *path) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, name);
    if (it && !cJSON_IsObject(it))
        return fail(err, errlen, path, "\"%s\" is not a JSON object", name);
    return 0;
}

// A number field of a step: absent or null -> NaN; another type is an error.
static int step_number(const cJSON *o, const char *name, double *out, int i, char *err,
                       size_t errlen, const char *path) {
    int r = trace_get_number(o, name, out);
    if (r == 1) *out = NAN;
    if (r < 0) return fail(err, errlen, path, "steps[%d].%s is not a number", i, name);
    return 0;
}

// A per-engine pair [a, b] of numbers (or nulls).
static int step_pair(const cJSON *o, const char *name, double out[2], int required, int i,
                     char *err, size_t errlen, const char *path) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    out[0] = out[1] = NAN;
    if (!it) {
        if (required) return fail(err, errlen, path, "steps[%d] has no \"%s\"", i, name);
        return 0;
    }
    if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2)
        return fail(err, errlen, path,
                    "steps[%d].%s is not a pair [a, b] (one value per engine)", i, name);
    for (int k = 0; k < 2; k++) {
        const cJSON *v = cJSON_GetArrayItem(it, k);
        if (cJSON_IsNumber(v)) out[k] = v->valuedouble;
        else if (!cJSON_IsNull(v))
            return fail(err, errlen, path, "steps[%d].%s[%d] is not a number", i, name, k);
    }
    return 0;
}

// A bench trace: "sizes" and "bench" arrays of objects; each row names its
// size (one of "sizes"), engine, precision and verdict.
static int check_bench(TraceData *t, char *err, size_t errlen) {
    const char *path = t->path;
    const cJSON *sizes = cJSON_GetObjectItemCaseSensitive(t->root, "sizes");
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(t->root, "bench");
    if (!cJSON_IsArray(sizes)) return fail(err, errlen, path, "bench trace: \"sizes\" is missing or not an array");
    if (!cJSON_IsArray(rows)) return fail(err, errlen, path, "bench trace: \"bench\" is missing or not an array");
    int i = 0, rc = 0;
    const cJSON *z, *r;
    StrIndex names = {0};   // the sizes' names: one lookup per row
    cJSON_ArrayForEach(z, sizes) {
        if (!cJSON_IsObject(z) || !trace_get_string(z, "name")) {
            strindex_free(&names);
            return fail(err, errlen, path, "bench trace: sizes[%d] is not an object with a \"name\"", i);
        }
        strindex_put(&names, trace_get_string(z, "name"), i);
        i++;
    }
    i = 0;
    cJSON_ArrayForEach(r, rows) {
        static const char *const keys[] = {"size", "engine", "precision", "verdict"};
        if (!cJSON_IsObject(r)) {
            rc = fail(err, errlen, path, "bench trace: bench[%d] is not an object", i);
            break;
        }
        for (size_t k = 0; k < sizeof keys / sizeof *keys && !rc; k++)
            if (!trace_get_string(r, keys[k]))
                rc = fail(err, errlen, path, "bench trace: bench[%d].%s is missing or not a string", i, keys[k]);
        if (rc) break;
        if (strindex_get(&names, trace_get_string(r, "size")) < 0) {
            rc = fail(err, errlen, path, "bench trace: bench[%d] is of size \"%s\", which \"sizes\" does not list",
                      i, text_safe_n(trace_get_string(r, "size"), (size_t)-1, 100));
            break;
        }
        double x;
        if (trace_get_number(r, "ms_per_step_median", &x) < 0) {
            rc = fail(err, errlen, path, "bench trace: bench[%d].ms_per_step_median is not a number", i);
            break;
        }
        i++;
    }
    strindex_free(&names);
    return rc;
}

static TraceError *add_error(TraceStep *s, int *cap) {
    if (s->n_errors == *cap) {
        *cap = *cap ? 2 * *cap : 8;
        s->errors = xrealloc(s->errors, (size_t)*cap * sizeof *s->errors);
    }
    TraceError *e = &s->errors[s->n_errors++];
    memset(e, 0, sizeof *e);
    e->max_abs = e->max_rel = NAN;
    e->n_bad = -1;
    return e;
}

// The records of a compare step: from "errors" (the long layout; then the
// max_err/max_rel maps are built from it when absent) or from the maps.
// Linear in the records: the maps' keys and the records' names are indexed.
static int load_errors(TraceData *t, TraceStep *s, const cJSON *o, int i, char *err, size_t errlen) {
    const char *path = t->path;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "errors");
    int cap = 0;
    if (!list) {
        int n = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, s->max_rel) n++;
        const cJSON **rel = xmalloc((size_t)(n ? n : 1) * sizeof *rel);
        StrIndex at = {0};   // max_rel's keys -> rel[]
        n = 0;
        cJSON_ArrayForEach(v, s->max_rel) {
            rel[n] = v;
            strindex_put(&at, v->string, n++);
        }
        cJSON_ArrayForEach(v, s->max_err) {
            char tensor[64];
            const char *q = trace_key_quantity(v->string, tensor);
            TraceError *e = add_error(s, &cap);
            e->quantity = q;
            snprintf(e->tensor, sizeof e->tensor, "%s", tensor);
            if (cJSON_IsNumber(v)) e->max_abs = v->valuedouble;
            const int k = strindex_get(&at, v->string);
            if (k >= 0 && cJSON_IsNumber(rel[k])) e->max_rel = rel[k]->valuedouble;
        }
        strindex_free(&at);
        free(rel);
        return 0;
    }
    if (!cJSON_IsArray(list)) return fail(err, errlen, path, "steps[%d].errors is not an array", i);
    // every record's place up front: the array does not move, so the index
    // of the names (one per quantity) can point into it
    cap = cJSON_GetArraySize(list);
    s->errors = xmalloc((size_t)(cap ? cap : 1) * sizeof *s->errors);
    StrIndex seen[N_QUANTITIES] = {{0}};
    int k = 0, rc = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, list) {
        if (!cJSON_IsObject(r)) {
            rc = fail(err, errlen, path, "steps[%d].errors[%d] is not an object", i, k);
            break;
        }
        const char *qs = trace_get_string(r, "quantity"), *tn = trace_get_string(r, "tensor");
        int q = -1;
        for (int j = 0; qs && j < N_QUANTITIES; j++)
            if (!strcmp(qs, QUANTITIES[j])) q = j;
        if (q < 0) {
            rc = fail(err, errlen, path, "steps[%d].errors[%d].quantity is not one of %s", i, k, TRACE_QUANTITIES);
            break;
        }
        if (!tn) tn = QUANTITIES[q];
        if (strlen(tn) >= 64 || !*tn) {
            rc = fail(err, errlen, path, "steps[%d].errors[%d].tensor is empty or longer than 63 bytes", i, k);
            break;
        }
        TraceError *e = add_error(s, &cap);
        e->quantity = QUANTITIES[q];
        snprintf(e->tensor, sizeof e->tensor, "%s", tn);
        static const char *const nums[2] = {"max_abs", "max_rel"};
        for (int m = 0; m < 2 && !rc; m++) {
            double x;
            int g = trace_get_number(r, nums[m], &x);
            if (g < 0 || (g == 0 && x < 0))
                rc = fail(err, errlen, path, "steps[%d].errors[%d].%s is not a number >= 0 (or null)", i, k, nums[m]);
            else if (g == 1 && m == 0) rc = fail(err, errlen, path, "steps[%d].errors[%d] has no max_abs", i, k);
            else if (g == 0) *(m ? &e->max_rel : &e->max_abs) = x;
        }
        if (rc) break;
        double nb;
        int g = trace_get_number(r, "n_bad", &nb);
        if (g < 0 || (g == 0 && !(nb >= 0 && nb == floor(nb) && nb < 2e9))) {
            rc = fail(err, errlen, path, "steps[%d].errors[%d].n_bad is not a count", i, k);
            break;
        }
        if (g == 0) e->n_bad = (int)nb;
        if (strindex_put(&seen[q], e->tensor, s->n_errors - 1) >= 0) {
            rc = fail(err, errlen, path, "inconsistent: steps[%d] has two records of %s %s", i, e->quantity,
                      text_safe(e->tensor));
            break;
        }
        k++;
    }
    for (int q = 0; q < N_QUANTITIES; q++) strindex_free(&seen[q]);
    if (rc) return rc;
    if (s->max_err) return 0;
    // the maps the tools read, built from the records
    if (!t->derived) t->derived = cJSON_CreateArray();
    cJSON *me = cJSON_CreateObject(), *mr = cJSON_CreateObject();
    cJSON_AddItemToArray(t->derived, me);
    cJSON_AddItemToArray(t->derived, mr);
    for (int j = 0; j < s->n_errors; j++) {
        const TraceError *e = &s->errors[j];
        char key[80];
        int q = 0;
        while (QUANTITIES[q] != e->quantity) q++;
        if (!strcmp(e->tensor, e->quantity)) snprintf(key, sizeof key, "%s", e->quantity);
        else snprintf(key, sizeof key, "%s%s", e->tensor, SUFFIX[q]);
        cJSON_AddItemToObject(me, key, isnan(e->max_abs) ? cJSON_CreateNull() : cJSON_CreateNumber(e->max_abs));
        cJSON_AddItemToObject(mr, key, isnan(e->max_rel) ? cJSON_CreateNull() : cJSON_CreateNumber(e->max_rel));
    }
    s->max_err = me;
    s->max_rel = mr;
    return 0;
}

static int load_steps(TraceData *t, char *err, size_t errlen) {
    const char *path = t->path;
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(t->root, "steps");
    if (!steps) return fail(err, errlen, path, "has no \"steps\" array");
    if (!cJSON_IsArray(steps)) return fail(err, errlen, path, "\"steps\" is not an array");
    int n = cJSON_GetArraySize(steps);
    t->steps = xcalloc((size_t)(n > 0 ? n : 1), sizeof *t->steps);
    int i = 0;
    const cJSON *o;
    cJSON_ArrayForEach(o, steps) {
        TraceStep *s = &t->steps[i];
        t->n_steps = i + 1;  // so that trace_data_free frees what this step holds
        if (!cJSON_IsObject(o)) return fail(err, errlen, path, "steps[%d] is not an object", i);
        double step;
        int r = trace_get_number(o, "step", &step);
        if (r == 1) s->step = i + 1;
        else if (r < 0 || !isfinite(step) || step != floor(step) || fabs(step) > 2e9)
            return fail(err, errlen, path, "steps[%d].step is not an integer", i);
        else s->step = (int)step;
        if (step_number(o, "lr", &s->lr, i, err, errlen, path)) return -1;
        s->ok = -1;
        if (t->kind == TRACE_KIND_TRAIN) {
            s->loss[1] = s->time_s[1] = NAN;
            if (!cJSON_GetObjectItemCaseSensitive(o, "loss"))
                return fail(err, errlen, path, "steps[%d] has no \"loss\"", i);
            if (step_number(o, "loss", &s->loss[0], i, err, errlen, path)) return -1;
            if (step_number(o, "time_s", &s->time_s[0], i, err, errlen, path)) return -1;
        } else {
            if (step_pair(o, "loss", s->loss, 1, i, err, errlen, path)) return -1;
            if (step_pair(o, "time_s", s->time_s, 0, i, err, errlen, path)) return -1;
            const cJSON *ok = cJSON_GetObjectItemCaseSensitive(o, "ok");
            if (ok && !cJSON_IsBool(ok))
                return fail(err, errlen, path, "steps[%d].ok is not true or false", i);
            if (ok) s->ok = cJSON_IsTrue(ok);
            static const char *const maps[2] = {"max_err", "max_rel"};
            for (int m = 0; m < 2; m++) {
                const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, maps[m]);
                if (!e) continue;
                if (!cJSON_IsObject(e))
                    return fail(err, errlen, path, "steps[%d].%s is not an object", i, maps[m]);
                const cJSON *v;
                cJSON_ArrayForEach(v, e) {
                    if (!cJSON_IsNumber(v) && !cJSON_IsNull(v))
                        return fail(err, errlen, path, "steps[%d].%s.%s is not a number", i,
                                    maps[m], v->string ? text_safe_n(v->string, (size_t)-1, 100) : "?");
                }
                if (m == 0) s->max_err = e;
                else s->max_rel = e;
            }
            if (load_errors(t, s, o, i, err, errlen)) return -1;
        }
        if (i > 0 && s->step <= t->steps[i - 1].step)
            return fail(err, errlen, path, "inconsistent: steps[%d].step %d does not follow step %d", i, s->step,
                        t->steps[i - 1].step);
        i++;
    }
    t->n_steps = n;
    return 0;
}

static int load_engines(TraceData *t, char *err, size_t errlen) {
    const char *path = t->path;
    if (t->kind == TRACE_KIND_TRAIN) {
        t->n_engines = 1;
        t->engine[0] = "unknown";
        t->precision[0] = "";
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(t->root, "engine");
        if (!e) return 0;
        if (!cJSON_IsObject(e)) return fail(err, errlen, path, "\"engine\" is not a JSON object");
        const char *name = trace_get_string(e, "name"), *prec = trace_get_string(e, "precision");
        if (name) t->engine[0] = name;
        if (prec) t->precision[0] = prec;
        return 0;
    }
    t->n_engines = 2;
    t->engine[0] = "a";
    t->engine[1] = "b";
    t->precision[0] = t->precision[1] = "";
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(t->root, "engines");
    if (!e) return 0;
    if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 2)
        return fail(err, errlen, path, "\"engines\" is not an array of two engines");
    for (int k = 0; k < 2; k++) {
        const cJSON *o = cJSON_GetArrayItem(e, k);
        if (!cJSON_IsObject(o)) return fail(err, errlen, path, "engines[%d] is not an object", k);
        const char *name = trace_get_string(o, "name"), *prec = trace_get_string(o, "precision");
        if (name) t->engine[k] = name;
        if (prec) t->precision[k] = prec;
    }
    return 0;
}

// Line and column (1-based) of byte offset `off` in text.
static void line_col(const char *text, size_t off, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

// "complete", "stop_reason", "stop_step" agree with each other and the steps.
static int load_completeness(TraceData *t, char *err, size_t errlen) {
    const char *path = t->path;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(t->root, "complete");
    t->complete = -1;
    if (c && !cJSON_IsBool(c)) return fail(err, errlen, path, "\"complete\" is not true or false");
    if (c) t->complete = cJSON_IsTrue(c);
    const cJSON *why = cJSON_GetObjectItemCaseSensitive(t->root, "stop_reason");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(t->root, "stop_step");
    if (why && !cJSON_IsString(why)) return fail(err, errlen, path, "\"stop_reason\" is not a string");
    if (t->complete != 0) {
        if (why || at) return fail(err, errlen, path, "inconsistent: a complete run with a stop_reason or stop_step");
        if (t->complete == 1 && t->kind == TRACE_KIND_TRAIN) {
            double steps;
            if (trace_get_number(cJSON_GetObjectItemCaseSensitive(t->root, "settings"), "steps", &steps) == 0 &&
                steps != t->n_steps)
                return fail(err, errlen, path, "inconsistent: complete, but %d steps of the %.0f in its settings",
                            t->n_steps, steps);
        }
        return 0;
    }
    if (!why) return fail(err, errlen, path, "inconsistent: \"complete\": false without a stop_reason");
    t->stop_reason = why->valuestring;
    if (at && !cJSON_IsNull(at)) {
        double x = cJSON_IsNumber(at) ? at->valuedouble : -1;
        int last = t->n_steps ? t->steps[t->n_steps - 1].step : 0;
        if (x != floor(x) || x < 1 || x != last)
            return fail(err, errlen, path, "inconsistent: stop_step is not the last step in \"steps\" (%d)", last);
        t->stop_step = (int)x;
    } else if (at && t->n_steps) {
        return fail(err, errlen, path, "inconsistent: stop_step is null but there are steps");
    }
    return 0;
}

static int validate(TraceData *t, char *err, size_t errlen) {
    const char *path = t->path;
    cJSON *root = t->root;
    if (!cJSON_IsObject(root))
        return fail(err, errlen, path, "not a microgpt trace (the JSON is not an object)");
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!format)
        return fail(err, errlen, path, "not a microgpt trace (no \"format\": \"%s\")", TRACE_FORMAT);
    if (!cJSON_IsString(format) || strcmp(format->valuestring, TRACE_FORMAT) != 0)
        return fail(err, errlen, path, "not a microgpt trace (\"format\" is not \"%s\")",
                    TRACE_FORMAT);
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (!cJSON_IsNumber(version))
        return fail(err, errlen, path, "malformed trace: \"version\" is missing or not a number");
    if (version->valuedouble != TRACE_VERSION) {
        char v[32];
        trace_format_number(version->valuedouble, v);
        return fail(err, errlen, path, "unsupported trace version %s (this tool reads version %d)",
                    v, TRACE_VERSION);
    }
    const char *kind = trace_get_string(root, "kind");
    if (!kind) return fail(err, errlen, path, "malformed trace: \"kind\" is missing or not a string");
    if (!strcmp(kind, "train")) t->kind = TRACE_KIND_TRAIN;
    else if (!strcmp(kind, "compare")) t->kind = TRACE_KIND_COMPARE;
    else if (!strcmp(kind, "bench")) {
        t->kind = TRACE_KIND_BENCH;
        return check_bench(t, err, errlen);
    } else
        return fail(err, errlen, path,
                    "unsupported trace kind \"%s\" (this tool reads \"train\", \"compare\" and \"bench\")",
                    text_safe_n(kind, (size_t)-1, 100));
    static const char *const objects[] = {"settings", "dataset", "tolerances", "first_failure",
                                          "drift", "final_params", "bench"};
    for (size_t k = 0; k < sizeof objects / sizeof *objects; k++) {
        if (!strcmp(objects[k], "first_failure") &&
            cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "first_failure")))
            continue;
        if (check_object(root, objects[k], err, errlen, path)) return -1;
    }
    const cJSON *samples = cJSON_GetObjectItemCaseSensitive(root, "samples");
    if (samples) {
        if (!cJSON_IsArray(samples)) return fail(err, errlen, path, "\"samples\" is not an array");
        int i = 0;
        const cJSON *s;
        cJSON_ArrayForEach(s, samples) {
            if (!cJSON_IsString(s)) return fail(err, errlen, path, "samples[%d] is not a string", i);
            i++;
        }
    }
    const cJSON *verdict = cJSON_GetObjectItemCaseSensitive(root, "verdict");
    if (verdict && !cJSON_IsString(verdict))
        return fail(err, errlen, path, "\"verdict\" is not a string");
    if (load_engines(t, err, errlen)) return -1;
    if (load_steps(t, err, errlen)) return -1;
    return load_completeness(t, err, errlen);
}

int trace_load_text(TraceData *t, const char *path, const char *text, size_t len, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    t->complete = -1;
    if (len == 0 || strspn(text, " \t\r\n") >= len)
        return fail(err, errlen, path, "is empty, not a JSON trace");
    const char *nul = memchr(text, '\0', len);
    if (nul)
        return fail(err, errlen, path, "not JSON (a NUL byte at offset %zu: a binary file?)",
                    (size_t)(nul - text));
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        int line, col;
        line_col(text, off, &line, &col);
        if (off >= len)
            return fail(err, errlen, path, "not JSON (the text ends early: truncated?)");
        return fail(err, errlen, path, "not JSON (syntax error at line %d, column %d)", line, col);
    }
    // a key twice: this reader would take the first, Python's json the last
    const char *dup;
    char where[200];
    if (json_duplicate_key(root, &dup, where, sizeof where)) {
        fail(err, errlen, path, "the key \"%s\" appears twice in %s (JSON readers differ on which one counts: "
             "Python's takes the last, this tool would take the first); remove one", text_safe_n(dup, (size_t)-1, 100),
             where[0] ? text_safe_n(where, (size_t)-1, 150) : "the top-level object");
        cJSON_Delete(root);
        return -1;
    }
    t->path = xstrdup(path);
    t->root = root;
    if (validate(t, err, errlen)) {
        trace_data_free(t);
        return -1;
    }
    return 0;
}

int trace_load(TraceData *t, const char *path, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    size_t len = 0;
    char *text = read_all(path, &len, err, errlen);
    if (!text) return -1;
    outfile_note_input(path);
    int rc = trace_load_text(t, path, text, len, err, errlen);
    free(text);
    return rc;
}

void trace_data_free(TraceData *t) {
    for (int i = 0; t->steps && i < t->n_steps; i++) free(t->steps[i].errors);
    cJSON_Delete(t->derived);
    cJSON_Delete(t->root);
    free(t->path);
    free(t->steps);
    memset(t, 0, sizeof *t);
}
