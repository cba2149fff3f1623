// Engines compare loads from a shared library (include/microgpt/engine_abi.h)
// or runs as another process (docs/outside_engines.md).
#ifndef COMPARE_PLUGIN_ENGINE_H
#define COMPARE_PLUGIN_ENGINE_H

#include <stddef.h>

#include "common/engine.h"

// dlopen path, check its ABI table and create its engine; NULL with a message
// in err that names the path and what is wrong (dlopen's own text, a missing
// symbol, another ABI version, a NULL entry, the plugin's refusal).
Engine *plugin_engine_create(const char *path, const EngineConfig *cfg, const double *init, char *err,
                             size_t errlen);

// Start `/bin/sh -c "exec CMD"` and speak the process protocol with it; NULL
// with a message if it cannot start or refuses the configuration. Later
// failures (the process dies, hangs past the timeout, sends malformed or short
// data) stop compare with exit code 1 and a message naming what was expected;
// the process is always reaped.
Engine *exec_engine_create(const char *cmd, const EngineConfig *cfg, const double *init, char *err,
                           size_t errlen);
// Seconds to wait for each reply (compare --exec-timeout; default 60).
void exec_engine_set_timeout(double seconds);

#endif
