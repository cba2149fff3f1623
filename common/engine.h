// The engine interface that every engine implements: the scalar reference
// (scalar_ref/), the tensor engine on the CPU (tensor_gpu/cpu) and on CUDA
// (tensor_gpu/cuda). Data crosses it as float64 in the canonical layout of
// common/model.h, whatever precision the engine computes in.
#ifndef COMMON_ENGINE_H
#define COMMON_ENGINE_H

#include <stddef.h>

#include "model.h"
#include "pyrandom.h"
#include "settings.h"

// fp64 and fp32: every tensor in that type. bf16, fp16 and tf32: the
// mixed-precision recipe of docs/mixed_precision.md (fp32 master weights,
// gradients and Adam state; matrix products on operands rounded to the low
// precision with fp32 accumulation; fp16 with dynamic loss scaling).
typedef enum { PREC_FP64 = 0, PREC_FP32 = 1, PREC_BF16 = 2, PREC_FP16 = 3, PREC_TF32 = 4, PREC_NUM } Precision;

// "fp64", "fp32", "bf16", "fp16", "tf32" ("?" for anything else).
const char *precision_name(Precision p);
// PREC_NUM if the name is none of those.
Precision precision_from_name(const char *name);
// 1 for the mixed-precision recipes (bf16, fp16, tf32).
int precision_is_mixed(Precision p);

// Test-only faults a tensor engine can be told to commit, so that tests can
// show the comparator catches them (see compare --inject-fault).
typedef enum {
    FAULT_NONE = 0,
    FAULT_ATTN_SCALE,     // attention logits scaled by 1/head_dim instead of 1/sqrt(head_dim)
    FAULT_CAUSAL_MASK,    // each position also attends to the next one
    FAULT_RMSNORM_BWD,    // rmsnorm backward drops the term through the mean square
    FAULT_GRAD_SIGN,      // one element of the lm_head gradient has its sign flipped
    FAULT_ADAM_BIAS,      // Adam's second-moment bias correction uses beta1
    FAULT_SMALL_GRADS,    // gradients smaller than 1e-6 in magnitude are dropped (set to 0)
    FAULT_LOWP_TRUNCATE,  // mixed precisions: rounding to bf16/fp16/tf32 truncates the dropped bits
    FAULT_OP_FWD,         // the cpu engine: op cfg.fault_op's output is off (its largest element by 1%)
    FAULT_OP_BWD,         // the cpu engine: the gradient op cfg.fault_op's backward passes to its input is off
    FAULT_NUM
} Fault;

const char *fault_name(Fault f);

// The sampling step the tensor engines share: probabilities =
// softmax(logits * (1/temperature)) in float64, then random.choices on them.
// w holds the V logits and is overwritten with the probabilities.
int engine_sample_token(PyRandom *r, double *w, int V, double temperature);
// Its first half: w (V logits) becomes the probabilities.
void engine_sample_probs(double *w, int V, double temperature);
// The rule an outside engine's sampled name must keep: each of its n tokens
// a character id, 0 to V-2 (BOS, V-1, ends a sample and is not part of it),
// since they index the vocabulary. 0, or -1 with the first bad token in err.
int engine_check_sample(const int *tok, int n, int V, char *err, size_t errlen);
// Returns FAULT_NUM if the name is unknown.
Fault fault_from_name(const char *name);

typedef struct {
    const Settings *s;       // lr, Adam betas/eps, steps (lr schedule)
    const ParamLayout *L;    // model shape and canonical layout
    Precision precision;
    Fault fault;
    int max_batch;           // largest B that step() will be given
    double loss_scale;       // fp16: the initial loss scale (0: the default, 65536 = 2^16)
    int activations;         // keep every op's output and gradient for get_activation (common/activations.h)
    int fault_op;            // FAULT_OP_FWD, FAULT_OP_BWD: the op (common/activations.h index)
} EngineConfig;

typedef struct Engine Engine;

// One phase of a step, for the timeline (--timeline): its name and duration.
typedef struct {
    const char *name;
    double seconds;
} EnginePhase;
#define ENGINE_MAX_PHASES 8

typedef struct {
    const char *name;
    void (*destroy)(Engine *e);
    // One training step on batch b at step index `step` (0-based): forward,
    // loss, backward, Adam with lr_at(lr, step, steps). Returns the loss.
    double (*step)(Engine *e, const Batch *b, int step);
    // After step(): logits (B,T,V) of the forward pass (entries at t >= n[b]
    // are NaN), the gradients before the update, the parameters after it.
    // get_logits and get_moments may be NULL (an outside engine that does
    // not offer them: docs/outside_engines.md, "Partial engines").
    void (*get_logits)(Engine *e, double *out);
    void (*get_grads)(Engine *e, double *out);
    void (*get_params)(Engine *e, double *out);
    void (*get_moments)(Engine *e, double *m, double *v);
    // Overwrite the parameters, and the Adam moments where m and v are not
    // NULL (never for an engine with params_only: engine_set_state).
    void (*set_state)(Engine *e, const double *params, const double *m, const double *v);
    // Sample one document with the current parameters: its tokens, without
    // BOS, go to out (at most block_size); returns how many.
    int (*sample)(Engine *e, PyRandom *r, double temperature, int *out);
    // Optional (may be NULL): the device it runs on, e.g. the GPU's name.
    const char *(*device)(Engine *e);
    // Optional (may be NULL): the inputs of every ReLU of the last step,
    // (n_layer, B, T, 4*n_embd), NaN at padded positions. The comparator
    // uses them to recognise a gate that flips between precisions.
    void (*get_relu_inputs)(Engine *e, double *out);
    // Optional (may be NULL): steps first .. first+n-1 on batches[0..n-1],
    // exactly as n calls of step() would do them, but back to back without
    // returning to the host in between (no per-step synchronize or
    // download): the benchmark's timed region. losses[i] gets step first+i's
    // loss; *seconds the time of the n steps on the engine's own clock (CUDA
    // events around them). Returns 0, or -1 with nothing run.
    int (*run_steps)(Engine *e, const Batch *batches, int first, int n, double *losses, double *seconds);
    // Optional (may be NULL): bytes of device memory the engine holds.
    size_t (*device_bytes)(Engine *e);
    // Optional (may be NULL; only fp16 has a reason to): after step(), 1 if
    // the step's update was skipped because a loss-scaled gradient
    // overflowed (as torch's GradScaler skips it: parameters and moments
    // unchanged, the scale halved), else 0. *scale gets the loss scale the
    // step used.
    int (*step_skipped)(Engine *e, double *scale);
    // Optional (may be NULL; in-process engines only, not the plugin ABI):
    // the phases of the last step() in order with their host-clock
    // durations; returns how many (at most ENGINE_MAX_PHASES).
    int (*step_phases)(Engine *e, EnginePhase *out);
    // Optional (may be NULL): after step() of an engine made with
    // cfg.activations, op `op`'s output (grad 0) or the loss's gradient
    // with respect to it (grad 1), in the layout of common/activations.h for
    // the step's B and T (act_size elements; padding may hold anything).
    // Returns 0, or -1 if the engine does not report that op.
    int (*get_activation)(Engine *e, int op, int grad, double *out);
    // Optional (may be NULL; the exec engine): sample() with the engine's own
    // random generator instead of a stream it is given (compare --sampler
    // own). Where it is NULL, --sampler own gives sample() a stream
    // independent of the reference's: an in-process engine or a plugin has
    // no generator of its own.
    int (*sample_own)(Engine *e, double temperature, int *out);
    // 1: set_state takes the parameters only; the engine cannot take Adam
    // moments (an outside engine whose optimizer is its own, offering no
    // set_moments). 0 (every in-tree engine): it takes them.
    int params_only;
} EngineOps;

struct Engine {
    const EngineOps *ops;
    EngineConfig cfg;
};

// set_state, leaving out m and v for an engine that cannot take them
// (params_only: it keeps its own moments).
void engine_set_state(Engine *e, const double *params, const double *m, const double *v);
// What an engine offers of the optional quantities (docs/outside_engines.md,
// "Partial engines"): its logits, its Adam moments (reported), and setting
// them (set_state with m and v).
int engine_offers_logits(const Engine *e);
int engine_offers_moments(const Engine *e);
int engine_takes_moments(const Engine *e);

// The checks every engine makes of its configuration before it allocates:
// settings and layout present, initial parameters given, a known precision
// and fault, max_batch >= 1, a consistent model shape. 0, or -1 with a
// message starting with "<engine> engine: " in err.
int engine_config_check(const EngineConfig *cfg, const double *init_params, const char *engine, char *err,
                        size_t errlen);

// After a step: exit 1 naming the step, the tensor and the element of the
// first non-finite gradient or updated parameter (buf: n_params doubles).
void engine_check_finite(Engine *e, const ParamLayout *L, double *buf, int step);

#endif
