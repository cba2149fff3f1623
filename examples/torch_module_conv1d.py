#!/usr/bin/env python3
"""The harness's model stored the way GPT-2 stores its weights (Hugging
Face's Conv1D: (in, out), y = x @ W), with one fused query/key/value weight
and a position table longer than the block size, checked through
examples/mg_torch.py. Its name map transposes every Conv1D weight, cuts the
fused weight into attn_wq, attn_wk and attn_wv by rows, and leaves wpe's
extra rows out. The model returns its logits alone: the adapter computes the
loss compare asks for (doc-mean or token-mean).

    build/compare --engines scalar,exec:'python3 examples/torch_module_conv1d.py' --batch 4 --n-layer 2

Planted bugs (docs/outside_engines.md, "Check my PyTorch model in 10
minutes"): --wrong-transpose NAME flips the transpose of the map's entry
NAME (attn_wo, mlp_fc1, ... for every layer; lm_head), e.g. a Conv1D weight
mapped as if it were an nn.Linear's; --no-map-check turns off the adapter's
check of the map against the model (serve(check_map=False)), so that only
lockstep can see a square one.
"""
import argparse
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mg_torch  # noqa: E402
from mg_torch import param  # noqa: E402


def rmsnorm(x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)


class Conv1D(nn.Module):
    """GPT-2's linear layer: the weight stored (in, out), y = x @ W."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.02)

    def forward(self, x):
        return x @ self.weight


class Block(nn.Module):
    def __init__(self, C, n_head, n_kv_head):
        super().__init__()
        self.n_head, self.n_kv_head, self.hs = n_head, n_kv_head, C // n_head
        self.attn = nn.Module()
        self.attn.c_attn = Conv1D(C, C + 2 * n_kv_head * self.hs)   # q, k, v side by side
        self.attn.c_proj = Conv1D(C, C)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = Conv1D(C, 4 * C), Conv1D(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        kv = self.n_kv_head * self.hs
        q, k, v = self.attn.c_attn(rmsnorm(x)).split([C, kv, kv], dim=-1)
        q = q.view(B, T, self.n_head, self.hs).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.hs).transpose(1, 2).repeat_interleave(self.n_head // self.n_kv_head, 1)
        v = v.view(B, T, self.n_kv_head, self.hs).transpose(1, 2).repeat_interleave(self.n_head // self.n_kv_head, 1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)   # scale 1/sqrt(head size)
        x = x + self.attn.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp.c_proj(F.relu(self.mlp.c_fc(rmsnorm(x))))


class GPT2Layout(nn.Module):
    def __init__(self, vocab_size, n_positions, C, n_head, n_kv_head, n_layer):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, C), nn.Embedding(n_positions, C)
        self.h = nn.ModuleList(Block(C, n_head, n_kv_head) for _ in range(n_layer))
        self.lm_head = nn.Linear(C, vocab_size, bias=False)

    def forward(self, idx):
        x = rmsnorm(self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device)))
        for block in self.h:
            x = block(x)
        return self.lm_head(x)


def qkv_rows(part):
    """The rows of the fused (transposed) c_attn weight that hold q (0), k (1) or v (2)."""
    def rows(cfg):
        C, kv = cfg["n_embd"], cfg["n_kv_head"] * cfg["head_dim"]
        return [(0, C), (C, C + kv), (C + kv, C + 2 * kv)][part]
    return rows


NAME_MAP = {
    "wte": "wte.weight",
    "wpe": param("wpe.weight", rows="first"),   # 2 x block_size positions: the rest are never read
    "lm_head": "lm_head.weight",
    "layer{i}.attn_wq": param("h.{i}.attn.c_attn.weight", transpose=True, rows=qkv_rows(0)),
    "layer{i}.attn_wk": param("h.{i}.attn.c_attn.weight", transpose=True, rows=qkv_rows(1)),
    "layer{i}.attn_wv": param("h.{i}.attn.c_attn.weight", transpose=True, rows=qkv_rows(2)),
    "layer{i}.attn_wo": param("h.{i}.attn.c_proj.weight", transpose=True),
    "layer{i}.mlp_fc1": param("h.{i}.mlp.c_fc.weight", transpose=True),
    "layer{i}.mlp_fc2": param("h.{i}.mlp.c_proj.weight", transpose=True),
}


def make_model(c):
    return GPT2Layout(c["vocab_size"], 2 * c["block_size"], c["n_embd"], c["n_head"], c["n_kv_head"], c["n_layer"])


def make_optimizer(model, c):
    return torch.optim.Adam(model.parameters(), lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--wrong-transpose", metavar="NAME", help="flip the transpose of this map entry (a planted bug)")
    ap.add_argument("--no-map-check", action="store_true", help="no check of the map: only lockstep sees a bug")
    args = ap.parse_args()
    if args.wrong_transpose:
        key = args.wrong_transpose if args.wrong_transpose in NAME_MAP else "layer{i}." + args.wrong_transpose
        v = NAME_MAP[key] if isinstance(NAME_MAP[key], mg_torch.Param) else param(NAME_MAP[key])
        NAME_MAP[key] = param(v.name, transpose=not v.transpose, rows=v.rows)
    mg_torch.serve(make_model, make_optimizer, NAME_MAP, loss=None, check_map=not args.no_map_check)
