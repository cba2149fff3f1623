#include "trace.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic_file.h"
#include "common/interrupt.h"
#include "common/util.h"
#include "trace_read.h"

// The trace die() writes.
static Trace *g_live;
// --pretty: indented (cJSON's tabs) instead of compact
static int g_pretty;

static void on_die(int code, const char *msg) {
    (void)code;
    if (g_live) trace_stop(g_live, msg);
}

void trace_open(Trace *t, const char *path, const char *kind) {
    memset(t, 0, sizeof *t);
    char err[512];
    if (outfile_open(&t->out, path, err, sizeof err)) die(EXIT_USAGE, "--trace %s: %s", path_short(path), err);
    t->path = xstrdup(path);
    t->root = cJSON_CreateObject();
    cJSON_AddStringToObject(t->root, "format", TRACE_FORMAT);
    cJSON_AddNumberToObject(t->root, "version", TRACE_VERSION);
    cJSON_AddStringToObject(t->root, "kind", kind);
    cJSON_AddFalseToObject(t->root, "complete");
    g_live = t;
    add_die_hook(on_die);
}

static void trace_release(Trace *t) {
    if (g_live == t) {
        g_live = NULL;
        remove_die_hook(on_die);
    }
    cJSON_Delete(t->root);
    free(t->path);
    memset(t, 0, sizeof *t);
}

void trace_abandon(Trace *t) {
    if (t->path) trace_release(t);
}

void trace_set_pretty(int on) { g_pretty = on != 0; }

// Serialize (compact: no whitespace; --pretty: indented) and write; 0, or -1
// with the reason in err.
static int trace_write(Trace *t, char *err, size_t errlen) {
    char *text = g_pretty ? cJSON_Print(t->root) : cJSON_PrintUnformatted(t->root);
    if (!text) {
        snprintf(err, errlen, "out of memory while serializing");
        return -1;
    }
    size_t len = strlen(text);
    text[len] = '\n';  // replaces the NUL: the file ends with a newline
    int rc = outfile_write(&t->out, text, len + 1, err, errlen);
    free(text);
    return rc;
}

void trace_commit(Trace *t) {
    cJSON_ReplaceItemInObject(t->root, "complete", cJSON_CreateTrue());
    char err[512], path[4096];
    snprintf(path, sizeof path, "%s", t->path);
    int rc = trace_write(t, err, sizeof err);
    trace_release(t);
    if (rc) die(EXIT_MISMATCH, "--trace %s: could not write the trace: %s", path_short(path), err);
}

int trace_stop(Trace *t, const char *reason) {
    if (!t->path) return 0;
    cJSON_AddStringToObject(t->root, "stop_reason", reason);
    if (t->step > 0) cJSON_AddNumberToObject(t->root, "stop_step", t->step);
    else cJSON_AddNullToObject(t->root, "stop_step");
    char err[512];
    int rc = trace_write(t, err, sizeof err);
    if (rc) fprintf(stderr, "%s: --trace %s: could not write the trace: %s\n", prog_name(), path_short(t->path), err);
    trace_release(t);
    return rc;
}

void trace_exit_on_signal(Trace *t, int sig) {
    char reason[96];
    snprintf(reason, sizeof reason, "interrupted by %s", interrupt_signal_name(sig));
    fflush(stdout);
    fprintf(stderr, "%s: %s after step %d; the trace so far is in %s\n", prog_name(), reason, t->step,
            t->path);
    trace_stop(t, reason);  // puts the handlers found back
    raise(sig);
    _exit(128 + sig);
}

cJSON *trace_number(double x) {
    if (!isfinite(x)) return cJSON_CreateNull();
    // cJSON's own printing checks its round trip only to within an epsilon;
    // print the shortest text that strtod turns back into the same bits.
    char buf[32];
    trace_format_number(x, buf);
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
    cJSON_AddStringToObject(o, "loss", loss_name(s->token_mean));
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

cJSON *trace_train_header(Trace *t, const Settings *s, const ModelShape *m, const Dataset *d, size_t n_params) {
    cJSON_AddItemToObject(t->root, "settings", trace_settings(s, m));
    cJSON_AddItemToObject(t->root, "dataset", trace_dataset(d));
    cJSON *eng = cJSON_AddObjectToObject(t->root, "engine");
    cJSON_AddStringToObject(eng, "name", "scalar");
    cJSON_AddStringToObject(eng, "precision", "fp64");
    cJSON_AddNumberToObject(t->root, "num_params", (double)n_params);
    return cJSON_AddArrayToObject(t->root, "steps");
}
