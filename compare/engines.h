// The engines compare can run, by name: scalar, cpu, cuda (the CUDA backend,
// a plugin loaded only when asked for; it takes the fused step where the
// model fits, else the layered path), cuda:fused and cuda:layered (the CUDA
// backend on that path, as MICROGPT_CUDA_PATH forces it), plugin:PATH.so (any shared library
// exporting include/microgpt/engine_abi.h) and exec:CMD ARGS (a process that
// speaks docs/outside_engines.md's protocol). Names may be long.
#ifndef COMPARE_ENGINES_H
#define COMPARE_ENGINES_H

#include <stddef.h>

#include "common/engine.h"
#include "tensor_gpu/layers.h"

// cpu:ORDER (tensor_gpu/layers.h ReduceOrder: cpu:rev, cpu:pairwise,
// cpu:acc4, cpu:acc8, cpu:fma; cpu is cpu:seq): the CPU engine with its sums
// in that order. ORDER_NUM for any other name.
ReduceOrder engine_cpu_order(const char *name);
// 1 if the name is one of the above (plugin: and exec: need a non-empty rest).
int engine_known(const char *name);
// "fused" or "layered" for cuda:fused and cuda:layered, else NULL.
const char *engine_cuda_path(const char *name);
// 1 if the engine computes in the given precision (the scalar engine and
// NAME@fp64, an in-process engine held to fp64: fp64 only; the outside
// engines say so when they are created).
int engine_supports(const char *name, Precision p);
// Create an engine; NULL with a message in err (e.g. no GPU, a plugin that
// does not load).
Engine *engine_new(const char *name, const EngineConfig *cfg, const double *init, char *err, size_t errlen);
// Where the CUDA engine plugin is looked for: $MICROGPT_CUDA_ENGINE, else
// libmicrogpt_cuda_engine.so beside the running executable.
void engine_cuda_plugin_path(char *out, size_t n);

#endif
