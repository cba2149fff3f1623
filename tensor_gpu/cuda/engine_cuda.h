// The tensor engine's CUDA backend behind the engine interface.
#ifndef TENSOR_GPU_CUDA_ENGINE_CUDA_H
#define TENSOR_GPU_CUDA_ENGINE_CUDA_H

#include <stddef.h>

#include "common/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

// NULL with a message in err when there is no usable GPU (the message says so
// and that BACKEND=cpu checks the tensor math on the CPU), when the build has
// no CUDA, or when a CUDA call fails.
Engine *cuda_engine_create(const EngineConfig *cfg, const double *init_params, char *err, size_t errlen);
// 1 if a CUDA device can be used; otherwise 0 with the reason in why.
int cuda_available(char *why, size_t n);

#ifdef __cplusplus
}
#endif

#endif
