#include "engine.h"

#include <math.h>
#include <string.h>

static const char *const FAULT_NAMES[FAULT_NUM] = {
    "none", "attn-scale", "causal-mask", "rmsnorm-bwd", "grad-sign", "adam-bias"};

const char *fault_name(Fault f) { return (f >= 0 && f < FAULT_NUM) ? FAULT_NAMES[f] : "?"; }

Fault fault_from_name(const char *name) {
    for (int f = 0; f < FAULT_NUM; f++)
        if (!strcmp(name, FAULT_NAMES[f])) return (Fault)f;
    return FAULT_NUM;
}

int engine_sample_token(PyRandom *r, double *w, int V, double temperature) {
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
    return (int)pyrandom_choice_weighted(r, w, (size_t)V);
}
