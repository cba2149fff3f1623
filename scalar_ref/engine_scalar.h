// The scalar reference behind the engine interface (always float64).
#ifndef SCALAR_ENGINE_SCALAR_H
#define SCALAR_ENGINE_SCALAR_H

#include "common/dataset.h"
#include "common/engine.h"

Engine *scalar_engine_create(const EngineConfig *cfg, const double *init_params);
// An upper estimate of the bytes the scalar engine needs to train on d with
// batch B for `steps` steps: its graph grows with batch x positions x model
// size (about 52 bytes a node, two nodes a multiply-add).
double scalar_engine_bytes(const ParamLayout *L, const Dataset *d, int B, int steps);
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
