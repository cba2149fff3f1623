// The one table of the model's operations whose outputs (activations) and
// the loss's gradients with respect to them an engine may report, in forward
// order, so that a failing step can name the first op that diverged
// (docs/compare.md, "Where it broke"). Every engine, the exec protocol
// (acts/<name>, dacts/<name>) and the plugin ABI (the index) use this order.
//
//   op                 shape       what it is
//   embed              (B,T,C)     wte[token] + wpe[position]
//   embed_norm         (B,T,C)     rmsnorm(embed): the residual stream's start
//   layer{l}.norm1     (B,T,C)     rmsnorm of the layer input
//   layer{l}.q         (B,T,C)     norm1 @ attn_wq^T
//   layer{l}.k         (B,T,KV)    norm1 @ attn_wk^T
//   layer{l}.v         (B,T,KV)    norm1 @ attn_wv^T
//   layer{l}.scores    (B,NH,T,T)  q.k / sqrt(head_dim), s <= t only
//   layer{l}.softmax   (B,NH,T,T)  the attention weights, s <= t only
//   layer{l}.attn      (B,T,C)     the weighted sum of v, heads concatenated
//   layer{l}.attn_proj (B,T,C)     attn @ attn_wo^T
//   layer{l}.res1      (B,T,C)     layer input + attn_proj
//   layer{l}.norm2     (B,T,C)     rmsnorm(res1)
//   layer{l}.fc1       (B,T,4C)    norm2 @ mlp_fc1^T (the ReLU's input)
//   layer{l}.relu      (B,T,4C)    relu(fc1)
//   layer{l}.fc2       (B,T,C)     relu @ mlp_fc2^T
//   layer{l}.res2      (B,T,C)     res1 + fc2: the layer's output
//   logits             (B,T,V)     last residual @ lm_head^T (its gradient: the cross-entropy's)
//
// B documents of the step, T its longest document; only the real positions
// (t < n[b]; for scores and softmax also s <= t) are compared.
#ifndef COMMON_ACTIVATIONS_H
#define COMMON_ACTIVATIONS_H

#include <stddef.h>

#include "model.h"

typedef enum {
    ACT_EMBED, ACT_EMBED_NORM,
    ACT_NORM1, ACT_Q, ACT_K, ACT_V, ACT_SCORES, ACT_SOFTMAX, ACT_ATTN, ACT_ATTN_PROJ, ACT_RES1,
    ACT_NORM2, ACT_FC1, ACT_RELU, ACT_FC2, ACT_RES2,
    ACT_LOGITS,
    ACT_KIND_NUM
} ActKind;

#define ACT_PER_LAYER (ACT_RES2 - ACT_NORM1 + 1)

typedef struct {
    ActKind kind;
    int layer;          // -1: embed, embed_norm, logits
    char name[40];      // "embed", "layer0.q", "logits"
    char what[72];      // "layer 0 rmsnorm before attention (norm1)"
    int square;         // scores, softmax: (B,NH,T,T); else (B,T,width)
    int width;          // per position: C, KV, 4C or V (square: NH)
} ActOp;

// Ops of a model: 3 + 14 per layer.
int act_count(const ModelShape *m);
// Op i in forward order (0 <= i < act_count).
void act_op(const ModelShape *m, int i, ActOp *op);
// The index of the op named `name`, or -1.
int act_find(const ModelShape *m, const char *name);
// The index of a per-layer kind at layer l (embed, embed_norm, logits: any l).
int act_index(const ModelShape *m, ActKind kind, int layer);
// Its elements for a step of B documents of T positions.
size_t act_size(const ActOp *op, int B, int T);
// Whether element j of op's (B,T,...) array at this batch is real (t < n[b];
// scores, softmax: also s <= t).
int act_real(const ActOp *op, const int *n, int B, int T, size_t j);
// The ops whose outputs op i reads, in forward order (at most 2: the scores
// read q and k, the weighted sum softmax and v, the residual adds both of
// their terms); returns how many. embed reads none (the parameters).
int act_inputs(const ModelShape *m, int i, int in[2]);
// The parameter kind op i's backward writes a gradient of (P_NUM_KINDS:
// none); embed writes two (wte and wpe): *second gets P_WPE.
ParamKind act_weight(const ActOp *op, ParamKind *second);

#endif
