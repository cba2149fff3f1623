// Built instead of the CUDA backend when the build has no CUDA (make CUDA=0).
#include <stdio.h>

#include "engine_cuda.h"

int cuda_available(char *why, size_t n) {
    snprintf(why, n, "this build has no CUDA (rebuild with nvcc present, or `make CUDA=1`); "
             "BACKEND=cpu checks the tensor math on the CPU");
    return 0;
}

Engine *cuda_engine_create(const EngineConfig *cfg, const double *init_params, char *err, size_t errlen) {
    (void)cfg;
    (void)init_params;
    cuda_available(err, errlen);
    return NULL;
}
