// The one source of truth for the model's shape and its canonical parameter
// layout: every engine reads tensor names, shapes and offsets from here.
//
// Canonical order (also the order of the initial gauss draws):
//   wte (V,C), wpe (T,C), lm_head (V,C), then per layer l:
//   layer{l}.attn_wq (C,C), attn_wk (KV,C), attn_wv (KV,C), attn_wo (C,C),
//   mlp_fc1 (4C,C), mlp_fc2 (C,4C)
// with C = n_embd, KV = n_kv_head*head_dim (= C without grouped-query attention),
// V = vocab_size, T = block_size. Matrices are row-major (out, in).
#ifndef COMMON_MODEL_H
#define COMMON_MODEL_H

#include <stddef.h>

#include "dataset.h"
#include "pyrandom.h"
#include "settings.h"

typedef struct {
    int vocab_size;   // V
    int n_embd;       // C
    int n_head;       // NH
    int n_kv_head;    // NKV
    int head_dim;     // HS = C / NH
    int n_layer;      // L
    int block_size;   // T max
} ModelShape;

typedef enum {
    P_WTE, P_WPE, P_LM_HEAD,
    P_ATTN_WQ, P_ATTN_WK, P_ATTN_WV, P_ATTN_WO, P_MLP_FC1, P_MLP_FC2,
    P_NUM_KINDS
} ParamKind;

#define N_GLOBAL_KINDS 3   // wte, wpe, lm_head
#define N_LAYER_KINDS 6    // attn_wq .. mlp_fc2

typedef struct {
    char name[48];     // e.g. "layer0.attn_wq"
    ParamKind kind;
    int layer;         // -1 for the global tensors
    int rows, cols;
    size_t offset;     // into the flat parameter buffer
    size_t size;       // rows * cols
} ParamTensor;

typedef struct {
    ModelShape shape;
    int n_tensors;
    ParamTensor *t;    // canonical order
    size_t n_params;
} ParamLayout;

ModelShape model_shape(const Settings *s, int vocab_size);
void layout_init(ParamLayout *L, const ModelShape *m);
void layout_free(ParamLayout *L);
// The tensor of a kind (and layer, for per-layer kinds).
const ParamTensor *layout_tensor(const ParamLayout *L, ParamKind kind, int layer);
// The tensor holding flat index i.
const ParamTensor *layout_tensor_at(const ParamLayout *L, size_t i);
// Describe flat index i as "layer0.attn_wq[3,5] (row 3, col 5)".
void layout_describe(const ParamLayout *L, size_t i, char *out, size_t n);

// Draw the initial parameters: gauss(0, std) in canonical order.
void params_init(const ParamLayout *L, PyRandom *r, double std, double *out);

// A training batch: B documents, each [BOS] + ids + [BOS], cropped to
// n = min(block_size, len - 1) positions; T = the largest n.
typedef struct {
    int B, T;
    int *n;          // (B) positions trained in document b
    int *tokens;     // (B, T+1) inputs at t, targets at t+1; -1 past n+1
    int *doc;        // (B) index of the document (after shuffling)
} Batch;

// Batch of step s: document b is docs[(s*B + b) % N].
void batch_make(Batch *b, const Dataset *d, long step, int B, int block_size);
void batch_free(Batch *b);
// The checks an engine makes of a batch it is given (1 <= B <= max_batch,
// 1 <= T <= block_size, 1 <= n[b] <= T, tokens in the vocabulary); a
// violation is an internal error: exits 1 with the message.
void batch_check(const Batch *b, int max_batch, int block_size, int vocab_size);

// lr_t = lr * (1 - step / num_steps), as the original computes it.
double lr_at(double lr, int step, int num_steps);

#endif
