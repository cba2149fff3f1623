"""The host side of the tile-language engines, written once:
examples/triton_engine.py runs it on the Triton kernels
(examples/triton_kernels.py), examples/cutile_engine.py on the cuTile ones
(examples/cutile_kernels.py). Both kernel modules offer the same launch
functions (embed_fwd, scatter_rows, rmsnorm_fwd, rmsnorm_bwd, attn_fwd,
attn_bwd, cross_entropy, relu_fwd, relu_bwd, adam, constants, adam_hyper)
on torch tensors; TileEngine holds the parameters in torch tensors, runs
the forward and the hand-written backward through them (the linear layers
are torch.matmul in the run's dtype with TF32 off) and answers the exec
protocol (examples/mg_protocol.py).

Here too: the planted bugs (PLANTED_BUGS: each names the kernel it breaks,
the same kernel name in both modules), the ops of get "activations"
(ACTIVATIONS), the flat parameter layout, the protocol's tensor coding and
the sampling rule.

Only numpy is needed to import this module: an engine imports torch and its
kernel module in its constructor, after the config checks of check_config.
"""
import argparse
import bisect
import itertools
import math
import os
import sys
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mg_protocol  # noqa: E402

EPS_NORM = 1e-5


# --plant-bug NAME: the kernel it breaks, and how
PLANTED_BUGS = {
    "rmsnorm-fwd": "rmsnorm_fwd_kernel: eps forgotten, r = mean(x^2)^-1/2",
    "rmsnorm-bwd": "rmsnorm_bwd_kernel: r treated as a constant, dx = r dy (the term through mean(x^2) dropped)",
    "attn-scores": "attn_fwd_kernel: scores divided by head_dim instead of sqrt(head_dim)",
    "attn-softmax": "attn_fwd_kernel: masked scores filled with 0 instead of -inf (the future and the padding leak "
                    "into the softmax)",
    "attn-wsum": "attn_fwd_kernel: the weighted sum of v uses the unnormalized exp (the division by the row sum "
                 "forgotten there)",
    "attn-bwd-dq": "attn_bwd_kernel: dq misses the 1/sqrt(head_dim) of the scores",
    "attn-bwd-dkv": "attn_bwd_kernel: dv = P dO instead of P^T dO",
    "ce-grad": "cross_entropy_kernel: dlogits misses the 1/n[b] of the document mean (the loss is right)",
    "token-mean-doc-grad": "cross_entropy_kernel: with --loss token-mean, dlogits keep the document mean's weights "
                           "1/(n[b] B) instead of 1/sum(n) (the loss is the token mean; visible only at batch > 1 "
                           "with documents of different lengths)",
    "relu-bwd": "relu_bwd_kernel: the gate tests the incoming gradient (dy > 0) instead of the input",
    "adam-v": "adam_kernel: v bias-corrected with 1 - beta1^(s+1) instead of 1 - beta2^(s+1)",
    "gqa-kv-index": "attn kernels: query head h reads kv head h % n_kv_head instead of h // (n_head/n_kv_head) "
                    "(visible only when 1 < n_kv_head < n_head)",
}

# get("activations"): the ops, in canonical order (the harness's table,
# common/activations.h), with the shape of their output (and of its
# gradient) from the dimensions d (B documents, T the batch's longest
# document, C, NH heads, KV = n_kv_head*head_dim, F = 4C, V). The
# "layer{l}." entries repeat for each layer, between the entries above and
# below them. This table is the only list.
ACTIVATIONS = [
    ("embed", lambda d: (d.B, d.T, d.C)),              # wte[tok] + wpe[t]
    ("embed_norm", lambda d: (d.B, d.T, d.C)),         # rmsnorm(embed): the residual stream's start
    ("layer{l}.norm1", lambda d: (d.B, d.T, d.C)),     # rmsnorm of the layer input
    ("layer{l}.q", lambda d: (d.B, d.T, d.C)),         # norm1 @ attn_wq^T
    ("layer{l}.k", lambda d: (d.B, d.T, d.KV)),
    ("layer{l}.v", lambda d: (d.B, d.T, d.KV)),
    ("layer{l}.scores", lambda d: (d.B, d.NH, d.T, d.T)),   # q.k / sqrt(head_dim), 0 where s > t
    ("layer{l}.softmax", lambda d: (d.B, d.NH, d.T, d.T)),  # attention weights, 0 where s > t
    ("layer{l}.attn", lambda d: (d.B, d.T, d.C)),      # weighted sum of v, heads concatenated
    ("layer{l}.attn_proj", lambda d: (d.B, d.T, d.C)),  # attn @ attn_wo^T
    ("layer{l}.res1", lambda d: (d.B, d.T, d.C)),      # layer input + attn_proj
    ("layer{l}.norm2", lambda d: (d.B, d.T, d.C)),     # rmsnorm(res1)
    ("layer{l}.fc1", lambda d: (d.B, d.T, d.F)),       # norm2 @ mlp_fc1^T: the ReLU input
    ("layer{l}.relu", lambda d: (d.B, d.T, d.F)),
    ("layer{l}.fc2", lambda d: (d.B, d.T, d.C)),       # relu @ mlp_fc2^T
    ("layer{l}.res2", lambda d: (d.B, d.T, d.C)),      # res1 + fc2: the layer output
    ("logits", lambda d: (d.B, d.T, d.V)),             # gradient: the cross-entropy's, dlogits
]


def attention_fits(block_size, head_dim):
    """The attention kernels hold a whole document in one tile: (T, T) scores
    and (T, head_dim) q, k, v, both padded to powers of two >= 16. Compiled
    for sm_90 (Triton 3.6's ptxas, tests/triton_engine_check.py --compile-for
    90) the backward needs 176 KiB of shared memory in fp32 and 224 KiB in
    fp64 at T 128 x head_dim 32, or T 64 x head_dim 64 (160 KiB fp64); an
    H100's block has 227 KiB. T 128 x head_dim 64 would need 320 KiB in fp64.
    The cuTile kernels take the same limits: compiled for sm_90 (tileiras
    13.4, tests/cutile_engine_check.py --compile-for 90) the most is the fp32
    forward at T 128 x head_dim 32, 213 KiB."""
    T, D = max(16, 1 << (block_size - 1).bit_length()), max(16, 1 << (head_dim - 1).bit_length())
    return T <= 128 and D <= 64 and T * D <= 4096


def dims(cfg, B, T):
    return SimpleNamespace(B=B, T=T, C=cfg["n_embd"], NH=cfg["n_head"], KV=cfg["n_kv_head"] * cfg["head_dim"],
                           F=4 * cfg["n_embd"], V=cfg["vocab_size"])


def activation_table(cfg, B, T):
    """[(name, shape)] of every op of every layer, in canonical order"""
    d = dims(cfg, B, T)
    per_layer = [i for i, (name, _) in enumerate(ACTIVATIONS) if "{l}" in name]
    first, last = per_layer[0], per_layer[-1] + 1
    # embed, embed_norm, then layer by layer (layer0.norm1 ... layer0.res2, layer1.norm1 ...), then logits
    out = [(name, shape(d)) for name, shape in ACTIVATIONS[:first]]
    for l in range(cfg["n_layer"]):
        out += [(name.format(l=l), shape(d)) for name, shape in ACTIVATIONS[first:last]]
    return out + [(name, shape(d)) for name, shape in ACTIVATIONS[last:]]


class ParamLayout:
    """The canonical tensors (config "tensors") packed one after the other
    into one flat buffer: params, grads, Adam m and v each live in one, so
    that Adam is one kernel launch."""

    def __init__(self, tensors):
        self.names = [t["name"] for t in tensors]
        self.shapes = {t["name"]: tuple(t["shape"]) for t in tensors}
        self.offsets, off = {}, 0
        for name in self.names:
            self.offsets[name] = off
            off += int(np.prod(self.shapes[name]))
        self.size = off

    def span(self, name):
        off = self.offsets[name]
        return off, off + int(np.prod(self.shapes[name]))

    def pack(self, arrays, dtype=np.float64):
        flat = np.empty(self.size, dtype=dtype)
        for name in self.names:
            a, b = self.span(name)
            if tuple(arrays[name].shape) != self.shapes[name]:
                raise ValueError("tensor %s is %s, expected %s" % (name, arrays[name].shape, self.shapes[name]))
            flat[a:b] = arrays[name].reshape(-1)
        return flat

    def unpack(self, flat):
        return {name: flat[slice(*self.span(name))].reshape(self.shapes[name]) for name in self.names}


def decode(t, shape=None):
    """a protocol tensor (dtype, shape, raw) -> numpy (float64 for F64/F32, int32 for I32)"""
    dtype, sh, raw = t
    if shape is not None and tuple(sh) != tuple(shape):
        raise ValueError("shape %s, expected %s" % (sh, list(shape)))
    a = np.frombuffer(raw, dtype={"F64": "<f8", "F32": "<f4", "I32": "<i4"}[dtype]).reshape(sh)
    return a.astype(np.int32) if dtype == "I32" else a.astype(np.float64)


def encode(a, dtype="F64"):
    """numpy -> a protocol tensor"""
    a = np.ascontiguousarray(a, dtype={"F64": "<f8", "F32": "<f4", "I32": "<i4"}[dtype])
    return (dtype, list(a.shape), a.tobytes())


def sample_token(logits_row, temperature, u, V):
    """the sampling rule of docs/outside_engines.md (Python's random.choices)"""
    w = [float(x) * temperature ** -1 for x in logits_row]
    mx = max(w)
    w = [math.exp(x - mx) for x in w]
    inv = 1.0 / sum(w)
    cum = list(itertools.accumulate(x * inv for x in w))
    return bisect.bisect(cum, u * cum[-1], 0, V - 1)


def check_config(cfg, language):
    """what an engine refuses at create, before it imports torch or its
    kernels; language names its kernels in the messages ("Triton", "cuTile")"""
    if cfg["precision"] not in ("fp64", "fp32"):
        raise ValueError("the %s engine computes in fp32 or fp64, not %s (it does not implement the "
                         "mixed-precision recipe of docs/mixed_precision.md)" % (language, cfg["precision"]))
    if cfg["fault"] != "none":
        raise ValueError("this engine has no injected faults (it has --plant-bug)")
    if cfg.get("loss", "doc-mean") not in ("doc-mean", "token-mean"):
        raise ValueError("the %s engine computes the loss doc-mean or token-mean, not %s" % (language, cfg["loss"]))
    if not attention_fits(cfg["block_size"], cfg["head_dim"]):
        raise ValueError("the attention kernels keep one document in one tile: block_size <= 128, head_dim <= 64 "
                         "and block_size x head_dim <= 4096, each rounded up to a power of two >= 16 (got %d and "
                         "%d)" % (cfg["block_size"], cfg["head_dim"]))


class TileEngine:
    """microgpt's training step on a kernel module K (triton_kernels or
    cutile_kernels): the parameters, gradients and Adam moments in flat
    torch tensors of the run's dtype, every op's output and gradient kept
    for get "activations". A subclass checks the config (check_config),
    imports torch and K, and calls this constructor with them."""
    name = "tile"
    relu_inputs = True   # get("relu_inputs"): lets compare excuse a ReLU gate that flips between precisions
    activations = True   # get("activations"): acts/<op> and dacts/<op> of ACTIVATIONS (mg_protocol announces it)

    def __init__(self, cfg, data, torch, kernels, device, description, bug=None):
        """device: a torch device name ("cuda", "cpu"); description: the
        create reply's "device" string"""
        self.torch, self.K = torch, kernels
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.allow_tf32 = False
        self.dev = torch.device(device)
        self.device = description
        self.cfg = cfg
        self.token_mean = cfg.get("loss", "doc-mean") == "token-mean"
        self.dt = {"fp64": torch.float64, "fp32": torch.float32}[cfg["precision"]]
        self.out_dtype = {"fp64": "F64", "fp32": "F32"}[cfg["precision"]]
        self.bugs = {name: name == bug for name in PLANTED_BUGS}
        self.layout = ParamLayout(cfg["tensors"])
        # flat buffers and per-tensor views into them
        self.P = self._flat(self._load_arrays("params", data))
        self.G = torch.zeros_like(self.P)
        self.M = torch.zeros_like(self.P)
        self.V = torch.zeros_like(self.P)
        self.w = self._views(self.P)
        self.gw = self._views(self.G)
        # constants in the run's dtype, computed in float64 (a float written in a Triton kernel is fp32)
        self.consts = kernels.constants(EPS_NORM, cfg["head_dim"], self.dt, self.dev)
        self.last = None

    # ---- storage ----

    def _load_arrays(self, prefix, data):
        return {k: decode(data[prefix + "/" + k], self.layout.shapes[k]) for k in self.layout.names}

    def _flat(self, arrays):
        return self.torch.from_numpy(self.layout.pack(arrays)).to(self.dev, self.dt)

    def _views(self, flat):
        return {k: flat[slice(*self.layout.span(k))].view(self.layout.shapes[k]) for k in self.layout.names}

    def _out(self, prefix, flat):
        arrays = self.layout.unpack(flat.to("cpu", self.torch.float64).numpy())
        return {prefix + "/" + k: encode(arrays[k]) for k in self.layout.names}

    def _batch(self, data):
        tokens = self.torch.from_numpy(decode(data["tokens"])).to(self.dev).contiguous()
        n = self.torch.from_numpy(decode(data["n"])).to(self.dev).contiguous()
        return tokens, n

    # ---- the model ----

    def _forward(self, tokens, n):
        """tokens (B,T+1) int32, n (B) -> logits (B*T,V), acts {op: 2-D or 4-D tensor}, saved for the backward"""
        c, K, W, bugs = self.cfg, self.K, self.w, self.bugs
        B, T = tokens.shape[0], tokens.shape[1] - 1
        NH, NKV, HS = c["n_head"], c["n_kv_head"], c["head_dim"]
        mm = lambda x, w: self.torch.matmul(x, w.t())  # noqa: E731  x (M,in) @ W^T, W (out,in)
        acts, saved = {}, {}
        x0, saved["tok_key"], saved["pos_key"] = K.embed_fwd(tokens, n, W["wte"], W["wpe"])
        x, saved["r0"] = K.rmsnorm_fwd(x0, self.consts, bugs["rmsnorm-fwd"])
        acts["embed"], acts["embed_norm"] = x0, x
        for l in range(c["n_layer"]):
            pre = "layer%d." % l
            h1, saved[pre + "r1"] = K.rmsnorm_fwd(x, self.consts, bugs["rmsnorm-fwd"])
            q, k, v = mm(h1, W[pre + "attn_wq"]), mm(h1, W[pre + "attn_wk"]), mm(h1, W[pre + "attn_wv"])
            scores, probs, att = K.attn_fwd(q, k, v, self.consts, B, T, NH, NKV, HS, bugs)
            proj = mm(att, W[pre + "attn_wo"])
            res1 = x + proj
            h2, saved[pre + "r2"] = K.rmsnorm_fwd(res1, self.consts, bugs["rmsnorm-fwd"])
            u = mm(h2, W[pre + "mlp_fc1"])
            a = K.relu_fwd(u)
            f = mm(a, W[pre + "mlp_fc2"])
            x = res1 + f
            acts.update({pre + "norm1": h1, pre + "q": q, pre + "k": k, pre + "v": v, pre + "scores": scores,
                         pre + "softmax": probs, pre + "attn": att, pre + "attn_proj": proj, pre + "res1": res1,
                         pre + "norm2": h2, pre + "fc1": u, pre + "relu": a, pre + "fc2": f, pre + "res2": x})
        acts["logits"] = logits = mm(x, W["lm_head"])
        return logits, acts, saved

    def _backward(self, dlogits, acts, saved, B, T):
        """fills the gradient buffer; returns dacts {op: d loss / d op's output}"""
        c, K, W, Gw, bugs = self.cfg, self.K, self.w, self.gw, self.bugs
        NH, NKV, HS = c["n_head"], c["n_kv_head"], c["head_dim"]
        mmT = self.torch.matmul
        dacts = {"logits": dlogits}
        L = c["n_layer"]
        x_out = acts["layer%d.res2" % (L - 1)] if L else acts["embed_norm"]
        Gw["lm_head"].copy_(mmT(dlogits.t(), x_out))   # dW = dY^T X
        dx = mmT(dlogits, W["lm_head"])                # dX = dY W
        for l in reversed(range(L)):
            pre = "layer%d." % l
            x_in = acts["layer%d.res2" % (l - 1)] if l else acts["embed_norm"]
            # x = res1 + relu(rmsnorm(res1) W1^T) W2^T
            dacts[pre + "res2"] = dacts[pre + "fc2"] = dx
            Gw[pre + "mlp_fc2"].copy_(mmT(dx.t(), acts[pre + "relu"]))
            drelu = mmT(dx, W[pre + "mlp_fc2"])
            du = K.relu_bwd(acts[pre + "fc1"], drelu, bugs["relu-bwd"])
            Gw[pre + "mlp_fc1"].copy_(mmT(du.t(), acts[pre + "norm2"]))
            dh2 = mmT(du, W[pre + "mlp_fc1"])
            dres1 = K.rmsnorm_bwd(acts[pre + "res1"], saved[pre + "r2"], dh2, dx, bugs["rmsnorm-bwd"])
            dacts.update({pre + "relu": drelu, pre + "fc1": du, pre + "norm2": dh2, pre + "res1": dres1,
                          pre + "attn_proj": dres1})
            # res1 = x_in + attn(rmsnorm(x_in)) Wo^T
            Gw[pre + "attn_wo"].copy_(mmT(dres1.t(), acts[pre + "attn"]))
            datt = mmT(dres1, W[pre + "attn_wo"])
            dscores, dprobs, dq, dk, dv = K.attn_bwd(acts[pre + "q"], acts[pre + "k"], acts[pre + "v"],
                                                     acts[pre + "softmax"], datt, self.consts, B, T, NH, NKV, HS,
                                                     bugs)
            h1 = acts[pre + "norm1"]
            Gw[pre + "attn_wq"].copy_(mmT(dq.t(), h1))
            Gw[pre + "attn_wk"].copy_(mmT(dk.t(), h1))
            Gw[pre + "attn_wv"].copy_(mmT(dv.t(), h1))
            dh1 = mmT(dq, W[pre + "attn_wq"]) + mmT(dk, W[pre + "attn_wk"]) + mmT(dv, W[pre + "attn_wv"])
            dx = K.rmsnorm_bwd(x_in, saved[pre + "r1"], dh1, dres1, bugs["rmsnorm-bwd"])
            dacts.update({pre + "attn": datt, pre + "scores": dscores, pre + "softmax": dprobs, pre + "q": dq,
                          pre + "k": dk, pre + "v": dv, pre + "norm1": dh1})
        dacts["embed_norm"] = dx
        dx0 = K.rmsnorm_bwd(acts["embed"], saved["r0"], dx, None, bugs["rmsnorm-bwd"])
        dacts["embed"] = dx0
        K.scatter_rows(saved["tok_key"], dx0, Gw["wte"])   # padded rows have key -1: no gradient
        K.scatter_rows(saved["pos_key"], dx0, Gw["wpe"])
        return dacts

    def step(self, data, step):
        c = self.cfg
        tokens, n = self._batch(data)
        B, T = tokens.shape[0], tokens.shape[1] - 1
        logits, acts, saved = self._forward(tokens, n)
        loss, dlogits = self.K.cross_entropy(logits, tokens, n, self.bugs["ce-grad"], self.token_mean,
                                             self.bugs["token-mean-doc-grad"])
        dacts = self._backward(dlogits, acts, saved, B, T)
        hyper = self.K.adam_hyper(c["beta1"], c["beta2"], c["eps"], c["lr"] * (1 - step / c["steps"]), step, self.dt,
                                  self.dev)
        self.K.adam(self.P, self.G, self.M, self.V, hyper, self.bugs["adam-v"])
        self.last = dict(B=B, T=T, n=n, logits=logits, acts=acts, dacts=dacts)
        return float(loss.item())

    # ---- the protocol ----

    def _real(self):
        """(B,T) bool on the host: the positions t < n[b]"""
        last = self.last
        return np.arange(last["T"])[None, :] < last["n"].cpu().numpy()[:, None]

    def get(self, what):
        if self.last is None and what in ("logits", "grads", "relu_inputs", "activations"):
            raise ValueError("get %s before any step" % what)
        if what == "logits":
            B, T = self.last["B"], self.last["T"]
            return {"logits": encode(self.last["logits"].view(B, T, -1).to("cpu", self.torch.float64).numpy())}
        if what == "grads":
            return self._out("grads", self.G)
        if what == "params":
            return self._out("params", self.P)
        if what == "moments":
            out = self._out("adam_m", self.M)
            out.update(self._out("adam_v", self.V))
            return out
        if what == "relu_inputs":  # (L,B,T,4C), NaN at padded positions
            B, T, F = self.last["B"], self.last["T"], 4 * self.cfg["n_embd"]
            r = np.stack([self.last["acts"]["layer%d.fc1" % l].view(B, T, F).to("cpu", self.torch.float64).numpy()
                          for l in range(self.cfg["n_layer"])]) if self.cfg["n_layer"] else np.zeros((0, B, T, F))
            r[:, ~self._real()] = np.nan
            return {"relu_inputs": encode(r)}
        if what == "activations":
            out = {}
            table = activation_table(self.cfg, self.last["B"], self.last["T"])
            for prefix, source in (("acts/", self.last["acts"]), ("dacts/", self.last["dacts"])):
                for name, shape in table:
                    a = source[name].reshape(shape).to("cpu", self.torch.float64).numpy()
                    out[prefix + name] = encode(a, self.out_dtype)
            return out
        raise ValueError("cannot get %r" % what)

    def set_state(self, data):
        self.P.copy_(self._flat(self._load_arrays("params", data)))
        if "adam_m/" + self.layout.names[0] in data:
            self.M.copy_(self._flat(self._load_arrays("adam_m", data)))
            self.V.copy_(self._flat(self._load_arrays("adam_v", data)))

    def sample(self, data, temperature):
        # from BOS, one uniform per position; the whole prefix is run again at each position
        u = decode(data["uniforms"])
        bos, V = self.cfg["bos"], self.cfg["vocab_size"]
        seq, out = [bos], []
        for pos in range(self.cfg["block_size"]):
            tokens = self.torch.tensor([seq + [bos]], dtype=self.torch.int32, device=self.dev)
            n = self.torch.tensor([len(seq)], dtype=self.torch.int32, device=self.dev)
            logits, _, _ = self._forward(tokens, n)
            tok = sample_token(logits[-1].to("cpu", self.torch.float64).tolist(), temperature, float(u[pos]), V)
            if tok == bos:
                break
            out.append(tok)
            seq.append(tok)
        return {"tokens": encode(np.array(out, dtype=np.int32), "I32")}


def argument_parser(description, devices, device_default, device_help):
    """the command line both engines share: --device (of devices) and --plant-bug"""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", choices=devices, default=device_default, help=device_help)
    ap.add_argument("--plant-bug", choices=sorted(PLANTED_BUGS), default=None, metavar="NAME",
                    help="plant one bug: " + ", ".join(sorted(PLANTED_BUGS)))
    return ap


def serve(engine_class, device, bug):
    """answer compare's requests on stdin/stdout with engine_class(cfg, data, device, bug)"""
    mg_protocol.serve(lambda cfg, data: engine_class(cfg, data, device, bug))
