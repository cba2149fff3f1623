"""The Triton kernels of examples/triton_engine.py, and the small Python
functions that launch them on torch tensors.

Every kernel works in the dtype of its tensors (fp32, or fp64), so one source
serves both precisions. What needed care:

- Floating constants. A Python float passed to a kernel, or written in one,
  is an fp32 scalar in Triton; in fp64 that would round eps = 1e-5 (an error
  of 2.5e-13 relative, visible at fp64's 1e-12). The constants (eps of
  RMSNorm, sqrt(head_dim), Adam's coefficients) come in a small tensor of the
  run's dtype, computed on the host in float64.
- Rounding. On NVIDIA GPUs fp32 '/' and tl.sqrt are approximate (2 ulp);
  _div and _sqrt use div_rn and sqrt_rn there, which round as the reference
  does. fp64 '/' and sqrt are correctly rounded already (div_rn and sqrt_rn
  exist only for fp32). tl.exp and tl.log stay: fp32 exp is ex2.approx on
  the GPU (a few 1e-7 relative), under fp32 tolerances.
- Padding. Block sizes are powers of two; the vocabulary, n_embd, head_dim
  and T are padded and masked. tl.dot needs K >= 16 on a GPU, so the
  attention tiles are at least 16 x 16 (zeros in the padding add nothing).
- Loops. Every loop bound is a constexpr (GROUP, N_CHUNKS, B_CHUNKS): Triton
  3.6's interpreter hands a kernel its int arguments as 1-element arrays,
  and a `for` over a runtime bound calls int() on one, which numpy >= 2.4
  refuses ("only 0-dimensional arrays can be converted to Python scalars").
  On a GPU a new count compiles a new variant (a new T does anyway).
- Reduction order. Sums are Triton's tree reductions within a tile; the
  weight gradients of the embeddings are summed per output row by one
  program each (no atomics), so every run gives the same bits.

planted bugs (--plant-bug in the engine): each kernel takes a BUG constexpr
that switches on one realistic mistake; the comments at "if BUG" say which.
"""
import math

import torch
import triton
import triton.language as tl

# Where the constants sit in the tensors of constants() and adam_hyper().
# A kernel may read a global only when it is a tl.constexpr.
CONST_EPS_NORM, CONST_SQRT_HS = tl.constexpr(0), tl.constexpr(1)
(HYPER_B1, HYPER_1MB1, HYPER_B2, HYPER_1MB2, HYPER_EPS, HYPER_LR, HYPER_BC1,
 HYPER_BC2) = (tl.constexpr(i) for i in range(8))


def constants(eps_norm, head_dim, dtype, device):
    """the kernels' constants, computed in float64, in the run's dtype"""
    return torch.tensor([eps_norm, math.sqrt(head_dim)], dtype=torch.float64).to(device, dtype)


def adam_hyper(beta1, beta2, eps, lr_t, step, dtype, device):
    """Adam's coefficients at step (0-based), computed in float64, in the run's dtype"""
    h = [beta1, 1 - beta1, beta2, 1 - beta2, eps, lr_t, 1 - beta1 ** (step + 1), 1 - beta2 ** (step + 1)]
    return torch.tensor(h, dtype=torch.float64).to(device, dtype)


# ---- helpers (inlined into the kernels) ----

@triton.jit
def _div(a, b):
    # fp32 '/' is div.full.f32 (2 ulp) on NVIDIA; div_rn rounds to nearest.
    # b is a tensor (a may be a Python number)
    if b.dtype == tl.float32:
        return tl.div_rn(a, b)
    else:
        return a / b


@triton.jit
def _sqrt(x):
    if x.dtype == tl.float32:
        return tl.sqrt_rn(x)
    else:
        return tl.sqrt(x)


@triton.jit
def _mm(a, b):
    # exact products, fp32 (or fp64) sums: no TF32
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _kv_head(h, NH, NKV, BUG_GQA: tl.constexpr):
    if BUG_GQA:
        return h % NKV  # planted: interleaved heads (repeat vs repeat_interleave confused)
    else:
        return h // (NH // NKV)


@triton.jit
def _query_head(j, g, NH, NKV, BUG_GQA: tl.constexpr):
    # the g-th query head that reads kv head j (the inverse of _kv_head)
    if BUG_GQA:
        return j + g * NKV
    else:
        return j * (NH // NKV) + g


# ---- embedding ----

@triton.jit
def embed_fwd_kernel(tokens_ptr, n_ptr, wte_ptr, wpe_ptr, out_ptr, tok_key_ptr, pos_key_ptr,
                     M, T, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """x0[b,t] = wte[tok] + wpe[t] for rows b*T+t; also the keys the backward
    scatters by: the token and the position of a real row, -1 at padding."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_C)
    row_ok = rows < M
    b, t = rows // T, rows % T
    n_b = tl.load(n_ptr + b, mask=row_ok, other=0)
    real = row_ok & (t < n_b)
    # inputs past n[b] are -1: read token 0 there, as the reference does
    tok = tl.load(tokens_ptr + b * (T + 1) + t, mask=real, other=0)
    m2 = row_ok[:, None] & (cols < C)[None, :]
    x = tl.load(wte_ptr + tok[:, None] * C + cols[None, :], mask=m2, other=0.0) + \
        tl.load(wpe_ptr + t[:, None] * C + cols[None, :], mask=m2, other=0.0)
    tl.store(out_ptr + rows[:, None] * C + cols[None, :], x, mask=m2)
    tl.store(tok_key_ptr + rows, tl.where(real, tok, -1), mask=row_ok)
    tl.store(pos_key_ptr + rows, tl.where(real, t, -1), mask=row_ok)


@triton.jit
def scatter_rows_kernel(keys_ptr, src_ptr, out_ptr, N, C, N_CHUNKS: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_C: tl.constexpr):
    """out[k] = the sum of the rows src[i] with keys[i] == k (the embedding
    gradients): one program per output row, deterministic, no atomics."""
    k = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    acc = tl.zeros([BLOCK_C], dtype=src_ptr.dtype.element_ty)
    for chunk in range(N_CHUNKS):  # a constexpr bound (module docstring: Loops)
        rows = chunk * BLOCK_N + tl.arange(0, BLOCK_N)
        key = tl.load(keys_ptr + rows, mask=rows < N, other=-1)
        sel = (key == k)[:, None] & (cols < C)[None, :]
        acc += tl.sum(tl.load(src_ptr + rows[:, None] * C + cols[None, :], mask=sel, other=0.0), axis=0)
    tl.store(out_ptr + k * C + cols, acc, mask=cols < C)


# ---- RMSNorm (no weight) ----

@triton.jit
def rmsnorm_fwd_kernel(x_ptr, y_ptr, r_ptr, consts_ptr, M, C,
                       BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BUG: tl.constexpr):
    """y = x * r, r = (mean(x^2) + eps)^-1/2 per row; r is kept for the backward."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_C)
    m2 = (rows < M)[:, None] & (cols < C)[None, :]
    x = tl.load(x_ptr + rows[:, None] * C + cols[None, :], mask=m2, other=0.0)
    ms = _div(tl.sum(x * x, axis=1), tl.cast(C, x.dtype))  # divide by C, not the padded BLOCK_C
    eps = tl.load(consts_ptr + CONST_EPS_NORM)
    if BUG:
        r = _div(1.0, _sqrt(ms))  # planted: eps forgotten
    else:
        r = _div(1.0, _sqrt(ms + eps))
    tl.store(y_ptr + rows[:, None] * C + cols[None, :], x * r[:, None], mask=m2)
    tl.store(r_ptr + rows, r, mask=rows < M)


@triton.jit
def rmsnorm_bwd_kernel(x_ptr, r_ptr, dy_ptr, dres_ptr, dx_ptr, M, C, HAS_RES: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BUG: tl.constexpr):
    """dx = r dy - r^3 x mean(dy x)  (+ dres, the residual stream's gradient)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_C)
    m2 = (rows < M)[:, None] & (cols < C)[None, :]
    offs = rows[:, None] * C + cols[None, :]
    x = tl.load(x_ptr + offs, mask=m2, other=0.0)
    dy = tl.load(dy_ptr + offs, mask=m2, other=0.0)
    r = tl.load(r_ptr + rows, mask=rows < M, other=0.0)[:, None]
    mean_dyx = _div(tl.sum(dy * x, axis=1), tl.cast(C, x.dtype))[:, None]
    if BUG:
        dx = r * dy  # planted: r treated as a constant (the term through mean(x^2) dropped)
    else:
        dx = r * dy - (r * r * r) * x * mean_dyx
    if HAS_RES:
        dx = tl.load(dres_ptr + offs, mask=m2, other=0.0) + dx
    tl.store(dx_ptr + offs, dx, mask=m2)


# ---- causal grouped-query attention: one program per (document, head) ----

@triton.jit
def attn_fwd_kernel(q_ptr, k_ptr, v_ptr, consts_ptr, scores_ptr, probs_ptr, out_ptr, T, NH, NKV, HS,
                    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BUG_SCORES: tl.constexpr,
                    BUG_SOFTMAX: tl.constexpr, BUG_WSUM: tl.constexpr, BUG_GQA: tl.constexpr):
    """scores = q k^T / sqrt(HS) (causal), probs = softmax(scores), out = probs v.
    The whole document (T <= BLOCK_T) is one tile."""
    pid = tl.program_id(0)
    b, h = pid // NH, pid % NH
    kvh = _kv_head(h, NH, NKV, BUG_GQA)
    C, KV = NH * HS, NKV * HS
    t = tl.arange(0, BLOCK_T)
    d = tl.arange(0, BLOCK_D)
    m_td = (t < T)[:, None] & (d < HS)[None, :]
    rows = (b * T + t)[:, None]
    q = tl.load(q_ptr + rows * C + h * HS + d[None, :], mask=m_td, other=0.0)
    k = tl.load(k_ptr + rows * KV + kvh * HS + d[None, :], mask=m_td, other=0.0)
    v = tl.load(v_ptr + rows * KV + kvh * HS + d[None, :], mask=m_td, other=0.0)
    sqrt_hs = tl.load(consts_ptr + CONST_SQRT_HS)
    if BUG_SCORES:
        s = _div(_mm(q, tl.trans(k)), sqrt_hs * sqrt_hs)  # planted: divided by head_dim, not its root
    else:
        s = _div(_mm(q, tl.trans(k)), sqrt_hs)
    causal = (t[None, :] <= t[:, None]) & (t[None, :] < T)  # [query t, key s]: s <= t, and s a real column
    if BUG_SOFTMAX:
        masked = tl.where(causal, s, 0.0)  # planted: masked with 0, not -inf: the future leaks into the sum
    else:
        masked = tl.where(causal, s, float("-inf"))
    e = tl.exp(masked - tl.max(masked, axis=1)[:, None])
    rowsum = tl.sum(e, axis=1)[:, None]
    p = _div(e, rowsum)
    if BUG_WSUM:
        o = _mm(e, v)  # planted: the weighted sum of the unnormalized weights (the division forgotten)
    else:
        o = _mm(p, v)
    m_tt = (t < T)[:, None] & (t < T)[None, :]
    tt = ((b * NH + h) * T + t[:, None]) * T + t[None, :]
    tl.store(scores_ptr + tt, tl.where(causal, s, 0.0), mask=m_tt)
    tl.store(probs_ptr + tt, p, mask=m_tt)
    tl.store(out_ptr + rows * C + h * HS + d[None, :], o, mask=m_td)


@triton.jit
def attn_bwd_kernel(q_ptr, k_ptr, v_ptr, probs_ptr, dout_ptr, consts_ptr, dscores_ptr, dprobs_ptr,
                    dq_ptr, dk_ptr, dv_ptr, T, NH, NKV, HS, GROUP: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                    BUG_DQ: tl.constexpr, BUG_DKV: tl.constexpr, BUG_GQA: tl.constexpr):
    """One program per (document, kv head): the gradients of its query heads
    in turn, and dk, dv summed over them in registers (no atomics)."""
    pid = tl.program_id(0)
    b, j = pid // NKV, pid % NKV
    C, KV = NH * HS, NKV * HS
    t = tl.arange(0, BLOCK_T)
    d = tl.arange(0, BLOCK_D)
    m_td = (t < T)[:, None] & (d < HS)[None, :]
    m_tt = (t < T)[:, None] & (t < T)[None, :]
    causal = (t[None, :] <= t[:, None]) & (t[None, :] < T)
    rows = (b * T + t)[:, None]
    k = tl.load(k_ptr + rows * KV + j * HS + d[None, :], mask=m_td, other=0.0)
    v = tl.load(v_ptr + rows * KV + j * HS + d[None, :], mask=m_td, other=0.0)
    sqrt_hs = tl.load(consts_ptr + CONST_SQRT_HS)
    dk = tl.zeros([BLOCK_T, BLOCK_D], dtype=k.dtype)
    dv = tl.zeros([BLOCK_T, BLOCK_D], dtype=k.dtype)
    for g in range(GROUP):  # GROUP = NH // NKV query heads read kv head j
        h = _query_head(j, g, NH, NKV, BUG_GQA)
        q = tl.load(q_ptr + rows * C + h * HS + d[None, :], mask=m_td, other=0.0)
        do = tl.load(dout_ptr + rows * C + h * HS + d[None, :], mask=m_td, other=0.0)
        tt = ((b * NH + h) * T + t[:, None]) * T + t[None, :]
        p = tl.load(probs_ptr + tt, mask=m_tt, other=0.0)
        dp = tl.where(causal, _mm(do, tl.trans(v)), 0.0)
        ds = p * (dp - tl.sum(dp * p, axis=1)[:, None])  # softmax backward; 0 where p is
        tl.store(dprobs_ptr + tt, dp, mask=m_tt)
        tl.store(dscores_ptr + tt, ds, mask=m_tt)
        ds_qk = _div(ds, sqrt_hs)  # through scores = q.k / sqrt(HS)
        if BUG_DQ:
            dq = _mm(ds, k)  # planted: dq misses the 1/sqrt(head_dim) of the scores
        else:
            dq = _mm(ds_qk, k)
        tl.store(dq_ptr + rows * C + h * HS + d[None, :], dq, mask=m_td)
        dk += _mm(tl.trans(ds_qk), q)
        if BUG_DKV:
            dv += _mm(p, do)  # planted: the weights not transposed
        else:
            dv += _mm(tl.trans(p), do)
    tl.store(dk_ptr + rows * KV + j * HS + d[None, :], dk, mask=m_td)
    tl.store(dv_ptr + rows * KV + j * HS + d[None, :], dv, mask=m_td)


# ---- softmax cross-entropy ----

@triton.jit
def cross_entropy_kernel(logits_ptr, tokens_ptr, n_ptr, w_all_ptr, nll_ptr, dlogits_ptr, M, T, V, B,
                         BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, TOKEN_MEAN: tl.constexpr, BUG: tl.constexpr,
                         BUG_TM: tl.constexpr):
    """Per position: nll = logsumexp(logits) - logits[target], and
    dlogits = (softmax - onehot) w: w = 1/(n[b] B), the gradient of the mean
    over documents of each document's mean (doc-mean), or with TOKEN_MEAN
    w = 1/sum(n) (w_all_ptr[0], formed on the host in float64), the gradient
    of the mean over all the batch's real positions. Padded positions
    (t >= n[b]) get 0."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_V)
    row_ok = rows < M
    b, t = rows // T, rows % T
    n_b = tl.load(n_ptr + b, mask=row_ok, other=1)
    real = row_ok & (t < n_b)
    m2 = row_ok[:, None] & (cols < V)[None, :]
    x = tl.load(logits_ptr + rows[:, None] * V + cols[None, :], mask=m2, other=0.0)
    x = tl.where((cols < V)[None, :], x, float("-inf"))  # padded vocabulary: no weight in the sums
    z = x - tl.max(x, axis=1)[:, None]
    lse = tl.log(tl.sum(tl.exp(z), axis=1))
    tgt = tl.load(tokens_ptr + b * (T + 1) + t + 1, mask=real, other=0)
    onehot = cols[None, :] == tgt[:, None]
    nll = lse - tl.sum(tl.where(onehot, z, 0.0), axis=1)
    tl.store(nll_ptr + rows, tl.where(real, nll, 0.0), mask=row_ok)
    prob = tl.exp(z - lse[:, None])
    if BUG:
        w = _div(1.0, tl.cast(B, x.dtype))  # planted: the 1/n[b] of the document mean forgotten in the backward
    else:
        if TOKEN_MEAN:
            if BUG_TM:
                w = _div(1.0, (n_b * B).to(x.dtype))  # planted: the token mean's loss with the doc mean's weights
            else:
                w = tl.zeros([BLOCK_M], dtype=x.dtype) + tl.load(w_all_ptr)
        else:
            w = _div(1.0, (n_b * B).to(x.dtype))
    w = tl.where(real, w, 0.0)
    tl.store(dlogits_ptr + rows[:, None] * V + cols[None, :], tl.where(onehot, prob - 1.0, prob) * w[:, None],
             mask=m2)


@triton.jit
def loss_kernel(nll_ptr, n_ptr, loss_ptr, B, T, B_CHUNKS: tl.constexpr, BLOCK_B: tl.constexpr,
                BLOCK_T: tl.constexpr, TOKEN_MEAN: tl.constexpr):
    """loss = mean over documents of (sum of the document's nll / n[b])
    (doc-mean), or with TOKEN_MEAN the sum of every nll / sum(n); one program.
    (Padded positions hold nll 0.)"""
    docs = tl.arange(0, BLOCK_B)
    t = tl.arange(0, BLOCK_T)
    acc = tl.zeros([BLOCK_B], dtype=nll_ptr.dtype.element_ty)
    count = tl.zeros([BLOCK_B], dtype=tl.int32)  # token-mean: the real positions
    for chunk in range(B_CHUNKS):  # a constexpr bound (module docstring: Loops)
        bb = chunk * BLOCK_B + docs
        m2 = (bb < B)[:, None] & (t < T)[None, :]
        nll = tl.load(nll_ptr + bb[:, None] * T + t[None, :], mask=m2, other=0.0)
        if TOKEN_MEAN:
            acc += tl.sum(nll, axis=1)
            count += tl.load(n_ptr + bb, mask=bb < B, other=0)
        else:
            n_b = tl.load(n_ptr + bb, mask=bb < B, other=1).to(acc.dtype)
            acc += _div(tl.sum(nll, axis=1), n_b)
    if TOKEN_MEAN:
        tl.store(loss_ptr, _div(tl.sum(acc, axis=0), tl.sum(count, axis=0).to(acc.dtype)))
    else:
        tl.store(loss_ptr, _div(tl.sum(acc, axis=0), tl.cast(B, acc.dtype)))


# ---- ReLU ----

@triton.jit
def relu_fwd_kernel(x_ptr, y_ptr, N, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + i, mask=i < N, other=0.0)
    tl.store(y_ptr + i, tl.where(x > 0, x, 0.0), mask=i < N)


@triton.jit
def relu_bwd_kernel(u_ptr, dy_ptr, dx_ptr, N, BLOCK: tl.constexpr, BUG: tl.constexpr):
    """dx = dy where the ReLU's input u > 0."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    u = tl.load(u_ptr + i, mask=i < N, other=0.0)
    dy = tl.load(dy_ptr + i, mask=i < N, other=0.0)
    if BUG:
        dx = tl.where(dy > 0, dy, 0.0)  # planted: the gate tests the gradient, not the input
    else:
        dx = tl.where(u > 0, dy, 0.0)
    tl.store(dx_ptr + i, dx, mask=i < N)


# ---- Adam ----

@triton.jit
def adam_kernel(p_ptr, g_ptr, m_ptr, v_ptr, hyper_ptr, N, BLOCK: tl.constexpr, BUG: tl.constexpr):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr_t (m / (1 - b1^(s+1))) / (sqrt(v / (1 - b2^(s+1))) + eps)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < N
    g = tl.load(g_ptr + i, mask=ok, other=0.0)
    m = tl.load(hyper_ptr + HYPER_B1) * tl.load(m_ptr + i, mask=ok, other=0.0) + tl.load(hyper_ptr + HYPER_1MB1) * g
    v = tl.load(hyper_ptr + HYPER_B2) * tl.load(v_ptr + i, mask=ok, other=0.0) + \
        tl.load(hyper_ptr + HYPER_1MB2) * (g * g)
    mhat = _div(m, tl.load(hyper_ptr + HYPER_BC1))
    if BUG:
        vhat = _div(v, tl.load(hyper_ptr + HYPER_BC1))  # planted: v corrected with beta1's bias
    else:
        vhat = _div(v, tl.load(hyper_ptr + HYPER_BC2))
    step = _div(tl.load(hyper_ptr + HYPER_LR) * mhat, _sqrt(vhat) + tl.load(hyper_ptr + HYPER_EPS))
    tl.store(p_ptr + i, tl.load(p_ptr + i, mask=ok, other=0.0) - step, mask=ok)
    tl.store(m_ptr + i, m, mask=ok)
    tl.store(v_ptr + i, v, mask=ok)


# ---- launchers: torch tensors in, torch tensors out ----

ELEMENTWISE_BLOCK = 1024


def _pow2(n, least=1):
    return max(least, triton.next_power_of_2(int(n)))


def _rows_per_program(width):
    # about 4096 elements a program: few programs under the interpreter, modest registers on a GPU
    return max(1, min(64, 4096 // width))


def embed_fwd(tokens, n, wte, wpe):
    """tokens (B,T+1) int32, n (B) int32 -> x0 (B*T,C), token keys and position keys (B*T) int32"""
    B, T = tokens.shape[0], tokens.shape[1] - 1
    C, M = wte.shape[1], B * tokens.shape[1] - B
    out = torch.empty((M, C), dtype=wte.dtype, device=wte.device)
    tok_key = torch.empty(M, dtype=torch.int32, device=wte.device)
    pos_key = torch.empty(M, dtype=torch.int32, device=wte.device)
    BC = _pow2(C)
    BM = _rows_per_program(BC)
    embed_fwd_kernel[(triton.cdiv(M, BM),)](tokens, n, wte, wpe, out, tok_key, pos_key, M, T, C,
                                            BLOCK_M=BM, BLOCK_C=BC)
    return out, tok_key, pos_key


def scatter_rows(keys, src, out):
    """out[k] = sum of src[i] over keys[i] == k (out is overwritten)"""
    N, C = src.shape
    BN = 64
    scatter_rows_kernel[(out.shape[0],)](keys, src, out, N, C, N_CHUNKS=triton.cdiv(N, BN), BLOCK_N=BN,
                                         BLOCK_C=_pow2(C))


def rmsnorm_fwd(x, consts, bug=False):
    M, C = x.shape
    y = torch.empty_like(x)
    r = torch.empty(M, dtype=x.dtype, device=x.device)
    BC = _pow2(C)
    BM = _rows_per_program(BC)
    rmsnorm_fwd_kernel[(triton.cdiv(M, BM),)](x, y, r, consts, M, C, BLOCK_M=BM, BLOCK_C=BC, BUG=bug)
    return y, r


def rmsnorm_bwd(x, r, dy, dres=None, bug=False):
    M, C = x.shape
    dx = torch.empty_like(x)
    BC = _pow2(C)
    BM = _rows_per_program(BC)
    rmsnorm_bwd_kernel[(triton.cdiv(M, BM),)](x, r, dy, dres if dres is not None else dy, dx, M, C,
                                              HAS_RES=dres is not None, BLOCK_M=BM, BLOCK_C=BC, BUG=bug)
    return dx


def _attn_blocks(T, HS):
    return _pow2(T, 16), _pow2(HS, 16)  # tl.dot: every dimension >= 16


def attn_fwd(q, k, v, consts, B, T, NH, NKV, HS, bugs):
    """q (B*T,C), k and v (B*T,KV) -> scores and probs (B,NH,T,T), out (B*T,C)"""
    scores = torch.empty((B, NH, T, T), dtype=q.dtype, device=q.device)
    probs = torch.empty_like(scores)
    out = torch.empty_like(q)
    BT, BD = _attn_blocks(T, HS)
    attn_fwd_kernel[(B * NH,)](q, k, v, consts, scores, probs, out, T, NH, NKV, HS, BLOCK_T=BT, BLOCK_D=BD,
                               BUG_SCORES=bugs["attn-scores"], BUG_SOFTMAX=bugs["attn-softmax"],
                               BUG_WSUM=bugs["attn-wsum"], BUG_GQA=bugs["gqa-kv-index"])
    return scores, probs, out


def attn_bwd(q, k, v, probs, dout, consts, B, T, NH, NKV, HS, bugs):
    """-> dscores, dprobs (B,NH,T,T), dq (B*T,C), dk, dv (B*T,KV)"""
    dscores = torch.empty_like(probs)
    dprobs = torch.empty_like(probs)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    BT, BD = _attn_blocks(T, HS)
    attn_bwd_kernel[(B * NKV,)](q, k, v, probs, dout, consts, dscores, dprobs, dq, dk, dv, T, NH, NKV, HS,
                                GROUP=NH // NKV, BLOCK_T=BT, BLOCK_D=BD, BUG_DQ=bugs["attn-bwd-dq"],
                                BUG_DKV=bugs["attn-bwd-dkv"],
                                BUG_GQA=bugs["gqa-kv-index"])
    return dscores, dprobs, dq, dk, dv


def cross_entropy(logits, tokens, n, bug=False, token_mean=False, bug_token_mean=False):
    """logits (B*T,V) -> loss (a 1-element tensor), dlogits (B*T,V); the loss
    doc-mean, or with token_mean the mean over all sum(n) real positions"""
    B, T = tokens.shape[0], tokens.shape[1] - 1
    M, V = logits.shape
    nll = torch.empty(M, dtype=logits.dtype, device=logits.device)
    dlogits = torch.empty_like(logits)
    # token-mean's weight 1/sum(n), in float64 on the host and then the run's
    # dtype, as the reference forms it (a float written in a kernel is fp32)
    n_all = int(n.sum().item()) if token_mean else 0
    w_all = torch.tensor([1.0 / n_all if n_all else 0.0], dtype=torch.float64).to(logits.device, logits.dtype)
    BV = _pow2(V)
    BM = _rows_per_program(BV)
    cross_entropy_kernel[(triton.cdiv(M, BM),)](logits, tokens, n, w_all, nll, dlogits, M, T, V, B,
                                                BLOCK_M=BM, BLOCK_V=BV, TOKEN_MEAN=token_mean, BUG=bug,
                                                BUG_TM=bug_token_mean)
    loss = torch.empty(1, dtype=logits.dtype, device=logits.device)
    BT = _pow2(T)
    BB = max(1, min(64, 4096 // BT))
    loss_kernel[(1,)](nll, n, loss, B, T, B_CHUNKS=triton.cdiv(B, BB), BLOCK_B=BB, BLOCK_T=BT,
                      TOKEN_MEAN=token_mean)
    return loss, dlogits


def relu_fwd(x):
    y = torch.empty_like(x)
    N = x.numel()
    relu_fwd_kernel[(triton.cdiv(N, ELEMENTWISE_BLOCK),)](x, y, N, BLOCK=ELEMENTWISE_BLOCK)
    return y


def relu_bwd(u, dy, bug=False):
    dx = torch.empty_like(dy)
    N = u.numel()
    relu_bwd_kernel[(triton.cdiv(N, ELEMENTWISE_BLOCK),)](u, dy, dx, N, BLOCK=ELEMENTWISE_BLOCK, BUG=bug)
    return dx


def adam(p, g, m, v, hyper, bug=False):
    """one Adam update of the flat buffers p, m, v in place"""
    N = p.numel()
    adam_kernel[(triton.cdiv(N, ELEMENTWISE_BLOCK),)](p, g, m, v, hyper, N, BLOCK=ELEMENTWISE_BLOCK, BUG=bug)
