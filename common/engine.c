#include "engine.h"

#include <string.h>

static const char *const FAULT_NAMES[FAULT_NUM] = {
    "none", "attn-scale", "causal-mask", "rmsnorm-bwd", "grad-sign", "adam-bias"};

const char *fault_name(Fault f) { return (f >= 0 && f < FAULT_NUM) ? FAULT_NAMES[f] : "?"; }

Fault fault_from_name(const char *name) {
    for (int f = 0; f < FAULT_NUM; f++)
        if (!strcmp(name, FAULT_NAMES[f])) return (Fault)f;
    return FAULT_NUM;
}
