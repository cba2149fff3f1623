// The tensor engine on CUDA behind the engine interface (common/engine.h):
// the model of tensor_gpu/cpu/engine_cpu.c, layer for layer, on the kernels
// of kernels.cu and cuBLAS, in fp64 or fp32 (ImplT<double>, ImplT<float>),
// or by the mixed-precision recipe in bf16, fp16 or tf32 (ImplT<float> with
// its products from mixed.cuh: fp32 master weights, Adam state and
// everything but the products' rounding; fp16 with dynamic loss scaling;
// docs/mixed_precision.md).
//
// Device memory: one cudaMalloc each for the parameters, the gradients, Adam's
// m and v (P elements each, canonical layout of common/model.h) and the
// activations (the training step's, sized for max_batch x block_size, the
// sampler's for one document, and the batch's tokens, lengths and Adam
// scalars, and the scratch of the split-K weight gradients), plus cuBLAS's
// workspace if one is asked for (none by default; the mixed precisions'
// weight-gradient stream has its own).
// Everything is counted before the first allocation: a size that cannot fit
// in the free device memory is refused with the estimate.
// ParamPtrs point into the parameter and gradient buffers tensor by tensor
// from the layout table.
//
// Two paths (MICROGPT_CUDA_PATH=auto|fused|layered, auto by default): a
// model that fits in one block's shared memory takes the fused step
// (fused.cuh: the whole step one cooperative kernel, many steps one launch);
// every other model the layered one, below. device() names the path taken.
//
// A layered step uploads the batch (one copy), runs forward, the fused cross-entropy,
// backward and Adam (CUDA graph replay once a shape (B,T) has been seen
// twice), copies the per-position losses back and synchronizes once; the
// mean loss is taken on the host in the reference's order. Everything else
// (logits, gradients, ReLU inputs) stays on the device until asked for.
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "tensor_gpu/cuda/cuda_check.cuh"
#include "tensor_gpu/cuda/fused.cuh"
#include "tensor_gpu/cuda/kernels.cuh"
#include "tensor_gpu/cuda/mixed.cuh"

extern "C" {
#include "common/activations.h"
#include "common/engine.h"
#include "common/model.h"
#include "common/pyrandom.h"
#include "common/settings.h"
#include "common/util.h"
}
#include "tensor_gpu/cuda/engine_cuda.h"

#include <nvtx3/nvToolsExt.h>
// An NVTX range over a scope: the step's phases show in Nsight Systems.
struct NvtxRange {
    explicit NvtxRange(const char *name) { nvtxRangePushA(name); }
    ~NvtxRange() { nvtxRangePop(); }
};

namespace mgpt {
namespace {

// cuBLAS's workspace, 0 bytes unless MICROGPT_CUBLAS_WORKSPACE says otherwise.
// A workspace lets cuBLAS split the k dimension of a product over blocks and
// reduce afterwards; for this model's tiny products that costs more than it
// saves. Measured on an H100 (compare --bench, batch 8): fp64 0.093 ms/step
// without a workspace, 0.222 with 32 MiB (cuBLAS's advice for Hopper); fp32
// 0.100 and 0.137; batch 1 within 3% either way.
size_t cublas_workspace_bytes() {
    const char *s = getenv("MICROGPT_CUBLAS_WORKSPACE");
    if (!s || !*s) return 0;
    char *end = nullptr;
    const unsigned long long b = strtoull(s, &end, 10);
    if (*end || b > (1ull << 34))
        throw CudaError(std::string("MICROGPT_CUBLAS_WORKSPACE='") + s + "' is not a number of bytes (0 .. 16 GiB)");
    return (size_t)b;
}

// Whether the weight gradients are split over the rows (kernels.cuh,
// matmul_backward): MICROGPT_DW_SPLIT=0 turns it off (one cuBLAS product
// each, as before the split; for timing the two).
bool dw_split_enabled() {
    const char *s = getenv("MICROGPT_DW_SPLIT");
    if (!s || !*s || !strcmp(s, "1")) return true;
    if (!strcmp(s, "0")) return false;
    throw CudaError(std::string("MICROGPT_DW_SPLIT='") + s + "' is not 0 (off) or 1 (on, the default)");
}

// cuBLAS's math mode: pedantic (the default: no TF32, no reduced-precision
// shortcuts), or MICROGPT_CUBLAS_MATH=default (CUBLAS_DEFAULT_MATH: still no
// TF32 unless NVIDIA_TF32_OVERRIDE says so, but cuBLAS may pick from more
// kernels), to measure whether the choice costs time.
cublasMath_t cublas_math_mode() {
    const char *s = getenv("MICROGPT_CUBLAS_MATH");
    if (!s || !*s || !strcmp(s, "pedantic")) return CUBLAS_PEDANTIC_MATH;
    if (!strcmp(s, "default")) return CUBLAS_DEFAULT_MATH;
    throw CudaError(std::string("MICROGPT_CUBLAS_MATH='") + s + "' is not pedantic or default");
}

constexpr size_t ALIGN = 256;

size_t align_up(size_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

// Hands out aligned slices of one allocation; with base NULL it only counts.
struct Carver {
    char *base;
    size_t used;
    template <typename X> X *take(size_t count) {
        used = align_up(used);
        X *p = base ? reinterpret_cast<X *>(base + used) : nullptr;
        used += count * sizeof(X);
        return p;
    }
};

template <typename real> struct ParamPtrs {
    real *wte = nullptr, *wpe = nullptr, *lm_head = nullptr;   // (V,C) (T,C) (V,C)
    std::vector<real *> wq, wk, wv, wo, fc1, fc2;              // [n_layer]
};

template <typename real> struct LayerActs {
    real *ln1, *ln1_rstd;   // (N,C) rmsnorm of the layer input, (N)
    real *qkv;              // (N, C+2KV): q | k | v side by side
    real *att;              // (B,NH,T,T) attention weights
    real *atty;             // (N,C) attention output
    real *attproj;          // (N,C) atty @ wo^T
    real *res2;             // (N,C) attproj + layer input
    real *ln2, *ln2_rstd;   // (N,C), (N)
    real *fch, *fch_relu;   // (N,4C) before and after relu
    real *fcproj;           // (N,C)
    real *res3;             // (N,C) layer output
    // bf16, fp16, tf32: the products' operands rounded to L (mixed.cuh), made
    // in the forward and read again by the backward's weight gradients (the
    // fp32 ln1, ln2 are then not written; attproj, fcproj and fch hold the
    // products unrounded, rounded where they are read)
    void *ln1_lp, *atty_lp, *ln2_lp;   // (N,C)
    void *fchr_lp;                     // (N,4C) relu(fch); fch_relu is not kept
    void *fch_lp;                      // (N,4C) bf16, fp16: fc1's output, stored in L by cuBLAS (fch unused)
};

template <typename real> struct Acts {
    real *enc = nullptr, *x0 = nullptr, *rstd0 = nullptr;   // (N,C) (N,C) (N)
    std::vector<LayerActs<real>> layer;
    real *logits = nullptr;                                 // (N,V)
    void *xl_lp = nullptr;                                  // mixed: (N,C) lm_head's operand, rounded
    // training only (NULL in the sampler's)
    real *losses = nullptr;                                 // (N)
    real *dlogits = nullptr;                                // (N,V)
    real *dx = nullptr, *dln = nullptr, *datty = nullptr;   // (N,C)
    real *dqkv = nullptr;                                   // (N,C+2KV)
    real *dpre = nullptr;                                   // (B,NH,T,T)
    real *dfch = nullptr, *dfch_relu = nullptr;             // (N,4C)
};

// The batch as uploaded: Adam's scalars, n (maxB), tokens (maxB, T+1); the
// same byte layout on the host (pinned) and on the device.
struct IoLayout {
    size_t sc, ls, n, tok, bytes;   // ls: fp16's {scale, 1/scale} (floats)
};

struct Impl {
    virtual ~Impl() {}
    virtual double step(const Batch *b, int step) = 0;
    virtual void get_logits(double *out) = 0;
    virtual void get_grads(double *out) = 0;
    virtual void get_params(double *out) = 0;
    virtual void get_moments(double *m, double *v) = 0;
    virtual void set_state(const double *p, const double *m, const double *v) = 0;
    virtual int sample(PyRandom *r, double temperature, int *out) = 0;
    virtual void get_relu_inputs(double *out) = 0;
    virtual const char *device() const = 0;
    virtual void run_steps(const Batch *bs, int first, int n, double *losses, double *seconds) = 0;
    virtual size_t device_bytes() const = 0;
    virtual int step_skipped(double *scale) const = 0;
    virtual int get_activation(int op, int grad, double *out) = 0;
};

template <typename real> class ImplT final : public Impl {
  public:
    ImplT(const EngineConfig *cfg, const double *init);
    ~ImplT() override {
        if (fused_) fused_profile_report();
        release();
    }
    double step(const Batch *b, int step) override;
    void get_logits(double *out) override;
    void get_grads(double *out) override { download_flat(out, grads_); }
    void get_params(double *out) override { download_flat(out, params_); }
    void get_moments(double *m, double *v) override {
        download_flat(m, m_);
        download_flat(v, v_);
    }
    void set_state(const double *p, const double *m, const double *v) override;
    int sample(PyRandom *r, double temperature, int *out) override;
    void get_relu_inputs(double *out) override;
    const char *device() const override { return device_label_.c_str(); }
    void run_steps(const Batch *bs, int first, int n, double *losses, double *seconds) override;
    size_t device_bytes() const override { return device_bytes_; }
    int step_skipped(double *scale) const override {
        if (scale) *scale = used_scale_;
        return skipped_;
    }
    int get_activation(int op, int grad, double *out) override;

  private:
    void choose_path();
    void launch_fused(const char *io, size_t io_stride, const int *shapes, int B0, int T0, int nsteps, real *losses,
                      size_t loss_stride);
    void release() noexcept;
    void point_params(ParamPtrs<real> &p, real *buf, const ParamLayout *L);
    size_t point_acts(Acts<real> &a, Carver &c, int B, bool train);
    void forward(const Acts<real> &a, int B, int T);
    void backward(int B, int T);
    void enqueue_step(int B, int T);
    cudaGraphExec_t graph_for(int B, int T);
    void disable_graphs(const char *why);
    void download_flat(double *out, const real *dev);
    void upload_flat(real *dev, const double *in);
    size_t fill_io(char *dst, const Batch *b, int step) const;
    cudaGraphExec_t capture(int B, int T);
    // bf16, fp16, tf32: forward() and backward() by the recipe (mixed.cuh)
    void forward_mixed(const Acts<real> &a, int B, int T);
    void backward_mixed(int B, int T);
    void carve_mixed(Carver &c);
    const void *wlp(const real *w) const { return lowp_at(mx_.lp, wlp_, (size_t)(w - params_)); }
    // cfg.activations (fp32, fp64: common/activations.h): the last step's op
    // outputs and gradients. The layered path reads most outputs where the
    // forward keeps them (acts_) and copies each gradient out of the
    // backward's scratch as it is made (rec_copy); the fused step writes
    // both from shared memory (FusedArgs.acts).
    bool record_ = false;
    int n_ops_ = 0;
    std::vector<real *> rec_;   // [2 n_ops]: outputs, then gradients; (maxB, ...) each
    char *rec_mem_ = nullptr;
    real **rec_tab_d_ = nullptr;
    void setup_record();
    real *recf(ActKind kind, int l) { return record_ ? rec_[act_index(&m_shape_, kind, l)] : nullptr; }
    int n_ops_all() const { return act_count(&m_shape_); }
    real *recb(ActKind kind, int l) { return record_ ? rec_[n_ops_ + act_index(&m_shape_, kind, l)] : nullptr; }
    void rec_copy(real *dst, const real *src, int ld, int width, int N);
    // Test-only (FAULT_OP_FWD, FAULT_OP_BWD, fp32 and fp64): op (kind, l)'s
    // output, or the gradient its backward passes on, off by 1% in element 0
    // (fault_bump), where the layered path has it apart (the fused step
    // plants it in shared memory: FusedArgs.fault).
    void bump(Fault f, ActKind kind, int l, real *buf, int ld, int rows, int width) {
        if (cfg_.fault == f && cfg_.fault_op == act_index(&m_shape_, kind, l))
            fault_bump(stream_, buf, ld, rows, width, 0.01);
    }
    void *dmalloc(size_t bytes, const char *what) {
        void *p = DEVICE_MALLOC(bytes, what);
        device_bytes_ += bytes;
        return p;
    }

    EngineConfig cfg_;
    ModelShape m_shape_;
    int C_, NH_, NKV_, HS_, KV_, QKV_, V_, L_, Tmax_, maxB_;
    size_t P_ = 0;
    std::string device_name_;
    std::string device_label_;      // device() : the GPU's name and the path taken
    bool fused_ = false;            // the fused step (fused.cuh) instead of the layered one
    FusedArgs<real> fa_{};          // its launch arguments but the per-launch ones
    FusedModel fm_{};
    int fused_grid_ = 0;
    size_t fused_smem_ = 0;
    real *fused_partials_ = nullptr;   // (fused_grid_, P)
    int *run_shapes_d_ = nullptr, *run_shapes_h_ = nullptr;   // run_steps: (n, 2) B and T per step
    cudaStream_t stream_ = nullptr;
    cublasHandle_t blas_ = nullptr;
    void *workspace_ = nullptr;
    // bf16, fp16, tf32: the recipe's products, on a second handle that allows
    // tensor cores (blas_ is pedantic), their scratch in acts_mem_
    bool mixed_ = false;
    cublasHandle_t blas_lowp_ = nullptr;
    MixedMM mx_{};
    void *wlp_ = nullptr;   // (P) the parameters rounded to L at the step's start, in their layout
    // The backward's weight gradients run on a second stream (side_, its own
    // handle and workspace) beside the input-gradient chain, which does not
    // wait for them; each product's rounded output gradient has its own
    // buffer dlp_[k] (N, width of k), overwritten only after the side stream's
    // event done_[k] says its weight gradient has read it. Each product has
    // one algorithm and no atomics, so the bits do not depend on the overlap.
    enum { D_HEAD, D_FC2, D_FC1, D_WO, D_QKV, D_COUNT };
    void *dlp_[D_COUNT] = {};
    cudaStream_t side_ = nullptr;
    cublasHandle_t blas_side_ = nullptr;
    void *side_ws_ = nullptr;
    MixedMM mx_side_{};
    cudaEvent_t fork_ev_ = nullptr, join_ev_ = nullptr, done_[D_COUNT] = {};
    // fp16's loss scaling, as torch's GradScaler and the CPU engine: the next
    // step's scale, the last step's, clean steps since the scale changed,
    // whether the last step's update was skipped; on the device a flag (a
    // gradient overflowed) and the parameters, m and v from before Adam
    // (restored when the flag is set), in acts_mem_; the flag's pinned copy
    bool fp16_ = false;
    double scale_ = 0, used_scale_ = 0;
    int good_steps_ = 0, skipped_ = 0;
    int *bad_d_ = nullptr, *bad_h_ = nullptr;
    real *snap_ = nullptr;   // (3P) params | m | v
    DwScratch<real> dws_{nullptr, 0, 0};   // the split-K weight gradients' (in acts_mem_)
    real *params_ = nullptr, *grads_ = nullptr, *m_ = nullptr, *v_ = nullptr;
    ParamPtrs<real> P, G;
    std::vector<char> qkv_fused_;   // [layer] wq, wk, wv adjacent: one product for q, k and v
    char *acts_mem_ = nullptr;
    Acts<real> acts_, sample_acts_;
    IoLayout io_{};
    char *io_d_ = nullptr;          // in acts_mem_
    char *io_h_ = nullptr;          // pinned
    real *losses_h_ = nullptr;      // pinned (maxB*T)
    real *xfer_h_ = nullptr;        // pinned: downloads and uploads
    size_t xfer_count_ = 0;
    std::vector<double> probs_;     // the sampler's (V)
    std::vector<int> sample_tok_;   // the sampler's (block_size+1)
    int last_B_ = 0, last_T_ = 0;
    std::vector<int> last_n_;
    bool use_graphs_ = true;
    std::vector<cudaGraphExec_t> graphs_;   // [(B-1)*Tmax + T-1]
    std::vector<char> seen_;
    size_t device_bytes_ = 0;     // what the engine holds on the device
    // run_steps: the batches of a run and their per-position losses, staged
    // on the device (grown as needed; freed with the engine)
    char *run_io_d_ = nullptr, *run_io_h_ = nullptr;
    real *run_loss_d_ = nullptr, *run_loss_h_ = nullptr;
    size_t run_cap_ = 0;           // steps they hold
    cudaEvent_t ev_[2] = {nullptr, nullptr};

    const int *tok_d() const { return reinterpret_cast<const int *>(io_d_ + io_.tok); }
    const int *n_d() const { return reinterpret_cast<const int *>(io_d_ + io_.n); }
    const AdamScalars *sc_d() const { return reinterpret_cast<const AdamScalars *>(io_d_ + io_.sc); }
    const float *ls_d() const { return reinterpret_cast<const float *>(io_d_ + io_.ls); }
};

// ---------------------------------------------------------------------------
// creation and teardown

template <typename real> ImplT<real>::ImplT(const EngineConfig *cfg, const double *init) : cfg_(*cfg) {
    const ModelShape &m = cfg->L->shape;
    m_shape_ = m;
    C_ = m.n_embd;
    NH_ = m.n_head;
    NKV_ = m.n_kv_head;
    HS_ = m.head_dim;
    KV_ = NKV_ * HS_;
    QKV_ = C_ + 2 * KV_;
    V_ = m.vocab_size;
    L_ = m.n_layer;
    Tmax_ = m.block_size;
    maxB_ = cfg->max_batch;
    P_ = cfg->L->n_params;
    try {
        int dev = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        cudaDeviceProp prop;
        CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
        device_name_ = prop.name;

        CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        // One cuBLAS handle and workspace for the engine's life. The
        // workspace is set explicitly (none by default, see
        // cublas_workspace_bytes), so cuBLAS never allocates, also not inside
        // graph capture. Pedantic math: fp32 products stay fp32 (no TF32, no
        // reduced-precision tricks), as the parity tolerances assume.
        CUBLAS_CHECK(cublasCreate(&blas_));
        CUBLAS_CHECK(cublasSetStream(blas_, stream_));   // before the workspace: it resets it
        const size_t ws = cublas_workspace_bytes();
        if (ws) workspace_ = dmalloc(ws, "cuBLAS workspace");
        CUBLAS_CHECK(cublasSetWorkspace(blas_, workspace_, ws));
        CUBLAS_CHECK(cublasSetMathMode(blas_, cublas_math_mode()));
        CUBLAS_CHECK(cublasSetAtomicsMode(blas_, CUBLAS_ATOMICS_NOT_ALLOWED));
        CUBLAS_CHECK(cublasSetPointerMode(blas_, CUBLAS_POINTER_MODE_HOST));
        mixed_ = precision_is_mixed(cfg->precision);
        if (mixed_) {
            if (sizeof(real) != sizeof(float))
                throw CudaError(std::string("internal error: no fp64 recipe for ") + precision_name(cfg->precision));
            mx_.lp = cfg->precision == PREC_BF16 ? Lowp::BF16 : cfg->precision == PREC_FP16 ? Lowp::FP16 : Lowp::TF32;
            fp16_ = cfg->precision == PREC_FP16;
            scale_ = used_scale_ = cfg->loss_scale > 0 ? cfg->loss_scale : 65536.0;   // GradScaler's 2^16
            // The recipe's products need tensor cores, which pedantic math
            // may deny: their own handle in the default math mode, the
            // compute type of each cublasGemmEx asking for them explicitly
            // (bf16, fp16: CUBLAS_COMPUTE_32F; tf32: CUBLAS_COMPUTE_32F_FAST_TF32).
            CUBLAS_CHECK(cublasCreate(&blas_lowp_));
            CUBLAS_CHECK(cublasSetStream(blas_lowp_, stream_));
            CUBLAS_CHECK(cublasSetWorkspace(blas_lowp_, workspace_, ws));   // one stream: shared safely
            CUBLAS_CHECK(cublasSetMathMode(blas_lowp_, CUBLAS_DEFAULT_MATH));
            CUBLAS_CHECK(cublasSetAtomicsMode(blas_lowp_, CUBLAS_ATOMICS_NOT_ALLOWED));
            CUBLAS_CHECK(cublasSetPointerMode(blas_lowp_, CUBLAS_POINTER_MODE_HOST));
            mx_.h = blas_lowp_;
            CUDA_CHECK(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking));
            CUBLAS_CHECK(cublasCreate(&blas_side_));
            CUBLAS_CHECK(cublasSetStream(blas_side_, side_));
            if (ws) side_ws_ = dmalloc(ws, "cuBLAS workspace (weight gradients)");
            CUBLAS_CHECK(cublasSetWorkspace(blas_side_, side_ws_, ws));
            CUBLAS_CHECK(cublasSetMathMode(blas_side_, CUBLAS_DEFAULT_MATH));
            CUBLAS_CHECK(cublasSetAtomicsMode(blas_side_, CUBLAS_ATOMICS_NOT_ALLOWED));
            CUBLAS_CHECK(cublasSetPointerMode(blas_side_, CUBLAS_POINTER_MODE_HOST));
            for (cudaEvent_t *e : {&fork_ev_, &join_ev_, &done_[0], &done_[1], &done_[2], &done_[3], &done_[4]})
                CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
        }

        choose_path();
        const size_t pbytes = P_ * sizeof(real);
        // what the engine will hold on the device, counted before anything is
        // allocated, so that a size that cannot fit is refused with the estimate
        io_.sc = 0;
        io_.ls = sizeof(AdamScalars);
        io_.n = align_up(io_.ls + 2 * sizeof(float));
        io_.tok = align_up(io_.n + (size_t)maxB_ * sizeof(int));
        io_.bytes = io_.tok + (size_t)maxB_ * (Tmax_ + 1) * sizeof(int);
        // the split-K scratch: room for the largest weight gradient's partials at max_batch
        const size_t rows = (size_t)maxB_ * Tmax_;
        const int dw_rows = rows < (size_t)INT_MAX ? (int)rows : INT_MAX;
        // (the mixed products' weight gradients are one product each: no split)
        if (dw_split_enabled() && !mixed_) dws_.sms = prop.multiProcessorCount;
        const int dw_shapes[][2] = {{C_, V_}, {4 * C_, C_}, {C_, 4 * C_}, {C_, C_}, {C_, QKV_}, {C_, KV_}};
        for (const auto &d : dw_shapes) {   // (IC, OC) of each weight's product
            const size_t c = dw_scratch_count(dw_rows, d[0], d[1], dws_.sms);
            if (c > dws_.count) dws_.count = c;
        }
        Carver count{nullptr, 0};
        point_acts(acts_, count, maxB_, true);
        point_acts(sample_acts_, count, 1, false);
        count.take<char>(io_.bytes);
        if (fused_) count.take<real>((size_t)fused_grid_ * P_);
        count.take<real>(dws_.count);
        carve_mixed(count);
        size_t dev_free = 0, dev_total = 0;
        CUDA_CHECK(cudaMemGetInfo(&dev_free, &dev_total));
        const double need = 4.0 * (double)pbytes + (double)count.used;   // the workspace is already held
        if (need > (double)dev_free) {
            char msg[512];
            snprintf(msg, sizeof msg, "not enough device memory for max_batch %d x block_size %d: the engine needs "
                     "about %.2f GiB (parameters, gradients, Adam state and activations), %.2f GiB of %.2f GiB are "
                     "free; use a smaller --batch, --n-embd, --n-layer or --block-size", maxB_, Tmax_,
                     need / 1073741824.0, (double)dev_free / 1073741824.0, (double)dev_total / 1073741824.0);
            throw CudaError(msg);
        }
        params_ = static_cast<real *>(dmalloc(pbytes, "parameters"));
        grads_ = static_cast<real *>(dmalloc(pbytes, "gradients"));
        m_ = static_cast<real *>(dmalloc(pbytes, "Adam m"));
        v_ = static_cast<real *>(dmalloc(pbytes, "Adam v"));
        point_params(P, params_, cfg->L);
        point_params(G, grads_, cfg->L);
        qkv_fused_.assign((size_t)L_, 0);
        for (int l = 0; l < L_; l++)
            qkv_fused_[l] = P.wk[l] == P.wq[l] + (size_t)C_ * C_ && P.wv[l] == P.wk[l] + (size_t)KV_ * C_;

        // activations: counted above, allocated once, pointed
        acts_mem_ = static_cast<char *>(dmalloc(count.used, "activations"));
        Carver carve{acts_mem_, 0};
        point_acts(acts_, carve, maxB_, true);
        point_acts(sample_acts_, carve, 1, false);
        io_d_ = carve.take<char>(io_.bytes);
        if (fused_) {
            fused_partials_ = carve.take<real>((size_t)fused_grid_ * P_);
            fa_.m = fm_;
            fa_.params = params_;
            fa_.grads = grads_;
            fa_.adam_m = m_;
            fa_.adam_v = v_;
            fa_.partials = fused_partials_;
            fa_.off_sc = io_.sc;
            fa_.off_n = io_.n;
            fa_.off_tok = io_.tok;
            fa_.logits = acts_.logits;
            for (int l = 0; l < L_; l++) fa_.fch[l] = acts_.layer[l].fch;
            fa_.beta1 = (real)cfg->s->beta1;
            fa_.beta2 = (real)cfg->s->beta2;
            fa_.eps = (real)cfg->s->eps;
            fa_.token_mean = cfg->s->token_mean != 0;
        }
        if (cfg->activations && !mixed_) setup_record();
        fa_.fault = cfg->fault == FAULT_OP_FWD ? 1 : cfg->fault == FAULT_OP_BWD ? 2 : 0;
        fa_.fault_op = cfg->fault_op;
        dws_.p = carve.take<real>(dws_.count);
        carve_mixed(carve);

        io_h_ = static_cast<char *>(HOST_MALLOC_PINNED(io_.bytes, "batch upload"));
        losses_h_ = static_cast<real *>(HOST_MALLOC_PINNED(rows * sizeof(real), "losses"));
        xfer_count_ = P_;
        if (rows * V_ > xfer_count_) xfer_count_ = rows * V_;
        if ((size_t)L_ * rows * 4 * C_ > xfer_count_) xfer_count_ = (size_t)L_ * rows * 4 * C_;
        xfer_h_ = static_cast<real *>(HOST_MALLOC_PINNED(xfer_count_ * sizeof(real), "transfers"));
        if (fp16_) bad_h_ = static_cast<int *>(HOST_MALLOC_PINNED(sizeof(int), "fp16 overflow flag"));
        probs_.assign((size_t)V_, 0.0);
        sample_tok_.assign((size_t)Tmax_ + 1, 0);
        last_n_.assign((size_t)maxB_, 0);

        const char *g = getenv("MICROGPT_CUDA_GRAPHS");
        use_graphs_ = !(g && !strcmp(g, "0"));
        graphs_.assign((size_t)maxB_ * Tmax_, nullptr);
        seen_.assign((size_t)maxB_ * Tmax_, 0);

        // parameters from init; gradients and moments start at zero
        upload_flat(params_, init);
        CUDA_CHECK(cudaMemsetAsync(grads_, 0, pbytes, stream_));
        CUDA_CHECK(cudaMemsetAsync(m_, 0, pbytes, stream_));
        CUDA_CHECK(cudaMemsetAsync(v_, 0, pbytes, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
    } catch (...) {
        release();
        throw;
    }
}

// Frees what was made; failures here are reported but do not stop the teardown.
template <typename real> void ImplT<real>::release() noexcept {
    auto warn = [](cudaError_t e, const char *what) {
        if (e != cudaSuccess) {
            fprintf(stderr, "cuda engine: warning: %s failed while freeing the engine: %s\n", what,
                    cudaGetErrorString(e));
            cudaGetLastError();
        }
    };
    for (auto &g : graphs_)
        if (g) warn(cudaGraphExecDestroy(g), "cudaGraphExecDestroy"), g = nullptr;
    for (cublasHandle_t *h : {&blas_, &blas_lowp_, &blas_side_})
        if (*h) {
            cublasStatus_t s = cublasDestroy(*h);
            if (s != CUBLAS_STATUS_SUCCESS)
                fprintf(stderr, "cuda engine: warning: cublasDestroy failed: %s\n", cublas_status_name(s));
            *h = nullptr;
        }
    for (auto &ev : ev_)
        if (ev) warn(cudaEventDestroy(ev), "cudaEventDestroy"), ev = nullptr;
    for (cudaEvent_t *e : {&fork_ev_, &join_ev_, &done_[0], &done_[1], &done_[2], &done_[3], &done_[4]})
        if (*e) warn(cudaEventDestroy(*e), "cudaEventDestroy"), *e = nullptr;
    if (side_) warn(cudaStreamDestroy(side_), "cudaStreamDestroy"), side_ = nullptr;
    if (side_ws_) warn(cudaFree(side_ws_), "cudaFree");
    side_ws_ = nullptr;
    void *dev[] = {workspace_, params_, grads_, m_, v_, acts_mem_, run_io_d_, run_loss_d_, run_shapes_d_, rec_mem_,
                   rec_tab_d_};
    for (void *p : dev)
        if (p) warn(cudaFree(p), "cudaFree");
    workspace_ = nullptr;
    params_ = grads_ = m_ = v_ = nullptr;
    acts_mem_ = nullptr;
    rec_mem_ = nullptr;
    rec_tab_d_ = nullptr;
    run_io_d_ = nullptr;
    run_loss_d_ = nullptr;
    run_shapes_d_ = nullptr;
    void *host[] = {io_h_, losses_h_, xfer_h_, run_io_h_, run_loss_h_, run_shapes_h_, bad_h_};
    for (void *p : host)
        if (p) warn(cudaFreeHost(p), "cudaFreeHost");
    io_h_ = run_io_h_ = nullptr;
    bad_h_ = nullptr;
    run_shapes_h_ = nullptr;
    losses_h_ = xfer_h_ = run_loss_h_ = nullptr;
    run_cap_ = 0;
    if (stream_) warn(cudaStreamDestroy(stream_), "cudaStreamDestroy"), stream_ = nullptr;
}

// The path: MICROGPT_CUDA_PATH=fused or layered forces one (fused refuses a
// model it cannot take, with the reason); auto (the default) takes the fused
// step wherever it fits.
template <typename real> void ImplT<real>::choose_path() {
    const char *env = getenv("MICROGPT_CUDA_PATH");
    const std::string want = env && *env ? env : "auto";
    if (want != "auto" && want != "fused" && want != "layered")
        throw CudaError("MICROGPT_CUDA_PATH='" + want + "' is not auto, fused or layered");
    char why[256] = "";
    if (mixed_) {   // the fused step has no mixed-precision recipe
        snprintf(why, sizeof why, "it runs fp64 and fp32 only; %s runs on the layered path",
                 precision_name(cfg_.precision));
        if (want == "fused")
            throw CudaError(std::string("MICROGPT_CUDA_PATH=fused: the fused step cannot take this model: ") + why +
                            "; unset MICROGPT_CUDA_PATH (auto) or set it to layered");
    }
    if (want != "layered" && !mixed_) {
        FusedSmem sm;
        size_t bytes = 0;
        int ok = 0;
        if (!fused_model_of(cfg_.L, &fm_)) {
            snprintf(why, sizeof why, "n_layer %d is over %d, or the layout does not keep wq, wk, wv adjacent", L_,
                     FUSED_MAX_LAYERS);
        } else if (fused_plan<real>(fm_, maxB_, &sm, &bytes, why, sizeof why) == 0) {
            const int g = fused_grid<real>(&sm, bytes, maxB_, why, sizeof why);
            if (g > 0) {
                ok = 1;
                fa_.s = sm;
                fused_grid_ = g;
                fused_smem_ = bytes;
            }
        }
        if (!ok && want == "fused")
            throw CudaError(std::string("MICROGPT_CUDA_PATH=fused: the fused step cannot take this model: ") + why +
                            "; unset MICROGPT_CUDA_PATH (auto) or set it to layered");
        fused_ = ok;
    }
    char label[512];
    if (fused_)
        snprintf(label, sizeof label, "%s; path fused (%d block%s, %.1f KB shared memory each%s)",
                 device_name_.c_str(), fused_grid_, fused_grid_ == 1 ? "" : "s", fused_smem_ / 1024.0,
                 fa_.s.resident ? ", parameters resident" : "");
    else
        snprintf(label, sizeof label, "%s; path layered%s%s%s", device_name_.c_str(), why[0] ? " (fused: " : "", why,
                 why[0] ? ")" : "");
    device_label_ = label;
}

// One launch of the fused step over nsteps batch records.
template <typename real>
void ImplT<real>::launch_fused(const char *io, size_t io_stride, const int *shapes, int B0, int T0, int nsteps,
                               real *losses, size_t loss_stride) {
    FusedArgs<real> a = fa_;
    a.io = io;
    a.io_stride = io_stride;
    a.shapes = shapes;
    a.B0 = B0;
    a.T0 = T0;
    a.nsteps = nsteps;
    a.losses = losses;
    a.loss_stride = loss_stride;
    fused_train<real>(stream_, a, fused_grid_, fused_smem_);
}

// Point p into buf (P elements, canonical layout), tensor by tensor from the table.
template <typename real> void ImplT<real>::point_params(ParamPtrs<real> &p, real *buf, const ParamLayout *L) {
    const size_t nl = (size_t)L->shape.n_layer;
    for (auto *v : {&p.wq, &p.wk, &p.wv, &p.wo, &p.fc1, &p.fc2}) v->assign(nl, nullptr);
    for (int i = 0; i < L->n_tensors; i++) {
        const ParamTensor *t = &L->t[i];
        real *at = buf + t->offset;
        switch (t->kind) {
        case P_WTE: p.wte = at; break;
        case P_WPE: p.wpe = at; break;
        case P_LM_HEAD: p.lm_head = at; break;
        case P_ATTN_WQ: p.wq[t->layer] = at; break;
        case P_ATTN_WK: p.wk[t->layer] = at; break;
        case P_ATTN_WV: p.wv[t->layer] = at; break;
        case P_ATTN_WO: p.wo[t->layer] = at; break;
        case P_MLP_FC1: p.fc1[t->layer] = at; break;
        case P_MLP_FC2: p.fc2[t->layer] = at; break;
        default: throw CudaError("internal error: unknown parameter kind " + std::to_string((int)t->kind) +
                                 " in the layout table");
        }
    }
}

// bf16, fp16, tf32: the recipe's scratch (mixed.cuh) from c: the rounded
// parameters, and for the largest product at max_batch x block_size rows
// (widths up to 4C, V or C+2KV; 4C >= the three q, k, v input gradients of
// C each) an fp32 product t, and each product's rounded output gradient
// (dlp_); fp16: the overflow flag and the state copies. (mx_.a, mx_.w and
// mx_.d, the scratch of the products on fp32 operands, are not used by the
// engine.)
template <typename real> void ImplT<real>::carve_mixed(Carver &c) {
    if (!mixed_) return;
    const size_t rows = (size_t)maxB_ * Tmax_, C = (size_t)C_;
    size_t wide = 4 * C;
    if ((size_t)V_ > wide) wide = (size_t)V_;
    if ((size_t)QKV_ > wide) wide = (size_t)QKV_;
    mx_.cap = rows * wide;
    mx_.wcap = 0;
    const size_t es = lowp_elem_bytes(mx_.lp);
    mx_.a = mx_.w = mx_.d = nullptr;
    mx_.t = c.take<float>(mx_.cap);
    const size_t width[D_COUNT] = {(size_t)V_, C, 4 * C, C, (size_t)QKV_};
    for (int k = 0; k < D_COUNT; k++) dlp_[k] = c.take<char>(rows * width[k] * es);
    wlp_ = c.take<char>(P_ * es);
    mx_side_ = mx_;
    mx_side_.h = blas_side_;
    if (fp16_) {
        bad_d_ = c.take<int>(1);
        snap_ = c.take<real>(3 * P_);
    }
}

// Point every activation of a into c, sized for B documents of block_size positions.
template <typename real> size_t ImplT<real>::point_acts(Acts<real> &a, Carver &c, int B, bool train) {
    const size_t T = (size_t)Tmax_, N = (size_t)B * T, C = (size_t)C_;
    const size_t att = N * (size_t)NH_ * T, qkv = N * (size_t)QKV_;
    const size_t start = c.used;
    a.enc = c.take<real>(N * C);
    a.x0 = c.take<real>(N * C);
    a.rstd0 = c.take<real>(N);
    a.layer.assign((size_t)L_, LayerActs<real>{});
    for (auto &la : a.layer) {
        la.ln1 = c.take<real>(N * C);
        la.ln1_rstd = c.take<real>(N);
        la.qkv = c.take<real>(qkv);
        la.att = c.take<real>(att);
        la.atty = c.take<real>(N * C);
        la.attproj = c.take<real>(N * C);
        la.res2 = c.take<real>(N * C);
        la.ln2 = c.take<real>(N * C);
        la.ln2_rstd = c.take<real>(N);
        const bool l16 = mixed_ && mx_.lp != Lowp::TF32;   // fc1's output kept in L, not fp32
        la.fch = l16 ? nullptr : c.take<real>(N * 4 * C);
        la.fch_relu = mixed_ ? nullptr : c.take<real>(N * 4 * C);
        la.fcproj = c.take<real>(N * C);
        la.res3 = c.take<real>(N * C);
        la.ln1_lp = la.atty_lp = la.ln2_lp = la.fchr_lp = la.fch_lp = nullptr;
        if (mixed_) {
            const size_t es = lowp_elem_bytes(mx_.lp);
            la.ln1_lp = c.take<char>(N * C * es);
            la.atty_lp = c.take<char>(N * C * es);
            la.ln2_lp = c.take<char>(N * C * es);
            la.fchr_lp = c.take<char>(N * 4 * C * es);
            if (l16) la.fch_lp = c.take<char>(N * 4 * C * es);
        }
    }
    a.logits = c.take<real>(N * (size_t)V_);
    a.xl_lp = mixed_ ? c.take<char>(N * C * lowp_elem_bytes(mx_.lp)) : nullptr;
    if (train) {
        a.losses = c.take<real>(N);
        a.dlogits = c.take<real>(N * (size_t)V_);
        a.dx = c.take<real>(N * C);
        a.dln = c.take<real>(N * C);
        a.datty = mixed_ ? nullptr : c.take<real>(N * C);   // the recipe's attention reads wo's t
        a.dqkv = c.take<real>(qkv);
        a.dpre = c.take<real>(att);
        if (!mixed_) {   // the recipe goes from t to fc1's rounded operand in one kernel
            a.dfch = c.take<real>(N * 4 * C);
            a.dfch_relu = c.take<real>(N * 4 * C);
        }
    }
    return c.used - start;
}

// Room for every op's output and gradient at max_batch (reporting), and for
// the fused step the device table of their addresses; the ops the fused step
// never materializes (attn_proj, relu and fc2's outputs; relu's gradient)
// get none there.
template <typename real> void ImplT<real>::setup_record() {
    n_ops_ = act_count(&m_shape_);
    size_t total = 0;
    std::vector<size_t> off((size_t)2 * n_ops_);
    for (int k = 0; k < 2 * n_ops_; k++) {
        ActOp op;
        act_op(&m_shape_, k % n_ops_, &op);
        off[k] = total;
        total += align_up(act_size(&op, maxB_, Tmax_) * sizeof(real));
    }
    rec_mem_ = static_cast<char *>(dmalloc(total, "reported activations"));
    rec_.assign((size_t)2 * n_ops_, nullptr);
    for (int k = 0; k < 2 * n_ops_; k++) {
        ActOp op;
        act_op(&m_shape_, k % n_ops_, &op);
        const bool fused_skips = fused_ && (k < n_ops_ ? op.kind == ACT_ATTN_PROJ || op.kind == ACT_RELU ||
                                                             op.kind == ACT_FC2
                                                       : op.kind == ACT_RELU);
        rec_[k] = fused_skips ? nullptr : reinterpret_cast<real *>(rec_mem_ + off[k]);
    }
    record_ = true;
    if (fused_) {
        rec_tab_d_ = static_cast<real **>(dmalloc(rec_.size() * sizeof(real *), "reported activations' table"));
        CUDA_CHECK(cudaMemcpy(rec_tab_d_, rec_.data(), rec_.size() * sizeof(real *), cudaMemcpyHostToDevice));
        fa_.acts = rec_tab_d_;
        fa_.n_ops = n_ops_;
    }
}

// dst (N, width) dense = src (N, width) of row stride ld, on the step's stream.
template <typename real> void ImplT<real>::rec_copy(real *dst, const real *src, int ld, int width, int N) {
    if (!dst) return;
    CUDA_CHECK(cudaMemcpy2DAsync(dst, (size_t)width * sizeof(real), src, (size_t)ld * sizeof(real),
                                 (size_t)width * sizeof(real), (size_t)N, cudaMemcpyDeviceToDevice, stream_));
}

// ---------------------------------------------------------------------------
// the model (the CPU engine's forward() and backward(), layer for layer)

template <typename real> void ImplT<real>::forward(const Acts<real> &a, int B, int T) {
    if (mixed_) return forward_mixed(a, B, T);
    const int C = C_, N = B * T;
    const int *tok = tok_d(), *n = n_d();
    cudaStream_t st = stream_;
    const bool train = &a == &acts_;   // (the sampler's forward has no faults and reports nothing)
    auto fwd = [&](ActKind kind, int l, real *buf, int ld, int rows, int width) {
        if (train) bump(FAULT_OP_FWD, kind, l, buf, ld, rows, width);
    };
    // x0 = rmsnorm(wte[tok] + wpe[t]) and the first layer's input norm, in one kernel
    encoder_rmsnorm_forward(st, a.enc, a.x0, a.rstd0, L_ ? a.layer[0].ln1 : nullptr,
                            L_ ? a.layer[0].ln1_rstd : nullptr, tok, n, P.wte, P.wpe, B, T, C);
    fwd(ACT_EMBED, -1, a.enc, C, N, C);
    fwd(ACT_EMBED_NORM, -1, a.x0, C, N, C);
    const real *x = a.x0;   // the residual stream
    for (int l = 0; l < L_; l++) {
        const LayerActs<real> &la = a.layer[l];
        fwd(ACT_NORM1, l, la.ln1, C, N, C);
        real *q = la.qkv, *k = la.qkv + C, *v = la.qkv + C + KV_;
        if (qkv_fused_[l]) {
            matmul_forward(blas_, la.qkv, QKV_, la.ln1, P.wq[l], N, C, QKV_);
        } else {
            matmul_forward(blas_, q, QKV_, la.ln1, P.wq[l], N, C, C);
            matmul_forward(blas_, k, QKV_, la.ln1, P.wk[l], N, C, KV_);
            matmul_forward(blas_, v, QKV_, la.ln1, P.wv[l], N, C, KV_);
        }
        fwd(ACT_Q, l, q, QKV_, N, C);
        fwd(ACT_K, l, k, QKV_, N, KV_);
        fwd(ACT_V, l, v, QKV_, N, KV_);
        real *scores = train ? recf(ACT_SCORES, l) : nullptr;
        attention_forward(st, la.atty, la.att, q, QKV_, k, v, QKV_, n, B, T, NH_, NKV_, HS_, AttnPath::Auto, scores);
        // the scores and the softmax live inside one kernel: the scores'
        // fault is planted in what it reports, the softmax's in att (which
        // the backward reads)
        if (scores) fwd(ACT_SCORES, l, scores, T * NH_ * T, B, T * NH_ * T);
        fwd(ACT_SOFTMAX, l, la.att, T * NH_ * T, B, T * NH_ * T);
        fwd(ACT_ATTN, l, la.atty, C, N, C);
        matmul_forward(blas_, la.attproj, C, la.atty, P.wo[l], N, C, C);
        fwd(ACT_ATTN_PROJ, l, la.attproj, C, N, C);
        residual_rmsnorm_forward(st, la.res2, la.ln2, la.ln2_rstd, la.attproj, x, N, C);
        fwd(ACT_RES1, l, la.res2, C, N, C);
        fwd(ACT_NORM2, l, la.ln2, C, N, C);
        matmul_forward(blas_, la.fch, 4 * C, la.ln2, P.fc1[l], N, C, 4 * C);
        fwd(ACT_FC1, l, la.fch, 4 * C, N, 4 * C);
        relu_forward(st, la.fch_relu, la.fch, (size_t)N * 4 * C);
        fwd(ACT_RELU, l, la.fch_relu, 4 * C, N, 4 * C);
        matmul_forward(blas_, la.fcproj, C, la.fch_relu, P.fc2[l], N, 4 * C, C);
        fwd(ACT_FC2, l, la.fcproj, C, N, C);
        if (l + 1 < L_)   // with the next layer's input norm
            residual_rmsnorm_forward(st, la.res3, a.layer[l + 1].ln1, a.layer[l + 1].ln1_rstd, la.fcproj,
                                     la.res2, N, C);
        else
            residual_forward(st, la.res3, la.fcproj, la.res2, (size_t)N * C);
        fwd(ACT_RES2, l, la.res3, C, N, C);
        x = la.res3;
    }
    matmul_forward(blas_, a.logits, V_, x, P.lm_head, N, C, V_);
    fwd(ACT_LOGITS, -1, a.logits, V_, N, V_);
}

// From acts_.dlogits into the gradients. Every gradient tensor is written
// once with acc = false (overwrite), so the gradient buffer needs no zeroing;
// dx, the gradient of the residual stream, accumulates the rmsnorm branches.
template <typename real> void ImplT<real>::backward(int B, int T) {
    if (mixed_) return backward_mixed(B, T);
    const int C = C_, N = B * T;
    const int *tok = tok_d(), *n = n_d();
    cudaStream_t st = stream_;
    Acts<real> &a = acts_;
    const real *x_last = L_ ? a.layer[L_ - 1].res3 : a.x0;
    // recb: each gradient copied out as it is made (reporting; nothing when not asked)
    // FAULT_OP_BWD at act_count (one past the table): the cross-entropy's gradient
    if (cfg_.fault == FAULT_OP_BWD && cfg_.fault_op == n_ops_all()) fault_bump(st, a.dlogits, V_, N, V_, 0.01);
    rec_copy(recb(ACT_LOGITS, -1), a.dlogits, V_, V_, N);
    matmul_backward(blas_, a.dx, false, G.lm_head, false, a.dlogits, V_, x_last, P.lm_head, N, C, V_, dws_);
    bump(FAULT_OP_BWD, ACT_LOGITS, -1, a.dx, C, N, C);
    for (int l = L_ - 1; l >= 0; l--) {
        const LayerActs<real> &la = a.layer[l];
        const real *x_in = l ? a.layer[l - 1].res3 : a.x0;
        // MLP: res3 = fc2(relu(fc1(rmsnorm(res2)))) + res2
        rec_copy(recb(ACT_RES2, l), a.dx, C, C, N);
        rec_copy(recb(ACT_FC2, l), a.dx, C, C, N);
        matmul_backward(blas_, a.dfch_relu, false, G.fc2[l], false, a.dx, C, la.fch_relu, P.fc2[l], N, 4 * C, C, dws_);
        bump(FAULT_OP_BWD, ACT_FC2, l, a.dfch_relu, 4 * C, N, 4 * C);
        rec_copy(recb(ACT_RELU, l), a.dfch_relu, 4 * C, 4 * C, N);
        relu_backward(st, a.dfch, a.dfch_relu, la.fch, (size_t)N * 4 * C, false);
        bump(FAULT_OP_BWD, ACT_RELU, l, a.dfch, 4 * C, N, 4 * C);
        rec_copy(recb(ACT_FC1, l), a.dfch, 4 * C, 4 * C, N);
        matmul_backward(blas_, a.dln, false, G.fc1[l], false, a.dfch, 4 * C, la.ln2, P.fc1[l], N, C, 4 * C, dws_);
        bump(FAULT_OP_BWD, ACT_FC1, l, a.dln, C, N, C);
        rec_copy(recb(ACT_NORM2, l), a.dln, C, C, N);
        bump(FAULT_OP_BWD, ACT_RES2, l, a.dx, C, N, C);   // the residual's gradient res2 -> res1, as it passes
        rmsnorm_backward(st, a.dx, a.dln, la.res2, la.ln2_rstd, N, C, true);
        bump(FAULT_OP_BWD, ACT_NORM2, l, a.dx, C, N, C);
        rec_copy(recb(ACT_RES1, l), a.dx, C, C, N);
        rec_copy(recb(ACT_ATTN_PROJ, l), a.dx, C, C, N);
        // attention: res2 = wo(attention(q, k, v of rmsnorm(x_in))) + x_in
        matmul_backward(blas_, a.datty, false, G.wo[l], false, a.dx, C, la.atty, P.wo[l], N, C, C, dws_);
        bump(FAULT_OP_BWD, ACT_ATTN_PROJ, l, a.datty, C, N, C);
        rec_copy(recb(ACT_ATTN, l), a.datty, C, C, N);
        const real *q = la.qkv, *k = la.qkv + C, *v = la.qkv + C + KV_;
        real *dq = a.dqkv, *dk = a.dqkv + C, *dv = a.dqkv + C + KV_;
        // the backward writes dpre at the causal, real positions only: when it
        // is reported, the rest must read 0 (not an earlier step's values or
        // uninitialized memory: compute-sanitizer's initcheck)
        if (recb(ACT_SCORES, l)) CUDA_CHECK(cudaMemsetAsync(a.dpre, 0, (size_t)B * NH_ * T * T * sizeof(real), st));
        attention_backward(st, dq, QKV_, dk, dv, QKV_, a.dpre, a.datty, la.att, q, QKV_, k, v, QKV_, n, B, T, NH_,
                           NKV_, HS_, false, AttnPath::Auto, recb(ACT_SOFTMAX, l));
        // dpre carries the scale into q.k: get_activation divides it out
        rec_copy(recb(ACT_SCORES, l), a.dpre, T * NH_ * T, T * NH_ * T, B);
        // the attention's three backwards are one call: the weighted sum's
        // fault on what it passes into v, the scores' into q, the softmax's
        // on what it reports passing into the scores
        bump(FAULT_OP_BWD, ACT_ATTN, l, dv, QKV_, N, KV_);
        bump(FAULT_OP_BWD, ACT_SCORES, l, dq, QKV_, N, C);
        if (recb(ACT_SCORES, l)) bump(FAULT_OP_BWD, ACT_SOFTMAX, l, recb(ACT_SCORES, l), T * NH_ * T, B, T * NH_ * T);
        rec_copy(recb(ACT_Q, l), dq, QKV_, C, N);
        rec_copy(recb(ACT_K, l), dk, QKV_, KV_, N);
        rec_copy(recb(ACT_V, l), dv, QKV_, KV_, N);
        if (qkv_fused_[l]) {
            matmul_backward(blas_, a.dln, false, G.wq[l], false, a.dqkv, QKV_, la.ln1, P.wq[l], N, C, QKV_, dws_);
        } else {
            matmul_backward(blas_, a.dln, false, G.wq[l], false, dq, QKV_, la.ln1, P.wq[l], N, C, C, dws_);
            matmul_backward(blas_, a.dln, true, G.wk[l], false, dk, QKV_, la.ln1, P.wk[l], N, C, KV_, dws_);
            matmul_backward(blas_, a.dln, true, G.wv[l], false, dv, QKV_, la.ln1, P.wv[l], N, C, KV_, dws_);
        }
        for (ActKind kd : {ACT_Q, ACT_K, ACT_V}) bump(FAULT_OP_BWD, kd, l, a.dln, C, N, C);
        rec_copy(recb(ACT_NORM1, l), a.dln, C, C, N);
        bump(FAULT_OP_BWD, ACT_RES1, l, a.dx, C, N, C);
        rmsnorm_backward(st, a.dx, a.dln, x_in, la.ln1_rstd, N, C, true);
        bump(FAULT_OP_BWD, ACT_NORM1, l, a.dx, C, N, C);
    }
    // x0 = rmsnorm(wte[tok] + wpe[t])
    rec_copy(recb(ACT_EMBED_NORM, -1), a.dx, C, C, N);
    rmsnorm_backward(st, a.dln, a.dx, a.enc, a.rstd0, N, C, false);
    bump(FAULT_OP_BWD, ACT_EMBED_NORM, -1, a.dln, C, N, C);
    rec_copy(recb(ACT_EMBED, -1), a.dln, C, C, N);
    encoder_backward(st, G.wte, G.wpe, a.dln, tok, n, B, T, C, V_, Tmax_, false);
    bump(FAULT_OP_BWD, ACT_EMBED, -1, G.wte, C, V_, C);   // its input is the parameters: wte's gradient
}

// bf16, fp16, tf32: forward() by the recipe. Each operand is rounded once:
// the parameters at the step's start (wlp_), each activation operand where it
// is made (kept in the layer for the backward): the norms' by the rmsnorm rows
// (which also round the projection their residual adds), fc2's by relu
// (bf16, fp16: on fc1's output, which cuBLAS stores rounded to L; tf32:
// relu and the operand's rounding in one); q, k and v, stored in L by the
// recipe, are rounded by the attention as it loads them. Every value is the
// CPU emulation's (tensor_gpu/cpu/engine_cpu.c) but for the fp32 sums' order.
template <typename real> void ImplT<real>::forward_mixed(const Acts<real> &a, int B, int T) {
    if constexpr (!std::is_same<real, float>::value) {
        (void)a, (void)B, (void)T;
        throw CudaError("internal error: no fp64 recipe for the mixed precisions");
    } else {
        const int C = C_, N = B * T;
        const int *tok = tok_d(), *n = n_d();
        cudaStream_t st = stream_;
        const Lowp lp = mx_.lp;
        lowp_convert_flat(st, lp, wlp_, params_, P_);
        encoder_rmsnorm_forward(st, a.enc, a.x0, a.rstd0, (float *)nullptr, (float *)nullptr, tok, n, P.wte, P.wpe,
                                B, T, C);
        if (L_) lowp_residual_rmsnorm(st, lp, nullptr, a.layer[0].ln1_lp, a.layer[0].ln1_rstd, nullptr, a.x0, N, C, true);
        const float *x = a.x0;   // the residual stream
        for (int l = 0; l < L_; l++) {
            const LayerActs<real> &la = a.layer[l];
            float *q = la.qkv, *k = la.qkv + C, *v = la.qkv + C + KV_;
            // q, k, v unrounded: the attention takes their L values (mixed.cuh)
            if (qkv_fused_[l]) {
                mixed_gemm_forward(mx_, la.qkv, QKV_, la.ln1_lp, wlp(P.wq[l]), N, C, QKV_, false);
            } else {
                mixed_gemm_forward(mx_, q, QKV_, la.ln1_lp, wlp(P.wq[l]), N, C, C, false);
                mixed_gemm_forward(mx_, k, QKV_, la.ln1_lp, wlp(P.wk[l]), N, C, KV_, false);
                mixed_gemm_forward(mx_, v, QKV_, la.ln1_lp, wlp(P.wv[l]), N, C, KV_, false);
            }
            attention_forward_lowp(st, lp, la.atty_lp, la.atty, la.att, q, QKV_, k, v, QKV_, n, B, T, NH_, NKV_,
                                   HS_);
            // attproj and fcproj are rounded where the residual adds them
            mixed_gemm_forward(mx_, la.attproj, C, la.atty_lp, wlp(P.wo[l]), N, C, C, false);
            lowp_residual_rmsnorm(st, lp, la.res2, la.ln2_lp, la.ln2_rstd, la.attproj, x, N, C, true);
            if (lp == Lowp::TF32) {   // fch (fp32, kept), relu, rounded: fc2's operand
                mixed_gemm_forward(mx_, la.fch, 4 * C, la.ln2_lp, wlp(P.fc1[l]), N, C, 4 * C, false);
                lowp_round_relu(st, lp, la.fch, la.fchr_lp, (size_t)N * 4 * C);
            } else {   // fch rounded to L by cuBLAS, then relu
                mixed_gemm_forward_lp(mx_, la.fch_lp, 4 * C, la.ln2_lp, wlp(P.fc1[l]), N, C, 4 * C);
                lowp_relu(st, lp, la.fchr_lp, la.fch_lp, (size_t)N * 4 * C);
            }
            mixed_gemm_forward(mx_, la.fcproj, C, la.fchr_lp, wlp(P.fc2[l]), N, 4 * C, C, false);
            if (l + 1 < L_)
                lowp_residual_rmsnorm(st, lp, la.res3, a.layer[l + 1].ln1_lp, a.layer[l + 1].ln1_rstd, la.fcproj,
                                      la.res2, N, C, true);
            else   // the head's operand: the residual stream itself
                lowp_residual_rmsnorm(st, lp, la.res3, a.xl_lp, nullptr, la.fcproj, la.res2, N, C, false);
            x = la.res3;
        }
        if (!L_) lowp_convert(st, lp, a.xl_lp, x, N, C, C);
        mixed_gemm_forward(mx_, a.logits, V_, a.xl_lp, wlp(P.lm_head), N, C, V_, true);
    }
}

// bf16, fp16, tf32: backward() by the recipe. Each product's output gradient
// is rounded once into its dlp_ (both of its products read it): fc2's and
// wo's by the rmsnorm backward that finishes dx (the last layer's fc2 one by
// the head's), fc1's by relu's backward from fc2's input gradient (bf16,
// fp16: which cuBLAS stores rounded to L, masked in place).
// Each input gradient goes through t, its fp32 product, and is rounded where
// it is read: by the norm's backward (fc1's; q, k and v's three, in the
// CPU's order), or by the attention as it loads it (wo's, datty). The
// weight gradients read the forward's kept operands, on side_ (see dlp_);
// q|k|v's one product (C+2KV, C) when wq|wk|wv are stacked.
template <typename real> void ImplT<real>::backward_mixed(int B, int T) {
    if constexpr (!std::is_same<real, float>::value) {
        (void)B, (void)T;
        throw CudaError("internal error: no fp64 recipe for the mixed precisions");
    } else {
        const int C = C_, N = B * T;
        const size_t NC = (size_t)N * C;
        const int *tok = tok_d(), *n = n_d();
        cudaStream_t st = stream_;
        const Lowp lp = mx_.lp;
        Acts<real> &a = acts_;
        float *t = mx_.t;   // (N, <= wide) an input gradient before its rounding
        bool pending[D_COUNT] = {};
        // the output gradient of product k: wait until its buffer is free
        auto out_grad = [&](int k) {
            if (pending[k]) CUDA_CHECK(cudaStreamWaitEvent(st, done_[k], 0));
            return dlp_[k];
        };
        // the weight gradients of product k, once its dlp_[k] is made
        auto side = [&](int k, auto &&products) {
            CUDA_CHECK(cudaEventRecord(fork_ev_, st));
            CUDA_CHECK(cudaStreamWaitEvent(side_, fork_ev_, 0));
            products();
            CUDA_CHECK(cudaEventRecord(done_[k], side_));
            pending[k] = true;
        };
        void *d = out_grad(D_HEAD);
        lowp_convert(st, lp, d, a.dlogits, N, V_, V_);
        side(D_HEAD, [&] { mixed_gemm_dw(mx_side_, G.lm_head, false, d, V_, a.xl_lp, N, C, V_); });
        mixed_gemm_dinp(mx_, t, d, V_, wlp(P.lm_head), N, C, V_);
        // dx, and the last layer's fc2 output gradient rounded (each later
        // one comes out of the rmsnorm backward that finishes dx)
        void *d2 = L_ ? out_grad(D_FC2) : nullptr;
        if (L_) lowp_add_rounded_convert(st, lp, a.dx, d2, t, NC);
        else lowp_add_rounded(st, lp, a.dx, t, NC, false);
        for (int l = L_ - 1; l >= 0; l--) {
            const LayerActs<real> &la = a.layer[l];
            const float *x_in = l ? a.layer[l - 1].res3 : a.x0;
            // MLP: res3 = fc2(relu(fc1(rmsnorm(res2)))) + res2
            side(D_FC2, [&] { mixed_gemm_dw(mx_side_, G.fc2[l], false, d2, C, la.fchr_lp, N, 4 * C, C); });
            void *d1 = out_grad(D_FC1);
            if (lp == Lowp::TF32) {
                mixed_gemm_dinp(mx_, t, d2, C, wlp(P.fc2[l]), N, 4 * C, C);
                lowp_relu_backward(st, lp, d1, t, la.fch, (size_t)N * 4 * C);
            } else {   // fc2's input gradient rounded to L by cuBLAS, masked in place
                mixed_gemm_dinp_lp(mx_, d1, d2, C, wlp(P.fc2[l]), N, 4 * C, C);
                lowp_relu_mask(st, lp, d1, la.fchr_lp, (size_t)N * 4 * C);
            }
            side(D_FC1, [&] { mixed_gemm_dw(mx_side_, G.fc1[l], false, d1, 4 * C, la.ln2_lp, N, C, 4 * C); });
            mixed_gemm_dinp(mx_, t, d1, 4 * C, wlp(P.fc1[l]), N, C, 4 * C);
            void *dw = out_grad(D_WO);
            lowp_rmsnorm_backward(st, lp, a.dx, dw, t, nullptr, nullptr, la.res2, la.ln2_rstd, N, C);
            // attention: res2 = wo(attention(q, k, v of rmsnorm(x_in))) + x_in
            side(D_WO, [&] { mixed_gemm_dw(mx_side_, G.wo[l], false, dw, C, la.atty_lp, N, C, C); });
            mixed_gemm_dinp(mx_, t, dw, C, wlp(P.wo[l]), N, C, C);
            // datty: t itself, unrounded (the attention takes its L value)
            float *q = la.qkv, *k = la.qkv + C, *v = la.qkv + C + KV_;
            void *dqkv = out_grad(D_QKV);
            attention_backward_lowp(st, lp, dqkv, a.dqkv, QKV_, a.dpre, t, la.att, q, k, v, QKV_, n, B, T, NH_, NKV_,
                                    HS_);
            const void *dk_lp = lowp_at(lp, dqkv, (size_t)C), *dv_lp = lowp_at(lp, dqkv, (size_t)(C + KV_));
            side(D_QKV, [&] {
                if (qkv_fused_[l]) {
                    mixed_gemm_dw(mx_side_, G.wq[l], false, dqkv, QKV_, la.ln1_lp, N, C, QKV_);
                } else {
                    mixed_gemm_dw(mx_side_, G.wq[l], false, dqkv, QKV_, la.ln1_lp, N, C, C);
                    mixed_gemm_dw(mx_side_, G.wk[l], false, dk_lp, QKV_, la.ln1_lp, N, C, KV_);
                    mixed_gemm_dw(mx_side_, G.wv[l], false, dv_lp, QKV_, la.ln1_lp, N, C, KV_);
                }
            });
            mixed_gemm_dinp(mx_, t, dqkv, QKV_, wlp(P.wq[l]), N, C, C);
            mixed_gemm_dinp(mx_, t + NC, dk_lp, QKV_, wlp(P.wk[l]), N, C, KV_);
            mixed_gemm_dinp(mx_, t + 2 * NC, dv_lp, QKV_, wlp(P.wv[l]), N, C, KV_);
            d2 = l ? out_grad(D_FC2) : nullptr;   // the layer below's
            lowp_rmsnorm_backward(st, lp, a.dx, d2, t, t + NC, t + 2 * NC, x_in, la.ln1_rstd, N, C);
        }
        // x0 = rmsnorm(wte[tok] + wpe[t])
        rmsnorm_backward(st, a.dln, a.dx, a.enc, a.rstd0, N, C, false);
        encoder_backward(st, G.wte, G.wpe, a.dln, tok, n, B, T, C, V_, Tmax_, false);
        // every weight gradient done before Adam (and before the graph ends)
        CUDA_CHECK(cudaEventRecord(join_ev_, side_));
        CUDA_CHECK(cudaStreamWaitEvent(st, join_ev_, 0));
    }
}

template <typename real> void ImplT<real>::enqueue_step(int B, int T) {
    { NvtxRange r("forward"); forward(acts_, B, T); }
    { NvtxRange r("loss"); crossentropy_forward_backward(stream_, acts_.dlogits, acts_.losses, acts_.logits, tok_d(), n_d(), B, T, V_,
                                                         cfg_.s->token_mean != 0); }
    if constexpr (std::is_same<real, float>::value) {
        // fp16: the backward from loss x scale (padding's dlogits are 0 either way)
        if (fp16_) loss_scale_apply(stream_, acts_.dlogits, (size_t)B * T * V_, ls_d());
    }
    { NvtxRange r("backward"); backward(B, T); }
    const Settings *s = cfg_.s;
    NvtxRange r("adam");
    if constexpr (std::is_same<real, float>::value) {
        if (fp16_) {   // the gradients divided by the scale; the state Adam starts from kept
            CUDA_CHECK(cudaMemsetAsync(bad_d_, 0, sizeof(int), stream_));
            loss_unscale_check(stream_, grads_, P_, ls_d(), bad_d_);
            for (int k = 0; k < 3; k++)
                CUDA_CHECK(cudaMemcpyAsync(snap_ + k * P_, k == 0 ? params_ : k == 1 ? m_ : v_, P_ * sizeof(real),
                                           cudaMemcpyDeviceToDevice, stream_));
        }
    }
    adam_update(stream_, params_, grads_, m_, v_, P_, sc_d(), s->beta1, s->beta2, s->eps);
    if constexpr (std::is_same<real, float>::value) {
        if (fp16_)   // an overflowed gradient: the update undone (GradScaler skips it)
            for (int k = 0; k < 3; k++) restore_if(stream_, k == 0 ? params_ : k == 1 ? m_ : v_, snap_ + k * P_, P_, bad_d_);
    }
}

template <typename real> void ImplT<real>::disable_graphs(const char *why) {
    fprintf(stderr, "cuda engine: warning: CUDA graph capture failed (%s); running the steps without graphs\n",
            why);
    use_graphs_ = false;
}

// The step's graph for batch shape (B,T). The first step of a shape runs
// eagerly (every kernel gets loaded outside any capture); the second captures
// the graph, which every later step of that shape replays. The kernels read
// the batch and Adam's scalars from fixed device addresses, so one graph
// serves every step of its shape.
template <typename real> cudaGraphExec_t ImplT<real>::graph_for(int B, int T) {
    const size_t key = (size_t)(B - 1) * Tmax_ + (T - 1);
    if (graphs_[key]) return graphs_[key];
    if (!seen_[key]) {
        seen_[key] = 1;
        return nullptr;
    }
    return capture(B, T);
}

// Capture the step of shape (B,T) into graphs_ (nullptr, with graphs turned
// off and a warning, if capture fails).
template <typename real> cudaGraphExec_t ImplT<real>::capture(int B, int T) {
    const size_t key = (size_t)(B - 1) * Tmax_ + (T - 1);
    CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
        enqueue_step(B, T);
    } catch (const CudaError &x) {
        cudaGraph_t junk = nullptr;
        cudaStreamEndCapture(stream_, &junk);
        if (junk) cudaGraphDestroy(junk);
        cudaGetLastError();
        disable_graphs(x.what());
        return nullptr;
    }
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (graph) cudaGraphDestroy(graph);
        disable_graphs(cudaGetErrorString(e));
        return nullptr;
    }
    cudaGraphExec_t exec = nullptr;
    e = cudaGraphInstantiate(&exec, graph, 0);
    CUDA_CHECK(cudaGraphDestroy(graph));
    if (e != cudaSuccess) {
        cudaGetLastError();
        disable_graphs(cudaGetErrorString(e));
        return nullptr;
    }
    graphs_[key] = exec;
    return exec;
}


template <typename real> double ImplT<real>::step(const Batch *b, int step) {
    NvtxRange range("cuda step");
    batch_check(b, maxB_, Tmax_, V_);
    const int B = b->B, T = b->T;
    const size_t io_bytes = fill_io(io_h_, b, step);
    cudaGraphExec_t exec = use_graphs_ && !fused_ ? graph_for(B, T) : nullptr;   // captures before the upload
    CUDA_CHECK(cudaMemcpyAsync(io_d_, io_h_, io_bytes, cudaMemcpyHostToDevice, stream_));
    if (fused_) launch_fused(io_d_, 0, nullptr, B, T, 1, acts_.losses, 0);
    else if (exec) CUDA_CHECK(cudaGraphLaunch(exec, stream_));
    else enqueue_step(B, T);
    CUDA_CHECK(cudaMemcpyAsync(losses_h_, acts_.losses, (size_t)B * T * sizeof(real), cudaMemcpyDeviceToHost,
                               stream_));
    if (fp16_) CUDA_CHECK(cudaMemcpyAsync(bad_h_, bad_d_, sizeof(int), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));   // the step's one synchronization
    if (fp16_) {   // GradScaler: halve the scale after an overflow, double it after 2000 clean steps
        used_scale_ = scale_;
        skipped_ = *bad_h_ != 0;
        if (skipped_) scale_ *= 0.5, good_steps_ = 0;
        else if (++good_steps_ == 2000) scale_ *= 2.0, good_steps_ = 0;
    }
    last_B_ = B;
    last_T_ = T;
    memcpy(last_n_.data(), b->n, (size_t)B * sizeof(int));
    return crossentropy_mean(losses_h_, b->n, B, T, cfg_.s->token_mean != 0);
}

// The batch upload of step `step` in the io layout at dst (Adam's scalars,
// n, tokens); returns the bytes to copy.
template <typename real> size_t ImplT<real>::fill_io(char *dst, const Batch *b, int step) const {
    const Settings *s = cfg_.s;
    const AdamScalars sc = adam_scalars(lr_at(s->lr, step, s->steps), s->beta1, s->beta2, step);
    memcpy(dst + io_.sc, &sc, sizeof sc);
    const float ls[2] = {(float)scale_, (float)(1.0 / scale_)};   // fp16 (as the CPU engine rounds them)
    if (fp16_) memcpy(dst + io_.ls, ls, sizeof ls);
    memcpy(dst + io_.n, b->n, (size_t)b->B * sizeof(int));
    const size_t ntok = (size_t)b->B * (size_t)(b->T + 1);
    memcpy(dst + io_.tok, b->tokens, ntok * sizeof(int));
    return io_.tok + ntok * sizeof(int);
}

// n steps back to back: every batch (with its Adam scalars) goes up before
// the first step, each step is a device-to-device copy of its batch into the
// fixed upload area, the step's graph and a device-to-device copy of its
// per-position losses; nothing returns to the host until the last step is
// done. CUDA events time the steps alone. The losses are then reduced on the
// host exactly as step() does.
template <typename real>
void ImplT<real>::run_steps(const Batch *bs, int first, int n, double *losses, double *seconds) {
    const size_t rows = (size_t)maxB_ * Tmax_;
    if (fp16_)   // its scale changes between steps on the host
        throw CudaError("run_steps (the benchmark) does not run fp16; use step()");
    if ((size_t)n > run_cap_) {
        for (void *p : {(void *)run_io_d_, (void *)run_loss_d_, (void *)run_shapes_d_})
            if (p) CUDA_CHECK(cudaFree(p));
        for (void *p : {(void *)run_io_h_, (void *)run_loss_h_, (void *)run_shapes_h_})
            if (p) CUDA_CHECK(cudaFreeHost(p));
        run_io_d_ = nullptr, run_loss_d_ = nullptr, run_io_h_ = nullptr, run_loss_h_ = nullptr;
        run_shapes_d_ = nullptr, run_shapes_h_ = nullptr;
        run_cap_ = 0;
        const size_t io_stride = align_up(io_.bytes);
        run_io_d_ = static_cast<char *>(dmalloc((size_t)n * io_stride, "run_steps batches"));
        run_loss_d_ = static_cast<real *>(dmalloc((size_t)n * rows * sizeof(real), "run_steps losses"));
        run_io_h_ = static_cast<char *>(HOST_MALLOC_PINNED((size_t)n * io_stride, "run_steps batches"));
        run_loss_h_ = static_cast<real *>(HOST_MALLOC_PINNED((size_t)n * rows * sizeof(real), "run_steps losses"));
        run_shapes_d_ = static_cast<int *>(dmalloc((size_t)n * 2 * sizeof(int), "run_steps shapes"));
        run_shapes_h_ = static_cast<int *>(HOST_MALLOC_PINNED((size_t)n * 2 * sizeof(int), "run_steps shapes"));
        run_cap_ = (size_t)n;
    }
    if (!ev_[0])
        for (auto &ev : ev_) CUDA_CHECK(cudaEventCreate(&ev));
    const size_t io_stride = align_up(io_.bytes);
    std::vector<size_t> io_bytes((size_t)n);
    for (int i = 0; i < n; i++) {
        batch_check(&bs[i], maxB_, Tmax_, V_);
        io_bytes[i] = fill_io(run_io_h_ + (size_t)i * io_stride, &bs[i], first + i);
        run_shapes_h_[2 * i] = bs[i].B;
        run_shapes_h_[2 * i + 1] = bs[i].T;
        // every shape's graph exists before the clock starts
        const size_t key = (size_t)(bs[i].B - 1) * Tmax_ + (bs[i].T - 1);
        if (use_graphs_ && !fused_ && !graphs_[key]) capture(bs[i].B, bs[i].T);
    }
    CUDA_CHECK(cudaMemcpyAsync(run_io_d_, run_io_h_, (size_t)n * io_stride, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaMemcpyAsync(run_shapes_d_, run_shapes_h_, (size_t)n * 2 * sizeof(int), cudaMemcpyHostToDevice,
                               stream_));
    CUDA_CHECK(cudaEventRecord(ev_[0], stream_));
    if (fused_) launch_fused(run_io_d_, io_stride, run_shapes_d_, 0, 0, n, run_loss_d_, rows);
    for (int i = 0; i < n && !fused_; i++) {
        const int B = bs[i].B, T = bs[i].T;
        CUDA_CHECK(cudaMemcpyAsync(io_d_, run_io_d_ + (size_t)i * io_stride, io_bytes[i], cudaMemcpyDeviceToDevice,
                                   stream_));
        cudaGraphExec_t exec = use_graphs_ ? graphs_[(size_t)(B - 1) * Tmax_ + (T - 1)] : nullptr;
        if (exec) CUDA_CHECK(cudaGraphLaunch(exec, stream_));
        else enqueue_step(B, T);
        CUDA_CHECK(cudaMemcpyAsync(run_loss_d_ + (size_t)i * rows, acts_.losses, (size_t)B * T * sizeof(real),
                                   cudaMemcpyDeviceToDevice, stream_));
    }
    CUDA_CHECK(cudaEventRecord(ev_[1], stream_));
    CUDA_CHECK(cudaMemcpyAsync(run_loss_h_, run_loss_d_, (size_t)n * rows * sizeof(real), cudaMemcpyDeviceToHost,
                               stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, ev_[0], ev_[1]));
    *seconds = 1e-3 * (double)ms;
    for (int i = 0; i < n; i++)
        losses[i] = crossentropy_mean(run_loss_h_ + (size_t)i * rows, bs[i].n, bs[i].B, bs[i].T,
                                      cfg_.s->token_mean != 0);
    const Batch *last = &bs[n - 1];
    last_B_ = last->B;
    last_T_ = last->T;
    memcpy(last_n_.data(), last->n, (size_t)last->B * sizeof(int));
}

// ---------------------------------------------------------------------------
// transfers

template <typename real> void ImplT<real>::download_flat(double *out, const real *dev) {
    CUDA_CHECK(cudaMemcpyAsync(xfer_h_, dev, P_ * sizeof(real), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (size_t i = 0; i < P_; i++) out[i] = (double)xfer_h_[i];
}

template <typename real> void ImplT<real>::upload_flat(real *dev, const double *in) {
    for (size_t i = 0; i < P_; i++) xfer_h_[i] = (real)in[i];
    CUDA_CHECK(cudaMemcpyAsync(dev, xfer_h_, P_ * sizeof(real), cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));   // xfer_h_ is reused at once
}

template <typename real> void ImplT<real>::set_state(const double *p, const double *m, const double *v) {
    upload_flat(params_, p);
    if (m) upload_flat(m_, m);
    if (v) upload_flat(v_, v);
}

// The last step's logits (B,T,V), NaN at padded positions.
template <typename real> void ImplT<real>::get_logits(double *out) {
    const size_t row = (size_t)last_T_ * V_, count = (size_t)last_B_ * row;
    if (!count) return;
    CUDA_CHECK(cudaMemcpyAsync(xfer_h_, acts_.logits, count * sizeof(real), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (int d = 0; d < last_B_; d++) {
        const size_t real_end = (size_t)last_n_[d] * V_;
        for (size_t i = 0; i < row; i++)
            out[(size_t)d * row + i] = i < real_end ? (double)xfer_h_[(size_t)d * row + i] : NAN;
    }
}

// The last step's ReLU inputs (the mlp_fc1 outputs), (L,B,T,4C), NaN at
// padding. bf16, fp16: the recipe's stored outputs, fch_lp in L (2 bytes a
// value: copied into the first half of the transfer buffer and widened
// here); tf32 and the plain precisions: fch.
template <typename real> void ImplT<real>::get_relu_inputs(double *out) {
    const size_t H = 4 * (size_t)C_, per_layer = (size_t)last_B_ * last_T_ * H;
    if (!per_layer) return;
    const bool l16 = mixed_ && mx_.lp != Lowp::TF32;
    uint16_t *h16 = reinterpret_cast<uint16_t *>(xfer_h_);
    for (int l = 0; l < L_; l++) {
        if (l16)
            CUDA_CHECK(cudaMemcpyAsync(h16 + l * per_layer, acts_.layer[l].fch_lp, per_layer * sizeof(uint16_t),
                                       cudaMemcpyDeviceToHost, stream_));
        else
            CUDA_CHECK(cudaMemcpyAsync(xfer_h_ + l * per_layer, acts_.layer[l].fch, per_layer * sizeof(real),
                                       cudaMemcpyDeviceToHost, stream_));
    }
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (int l = 0; l < L_; l++)
        for (int d = 0; d < last_B_; d++)
            for (int t = 0; t < last_T_; t++) {
                const size_t o = (((size_t)l * last_B_ + d) * last_T_ + t) * H;
                for (size_t j = 0; j < H; j++) {
                    const double x = l16 ? (double)lowp16_value(mx_.lp, h16[o + j]) : (double)xfer_h_[o + j];
                    out[o + j] = t < last_n_[d] ? x : NAN;
                }
            }
}

// Op `op`'s output (grad 0) or gradient (grad 1) of the last step, in the
// layout of common/activations.h (cfg.activations, fp32 and fp64). The
// layered path's outputs are read where its forward keeps them (q, k and v
// out of the q|k|v rows), its scores and every gradient from the copies
// made during the step; the fused step's from what it wrote. The scores'
// gradient is the backward's dpre with its scale divided out.
template <typename real> int ImplT<real>::get_activation(int op, int grad, double *out) {
    if (!record_ || op < 0 || op >= n_ops_) return -1;
    ActOp o;
    act_op(&m_shape_, op, &o);
    const int B = last_B_, T = last_T_, N = B * T, C = C_;
    const real *src = rec_[(size_t)grad * n_ops_ + op];
    int ld = o.width;
    if (!grad && !fused_ && o.kind != ACT_SCORES) {
        const Acts<real> &a = acts_;
        const LayerActs<real> *la = o.layer >= 0 ? &a.layer[o.layer] : nullptr;
        switch (o.kind) {
        case ACT_EMBED: src = a.enc; break;
        case ACT_EMBED_NORM: src = a.x0; break;
        case ACT_NORM1: src = la->ln1; break;
        case ACT_Q: src = la->qkv, ld = QKV_; break;
        case ACT_K: src = la->qkv + C, ld = QKV_; break;
        case ACT_V: src = la->qkv + C + KV_, ld = QKV_; break;
        case ACT_SOFTMAX: src = la->att; break;
        case ACT_ATTN: src = la->atty; break;
        case ACT_ATTN_PROJ: src = la->attproj; break;
        case ACT_RES1: src = la->res2; break;
        case ACT_NORM2: src = la->ln2; break;
        case ACT_FC1: src = la->fch; break;
        case ACT_RELU: src = la->fch_relu; break;
        case ACT_FC2: src = la->fcproj; break;
        case ACT_RES2: src = la->res3; break;
        default: src = a.logits; break;
        }
    }
    if (!src) return -1;
    const size_t count = act_size(&o, B, T);
    std::vector<real> h(count);
    if (o.square) CUDA_CHECK(cudaMemcpyAsync(h.data(), src, count * sizeof(real), cudaMemcpyDeviceToHost, stream_));
    else
        CUDA_CHECK(cudaMemcpy2DAsync(h.data(), (size_t)o.width * sizeof(real), src, (size_t)ld * sizeof(real),
                                     (size_t)o.width * sizeof(real), (size_t)N, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    // the layered path's scores' gradient is dpre = att (datt - wsum) scale
    const double unscale = grad && o.kind == ACT_SCORES && !fused_ ? std::sqrt((double)HS_) : 1.0;
    for (size_t i = 0; i < count; i++) out[i] = (double)h[i] * unscale;
    return 0;
}

// As the CPU engine (and the original): start at BOS, draw each token from
// softmax(logits * temperature^-1) at the last position (in double, on the
// host, the way scalar_sample does it), stop at BOS or after block_size
// tokens; a full forward over the growing prefix per token, in the sampler's
// own activations (the last step's stay as they were).
template <typename real> int ImplT<real>::sample(PyRandom *r, double temperature, int *out) {
    const int V = V_, bos = V - 1;
    int *tok = sample_tok_.data();
    double *w = probs_.data();
    tok[0] = bos;
    int len = 0;
    for (int pos = 0; pos < Tmax_; pos++) {
        const int n = pos + 1;
        tok[n] = bos;   // target slot: not read by the forward
        memcpy(io_h_ + io_.n, &n, sizeof n);
        memcpy(io_h_ + io_.tok, tok, (size_t)(n + 1) * sizeof(int));
        CUDA_CHECK(cudaMemcpyAsync(io_d_, io_h_, io_.tok + (size_t)(n + 1) * sizeof(int), cudaMemcpyHostToDevice,
                                   stream_));
        forward(sample_acts_, 1, n);
        CUDA_CHECK(cudaMemcpyAsync(xfer_h_, sample_acts_.logits + (size_t)pos * V, (size_t)V * sizeof(real),
                                   cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        for (int i = 0; i < V; i++) w[i] = (double)xfer_h_[i];
        const int token = engine_sample_token(r, w, V, temperature);
        if (token == bos) break;
        out[len++] = token;
        tok[pos + 1] = token;
    }
    return len;
}

// ---------------------------------------------------------------------------
// EngineOps

struct CudaEngine {
    Engine base;   // first: Engine * and CudaEngine * convert
    Impl *impl;
};

Impl *impl_of(Engine *e) { return reinterpret_cast<CudaEngine *>(e)->impl; }

[[noreturn]] void fatal(const char *op, const std::exception &x) {
    die(EXIT_MISMATCH, "cuda engine: %s: %s", op, x.what());
}

void cuda_destroy(Engine *e) {
    if (!e) return;
    delete impl_of(e);
    delete reinterpret_cast<CudaEngine *>(e);
}

double cuda_step(Engine *e, const Batch *b, int step) {
    try {
        return impl_of(e)->step(b, step);
    } catch (const std::exception &x) {
        fatal("step", x);
    }
}

void cuda_logits(Engine *e, double *out) {
    try {
        impl_of(e)->get_logits(out);
    } catch (const std::exception &x) {
        fatal("get_logits", x);
    }
}

void cuda_grads(Engine *e, double *out) {
    try {
        impl_of(e)->get_grads(out);
    } catch (const std::exception &x) {
        fatal("get_grads", x);
    }
}

void cuda_params(Engine *e, double *out) {
    try {
        impl_of(e)->get_params(out);
    } catch (const std::exception &x) {
        fatal("get_params", x);
    }
}

void cuda_moments(Engine *e, double *m, double *v) {
    try {
        impl_of(e)->get_moments(m, v);
    } catch (const std::exception &x) {
        fatal("get_moments", x);
    }
}

void cuda_set_state(Engine *e, const double *p, const double *m, const double *v) {
    try {
        impl_of(e)->set_state(p, m, v);
    } catch (const std::exception &x) {
        fatal("set_state", x);
    }
}

int cuda_sample(Engine *e, PyRandom *r, double temperature, int *out) {
    try {
        return impl_of(e)->sample(r, temperature, out);
    } catch (const std::exception &x) {
        fatal("sample", x);
    }
}

const char *cuda_device(Engine *e) { return impl_of(e)->device(); }

int cuda_run_steps(Engine *e, const Batch *bs, int first, int n, double *losses, double *seconds) {
    if (n < 1) return -1;
    try {
        impl_of(e)->run_steps(bs, first, n, losses, seconds);
        return 0;
    } catch (const std::exception &x) {
        fatal("run_steps", x);
    }
}

size_t cuda_device_bytes(Engine *e) { return impl_of(e)->device_bytes(); }

int cuda_step_skipped(Engine *e, double *scale) { return impl_of(e)->step_skipped(scale); }

void cuda_relu_inputs(Engine *e, double *out) {
    try {
        impl_of(e)->get_relu_inputs(out);
    } catch (const std::exception &x) {
        fatal("get_relu_inputs", x);
    }
}

int cuda_activation(Engine *e, int op, int grad, double *out) {
    try {
        return impl_of(e)->get_activation(op, grad, out);
    } catch (const std::exception &x) {
        fatal("get_activation", x);
    }
}

EngineOps make_ops() {
    EngineOps o;
    memset(&o, 0, sizeof o);
    o.name = "cuda";
    o.destroy = cuda_destroy;
    o.step = cuda_step;
    o.get_logits = cuda_logits;
    o.get_grads = cuda_grads;
    o.get_params = cuda_params;
    o.get_moments = cuda_moments;
    o.set_state = cuda_set_state;
    o.sample = cuda_sample;
    o.device = cuda_device;
    o.get_relu_inputs = cuda_relu_inputs;
    o.run_steps = cuda_run_steps;
    o.device_bytes = cuda_device_bytes;
    o.step_skipped = cuda_step_skipped;
    o.get_activation = cuda_activation;
    return o;
}

const EngineOps CUDA_OPS = make_ops();

Engine *fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
Engine *fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return nullptr;
}

__global__ void probe_kernel() {}

}  // namespace
}  // namespace mgpt

using namespace mgpt;

extern "C" int cuda_available(char *why, size_t n) {
    const char *fix = "BACKEND=cpu checks the tensor math on the CPU";
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();
        const char *hint = e == cudaErrorInsufficientDriver ? "no NVIDIA driver, or one older than the CUDA runtime"
                           : e == cudaErrorNoDevice           ? "no CUDA device"
                                                              : "the CUDA runtime cannot start";
        snprintf(why, n, "no usable GPU (%s): cudaGetDeviceCount failed: %s (%s); %s", hint, cudaGetErrorName(e),
                 cudaGetErrorString(e), fix);
        return 0;
    }
    if (count < 1) {
        snprintf(why, n, "no usable GPU: the CUDA runtime sees no device; %s", fix);
        return 0;
    }
    int dev = 0;
    cudaDeviceProp prop;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess) {
        cudaGetLastError();
        snprintf(why, n, "no usable GPU: cannot query device %d: %s (%s); %s", dev, cudaGetErrorName(e),
                 cudaGetErrorString(e), fix);
        return 0;
    }
    // Is there code for this GPU in the build (tensor_gpu/cuda/module.mk NVCC_ARCH)?
    cudaFuncAttributes attr;
    if ((e = cudaFuncGetAttributes(&attr, probe_kernel)) != cudaSuccess) {
        cudaGetLastError();
        snprintf(why, n, "no usable GPU: device %d (%s, compute capability %d.%d) cannot run this build's "
                 "kernels: %s (%s) (rebuild with NVCC_ARCH for this GPU); %s", dev, prop.name, prop.major,
                 prop.minor, cudaGetErrorName(e), cudaGetErrorString(e), fix);
        return 0;
    }
    return 1;
}

extern "C" Engine *cuda_engine_create(const EngineConfig *cfg, const double *init_params, char *err,
                                      size_t errlen) {
    if (engine_config_check(cfg, init_params, "cuda", err, errlen)) return nullptr;
    if (cfg->fault != FAULT_NONE &&
        ((cfg->fault != FAULT_OP_FWD && cfg->fault != FAULT_OP_BWD) || precision_is_mixed(cfg->precision)))
        return fail(err, errlen, "cuda engine: fault injection (--inject-fault %s) is not implemented on CUDA (op-fwd "
                    "and op-bwd are, in fp32 and fp64); inject other faults into the CPU tensor engine (--engines "
                    "scalar,cpu)", fault_name(cfg->fault));
    const ModelShape *m = &cfg->L->shape;
    // cuBLAS takes int dimensions: the largest is rows N or a width of 4C, V or C+2KV
    const double rows = (double)cfg->max_batch * m->block_size;
    if (rows > 2e9 || 4.0 * m->n_embd > 2e9 || rows * m->n_head * m->block_size > 1e12)
        return fail(err, errlen, "cuda engine: max_batch %d x block_size %d is too large", cfg->max_batch,
                    m->block_size);
    char why[512];
    if (!cuda_available(why, sizeof why)) return fail(err, errlen, "cuda engine: %s", why);
    Impl *impl = nullptr;
    try {
        if (cfg->precision != PREC_FP64) impl = new ImplT<float>(cfg, init_params);   // fp32, bf16, fp16, tf32
        else impl = new ImplT<double>(cfg, init_params);
        CudaEngine *e = new CudaEngine;
        e->base.ops = &CUDA_OPS;
        e->base.cfg = *cfg;
        e->impl = impl;
        return &e->base;
    } catch (const std::exception &x) {
        delete impl;
        return fail(err, errlen, "cuda engine: %s", x.what());
    }
}
