// The original's GPT, written on the scalar autograd graph: the same Values,
// built in the same order, so every float64 result has the same bits.
#ifndef SCALAR_GPT_H
#define SCALAR_GPT_H

#include "autograd.h"
#include "common/model.h"

typedef struct {
    ModelShape m;
    const ParamLayout *L;
    Graph g;                 // parameter leaves are nodes [0, n_params)
    V *keys, *values;        // (n_layer, block_size, KV) node ids of this document
    V *x, *res, *tmp, *q, *attn, *hid, *logits, *probs, *exps;  // scratch vectors
    V *att_logits, *att_w;   // (block_size) per head
    // If set, sgpt_forward records each layer's ReLU inputs (the mlp_fc1
    // outputs, 4C values) at relu_in[layer * relu_layer_stride + pos * 4C].
    double *relu_in;
    size_t relu_layer_stride;
} ScalarGPT;

void sgpt_init(ScalarGPT *s, const ParamLayout *L, const double *init_params);
void sgpt_free(ScalarGPT *s);
// gpt(token_id, pos_id, keys, values): appends this position's keys/values
// and writes the V logits' node ids to s->logits.
void sgpt_forward(ScalarGPT *s, int token, int pos);
// softmax(logits) into probs (node ids), as the original: max-shifted exp,
// sum from 0, then e * total**-1 for each element.
void sgpt_softmax(ScalarGPT *s, const V *logits, int n, V *probs);
// The loss of one document: weight * sum(-log(probs[target])) over its n
// positions; weight = 1/n is the original's mean. If logits_out is not NULL,
// the (n, V) logits' values are written there.
V sgpt_doc_loss(ScalarGPT *s, const int *tokens, int n, double weight, double *logits_out);

#endif
