// The fused training step: forward, loss, backward and Adam of a small model
// in ONE cooperative kernel, everything a document needs in shared memory.
//
// Each thread block trains whole documents (block b takes documents b, b+G,
// ...): it copies the weights into shared memory, runs the document's forward
// and backward there and adds the document's gradient into its own
// shared-memory accumulator. The blocks then write their accumulators to a
// scratch buffer (G, P), the grid synchronizes, every thread sums its
// parameters' G partials in block order and applies Adam, and the grid
// synchronizes again before the next step. One launch runs n steps back to
// back: their batches are uploaded before it and their per-position losses
// read after it. No atomics, every sum in a fixed order: deterministic.
//
// Which shapes take it: those whose weights, gradient accumulator and one
// document's activations (block_size positions) fit in one block's shared
// memory (fused_plan says why not), with n_layer <= FUSED_MAX_LAYERS. The
// default model (V 27, C 16, 4 heads, 1 layer, T 16) needs about 68 KB in
// fp32 and 137 KB in fp64; an H200 gives a block 227 KB (docs/cuda_backend.md
// lists more shapes).
#ifndef TENSOR_GPU_CUDA_FUSED_CUH
#define TENSOR_GPU_CUDA_FUSED_CUH

#include <cuda_runtime.h>

#include <cstddef>

#include "tensor_gpu/cuda/kernels.cuh"

extern "C" {
#include "common/model.h"
}

namespace mgpt {

constexpr int FUSED_MAX_LAYERS = 4;
constexpr int FUSED_THREADS = 512;
constexpr int FUSED_MAX_TENSORS = 3 + 4 * FUSED_MAX_LAYERS;   // wq|wk|wv count as one

// The model and where its tensors are: element offsets into the flat
// canonical parameter buffer (common/model.h). wq, wk and wv must be
// adjacent there (they are in the canonical layout): one (C+2KV, C) product.
struct FusedModel {
    int V, C, NH, NKV, HS, L, Tmax;
    size_t P;
    size_t wte, wpe, lm_head;
    size_t wq[FUSED_MAX_LAYERS], wo[FUSED_MAX_LAYERS], fc1[FUSED_MAX_LAYERS], fc2[FUSED_MAX_LAYERS];
};

// The shared-memory layout (element offsets from its start). Weights are
// stored with a row stride of cols+1 (odd: no bank conflicts when the
// threads of a warp read consecutive rows); activations with widths+1.
// A weight matrix: at `flat` in the canonical buffer (row stride cols), at
// `smem` in shared memory (row stride cols+1).
struct FusedTensor {
    size_t flat, smem;
    int rows, cols;
};

struct FusedSmem {
    FusedTensor tensors[FUSED_MAX_TENSORS];
    int n_tensors;
    // resident (a grid of one block): the parameters stay in shared memory
    // for the whole launch and Adam's moments too (flat, at adam_m, adam_v);
    // the global buffers are read at the start and written at the end
    int resident;
    size_t adam_m, adam_v;
    int minb;   // the kernel's blocks per multiprocessor (launch bounds), set by fused_grid
    // weights (padded rows) and the gradient accumulator (flat, canonical layout)
    size_t w_wte, w_wpe, w_lm, w_qkv[FUSED_MAX_LAYERS], w_wo[FUSED_MAX_LAYERS], w_fc1[FUSED_MAX_LAYERS],
        w_fc2[FUSED_MAX_LAYERS];
    size_t grad;
    // one document's activations, Tmax rows each
    size_t enc, x0, r0;
    size_t ln1[FUSED_MAX_LAYERS], r1[FUSED_MAX_LAYERS], qkv[FUSED_MAX_LAYERS], att[FUSED_MAX_LAYERS],
        atty[FUSED_MAX_LAYERS], res2[FUSED_MAX_LAYERS], ln2[FUSED_MAX_LAYERS], r2[FUSED_MAX_LAYERS],
        fch[FUSED_MAX_LAYERS], res3[FUSED_MAX_LAYERS];
    size_t logits;
    // backward scratch
    size_t dx, dh, dln, dqkv, datty, dpre;
    size_t elems;   // total, in elements of real
};

// One launch: steps 0..nsteps-1 of the run, each on its batch record.
template <typename real> struct FusedArgs {
    FusedModel m;
    FusedSmem s;
    real *params, *grads, *adam_m, *adam_v;   // (P) each, global
    real *partials;                           // (grid, P) scratch
    // step s's batch record at io + s*io_stride: AdamScalars at off_sc, n
    // (B ints) at off_n, tokens (B, T+1) at off_tok, as the engine's upload
    const char *io;
    size_t io_stride, off_sc, off_n, off_tok;
    const int *shapes;   // (nsteps, 2): B and T of each step; NULL: B0, T0 for every step
    int B0, T0;
    int nsteps;
    real *losses;        // step s's (B,T) per-position losses at losses + s*loss_stride
    size_t loss_stride;
    // the last step's logits (B,T,V) and each layer's ReLU inputs (B,T,4C)
    real *logits;
    real *fch[FUSED_MAX_LAYERS];
    real beta1, beta2, eps;
    // --loss token-mean: every real position weighs 1/sum(n) in the gradient
    // (0: doc-mean, 1/(n[b]*B)); the loss itself is taken on the host
    int token_mean;
    // Reporting (cfg.activations, common/activations.h): the last step's op
    // outputs at acts[op] and gradients at acts[n_ops + op], each (B,T,width)
    // or (B,NH,T,T); NULL entries (or acts NULL) are not written. The fused
    // step never materializes attn_proj, relu and fc2 (they are fused into
    // the residual add and fc2's product): those outputs stay unreported.
    real *const *acts;
    int n_ops;
    // test-only (compare --inject-fault): 1 op-fwd, 2 op-bwd at op fault_op
    // (act_count: the cross-entropy's gradient); 0 none
    int fault, fault_op;
};

// The model of parameter layout L (its shape, where each tensor is); false
// where the fused step cannot read the layout: n_layer over
// FUSED_MAX_LAYERS, or wq, wk and wv not adjacent.
bool fused_model_of(const ParamLayout *L, FusedModel *m);
// The layout for model m, and whether it can run on this device: 0, or -1
// with the reason in why. *smem_bytes the block's shared memory. With
// max_batch 1 the grid is one block, and the layout is resident where the
// moments fit too.
template <typename real>
int fused_plan(const FusedModel &m, int max_batch, FusedSmem *s, size_t *smem_bytes, char *why, size_t whylen);
// The grid for max_batch documents (at most one block per document, and no
// more than can be resident at once); sets the kernel's shared-memory
// attribute. 0 with why when none fits.
template <typename real> int fused_grid(FusedSmem *s, size_t smem_bytes, int max_batch, char *why, size_t whylen);
// Built with FUSED_PROFILE (make FUSED_PROFILE=1): print block 0's cycles
// per phase and step to stderr, then reset them; otherwise nothing.
void fused_profile_report();
// Enqueue the cooperative launch on st.
template <typename real> void fused_train(cudaStream_t st, const FusedArgs<real> &a, int grid, size_t smem_bytes);

}  // namespace mgpt

#endif
