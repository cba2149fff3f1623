// The engines compare can run, by name.
#ifndef COMPARE_ENGINES_H
#define COMPARE_ENGINES_H

#include <stddef.h>

#include "common/engine.h"

// "scalar", "cpu" or "cuda"; 1 if the name is known.
int engine_known(const char *name);
// 1 if the engine computes in the given precision (the scalar engine: fp64 only).
int engine_supports(const char *name, Precision p);
// Create an engine; NULL with a message in err (e.g. no GPU).
Engine *engine_new(const char *name, const EngineConfig *cfg, const double *init, char *err, size_t errlen);

#endif
