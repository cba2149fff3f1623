// The scalar reference behind the engine interface (always float64).
#ifndef SCALAR_ENGINE_SCALAR_H
#define SCALAR_ENGINE_SCALAR_H

#include "common/engine.h"

Engine *scalar_engine_create(const EngineConfig *cfg, const double *init_params);
// Where the time goes, summed over the steps so far (for the benchmark).
typedef struct {
    long steps;
    double nodes;        // non-leaf graph nodes built
    double t_forward;    // building the graph: forward pass and loss
    double t_order;      // depth-first ordering for backward
    double t_backward;   // propagating gradients
    double t_adam;       // the update
} ScalarStats;

void scalar_engine_stats(const Engine *e, ScalarStats *out);

#endif
