#include "engines.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin_engine.h"
#include "scalar_ref/engine_scalar.h"
#include "tensor_gpu/cpu/engine_cpu.h"

#define CUDA_PLUGIN "libmicrogpt_cuda_engine.so"

static const char *after(const char *name, const char *prefix) {
    size_t n = strlen(prefix);
    return strncmp(name, prefix, n) ? NULL : name + n;
}

// NAME@fp64: a tensor engine held to fp64 whatever --precision says (a fast
// fp64 reference where the scalar engine is too slow or too large, e.g.
// --engines cpu@fp64,cuda --precision fp32). The base name, else NULL.
static const char *fp64_base(const char *name, char *buf, size_t n) {
    const size_t len = strlen(name), sl = strlen("@fp64");
    if (len <= sl || strcmp(name + len - sl, "@fp64") || len - sl >= n) return NULL;
    memcpy(buf, name, len - sl);
    buf[len - sl] = '\0';
    return !strncmp(buf, "plugin:", 7) || !strncmp(buf, "exec:", 5) ? NULL : buf;
}

int engine_known(const char *name) {
    char base[64];
    if (fp64_base(name, base, sizeof base)) name = base;
    const char *rest = after(name, "plugin:");
    if (!rest) rest = after(name, "exec:");
    if (rest) return rest[strspn(rest, " \t")] != '\0';
    return !strcmp(name, "scalar") || !strcmp(name, "cpu") || !strcmp(name, "cuda") || engine_cuda_path(name) ||
           engine_cpu_order(name) != ORDER_NUM;
}

ReduceOrder engine_cpu_order(const char *name) {
    char base[64];
    if (fp64_base(name, base, sizeof base)) name = base;
    if (!strcmp(name, "cpu")) return ORDER_SEQ;
    const char *rest = after(name, "cpu:");
    return rest ? reduce_order_from_name(rest) : ORDER_NUM;
}

const char *engine_cuda_path(const char *name) {
    if (!strcmp(name, "cuda:fused")) return "fused";
    if (!strcmp(name, "cuda:layered")) return "layered";
    return NULL;
}

int engine_supports(const char *name, Precision p) {
    char base[64];
    return (strcmp(name, "scalar") && !fp64_base(name, base, sizeof base)) || p == PREC_FP64;
}

void engine_cuda_plugin_path(char *out, size_t n) {
    const char *env = getenv("MICROGPT_CUDA_ENGINE");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return;
    }
    char exe[4096];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0) {
        snprintf(out, n, "./%s", CUDA_PLUGIN);
        return;
    }
    exe[k] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(out, n, "%s/%s", exe, CUDA_PLUGIN);
}

Engine *engine_new(const char *name, const EngineConfig *cfg, const double *init, char *err, size_t errlen) {
    const char *rest;
    char base[64];
    if (fp64_base(name, base, sizeof base)) {
        EngineConfig c = *cfg;
        c.precision = PREC_FP64;
        return engine_new(base, &c, init, err, errlen);
    }
    if (!strcmp(name, "scalar")) {
        EngineConfig c = *cfg;
        c.precision = PREC_FP64;
        return scalar_engine_create(&c, init);
    }
    const ReduceOrder order = engine_cpu_order(name);
    if (order != ORDER_NUM) return cpu_engine_create_order(cfg, init, order, err, errlen);
    const char *cuda_path = engine_cuda_path(name);
    if (!strcmp(name, "cuda") || cuda_path) {
        char path[4200];
        engine_cuda_plugin_path(path, sizeof path);
        if (access(path, F_OK)) {
            snprintf(err, errlen, "this build has no CUDA engine (%s is missing: nvcc was not found, or CUDA=0, or "
                     "MICROGPT_CUDA_ENGINE names another path); BACKEND=cpu checks the tensor math on the CPU", path);
            return NULL;
        }
        if (!cuda_path) return plugin_engine_create(path, cfg, init, err, errlen);
        // cuda:fused, cuda:layered: the engine reads MICROGPT_CUDA_PATH when it is made
        const char *was = getenv("MICROGPT_CUDA_PATH");
        char *saved = was ? strdup(was) : NULL;
        setenv("MICROGPT_CUDA_PATH", cuda_path, 1);
        Engine *e = plugin_engine_create(path, cfg, init, err, errlen);
        if (saved) setenv("MICROGPT_CUDA_PATH", saved, 1);
        else unsetenv("MICROGPT_CUDA_PATH");
        free(saved);
        return e;
    }
    if ((rest = after(name, "plugin:"))) return plugin_engine_create(rest, cfg, init, err, errlen);
    if ((rest = after(name, "exec:"))) return exec_engine_create(rest, cfg, init, err, errlen);
    snprintf(err, errlen, "unknown engine '%s' (scalar, cpu, cpu:ORDER with ORDER rev, pairwise, acc4, acc8 or fma, cuda, "
             "cuda:fused, cuda:layered, any of those with @fp64, plugin:PATH.so or exec:CMD)", name);
    return NULL;
}
