// Plugin engines: a shared library exporting microgpt_engine_abi_v1
// (include/microgpt/engine_abi.h), wrapped as an Engine.
#include "plugin_engine.h"

#include <dlfcn.h>
#include <stddef.h>
#include <microgpt/engine_abi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

typedef struct {
    Engine base;
    EngineOps ops;
    const mg_engine_abi *abi;
    mg_engine *impl;
    mg_tensor_info *ti;
    mg_batch *runs;     // run_steps' batches
    char *label;        // "plugin:PATH (name)"
    char *name;         // the table's name, as it may reach a terminal (text_safe)
} Plugin;

static Plugin *P(Engine *e) { return (Plugin *)e; }

// After every call: a plugin that says something went wrong stops the run.
static void check(Plugin *p, const char *call) {
    const char *msg = p->abi->error ? p->abi->error(p->impl) : NULL;
    if (msg) die(EXIT_MISMATCH, "engine %s: %s failed: %s", p->label, call, text_safe(msg));   // shown safely
}

static mg_batch to_mg(const Batch *b) { return (mg_batch){.B = b->B, .T = b->T, .n = b->n, .tokens = b->tokens}; }

static void p_destroy(Engine *e) {
    Plugin *p = P(e);
    p->abi->destroy(p->impl);
    // the library stays loaded: CUDA runtimes misbehave when unloaded before exit
    free(p->ti);
    free(p->runs);
    free(p->label);
    free(p->name);
    free(p);
}

static double p_step(Engine *e, const Batch *b, int step) {
    mg_batch m = to_mg(b);
    double loss = P(e)->abi->step(P(e)->impl, &m, step);
    check(P(e), "step");
    return loss;
}

#define FORWARD(fn, entry)                        \
    static void fn(Engine *e, double *out) {      \
        P(e)->abi->entry(P(e)->impl, out);        \
        check(P(e), #entry);                      \
    }
FORWARD(p_logits, get_logits)
FORWARD(p_grads, get_grads)
FORWARD(p_params, get_params)
FORWARD(p_relu, get_relu_inputs)
#undef FORWARD

static void p_moments(Engine *e, double *m, double *v) {
    P(e)->abi->get_moments(P(e)->impl, m, v);
    check(P(e), "get_moments");
}

static void p_set_state(Engine *e, const double *params, const double *m, const double *v) {
    // what it does not offer is never passed (docs/outside_engines.md, "Partial engines")
    if (e->ops->params_only && (m || v))
        die(EXIT_MISMATCH, "engine %s: set_state was about to pass Adam moments to an engine that takes none (its "
            "offers() leaves out MG_OFFERS_SET_MOMENTS); this caller cannot run such an engine", P(e)->label);
    P(e)->abi->set_state(P(e)->impl, params, m, v);
    check(P(e), "set_state");
}

static int sample_token(void *rng, double *logits, int V, double temperature) {
    return engine_sample_token((PyRandom *)rng, logits, V, temperature);
}

static int p_sample(Engine *e, PyRandom *r, double temperature, int *out) {
    mg_sampler s = {.rng = r, .sample_token = sample_token};
    int n = P(e)->abi->sample(P(e)->impl, &s, temperature, out);
    check(P(e), "sample");
    if (n < 0 || n > e->cfg.L->shape.block_size)
        die(EXIT_MISMATCH, "engine %s: sample returned %d tokens (0 to block_size %d)", P(e)->label, n,
            e->cfg.L->shape.block_size);
    char why[128];
    if (engine_check_sample(out, n, e->cfg.L->shape.vocab_size, why, sizeof why))   // they index the vocabulary
        die(EXIT_MISMATCH, "engine %s: sample: %s", P(e)->label, why);
    return n;
}

static const char *p_device(Engine *e) { return P(e)->abi->device(P(e)->impl); }

static size_t p_device_bytes(Engine *e) { return P(e)->abi->device_bytes(P(e)->impl); }

static int p_step_skipped(Engine *e, double *scale) { return P(e)->abi->step_skipped(P(e)->impl, scale); }

static int p_activation(Engine *e, int op, int grad, double *out) {
    const int rc = P(e)->abi->get_activation(P(e)->impl, op, grad, out);
    check(P(e), "get_activation");
    return rc;
}

static int p_run_steps(Engine *e, const Batch *b, int first, int n, double *losses, double *seconds) {
    Plugin *p = P(e);
    p->runs = xrealloc(p->runs, (size_t)(n > 0 ? n : 1) * sizeof *p->runs);
    for (int i = 0; i < n; i++) p->runs[i] = to_mg(&b[i]);
    int rc = p->abi->run_steps(p->impl, p->runs, first, n, losses, seconds);
    check(p, "run_steps");
    return rc;
}

// The entries every plugin must fill (get_logits and get_moments may be
// NULL: a partial engine that does not offer them).
static const char *missing_entry(const mg_engine_abi *a) {
    const struct { const void *f; const char *name; } req[] = {
        {(const void *)a->create, "create"},         {(const void *)a->destroy, "destroy"},
        {(const void *)a->step, "step"},             {(const void *)a->get_grads, "get_grads"},
        {(const void *)a->get_params, "get_params"}, {(const void *)a->set_state, "set_state"},
        {(const void *)a->sample, "sample"}};
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        if (!req[i].f) return req[i].name;
    return NULL;
}

Engine *plugin_engine_create(const char *path, const EngineConfig *cfg, const double *init, char *err,
                             size_t errlen) {
    dlerror();
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        const char *why = dlerror();
        snprintf(err, errlen, "cannot load the plugin %s: %s%s", path, why ? why : "dlopen failed",
                 strchr(path, '/') ? "" : " (a path without '/' is searched for in LD_LIBRARY_PATH: write ./NAME.so)");
        return NULL;
    }
    dlerror();
    void *sym = dlsym(dl, MICROGPT_ENGINE_ABI_SYMBOL);
    const char *why = dlerror();
    if (why || !sym) {
        snprintf(err, errlen, "the plugin %s does not export %s (%s): build it against include/microgpt/engine_abi.h "
                 "and export that function (MG_EXPORT, extern \"C\" in C++)", path, MICROGPT_ENGINE_ABI_SYMBOL,
                 why ? why : "NULL");
        return NULL;
    }
    mg_engine_abi_entry entry;
    memcpy(&entry, &sym, sizeof entry);   // object pointer to function pointer, as POSIX allows
    const mg_engine_abi *abi = entry();
    if (!abi) {
        snprintf(err, errlen, "the plugin %s: %s() returned NULL", path, MICROGPT_ENGINE_ABI_SYMBOL);
        return NULL;
    }
    if (abi->abi_version != MICROGPT_ENGINE_ABI_VERSION) {
        snprintf(err, errlen, "the plugin %s speaks engine ABI version %u; this compare speaks version %d: rebuild "
                 "it against this tree's include/microgpt/engine_abi.h", path, (unsigned)abi->abi_version,
                 MICROGPT_ENGINE_ABI_VERSION);
        return NULL;
    }
    // a table from before step_skipped (the last entry) ends where it begins
    const size_t has_skipped = offsetof(mg_engine_abi, step_skipped) + sizeof abi->step_skipped;
    const size_t has_acts = offsetof(mg_engine_abi, get_activation) + sizeof abi->get_activation;
    const size_t has_offers = offsetof(mg_engine_abi, offers) + sizeof abi->offers;
    if (abi->size < offsetof(mg_engine_abi, step_skipped)) {
        snprintf(err, errlen, "the plugin %s: its ABI table has %u bytes, version %d has %zu: rebuild it against "
                 "this tree's include/microgpt/engine_abi.h", path, (unsigned)abi->size, MICROGPT_ENGINE_ABI_VERSION,
                 sizeof(mg_engine_abi));
        return NULL;
    }
    const char *miss = missing_entry(abi);
    if (miss) {
        snprintf(err, errlen, "the plugin %s: its ABI table has no '%s' (required)", path, miss);
        return NULL;
    }
    const ParamLayout *L = cfg->L;
    const ModelShape *m = &L->shape;
    Plugin *p = xcalloc(1, sizeof *p);
    p->abi = abi;
    p->ti = xcalloc((size_t)L->n_tensors, sizeof *p->ti);
    for (int k = 0; k < L->n_tensors; k++)
        p->ti[k] = (mg_tensor_info){.name = L->t[k].name, .rows = L->t[k].rows, .cols = L->t[k].cols,
                                    .offset = L->t[k].offset, .size = L->t[k].size};
    const Settings *s = cfg->s;
    mg_config c = {.vocab_size = m->vocab_size, .n_embd = m->n_embd, .n_head = m->n_head,
                   .n_kv_head = m->n_kv_head, .head_dim = m->head_dim, .n_layer = m->n_layer,
                   .block_size = m->block_size, .steps = s->steps, .lr = s->lr, .beta1 = s->beta1,
                   .beta2 = s->beta2, .eps = s->eps, .precision = (int)cfg->precision,
                   .max_batch = cfg->max_batch, .fault = (int)cfg->fault, .n_params = L->n_params,
                   .n_tensors = L->n_tensors, .tensors = p->ti, .loss_scale = cfg->loss_scale,
                   .activations = cfg->activations, .fault_op = cfg->fault_op, .token_mean = s->token_mean};
    char e2[512] = "";
    p->impl = abi->create(&c, init, e2, sizeof e2);
    // a message that fills the buffer without its NUL is cut there, not read past
    const int cut = !memchr(e2, '\0', sizeof e2);
    e2[sizeof e2 - 1] = '\0';
    if (!p->impl) {
        if (cut)
            snprintf(err, errlen, "the plugin's create() message has no terminating NUL; cut at %zu bytes: %s",
                     sizeof e2 - 1, text_safe(e2));
        else
            snprintf(err, errlen, "%s", e2[0] ? text_safe(e2) : "the plugin's create() returned NULL without a message");
        free(p->ti);
        free(p);
        return NULL;
    }
    const char *name = abi->name ? text_safe_n(abi->name, (size_t)-1, 100) : "?";   // shown in messages
    size_t ll = strlen(path) + strlen(name) + 16;
    p->label = xmalloc(ll);
    snprintf(p->label, ll, "plugin:%s (%s)", path, name);
    // what it offers (read after create, as the other optional entries): an
    // entry left NULL or out of offers() is never called
    unsigned offers = MG_OFFERS_ALL;
    if (abi->size >= has_offers && abi->offers) {
        offers = abi->offers(p->impl);
        check(p, "offers");
    }
    const int logits = abi->get_logits && (offers & MG_OFFERS_LOGITS);
    const int moments = abi->get_moments && (offers & MG_OFFERS_MOMENTS);
    p->name = xstrdup(abi->name ? name : "plugin");
    p->ops = (EngineOps){.name = p->name, .destroy = p_destroy, .step = p_step,
                         .get_logits = logits ? p_logits : NULL, .get_grads = p_grads, .get_params = p_params,
                         .get_moments = moments ? p_moments : NULL, .set_state = p_set_state, .sample = p_sample,
                         .params_only = !(offers & MG_OFFERS_SET_MOMENTS),
                         .device = abi->device ? p_device : NULL,
                         .get_relu_inputs = abi->get_relu_inputs ? p_relu : NULL,
                         .run_steps = abi->run_steps ? p_run_steps : NULL,
                         .device_bytes = abi->device_bytes ? p_device_bytes : NULL,
                         .step_skipped = abi->size >= has_skipped && abi->step_skipped ? p_step_skipped : NULL,
                         .get_activation = abi->size >= has_acts && abi->get_activation ? p_activation : NULL};
    p->base.ops = &p->ops;
    p->base.cfg = *cfg;
    return &p->base;
}
