"""The cuTile kernels of examples/cutile_engine.py (NVIDIA cuda.tile, the
Python tile language), and the small Python functions that launch them on
torch CUDA tensors: the same functions, with the same arguments, as
examples/triton_kernels.py, so that examples/tile_engine.py runs either.

Every kernel works in the dtype of its arrays (fp32, or fp64), so one source
serves both precisions. What needed care:

- Floating constants. A float written in a kernel takes the dtype of the
  tile it meets (Triton makes it fp32); the constants (eps of RMSNorm,
  sqrt(head_dim), Adam's coefficients) still come in a small array of the
  run's dtype computed in float64, as for Triton, so that both engines use
  the same values.
- Rounding. cuTile's '/' and ct.sqrt round to nearest by default (their
  rounding_mode is RoundingMode.RN unless asked for FULL or APPROX): fp32
  division compiles to __cuda_sm3x_div_rn_noftz_f32, fp32 sqrt to
  __cuda_sm20_sqrt_rn_f32 (sm_90 SASS), so no _div/_sqrt helpers are
  needed. ct.exp in fp32 is RoundingMode.FULL by default (MUFU.EX2 with
  range reduction), ct.log a polynomial; both well under fp32 tolerances.
  ct.matmul on fp32 tiles compiles to fp32 FMAs (no TF32), on fp64 tiles
  to fp64 FMAs.
- Tiles. Every tile dimension is a power of two. ct.load reads a tile of
  an array's tile space (index i of a tile of n rows starts at row i*n) and
  fills what lies past the array's end with its padding_mode; ct.store
  drops what lies past the end. So the launchers view the tensors so that
  a program's tile starts at a multiple of its shape: q (B*T, C) as
  (B, T, n_head, head_dim), one (1, BLOCK_T, 1, BLOCK_D) tile per document
  and head; the vocabulary and n_embd are padded to powers of two (zeros,
  then -inf before the softmax; means divide by the real C), T and
  head_dim with zeros and masks. Attention tiles are at least 16 x 16, as
  for Triton (tests/cutile_engine_check.py --compile-for 90 compiles the
  largest ones).
- Gathers. Rows picked by value (the embedding's wte[token], the target's
  logit) use ct.gather, which bounds-checks and fills with padding_value.
- Reduction order. Sums are cuTile's tile reductions; the embedding
  gradients are summed per output row by one program each (no atomics), so
  every run gives the same bits.

Loops may run to a runtime bound in cuTile (range(ct.cdiv(N, BLOCK))); only
tile shapes, the GQA group and the planted-bug switches are ct.Constant.

planted bugs (--plant-bug in the engine): each kernel takes a BUG
ct.Constant[bool] that switches on one realistic mistake; the comments at
"if BUG" say which.

torch is imported only where a function needs it (the stream, the
constants), and the launchers allocate through tensor methods (new_empty,
view): tests/cutile_engine_check.py --compile-for runs these launchers on
stand-in arrays, with _launch replaced by the ahead-of-time compiler, on a
machine with neither torch nor a GPU.
"""
import math

import cuda.tile as ct

ZERO = ct.PaddingMode.ZERO

# Where the constants sit in the arrays of constants() and adam_hyper()
CONST_EPS_NORM, CONST_SQRT_HS = 0, 1
(HYPER_B1, HYPER_1MB1, HYPER_B2, HYPER_1MB2, HYPER_EPS, HYPER_LR, HYPER_BC1, HYPER_BC2) = range(8)


def constants(eps_norm, head_dim, dtype, device):
    """the kernels' constants, computed in float64, in the run's dtype"""
    import torch
    return torch.tensor([eps_norm, math.sqrt(head_dim)], dtype=torch.float64).to(device, dtype)


def adam_hyper(beta1, beta2, eps, lr_t, step, dtype, device):
    """Adam's coefficients at step (0-based), computed in float64, in the run's dtype"""
    import torch
    h = [beta1, 1 - beta1, beta2, 1 - beta2, eps, lr_t, 1 - beta1 ** (step + 1), 1 - beta2 ** (step + 1)]
    return torch.tensor(h, dtype=torch.float64).to(device, dtype)


def _scalar(array, i):
    """array[i] as a 0-d tile"""
    return ct.load(array, index=(i,), shape=())


# ---- embedding ----

@ct.kernel
def embed_fwd_kernel(tokens, n, wte, wpe, out, tok_key, pos_key, T,
                     BLOCK_M: ct.Constant[int], BLOCK_C: ct.Constant[int]):
    """out[b*T+t] = wte[tok] + wpe[t] for a tile of rows; also the keys the
    backward scatters by: the token and the position of a real row, -1 at
    padding. tokens (B,T+1), n (B), out (B*T,C), keys (B*T)."""
    pid = ct.bid(0)
    rows = pid * BLOCK_M + ct.arange(BLOCK_M, dtype=ct.int32)      # (BM)
    cols = ct.arange(BLOCK_C, dtype=ct.int32)                      # (BC)
    row_ok = rows < out.shape[0]
    b, t = rows // T, rows % T
    n_b = ct.gather(n, b, mask=row_ok, padding_value=0)
    real = row_ok & (t < n_b)
    # inputs past n[b] are -1: read token 0 there, as the reference does
    tok = ct.gather(tokens, (b, t), mask=real, padding_value=0)
    x = ct.gather(wte, (tok[:, None], cols[None, :])) + ct.gather(wpe, (t[:, None], cols[None, :]))  # (BM,BC)
    ct.store(out, index=(pid, 0), tile=x)       # rows >= M and cols >= C lie past the end: dropped
    ct.store(tok_key, index=(pid,), tile=ct.where(real, tok, -1))
    ct.store(pos_key, index=(pid,), tile=ct.where(real, t, -1))


@ct.kernel
def scatter_rows_kernel(keys, src, out, BLOCK_N: ct.Constant[int], BLOCK_C: ct.Constant[int]):
    """out[k] = the sum of the rows src[i] with keys[i] == k (the embedding
    gradients): one program per output row, deterministic, no atomics.
    keys (N), src (N,C), out (K,C)."""
    k = ct.bid(0)
    N = src.shape[0]
    acc = ct.zeros((BLOCK_C,), dtype=src.dtype)
    for chunk in range(ct.cdiv(N, BLOCK_N)):
        rows = chunk * BLOCK_N + ct.arange(BLOCK_N, dtype=ct.int32)
        key = ct.gather(keys, rows, padding_value=-1)               # (BN), -1 past N
        block = ct.load(src, index=(chunk, 0), shape=(BLOCK_N, BLOCK_C), padding_mode=ZERO)
        acc = acc + ct.sum(ct.where((key == k)[:, None], block, 0.0), axis=0)
    ct.store(out, index=(k, 0), tile=ct.reshape(acc, (1, BLOCK_C)))


# ---- RMSNorm (no weight) ----

@ct.kernel
def rmsnorm_fwd_kernel(x, y, r, consts, BLOCK_M: ct.Constant[int], BLOCK_C: ct.Constant[int],
                       BUG: ct.Constant[bool]):
    """y = x * r, r = (mean(x^2) + eps)^-1/2 per row; r is kept for the
    backward. x, y (M,C), r (M)."""
    pid = ct.bid(0)
    xt = ct.load(x, index=(pid, 0), shape=(BLOCK_M, BLOCK_C), padding_mode=ZERO)  # (BM,BC)
    ms = ct.sum(xt * xt, axis=1) / ct.astype(x.shape[1], xt.dtype)  # divide by C, not the padded BLOCK_C
    eps = _scalar(consts, CONST_EPS_NORM)
    if BUG:
        rt = 1.0 / ct.sqrt(ms)  # planted: eps forgotten
    else:
        rt = 1.0 / ct.sqrt(ms + eps)
    ct.store(y, index=(pid, 0), tile=xt * rt[:, None])
    ct.store(r, index=(pid,), tile=rt)


@ct.kernel
def rmsnorm_bwd_kernel(x, r, dy, dres, dx, HAS_RES: ct.Constant[bool], BLOCK_M: ct.Constant[int],
                       BLOCK_C: ct.Constant[int], BUG: ct.Constant[bool]):
    """dx = r dy - r^3 x mean(dy x)  (+ dres, the residual stream's gradient).
    x, dy, dres, dx (M,C), r (M)."""
    pid = ct.bid(0)
    xt = ct.load(x, index=(pid, 0), shape=(BLOCK_M, BLOCK_C), padding_mode=ZERO)
    dyt = ct.load(dy, index=(pid, 0), shape=(BLOCK_M, BLOCK_C), padding_mode=ZERO)
    rt = ct.load(r, index=(pid,), shape=(BLOCK_M,), padding_mode=ZERO)[:, None]  # (BM,1)
    mean_dyx = (ct.sum(dyt * xt, axis=1) / ct.astype(x.shape[1], xt.dtype))[:, None]
    if BUG:
        dxt = rt * dyt  # planted: r treated as a constant (the term through mean(x^2) dropped)
    else:
        dxt = rt * dyt - (rt * rt * rt) * xt * mean_dyx
    if HAS_RES:
        dxt = ct.load(dres, index=(pid, 0), shape=(BLOCK_M, BLOCK_C), padding_mode=ZERO) + dxt
    ct.store(dx, index=(pid, 0), tile=dxt)


# ---- causal grouped-query attention: one program per (document, head) ----

def _kv_head(h, NH, NKV, BUG_GQA):
    if BUG_GQA:
        return h % NKV  # planted: interleaved heads (repeat vs repeat_interleave confused)
    else:
        return h // (NH // NKV)


def _query_head(j, g, NH, NKV, BUG_GQA):
    # the g-th query head that reads kv head j (the inverse of _kv_head)
    if BUG_GQA:
        return j + g * NKV
    else:
        return j * (NH // NKV) + g


def _head_tile(a, b, h, BLOCK_T, BLOCK_D):
    """a (B,T,heads,HS) -> the (BLOCK_T,BLOCK_D) tile of document b, head h, zeros past T and HS"""
    return ct.reshape(ct.load(a, index=(b, 0, h, 0), shape=(1, BLOCK_T, 1, BLOCK_D), padding_mode=ZERO),
                      (BLOCK_T, BLOCK_D))


def _store_head(a, b, h, tile, BLOCK_T, BLOCK_D):
    ct.store(a, index=(b, 0, h, 0), tile=ct.reshape(tile, (1, BLOCK_T, 1, BLOCK_D)))


def _store_scores(a, b, h, tile, BLOCK_T):
    """a (B,NH,T,T): the part of tile (BLOCK_T,BLOCK_T) inside T x T"""
    ct.store(a, index=(b, h, 0, 0), tile=ct.reshape(tile, (1, 1, BLOCK_T, BLOCK_T)))


def _causal(T, BLOCK_T):
    """(BLOCK_T,BLOCK_T) [query t, key s]: s <= t, and s a real column"""
    t = ct.arange(BLOCK_T, dtype=ct.int32)
    return (t[None, :] <= t[:, None]) & (t[None, :] < T)


@ct.kernel
def attn_fwd_kernel(q, k, v, consts, scores, probs, out, BLOCK_T: ct.Constant[int], BLOCK_D: ct.Constant[int],
                    BUG_SCORES: ct.Constant[bool], BUG_SOFTMAX: ct.Constant[bool], BUG_WSUM: ct.Constant[bool],
                    BUG_GQA: ct.Constant[bool]):
    """scores = q k^T / sqrt(HS) (causal), probs = softmax(scores), out = probs v.
    q, out (B,T,NH,HS), k, v (B,T,NKV,HS), scores, probs (B,NH,T,T); grid
    (B, NH). The whole document (T <= BLOCK_T) is one tile."""
    b, h = ct.bid(0), ct.bid(1)
    T, NH, NKV = q.shape[1], q.shape[2], k.shape[2]
    kvh = _kv_head(h, NH, NKV, BUG_GQA)
    qt = _head_tile(q, b, h, BLOCK_T, BLOCK_D)      # (BT,BD)
    kt = _head_tile(k, b, kvh, BLOCK_T, BLOCK_D)
    vt = _head_tile(v, b, kvh, BLOCK_T, BLOCK_D)
    sqrt_hs = _scalar(consts, CONST_SQRT_HS)
    if BUG_SCORES:
        s = ct.matmul(qt, ct.transpose(kt)) / (sqrt_hs * sqrt_hs)  # planted: divided by head_dim, not its root
    else:
        s = ct.matmul(qt, ct.transpose(kt)) / sqrt_hs             # (BT,BT)
    causal = _causal(T, BLOCK_T)
    if BUG_SOFTMAX:
        masked = ct.where(causal, s, 0.0)  # planted: masked with 0, not -inf: the future leaks into the sum
    else:
        masked = ct.where(causal, s, float("-inf"))
    e = ct.exp(masked - ct.max(masked, axis=1, keepdims=True))
    p = e / ct.sum(e, axis=1, keepdims=True)
    if BUG_WSUM:
        o = ct.matmul(e, vt)  # planted: the weighted sum of the unnormalized weights (the division forgotten)
    else:
        o = ct.matmul(p, vt)
    _store_scores(scores, b, h, ct.where(causal, s, 0.0), BLOCK_T)
    _store_scores(probs, b, h, p, BLOCK_T)
    _store_head(out, b, h, o, BLOCK_T, BLOCK_D)


@ct.kernel
def attn_bwd_kernel(q, k, v, probs, dout, consts, dscores, dprobs, dq, dk, dv, GROUP: ct.Constant[int],
                    BLOCK_T: ct.Constant[int], BLOCK_D: ct.Constant[int], BUG_DQ: ct.Constant[bool],
                    BUG_DKV: ct.Constant[bool], BUG_GQA: ct.Constant[bool]):
    """One program per (document, kv head): the gradients of its GROUP query
    heads in turn, and dk, dv summed over them in the program (no atomics).
    Shapes as attn_fwd_kernel's; grid (B, NKV)."""
    b, j = ct.bid(0), ct.bid(1)
    T, NH, NKV = q.shape[1], q.shape[2], k.shape[2]
    causal = _causal(T, BLOCK_T)
    kt = _head_tile(k, b, j, BLOCK_T, BLOCK_D)
    vt = _head_tile(v, b, j, BLOCK_T, BLOCK_D)
    sqrt_hs = _scalar(consts, CONST_SQRT_HS)
    dkt = ct.zeros((BLOCK_T, BLOCK_D), dtype=kt.dtype)
    dvt = ct.zeros((BLOCK_T, BLOCK_D), dtype=kt.dtype)
    for g in range(GROUP):  # GROUP = NH // NKV query heads read kv head j
        h = _query_head(j, g, NH, NKV, BUG_GQA)
        qt = _head_tile(q, b, h, BLOCK_T, BLOCK_D)
        dot = _head_tile(dout, b, h, BLOCK_T, BLOCK_D)
        p = ct.reshape(ct.load(probs, index=(b, h, 0, 0), shape=(1, 1, BLOCK_T, BLOCK_T), padding_mode=ZERO),
                       (BLOCK_T, BLOCK_T))
        dp = ct.where(causal, ct.matmul(dot, ct.transpose(vt)), 0.0)
        ds = p * (dp - ct.sum(dp * p, axis=1, keepdims=True))  # softmax backward; 0 where p is
        _store_scores(dprobs, b, h, dp, BLOCK_T)
        _store_scores(dscores, b, h, ds, BLOCK_T)
        ds_qk = ds / sqrt_hs  # through scores = q.k / sqrt(HS)
        if BUG_DQ:
            dqt = ct.matmul(ds, kt)  # planted: dq misses the 1/sqrt(head_dim) of the scores
        else:
            dqt = ct.matmul(ds_qk, kt)
        _store_head(dq, b, h, dqt, BLOCK_T, BLOCK_D)
        dkt = dkt + ct.matmul(ct.transpose(ds_qk), qt)
        if BUG_DKV:
            dvt = dvt + ct.matmul(p, dot)  # planted: the weights not transposed
        else:
            dvt = dvt + ct.matmul(ct.transpose(p), dot)
    _store_head(dk, b, j, dkt, BLOCK_T, BLOCK_D)
    _store_head(dv, b, j, dvt, BLOCK_T, BLOCK_D)


# ---- softmax cross-entropy ----

@ct.kernel
def cross_entropy_kernel(logits, tokens, n, w_all, nll, dlogits, BLOCK_M: ct.Constant[int],
                         BLOCK_V: ct.Constant[int], TOKEN_MEAN: ct.Constant[bool], BUG: ct.Constant[bool],
                         BUG_TM: ct.Constant[bool]):
    """Per position: nll = logsumexp(logits) - logits[target], and
    dlogits = (softmax - onehot) w: w = 1/(n[b] B), the gradient of the mean
    over documents of each document's mean (doc-mean), or with TOKEN_MEAN
    w = 1/sum(n) (w_all[0], formed on the host in float64), the gradient of
    the mean over all the batch's real positions. Padded positions
    (t >= n[b]) get 0. logits, dlogits (B*T,V), tokens (B,T+1), nll (B*T)."""
    pid = ct.bid(0)
    B, T, V = tokens.shape[0], tokens.shape[1] - 1, logits.shape[1]
    rows = pid * BLOCK_M + ct.arange(BLOCK_M, dtype=ct.int32)
    cols = ct.arange(BLOCK_V, dtype=ct.int32)
    row_ok = rows < logits.shape[0]
    b, t = rows // T, rows % T
    n_b = ct.gather(n, b, mask=row_ok, padding_value=1)
    real = row_ok & (t < n_b)
    x = ct.load(logits, index=(pid, 0), shape=(BLOCK_M, BLOCK_V), padding_mode=ZERO)  # (BM,BV)
    x = ct.where((cols < V)[None, :], x, float("-inf"))  # padded vocabulary: no weight in the sums
    z = x - ct.max(x, axis=1, keepdims=True)
    lse = ct.log(ct.sum(ct.exp(z), axis=1))
    tgt = ct.gather(tokens, (b, t + 1), mask=real, padding_value=0)
    onehot = cols[None, :] == tgt[:, None]
    row_nll = lse - ct.sum(ct.where(onehot, z, 0.0), axis=1)
    ct.store(nll, index=(pid,), tile=ct.where(real, row_nll, 0.0))
    prob = ct.exp(z - lse[:, None])
    if BUG:
        w = ct.zeros((BLOCK_M,), dtype=x.dtype) + 1.0 / ct.astype(B, x.dtype)  # planted: the 1/n[b] forgotten
    else:
        if TOKEN_MEAN:
            if BUG_TM:
                w = 1.0 / ct.astype(n_b * B, x.dtype)  # planted: the token mean's loss with the doc mean's weights
            else:
                w = ct.zeros((BLOCK_M,), dtype=x.dtype) + _scalar(w_all, 0)
        else:
            w = 1.0 / ct.astype(n_b * B, x.dtype)
    w = ct.where(real, w, 0.0)
    ct.store(dlogits, index=(pid, 0), tile=ct.where(onehot, prob - 1.0, prob) * w[:, None])


@ct.kernel
def loss_kernel(nll, n, loss, BLOCK_B: ct.Constant[int], BLOCK_T: ct.Constant[int],
                TOKEN_MEAN: ct.Constant[bool]):
    """loss = mean over documents of (sum of the document's nll / n[b])
    (doc-mean), or with TOKEN_MEAN the sum of every nll / sum(n); one
    program. nll (B,T) (padded positions hold 0), loss (1)."""
    B = nll.shape[0]
    acc = ct.zeros((BLOCK_B,), dtype=nll.dtype)
    count = ct.zeros((BLOCK_B,), dtype=ct.int32)  # token-mean: the real positions
    for chunk in range(ct.cdiv(B, BLOCK_B)):
        docs = chunk * BLOCK_B + ct.arange(BLOCK_B, dtype=ct.int32)
        doc_sums = ct.sum(ct.load(nll, index=(chunk, 0), shape=(BLOCK_B, BLOCK_T), padding_mode=ZERO), axis=1)
        if TOKEN_MEAN:
            acc = acc + doc_sums
            count = count + ct.gather(n, docs, padding_value=0)
        else:
            acc = acc + doc_sums / ct.astype(ct.gather(n, docs, padding_value=1), nll.dtype)
    if TOKEN_MEAN:
        total = ct.sum(acc) / ct.astype(ct.sum(count), nll.dtype)
    else:
        total = ct.sum(acc) / ct.astype(B, nll.dtype)
    ct.store(loss, index=(0,), tile=ct.reshape(total, (1,)))


# ---- ReLU ----

@ct.kernel
def relu_fwd_kernel(x, y, BLOCK: ct.Constant[int]):
    """y = max(x, 0); x, y flat (N)"""
    pid = ct.bid(0)
    xt = ct.load(x, index=(pid,), shape=(BLOCK,), padding_mode=ZERO)
    ct.store(y, index=(pid,), tile=ct.where(xt > 0, xt, 0.0))


@ct.kernel
def relu_bwd_kernel(u, dy, dx, BLOCK: ct.Constant[int], BUG: ct.Constant[bool]):
    """dx = dy where the ReLU's input u > 0; flat (N)"""
    pid = ct.bid(0)
    ut = ct.load(u, index=(pid,), shape=(BLOCK,), padding_mode=ZERO)
    dyt = ct.load(dy, index=(pid,), shape=(BLOCK,), padding_mode=ZERO)
    if BUG:
        dxt = ct.where(dyt > 0, dyt, 0.0)  # planted: the gate tests the gradient, not the input
    else:
        dxt = ct.where(ut > 0, dyt, 0.0)
    ct.store(dx, index=(pid,), tile=dxt)


# ---- Adam ----

@ct.kernel
def adam_kernel(p, g, m, v, hyper, BLOCK: ct.Constant[int], BUG: ct.Constant[bool]):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr_t (m / (1 - b1^(s+1))) / (sqrt(v / (1 - b2^(s+1))) + eps).
    p, g, m, v flat (N), updated in place."""
    pid = ct.bid(0)
    gt = ct.load(g, index=(pid,), shape=(BLOCK,), padding_mode=ZERO)
    mt = _scalar(hyper, HYPER_B1) * ct.load(m, index=(pid,), shape=(BLOCK,), padding_mode=ZERO) + \
        _scalar(hyper, HYPER_1MB1) * gt
    vt = _scalar(hyper, HYPER_B2) * ct.load(v, index=(pid,), shape=(BLOCK,), padding_mode=ZERO) + \
        _scalar(hyper, HYPER_1MB2) * (gt * gt)
    mhat = mt / _scalar(hyper, HYPER_BC1)
    if BUG:
        vhat = vt / _scalar(hyper, HYPER_BC1)  # planted: v corrected with beta1's bias
    else:
        vhat = vt / _scalar(hyper, HYPER_BC2)
    update = (_scalar(hyper, HYPER_LR) * mhat) / (ct.sqrt(vhat) + _scalar(hyper, HYPER_EPS))
    ct.store(p, index=(pid,), tile=ct.load(p, index=(pid,), shape=(BLOCK,), padding_mode=ZERO) - update)
    ct.store(m, index=(pid,), tile=mt)
    ct.store(v, index=(pid,), tile=vt)


# ---- launchers: torch tensors in, torch tensors out ----

ELEMENTWISE_BLOCK = 1024


def _launch(grid, kernel, args):
    """kernel over grid on torch's current stream, or on the CPU under the
    emulator (examples/cutile_emu.py: no stream); tests/cutile_engine_check.py
    --compile-for puts the ahead-of-time compiler here instead"""
    if getattr(ct, "EMULATOR", False):
        ct.launch(None, grid, kernel, args)
        return
    import torch
    ct.launch(torch.cuda.current_stream(), grid, kernel, args)


def _cdiv(a, b):
    return -(-int(a) // b)


def _pow2(n, least=1):
    return max(least, 1 << max(0, int(n) - 1).bit_length())


def _rows_per_program(width):
    # about 4096 elements a program, as the Triton kernels
    return max(1, min(64, 4096 // width))


def embed_fwd(tokens, n, wte, wpe):
    """tokens (B,T+1) int32, n (B) int32 -> x0 (B*T,C), token keys and position keys (B*T) int32"""
    B, T = tokens.shape[0], tokens.shape[1] - 1
    C, M = wte.shape[1], B * (tokens.shape[1] - 1)
    out = wte.new_empty((M, C))
    tok_key, pos_key = tokens.new_empty((M,)), tokens.new_empty((M,))
    BC = _pow2(C)
    BM = _rows_per_program(BC)
    _launch((_cdiv(M, BM),), embed_fwd_kernel, (tokens, n, wte, wpe, out, tok_key, pos_key, T, BM, BC))
    return out, tok_key, pos_key


def scatter_rows(keys, src, out):
    """out[k] = sum of src[i] over keys[i] == k (out is overwritten)"""
    BC = _pow2(src.shape[1])
    BN = _rows_per_program(BC)  # rows of src a loop step reads: (BN, BC) about 4096 elements
    _launch((out.shape[0],), scatter_rows_kernel, (keys, src, out, BN, BC))


def rmsnorm_fwd(x, consts, bug=False):
    M, C = x.shape
    y = x.new_empty((M, C))
    r = x.new_empty((M,))
    BC = _pow2(C)
    BM = _rows_per_program(BC)
    _launch((_cdiv(M, BM),), rmsnorm_fwd_kernel, (x, y, r, consts, BM, BC, bug))
    return y, r


def rmsnorm_bwd(x, r, dy, dres=None, bug=False):
    M, C = x.shape
    dx = x.new_empty((M, C))
    BC = _pow2(C)
    BM = _rows_per_program(BC)
    # without a residual gradient, dres is never read: dy stands in for it
    _launch((_cdiv(M, BM),), rmsnorm_bwd_kernel,
            (x, r, dy, dres if dres is not None else dy, dx, dres is not None, BM, BC, bug))
    return dx


def _attn_blocks(T, HS):
    return _pow2(T, 16), _pow2(HS, 16)  # as the Triton kernels: tiles at least 16 x 16


def attn_fwd(q, k, v, consts, B, T, NH, NKV, HS, bugs):
    """q (B*T,C), k and v (B*T,KV) -> scores and probs (B,NH,T,T), out (B*T,C)"""
    scores = q.new_empty((B, NH, T, T))
    probs = q.new_empty((B, NH, T, T))
    out = q.new_empty(q.shape)
    BT, BD = _attn_blocks(T, HS)
    heads = lambda a, nh: a.view(B, T, nh, HS)  # noqa: E731  (B*T, nh*HS) -> (B,T,nh,HS)
    _launch((B, NH), attn_fwd_kernel,
            (heads(q, NH), heads(k, NKV), heads(v, NKV), consts, scores, probs, heads(out, NH), BT, BD,
             bugs["attn-scores"], bugs["attn-softmax"], bugs["attn-wsum"], bugs["gqa-kv-index"]))
    return scores, probs, out


def attn_bwd(q, k, v, probs, dout, consts, B, T, NH, NKV, HS, bugs):
    """-> dscores, dprobs (B,NH,T,T), dq (B*T,C), dk, dv (B*T,KV)"""
    dscores = probs.new_empty(probs.shape)
    dprobs = probs.new_empty(probs.shape)
    dq, dk, dv = q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)
    BT, BD = _attn_blocks(T, HS)
    heads = lambda a, nh: a.view(B, T, nh, HS)  # noqa: E731
    _launch((B, NKV), attn_bwd_kernel,
            (heads(q, NH), heads(k, NKV), heads(v, NKV), probs, heads(dout, NH), consts, dscores, dprobs,
             heads(dq, NH), heads(dk, NKV), heads(dv, NKV), NH // NKV, BT, BD, bugs["attn-bwd-dq"],
             bugs["attn-bwd-dkv"], bugs["gqa-kv-index"]))
    return dscores, dprobs, dq, dk, dv


def cross_entropy(logits, tokens, n, bug=False, token_mean=False, bug_token_mean=False):
    """logits (B*T,V) -> loss (a 1-element tensor), dlogits (B*T,V); the loss
    doc-mean, or with token_mean the mean over all sum(n) real positions"""
    B, T = tokens.shape[0], tokens.shape[1] - 1
    M, V = logits.shape
    nll = logits.new_empty((M,))
    dlogits = logits.new_empty((M, V))
    # token-mean's weight 1/sum(n): a Python float (float64) rounded once to
    # the run's dtype, as the reference forms it
    n_all = int(n.sum().item()) if token_mean else 0
    w_all = logits.new_tensor([1.0 / n_all if n_all else 0.0])
    BV = _pow2(V)
    BM = _rows_per_program(BV)
    _launch((_cdiv(M, BM),), cross_entropy_kernel,
            (logits, tokens, n, w_all, nll, dlogits, BM, BV, token_mean, bug, bug_token_mean))
    loss = logits.new_empty((1,))
    BT = _pow2(T)
    BB = _rows_per_program(BT)
    _launch((1,), loss_kernel, (nll.view(B, T), n, loss, BB, BT, token_mean))
    return loss, dlogits


def relu_fwd(x):
    y = x.new_empty(x.shape)
    N = x.numel()
    _launch((_cdiv(N, ELEMENTWISE_BLOCK),), relu_fwd_kernel, (x.view(-1), y.view(-1), ELEMENTWISE_BLOCK))
    return y


def relu_bwd(u, dy, bug=False):
    dx = dy.new_empty(dy.shape)
    N = u.numel()
    _launch((_cdiv(N, ELEMENTWISE_BLOCK),), relu_bwd_kernel,
            (u.view(-1), dy.view(-1), dx.view(-1), ELEMENTWISE_BLOCK, bug))
    return dx


def adam(p, g, m, v, hyper, bug=False):
    """one Adam update of the flat buffers p, m, v in place"""
    N = p.numel()
    _launch((_cdiv(N, ELEMENTWISE_BLOCK),), adam_kernel, (p, g, m, v, hyper, ELEMENTWISE_BLOCK, bug))
