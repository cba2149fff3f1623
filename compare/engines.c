#include "engines.h"

#include <stdio.h>
#include <string.h>

#include "scalar_ref/engine_scalar.h"
#include "tensor_gpu/cpu/engine_cpu.h"
#include "tensor_gpu/cuda/engine_cuda.h"

int engine_known(const char *name) {
    return !strcmp(name, "scalar") || !strcmp(name, "cpu") || !strcmp(name, "cuda");
}

int engine_supports(const char *name, Precision p) { return strcmp(name, "scalar") || p == PREC_FP64; }

Engine *engine_new(const char *name, const EngineConfig *cfg, const double *init, char *err, size_t errlen) {
    if (!strcmp(name, "scalar")) {
        EngineConfig c = *cfg;
        c.precision = PREC_FP64;
        return scalar_engine_create(&c, init);
    }
    if (!strcmp(name, "cpu")) return cpu_engine_create(cfg, init, err, errlen);
    if (!strcmp(name, "cuda")) return cuda_engine_create(cfg, init, err, errlen);
    snprintf(err, errlen, "unknown engine '%s' (scalar, cpu or cuda)", name);
    return NULL;
}
