// The CUDA backend as an engine plugin (include/microgpt/engine_abi.h):
// build/libmicrogpt_cuda_engine.so, which compare loads only when `cuda` is
// asked for, so that cuBLAS and the CUDA runtime load only then.
#include "common/engine_export.h"
#include "engine_cuda.h"

MG_EXPORT const mg_engine_abi *microgpt_engine_abi_v1(void) { return engine_export("cuda", cuda_engine_create); }
