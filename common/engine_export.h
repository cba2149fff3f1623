// The engine ABI (include/microgpt/engine_abi.h) on top of an in-tree engine:
// what a plugin built from this tree (the CUDA backend, the example) exports.
#ifndef COMMON_ENGINE_EXPORT_H
#define COMMON_ENGINE_EXPORT_H

#include <microgpt/engine_abi.h>

#include "engine.h"

typedef Engine *(*EngineCreate)(const EngineConfig *cfg, const double *init, char *err, size_t errlen);

// The ABI table of an engine made by create (one per shared library).
const mg_engine_abi *engine_export(const char *name, EngineCreate create);

#endif
