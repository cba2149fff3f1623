/* microgpt engine ABI, version 1: how `compare` runs an engine it loads from
 * a shared library, `compare --engines scalar,plugin:PATH.so`.
 *
 * A plugin is a shared library that exports one C function,
 *     const mg_engine_abi *microgpt_engine_abi_v1(void);
 * returning a table of function pointers whose abi_version is
 * MICROGPT_ENGINE_ABI_VERSION and whose size is sizeof(mg_engine_abi) (or,
 * for a plugin built before step_skipped was added, the size up to it: the
 * entries added since, step_skipped, get_activation and offers, are optional
 * and a smaller table simply lacks them). compare refuses a plugin without
 * the symbol, with another version, or with a required entry NULL, and says
 * which.
 *
 * A partial engine (one that fuses the cross-entropy and keeps no logits, or
 * whose optimizer is its own and cannot report or take Adam's moments)
 * declares what it offers through offers() below; compare never asks it for
 * the rest and says which quantities it did not check.
 *
 * Data crosses the interface as float64 in the canonical layout: the
 * parameters, gradients and Adam moments are one flat array of n_params
 * doubles, the tensors back to back in the order of cfg->tensors (wte, wpe,
 * lm_head, then per layer attn_wq, attn_wk, attn_wv, attn_wo, mlp_fc1,
 * mlp_fc2), each row-major (rows = out, cols = in). Whatever precision the
 * engine computes in, it converts at this boundary.
 *
 * The model (docs/outside_engines.md has it in full): x = rmsnorm(wte[tok] +
 * wpe[pos]); per layer x += attn(rmsnorm(x)) Wo^T, x += relu(rmsnorm(x)
 * W1^T) W2^T; logits = x lm_head^T; rmsnorm(x) = x * (mean(x^2) + 1e-5)^-0.5
 * without a weight; causal attention scaled by 1/sqrt(head_dim), query head h
 * reads key/value head h / (n_head / n_kv_head). The loss is the mean over the
 * batch's documents of each document's mean cross-entropy over its n[b]
 * positions. Adam at step s (0-based): lr_t = lr * (1 - s / steps),
 * m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
 * p -= lr_t * (m / (1 - b1^(s+1))) / (sqrt(v / (1 - b2^(s+1))) + eps).
 *
 * This header is self-contained (C99 or C++), depends on nothing else of the
 * project, and may be copied into another tree. */
#ifndef MICROGPT_ENGINE_ABI_H
#define MICROGPT_ENGINE_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MICROGPT_ENGINE_ABI_VERSION 1
#define MICROGPT_ENGINE_ABI_SYMBOL "microgpt_engine_abi_v1"

/* What an engine offers (offers() below; an engine without that entry
 * offers all three): get_logits, get_moments, and set_state with m and v. */
#define MG_OFFERS_LOGITS 1u
#define MG_OFFERS_MOMENTS 2u
#define MG_OFFERS_SET_MOMENTS 4u
#define MG_OFFERS_ALL (MG_OFFERS_LOGITS | MG_OFFERS_MOMENTS | MG_OFFERS_SET_MOMENTS)

/* Precision a run asks for (compare --precision). MG_BF16, MG_FP16 and
 * MG_TF32 ask for the mixed-precision recipe of docs/mixed_precision.md (fp32
 * master weights, gradients and Adam state; every matrix product on operands
 * rounded to the low precision, fp32 accumulation; fp16 with dynamic loss
 * scaling). An engine that lacks one refuses it in create(). A step skipped
 * by fp16 loss scaling is reported through step_skipped (optional): without
 * it, such a step shows as a mismatch of the gradients and the update. */
enum { MG_FP64 = 0, MG_FP32 = 1, MG_BF16 = 2, MG_FP16 = 3, MG_TF32 = 4 };

/* One parameter tensor of the canonical layout. */
typedef struct {
    const char *name;   /* "wte", "wpe", "lm_head", "layer0.attn_wq", ... */
    int rows, cols;
    size_t offset;      /* into the flat parameter array */
    size_t size;        /* rows * cols */
} mg_tensor_info;

/* What create() is given; valid only during the call (copy what you keep). */
typedef struct {
    int vocab_size;     /* V (the last id, V-1, is BOS) */
    int n_embd;         /* C */
    int n_head;         /* NH */
    int n_kv_head;      /* NKV (divides NH) */
    int head_dim;       /* HS = C / NH */
    int n_layer;        /* L */
    int block_size;     /* T max */
    int steps;          /* the run's number of steps: the lr schedule's horizon */
    double lr, beta1, beta2, eps;
    int precision;      /* MG_FP64, MG_FP32, MG_BF16, ...: refuse one you do not compute in */
    int max_batch;      /* the largest B step() will be given */
    int fault;          /* 0; test-only faults of compare --inject-fault are 1..: refuse those you lack */
    size_t n_params;
    int n_tensors;
    const mg_tensor_info *tensors;   /* canonical order */
    double loss_scale;  /* MG_FP16: the initial loss scale (0: the default, 65536 = 2^16; a power of two) */
    int activations;    /* 1: keep every op's output and gradient for get_activation (lockstep asks) */
    int fault_op;       /* the op of the faults op-fwd and op-bwd (refuse those faults if you lack them) */
    int token_mean;     /* the batch's loss: 0 the mean of per-document means (the original's), 1 the mean over
                         * all sum(n) positions (compare --loss token-mean): refuse what you do not compute */
} mg_config;

/* A batch of B documents; document b trains n[b] positions (1 <= n[b] <= T):
 * inputs tokens[b*(T+1) + t] and targets tokens[b*(T+1) + t + 1] for t < n[b];
 * entries past n[b] are -1. */
typedef struct {
    int B, T;
    const int *n;        /* (B) */
    const int *tokens;   /* (B, T+1) */
} mg_batch;

/* Sampling draws from the harness's random stream: given the V logits of a
 * position, sample_token divides them by the temperature, takes the softmax
 * and draws a token id (it overwrites logits). A plugin has no random
 * generator of its own under this ABI: with compare --sampler own, rng is a
 * stream independent of the reference's (the harness's generator past the
 * reference's draws) and compare tests the distribution of the names, not the
 * names; what that checks is the plugin's sampling loop (the logits it
 * passes, the tokens it feeds back, where it stops). */
typedef struct {
    void *rng;
    int (*sample_token)(void *rng, double *logits, int V, double temperature);
} mg_sampler;

typedef struct mg_engine mg_engine;   /* the plugin's own state */

typedef struct {
    uint32_t abi_version;   /* MICROGPT_ENGINE_ABI_VERSION */
    uint32_t size;          /* sizeof(mg_engine_abi) */
    const char *name;       /* shown in reports, e.g. "my-cuda-engine" */

    /* Required. create: NULL with a message in err (e.g. no GPU, an
     * unsupported precision or fault); the Adam moments start at zero. */
    mg_engine *(*create)(const mg_config *cfg, const double *init_params, char *err, size_t errlen);
    void (*destroy)(mg_engine *e);
    /* One training step at index step (0-based): forward, loss, backward,
     * Adam with lr_t. Returns the loss. */
    double (*step)(mg_engine *e, const mg_batch *b, int step);
    /* After step(): the logits (B,T,V) of its forward (entries at t >= n[b]
     * are not compared), the gradients before the update, the parameters
     * after it, the Adam moments after it (n_params each). get_logits and
     * get_moments may be NULL, or left out of offers(): not offered. */
    void (*get_logits)(mg_engine *e, double *out);
    void (*get_grads)(mg_engine *e, double *out);
    void (*get_params)(mg_engine *e, double *out);
    void (*get_moments)(mg_engine *e, double *m, double *v);
    /* Overwrite the parameters, and the moments where m and v are not NULL
     * (never, for an engine whose offers() leaves out MG_OFFERS_SET_MOMENTS). */
    void (*set_state)(mg_engine *e, const double *params, const double *m, const double *v);
    /* Generate one document with the current parameters: start from BOS, at
     * each position draw a token with s->sample_token; stop at BOS or after
     * block_size tokens. Writes the tokens (without BOS) to out; returns how many. */
    int (*sample)(mg_engine *e, const mg_sampler *s, double temperature, int *out);

    /* Optional (NULL if absent); compare reads them after create() returns. */
    const char *(*device)(mg_engine *e);                /* e.g. the GPU's name */
    void (*get_relu_inputs)(mg_engine *e, double *out); /* (L,B,T,4C) of the last step */
    /* Steps first..first+n-1 on batches[0..n-1] back to back (the benchmark's
     * timed region): losses[i], *seconds on the engine's clock; 0 or -1. */
    int (*run_steps)(mg_engine *e, const mg_batch *batches, int first, int n, double *losses, double *seconds);
    size_t (*device_bytes)(mg_engine *e);               /* device memory held */
    /* NULL, or what went wrong in the last call: compare then stops with the
     * message and exit code 1. */
    const char *(*error)(mg_engine *e);
    /* Optional, after step(): 1 if that step's update was skipped (fp16 loss
     * scaling: a gradient overflowed; parameters and moments untouched), with
     * the scale it used in *scale; else 0. */
    int (*step_skipped)(mg_engine *e, double *scale);
    /* Optional, after step() of an engine created with cfg->activations: op
     * `op`'s output (grad 0) or the loss's gradient with respect to it (grad
     * 1), op an index into the harness's table of the model's ops in forward
     * order: embed, embed_norm, then per layer norm1, q, k, v, scores,
     * softmax, attn, attn_proj, res1, norm2, fc1, relu, fc2, res2, then
     * logits (3 + 14*L ops; shapes (B,T,width), scores and softmax
     * (B,NH,T,T); docs/outside_engines.md). 0, or -1 for an op it does not
     * report. A failing step is then localized to the op that broke. */
    int (*get_activation)(mg_engine *e, int op, int grad, double *out);
    /* Optional, read after create() (NULL: MG_OFFERS_ALL): what this engine
     * offers, MG_OFFERS_* bits. Leave out MG_OFFERS_LOGITS when the engine
     * keeps no logits (a fused cross-entropy), MG_OFFERS_MOMENTS when it
     * cannot report Adam's m and v, MG_OFFERS_SET_MOMENTS when set_state
     * cannot take them (an optimizer of its own, e.g. with its own step
     * counter). compare never calls what is left out: the logits are then
     * not compared; without moments the engine trains on its own trajectory
     * (every step the reference starts from its parameters) and its update
     * is checked through its parameters (docs/outside_engines.md, "Partial
     * engines"). */
    unsigned (*offers)(mg_engine *e);
} mg_engine_abi;

/* The one symbol a plugin exports. */
typedef const mg_engine_abi *(*mg_engine_abi_entry)(void);

#if defined(_WIN32)
#define MG_EXPORT __declspec(dllexport)
#else
#define MG_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
}
#endif

#endif
