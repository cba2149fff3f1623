// An engine plugin: the smallest one this tree can build. It exports the CPU
// tensor engine through the engine ABI, so that
//     build/compare --engines scalar,plugin:build/libmicrogpt_example_engine.so
// runs it through dlopen exactly as it runs an outside engine (the test
// checks it in lockstep against the scalar engine). An engine of your own
// fills the mg_engine_abi table with its own functions instead:
// docs/outside_engines.md, "C, C++ and CUDA".
#include <microgpt/engine_abi.h>

#include "common/engine_export.h"
#include "tensor_gpu/cpu/engine_cpu.h"

MG_EXPORT const mg_engine_abi *microgpt_engine_abi_v1(void) {
    return engine_export("example-cpu", cpu_engine_create);
}
