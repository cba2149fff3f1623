// The tensor engine on the CPU: the model of tensor_gpu/layers.h run on the
// plain-C reference layers (tensor_gpu/cpu/layers.c), in float64 or float32,
// and the mixed-precision recipes bf16, fp16 and tf32 emulated on float32
// (docs/mixed_precision.md). It is the reference the CUDA backend is checked
// against, layer by layer.
#ifndef TENSOR_GPU_CPU_ENGINE_CPU_H
#define TENSOR_GPU_CPU_ENGINE_CPU_H

#include <stddef.h>

#include "common/engine.h"
#include "tensor_gpu/layers.h"

// An engine for cfg (any precision, any Fault) with the parameters
// init_params (canonical layout, cfg->L->n_params values); the Adam moments
// start at zero. Returns NULL with a message in err if the config is bad.
Engine *cpu_engine_create(const EngineConfig *cfg, const double *init_params, char *err,
                          size_t errlen);

// The same engine taking every sum in another order (tensor_gpu/layers.h
// ReduceOrder; the engines cpu:rev, cpu:pairwise, ...): a legitimately
// different implementation of the same arithmetic, for the comparator's noise
// reference and its calibration (docs/compare.md).
Engine *cpu_engine_create_order(const EngineConfig *cfg, const double *init_params, ReduceOrder order, char *err,
                                size_t errlen);
ReduceOrder cpu_engine_order(const Engine *e);

// Force the ReLU gates of the following steps: open (n bytes, laid out as
// get_relu_inputs, (n_layer,B,T,4*n_embd) of the step's B and T) decides
// each unit in the forward and the backward instead of its input's sign;
// gates sized for another batch shape are ignored. NULL: none (the default).
// The comparator runs the fp64 model with a candidate's own gate pattern this
// way (docs/compare.md, "ReLU gate flips").
void cpu_engine_force_gates(Engine *e, const unsigned char *open, size_t n);

// An estimate of the host bytes the engine needs for model m with P
// parameters and batches of up to B documents: parameters, gradients and
// moments, and every activation of a B x block_size step with its gradient.
double cpu_engine_bytes(const ModelShape *m, size_t P, int B, Precision p);

// Test-only: the fault the reference layers commit, one variable per compiled
// precision of layers.c. The CPU engine sets it to cfg->fault at the start of
// each step() and sample() and back to FAULT_NONE at the end; nothing else
// should write it.
extern Fault layers_fault_f64;
extern Fault layers_fault_f32;
// Likewise the order of the sums (cpu_engine_create_order).
extern ReduceOrder layers_order_f64;
extern ReduceOrder layers_order_f32;

// Test-only: when not NULL, engines created from then on round with this
// function wherever the mixed-precision recipes round (tests set the
// identity, to check the recipe's plumbing against the fp32 engine apart
// from its rounding). NULL everywhere else.
extern float (*cpu_lowp_round_test)(float);

#endif
