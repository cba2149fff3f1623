#include "trace.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic_file.h"
#include "common/util.h"

void trace_open(Trace *t, const char *path, const char *kind) {
    memset(t, 0, sizeof *t);
    char err[256];
    if (atomic_begin(path, err, sizeof err)) die(EXIT_USAGE, "--trace %s: %s", path, err);
    t->path = xstrdup(path);
    t->root = cJSON_CreateObject();
    cJSON_AddStringToObject(t->root, "format", TRACE_FORMAT);
    cJSON_AddNumberToObject(t->root, "version", TRACE_VERSION);
    cJSON_AddStringToObject(t->root, "kind", kind);
}

static void trace_release(Trace *t) {
    cJSON_Delete(t->root);
    free(t->path);
    memset(t, 0, sizeof *t);
}

void trace_abandon(Trace *t) {
    if (!t->path) return;
    atomic_abandon();
    trace_release(t);
}

void trace_commit(Trace *t) {
    char *text = cJSON_Print(t->root);
    if (!text) {
        trace_abandon(t);
        die(EXIT_MISMATCH, "trace: out of memory while serializing");
    }
    size_t len = strlen(text);
    text[len] = '\n';  // replaces the NUL: the file ends with a newline
    char err[256], path[4096];
    snprintf(path, sizeof path, "%s", t->path);
    int rc = atomic_commit(text, len + 1, err, sizeof err);
    free(text);
    trace_release(t);
    if (rc) die(EXIT_MISMATCH, "--trace %s: could not write the trace: %s", path, err);
}

cJSON *trace_number(double x) {
    if (!isfinite(x)) return cJSON_CreateNull();
    // cJSON's own printing checks its round trip only to within an epsilon;
    // print the shortest text that strtod turns back into the same bits.
    char buf[32];
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, x);
        if (strtod(buf, NULL) == x) break;
    }
    return cJSON_CreateRaw(buf);
}

cJSON *trace_add_number(cJSON *obj, const char *name, double x) {
    cJSON *n = trace_number(x);
    cJSON_AddItemToObject(obj, name, n);
    return n;
}

cJSON *trace_settings(const Settings *s, const ModelShape *m) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "seed", s->seed);
    cJSON_AddNumberToObject(o, "steps", s->steps);
    cJSON_AddNumberToObject(o, "batch", s->batch);
    cJSON_AddNumberToObject(o, "n_embd", m->n_embd);
    cJSON_AddNumberToObject(o, "n_head", m->n_head);
    cJSON_AddNumberToObject(o, "n_kv_head", m->n_kv_head);
    cJSON_AddNumberToObject(o, "head_dim", m->head_dim);
    cJSON_AddNumberToObject(o, "n_layer", m->n_layer);
    cJSON_AddNumberToObject(o, "block_size", m->block_size);
    cJSON_AddNumberToObject(o, "vocab_size", m->vocab_size);
    trace_add_number(o, "lr", s->lr);
    trace_add_number(o, "beta1", s->beta1);
    trace_add_number(o, "beta2", s->beta2);
    trace_add_number(o, "eps", s->eps);
    trace_add_number(o, "init_std", s->init_std);
    trace_add_number(o, "temperature", s->temperature);
    cJSON_AddNumberToObject(o, "samples", s->samples);
    return o;
}

cJSON *trace_dataset(const Dataset *d) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", d->path);
    cJSON_AddNumberToObject(o, "bytes", (double)d->n_bytes);
    cJSON_AddStringToObject(o, "sha256", d->sha256);
    cJSON_AddNumberToObject(o, "documents", d->n_docs);
    cJSON_AddNumberToObject(o, "vocab_size", d->vocab_size);
    // The characters in vocabulary order (token id = index), as code points.
    cJSON *v = cJSON_AddArrayToObject(o, "vocab_codepoints");
    for (int i = 0; i < d->n_chars; i++) cJSON_AddItemToArray(v, cJSON_CreateNumber(d->vocab[i]));
    return o;
}
