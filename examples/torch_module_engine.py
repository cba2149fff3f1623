#!/usr/bin/env python3
"""A small GPT written the usual PyTorch way (nn.Embedding, nn.Linear without
bias, F.cross_entropy's token mean, torch.optim.Adam), with its own parameter
names, checked against the harness through examples/mg_torch.py: the adapter
is the part after "the adapter" below, under 30 lines
(docs/outside_engines.md, "Check my PyTorch model in 10 minutes"):

    build/compare --engines scalar,exec:'python3 examples/torch_module_engine.py' \
        --loss token-mean --batch 4 --n-layer 2

The model is the harness's: rmsnorm without a weight (eps 1e-5) after the
embeddings and before attention and the MLP, causal attention with scores
q.k / sqrt(head_dim), a ReLU MLP of width 4C, no final norm, no biases.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def rmsnorm(x, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class Attention(nn.Module):
    def __init__(self, n_embd, n_head, n_kv_head):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, n_embd // n_head
        self.query = nn.Linear(n_embd, n_embd, bias=False)
        self.key = nn.Linear(n_embd, n_kv_head * self.head_dim, bias=False)
        self.value = nn.Linear(n_embd, n_kv_head * self.head_dim, bias=False)
        self.proj = nn.Linear(n_embd, n_embd, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q = self.query(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.key(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.value(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)  # grouped-query attention
        v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = F.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=False)

    def forward(self, x):
        return self.proj(F.relu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, n_kv_head):
        super().__init__()
        self.attn = Attention(n_embd, n_head, n_kv_head)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(rmsnorm(x))
        return x + self.mlp(rmsnorm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_embd, n_head, n_kv_head, n_layer):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, n_kv_head) for _ in range(n_layer))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = rmsnorm(self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device)))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(x)
        loss = None
        if targets is not None:  # -1 marks the positions past a document
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


# ---- the adapter ----
import os, sys  # noqa: E401,E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # mg_torch.py and mg_protocol.py sit beside it
import mg_torch  # noqa: E402

NAME_MAP = {  # the harness's tensor names -> this model's parameters; {i}: every layer
    "wte": "tok_emb.weight",
    "wpe": "pos_emb.weight",
    "lm_head": "lm_head.weight",
    "layer{i}.attn_wq": "blocks.{i}.attn.query.weight",
    "layer{i}.attn_wk": "blocks.{i}.attn.key.weight",
    "layer{i}.attn_wv": "blocks.{i}.attn.value.weight",
    "layer{i}.attn_wo": "blocks.{i}.attn.proj.weight",
    "layer{i}.mlp_fc1": "blocks.{i}.mlp.fc.weight",
    "layer{i}.mlp_fc2": "blocks.{i}.mlp.proj.weight",
}


def make_model(cfg):  # cfg: compare's config (vocab_size, n_embd, n_layer, lr, beta1, ...)
    return GPT(cfg["vocab_size"], cfg["block_size"], cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"], cfg["n_layer"])


def make_optimizer(model, cfg):
    return torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])


if __name__ == "__main__":
    mg_torch.serve(make_model, make_optimizer, NAME_MAP, loss="token-mean")
