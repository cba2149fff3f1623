// An in-tree engine behind the plugin ABI: each ABI call converts its
// arguments (mg_config -> Settings and ParamLayout, mg_batch -> Batch) and
// calls the engine's ops.
#include "engine_export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

// mg_config.precision carries a Precision as it is
_Static_assert((int)MG_FP64 == (int)PREC_FP64 && (int)MG_FP32 == (int)PREC_FP32 && (int)MG_BF16 == (int)PREC_BF16 &&
                   (int)MG_FP16 == (int)PREC_FP16 && (int)MG_TF32 == (int)PREC_TF32,
               "the ABI's precision values are common/engine.h's");

struct mg_engine {
    Engine *e;
    Settings s;
    ParamLayout L;
};

static EngineCreate g_create;
static mg_engine_abi g_abi;

static void x_relu(mg_engine *m, double *out);
static size_t x_bytes(mg_engine *m);
static int x_skipped(mg_engine *m, double *scale);
static int x_activation(mg_engine *m, int op, int grad, double *out);
static int x_run_steps(mg_engine *m, const mg_batch *b, int first, int n, double *losses, double *seconds);
static void x_logits(mg_engine *m, double *out);
static void x_moments(mg_engine *m, double *a, double *b);
static unsigned x_offers(mg_engine *m);

static Batch to_batch(const mg_batch *b) {
    // the engines only read a batch (doc is the harness's bookkeeping)
    return (Batch){.B = b->B, .T = b->T, .n = (int *)b->n, .tokens = (int *)b->tokens, .doc = NULL};
}

static mg_engine *x_create(const mg_config *c, const double *init, char *err, size_t errlen) {
    // this library has its own copy of common/util: its fatal messages carry
    // the name of the program that loaded it
    static char exe[4096];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) exe[k] = '\0', set_prog_name(exe);
    mg_engine *m = calloc(1, sizeof *m);
    if (!m) return snprintf(err, errlen, "out of memory"), NULL;
    settings_defaults(&m->s);
    m->s.steps = c->steps;
    m->s.lr = c->lr, m->s.beta1 = c->beta1, m->s.beta2 = c->beta2, m->s.eps = c->eps;
    m->s.n_embd = c->n_embd, m->s.n_head = c->n_head, m->s.n_kv_head = c->n_kv_head;
    m->s.n_layer = c->n_layer, m->s.block_size = c->block_size, m->s.batch = c->max_batch;
    m->s.token_mean = c->token_mean;
    ModelShape sh = {.vocab_size = c->vocab_size, .n_embd = c->n_embd, .n_head = c->n_head,
                     .n_kv_head = c->n_kv_head, .head_dim = c->head_dim, .n_layer = c->n_layer,
                     .block_size = c->block_size};
    layout_init(&m->L, &sh);
    if (m->L.n_params != c->n_params) {
        snprintf(err, errlen, "the harness's layout has %zu parameters, this engine's %zu (another model version?)",
                 c->n_params, m->L.n_params);
        layout_free(&m->L);
        free(m);
        return NULL;
    }
    EngineConfig cfg = {.s = &m->s, .L = &m->L, .precision = (Precision)c->precision,
                        .fault = (Fault)c->fault, .max_batch = c->max_batch, .loss_scale = c->loss_scale,
                        .activations = c->activations, .fault_op = c->fault_op};
    m->e = g_create(&cfg, init, err, errlen);
    if (!m->e) {
        layout_free(&m->L);
        free(m);
        return NULL;
    }
    // the optional entries the engine has (the harness reads them after create)
    g_abi.get_relu_inputs = m->e->ops->get_relu_inputs ? x_relu : NULL;
    g_abi.run_steps = m->e->ops->run_steps ? x_run_steps : NULL;
    g_abi.device_bytes = m->e->ops->device_bytes ? x_bytes : NULL;
    g_abi.step_skipped = m->e->ops->step_skipped ? x_skipped : NULL;
    g_abi.get_activation = m->e->ops->get_activation ? x_activation : NULL;
    // what it offers of the optional quantities (every in-tree engine: all)
    g_abi.get_logits = m->e->ops->get_logits ? x_logits : NULL;
    g_abi.get_moments = m->e->ops->get_moments ? x_moments : NULL;
    g_abi.offers = x_offers;
    return m;
}

static void x_destroy(mg_engine *m) {
    m->e->ops->destroy(m->e);
    layout_free(&m->L);
    free(m);
}

static double x_step(mg_engine *m, const mg_batch *b, int step) {
    Batch bb = to_batch(b);
    return m->e->ops->step(m->e, &bb, step);
}

static void x_logits(mg_engine *m, double *out) { m->e->ops->get_logits(m->e, out); }
static void x_grads(mg_engine *m, double *out) { m->e->ops->get_grads(m->e, out); }
static void x_params(mg_engine *m, double *out) { m->e->ops->get_params(m->e, out); }
static void x_moments(mg_engine *m, double *a, double *b) { m->e->ops->get_moments(m->e, a, b); }
static void x_set(mg_engine *m, const double *p, const double *a, const double *b) {
    m->e->ops->set_state(m->e, p, a, b);
}
static unsigned x_offers(mg_engine *m) {
    const Engine *e = m->e;
    return (engine_offers_logits(e) ? MG_OFFERS_LOGITS : 0u) | (engine_offers_moments(e) ? MG_OFFERS_MOMENTS : 0u) |
           (engine_takes_moments(e) ? MG_OFFERS_SET_MOMENTS : 0u);
}
// The harness that loads these plugins is compare, whose random stream is a
// PyRandom; the in-tree engines sample with it directly (engine_sample_token
// is the same function as s->sample_token).
static int x_sample(mg_engine *m, const mg_sampler *s, double temperature, int *out) {
    return m->e->ops->sample(m->e, (PyRandom *)s->rng, temperature, out);
}
static const char *x_device(mg_engine *m) { return m->e->ops->device ? m->e->ops->device(m->e) : "cpu"; }
static void x_relu(mg_engine *m, double *out) { m->e->ops->get_relu_inputs(m->e, out); }
static size_t x_bytes(mg_engine *m) { return m->e->ops->device_bytes(m->e); }
static int x_skipped(mg_engine *m, double *scale) { return m->e->ops->step_skipped(m->e, scale); }
static int x_activation(mg_engine *m, int op, int grad, double *out) {
    return m->e->ops->get_activation(m->e, op, grad, out);
}

static int x_run_steps(mg_engine *m, const mg_batch *b, int first, int n, double *losses, double *seconds) {
    if (n < 1) return -1;
    Batch *bb = malloc((size_t)n * sizeof *bb);
    if (!bb) return -1;
    for (int i = 0; i < n; i++) bb[i] = to_batch(&b[i]);
    int rc = m->e->ops->run_steps(m->e, bb, first, n, losses, seconds);
    free(bb);
    return rc;
}

const mg_engine_abi *engine_export(const char *name, EngineCreate create) {
    g_create = create;
    g_abi = (mg_engine_abi){
        .abi_version = MICROGPT_ENGINE_ABI_VERSION, .size = sizeof(mg_engine_abi), .name = name,
        .create = x_create, .destroy = x_destroy, .step = x_step, .get_logits = x_logits, .get_grads = x_grads,
        .get_params = x_params, .get_moments = x_moments, .set_state = x_set, .sample = x_sample,
        .device = x_device, .error = NULL};
    return &g_abi;
}
