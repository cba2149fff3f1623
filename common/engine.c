#include "engine.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

static const char *const FAULT_NAMES[FAULT_NUM] = {
    "none", "attn-scale", "causal-mask", "rmsnorm-bwd", "grad-sign", "adam-bias", "small-grads", "lowp-truncate",
    "op-fwd", "op-bwd"};

static const char *const PREC_NAMES[PREC_NUM] = {"fp64", "fp32", "bf16", "fp16", "tf32"};

const char *precision_name(Precision p) { return (p >= 0 && p < PREC_NUM) ? PREC_NAMES[p] : "?"; }

Precision precision_from_name(const char *name) {
    for (int p = 0; p < PREC_NUM; p++)
        if (!strcmp(name, PREC_NAMES[p])) return (Precision)p;
    return PREC_NUM;
}

int precision_is_mixed(Precision p) { return p == PREC_BF16 || p == PREC_FP16 || p == PREC_TF32; }

const char *fault_name(Fault f) { return (f >= 0 && f < FAULT_NUM) ? FAULT_NAMES[f] : "?"; }

Fault fault_from_name(const char *name) {
    for (int f = 0; f < FAULT_NUM; f++)
        if (!strcmp(name, FAULT_NAMES[f])) return (Fault)f;
    return FAULT_NUM;
}

void engine_sample_probs(double *w, int V, double temperature) {
    const double inv_t = pow(temperature, -1.0);  // l / temperature is l * temperature**-1
    double mx = -INFINITY;
    for (int i = 0; i < V; i++) {
        w[i] *= inv_t;
        if (w[i] > mx) mx = w[i];
    }
    double total = 0;
    for (int i = 0; i < V; i++) {
        w[i] = exp(w[i] - mx);
        total += w[i];
    }
    const double inv = 1.0 / total;
    for (int i = 0; i < V; i++) w[i] *= inv;
}

int engine_check_sample(const int *tok, int n, int V, char *err, size_t errlen) {
    for (int i = 0; i < n; i++)
        if (tok[i] < 0 || tok[i] >= V - 1) {
            snprintf(err, errlen, "token %d is %d, not a character id (0 to %d; BOS ends a sample)", i, tok[i], V - 2);
            return -1;
        }
    return 0;
}

int engine_sample_token(PyRandom *r, double *w, int V, double temperature) {
    engine_sample_probs(w, V, temperature);
    return (int)pyrandom_choice_weighted(r, w, (size_t)V);
}

static int config_fail(char *err, size_t errlen, const char *engine, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int config_fail(char *err, size_t errlen, const char *engine, const char *fmt, ...) {
    int k = snprintf(err, errlen, "%s engine: ", engine);
    if (k < 0 || (size_t)k >= errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

int engine_config_check(const EngineConfig *cfg, const double *init_params, const char *engine, char *err,
                        size_t errlen) {
    if (!cfg || !cfg->s || !cfg->L) return config_fail(err, errlen, engine, "config without settings or parameter layout");
    if (!init_params) return config_fail(err, errlen, engine, "no initial parameters");
    if ((int)cfg->precision < 0 || cfg->precision >= PREC_NUM)
        return config_fail(err, errlen, engine, "unknown precision %d (fp64, fp32, bf16, fp16 or tf32)",
                           (int)cfg->precision);
    if ((int)cfg->fault < 0 || cfg->fault >= FAULT_NUM)
        return config_fail(err, errlen, engine, "unknown fault %d", (int)cfg->fault);
    if (cfg->max_batch < 1)
        return config_fail(err, errlen, engine, "max_batch must be at least 1 (got %d)", cfg->max_batch);
    const ModelShape *m = &cfg->L->shape;
    if (m->vocab_size < 1 || m->n_embd < 1 || m->n_head < 1 || m->n_kv_head < 1 || m->head_dim < 1 ||
        m->n_layer < 0 || m->block_size < 1)
        return config_fail(err, errlen, engine, "bad model shape (V %d, C %d, NH %d, NKV %d, HS %d, L %d, T %d)",
                           m->vocab_size, m->n_embd, m->n_head, m->n_kv_head, m->head_dim, m->n_layer,
                           m->block_size);
    if (m->n_head * m->head_dim != m->n_embd)
        return config_fail(err, errlen, engine, "n_head %d * head_dim %d != n_embd %d", m->n_head, m->head_dim,
                           m->n_embd);
    if (m->n_head % m->n_kv_head)
        return config_fail(err, errlen, engine, "n_kv_head %d does not divide n_head %d", m->n_kv_head, m->n_head);
    return 0;
}

void engine_set_state(Engine *e, const double *params, const double *m, const double *v) {
    const int takes = engine_takes_moments(e);
    e->ops->set_state(e, params, takes ? m : NULL, takes ? v : NULL);
}

int engine_offers_logits(const Engine *e) { return e->ops->get_logits != NULL; }
int engine_offers_moments(const Engine *e) { return e->ops->get_moments != NULL; }
int engine_takes_moments(const Engine *e) { return !e->ops->params_only; }

void engine_check_finite(Engine *e, const ParamLayout *L, double *buf, int step) {
    static const char *const what[2] = {"gradient", "updated parameter"};
    for (int k = 0; k < 2; k++) {
        if (k == 0) e->ops->get_grads(e, buf);
        else e->ops->get_params(e, buf);
        for (size_t i = 0; i < L->n_params; i++) {
            if (isfinite(buf[i])) continue;
            char where[128];
            layout_describe(L, i, where, sizeof where);
            die(EXIT_MISMATCH, "step %d: the %s %s is %g, not finite: training diverged; try a smaller --lr",
                step, what[k], where, buf[i]);
        }
    }
}
