#!/usr/bin/env python3
"""microgpt in PyTorch, written the way a PyTorch user writes it: an
nn.Module, F.scaled_dot_product_attention, F.cross_entropy, loss.backward()
and torch.optim.Adam. compare runs it as a process engine:

    build/compare --engines scalar,exec:'python3 examples/torch_engine.py --device cuda' --steps 50
    build/compare --engines scalar,exec:'python3 examples/torch_engine.py --device cuda' --steps 50 --precision fp32

--broken-rmsnorm routes RMSNorm through a "custom kernel" that writes a fresh
output buffer outside autograd (its output has no grad_fn): the classic bug
of a hand-written kernel dropped into a model. The forward pass is still
right; only the gradients of everything before the first RMSNorm are lost,
and compare fails at step 1 naming them.
"""
import argparse
import contextlib
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # torch < 2.3 (Debian 12 ships 1.13)
    sys.exit("torch_engine.py needs torch 2.3 or later (torch.nn.attention.sdpa_kernel); this is torch %s: "
             "pip install 'torch>=2.3'" % torch.__version__)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mg_protocol  # noqa: E402
import mg_torch  # noqa: E402  (what this engine shares with examples/mg_torch.py's adapter)
from mg_torch import from_torch, to_torch  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
ap.add_argument("--broken-rmsnorm", action="store_true")
# SDPA's math backend computes attention the way the reference does; PyTorch's
# default on CUDA in fp32 is its memory-efficient kernel, whose backward
# recomputes the softmax from its log-sum-exp: a different algorithm, whose
# fp32 dq error reached 6x the plain fp32 reference's on an H200 (the ratio
# rule's k, docs/calibration/report.md, allows 15x). --attention auto uses it.
ap.add_argument("--attention", choices=("math", "auto"), default="math")
ARGS = ap.parse_args()


def attention_backend():
    return sdpa_kernel(SDPBackend.MATH) if ARGS.attention == "math" else contextlib.nullcontext()


def rmsnorm(x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)


def rmsnorm_custom_kernel(x):
    # what launching a custom kernel looks like: it fills a new buffer, and
    # autograd never learns how the buffer depends on x
    out = torch.empty_like(x)
    with torch.no_grad():
        out.copy_(rmsnorm(x))
    return out


norm = rmsnorm_custom_kernel if ARGS.broken_rmsnorm else rmsnorm


# The ops' outputs (and, after backward, their gradients) of the last step,
# by the harness's op names (mg_protocol.op_names), when compare asks for
# them ("activations" in the create request). SDPA computes the scores and
# the softmax inside one call, so those two are not reported: compare checks
# what an engine reports.
RECORD = {}


def rec(name, t):
    """Keep t (an op's output) under name, with its gradient once backward has run."""
    if RECORD.get("on") and t.requires_grad:
        t.retain_grad()
        RECORD[name] = t
    return t


class Block(nn.Module):
    def __init__(self, C, NH, NKV, HS, index=0):
        super().__init__()
        self.NH, self.NKV, self.HS, self.index = NH, NKV, HS, index
        self.attn_wq = nn.Linear(C, NH * HS, bias=False)
        self.attn_wk = nn.Linear(C, NKV * HS, bias=False)
        self.attn_wv = nn.Linear(C, NKV * HS, bias=False)
        self.attn_wo = nn.Linear(C, C, bias=False)
        self.mlp_fc1 = nn.Linear(C, 4 * C, bias=False)
        self.mlp_fc2 = nn.Linear(4 * C, C, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        r = lambda k, t: rec("layer%d.%s" % (self.index, k), t)  # noqa: E731
        h = r("norm1", norm(x))
        q = r("q", self.attn_wq(h)).view(B, T, self.NH, self.HS).transpose(1, 2)
        k = r("k", self.attn_wk(h)).view(B, T, self.NKV, self.HS).transpose(1, 2)
        v = r("v", self.attn_wv(h)).view(B, T, self.NKV, self.HS).transpose(1, 2)
        g = self.NH // self.NKV  # query head i reads key/value head i // g
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.HS ** -0.5)
        a = r("attn", a.transpose(1, 2).reshape(B, T, C))
        x = r("res1", x + r("attn_proj", self.attn_wo(a)))
        pre = r("fc1", self.mlp_fc1(r("norm2", norm(x))))
        self.relu_in = pre.detach()  # kept for get("relu_inputs")
        return r("res2", x + r("fc2", self.mlp_fc2(r("relu", torch.relu(pre)))))


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        V, C, T = c["vocab_size"], c["n_embd"], c["block_size"]
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.layers = nn.ModuleList(Block(C, c["n_head"], c["n_kv_head"], c["head_dim"], i) for i in range(c["n_layer"]))
        self.lm_head = nn.Linear(C, V, bias=False)

    def forward(self, idx):
        B, T = idx.shape
        x = rec("embed_norm", norm(rec("embed", self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))))
        for blk in self.layers:
            x = blk(x)
        return rec("logits", self.lm_head(x))

    def canonical(self):
        """name -> parameter, with the harness's canonical names"""
        out = {"wte": self.wte.weight, "wpe": self.wpe.weight, "lm_head": self.lm_head.weight}
        for i, blk in enumerate(self.layers):
            for k in ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2"):
                out["layer%d.%s" % (i, k)] = getattr(blk, k).weight
        return out


class TorchEngine:
    name = "torch"
    relu_inputs = True  # get("relu_inputs"): lets compare match a ReLU gate that flips between precisions
    activations = True  # get("activations"): the ops' outputs and gradients (all but the scores and softmax)

    def __init__(self, cfg, data):
        if cfg["fault"] != "none":
            raise ValueError("this engine has no injected faults")
        self.cfg = cfg
        self.dev = torch.device(ARGS.device)
        if cfg["precision"] not in ("fp64", "fp32"):
            raise ValueError("this engine computes in fp64 or fp32, not %s" % cfg["precision"])
        self.dt = {"fp64": torch.float64, "fp32": torch.float32}[cfg["precision"]]
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.allow_tf32 = False
        self.device = "%s (torch %s)" % (torch.cuda.get_device_name(self.dev) if self.dev.type == "cuda" else "cpu",
                                         torch.__version__)
        self.model = GPT(cfg).to(self.dev, self.dt)
        self.params = self.model.canonical()
        self.load("params", data)
        self.opt = torch.optim.Adam(self.params.values(), lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]),
                                    eps=cfg["eps"])
        self.logits = None

    def load(self, prefix, data):
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(to_torch(data[prefix + "/" + k], self.dev, self.dt))

    def step(self, data, step):
        tokens = to_torch(data["tokens"], self.dev, torch.long)
        n = to_torch(data["n"], self.dev, torch.long)
        T = tokens.shape[1] - 1
        self.opt.zero_grad(set_to_none=True)
        RECORD.clear()
        RECORD["on"] = bool(self.cfg.get("activations"))
        with attention_backend():
            logits = self.model(tokens[:, :T].clamp(min=0))  # inputs past n[b] are -1: padding
        # token-mean: F.cross_entropy's own mean over the real tokens; doc-mean: the original's
        loss = mg_torch.harness_loss(logits, tokens[:, 1:], n, self.cfg.get("loss", "doc-mean"))
        loss.backward()
        self.logits = logits.detach()
        self.n = n
        # a parameter autograd never reached has no .grad: report it as zero
        self.grads = {k: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                      for k, p in self.params.items()}
        # the harness's learning rate and step count (after set_state)
        mg_torch.set_lr_and_step(self.opt, self.params.values(), self.cfg, step)
        self.opt.step()
        return loss.item()

    def get(self, what):
        if what == "logits":
            return {"logits": from_torch(self.logits)}
        if what == "relu_inputs":  # (L,B,T,4C), NaN at padded positions
            r = torch.stack([blk.relu_in for blk in self.model.layers]).to(torch.float64)
            T = r.shape[2]
            pad = torch.arange(T, device=r.device)[None, :] >= self.n[:, None]  # (B,T)
            r[:, pad] = float("nan")
            return {"relu_inputs": from_torch(r)}
        if what == "grads":
            return {"grads/" + k: from_torch(g) for k, g in self.grads.items()}
        if what == "activations":  # acts/<op> and dacts/<op> of the ops recorded (RECORD)
            out = {}
            for k, t in RECORD.items():
                if k == "on":
                    continue
                out["acts/" + k] = from_torch(t)
                # no gradient reached it (a cut graph): zero, which is what the engine computed
                out["dacts/" + k] = from_torch(t.grad if t.grad is not None else torch.zeros_like(t))
            return out
        if what == "params":
            return {"params/" + k: from_torch(p) for k, p in self.params.items()}
        if what == "moments":
            out = {}
            for k, p in self.params.items():
                st = self.opt.state.get(p) or {}
                out["adam_m/" + k] = from_torch(st.get("exp_avg", torch.zeros_like(p)))
                out["adam_v/" + k] = from_torch(st.get("exp_avg_sq", torch.zeros_like(p)))
            return out
        raise ValueError("cannot get %r" % what)

    def set_state(self, data):
        self.load("params", data)
        if "adam_m/wte" in data:
            for k, p in self.params.items():
                st = mg_torch.adam_state(self.opt, p)
                st["exp_avg"] = to_torch(data["adam_m/" + k], self.dev, self.dt)
                st["exp_avg_sq"] = to_torch(data["adam_v/" + k], self.dev, self.dt)

    @torch.no_grad()
    def sample(self, data, temperature):
        RECORD["on"] = False
        u = to_torch(data["uniforms"], "cpu", torch.float64).tolist()

        def next_logits(seq):
            with attention_backend():
                return self.model(torch.tensor([seq], device=self.dev))[0, -1].to("cpu", torch.float64).tolist()
        return mg_torch.sample_tokens(next_logits, u, temperature, self.cfg)


if __name__ == "__main__":
    mg_protocol.serve(TorchEngine)
