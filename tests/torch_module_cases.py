#!/usr/bin/env python3
"""Planted mistakes for tests/test_torch_module.c: the two example models of
examples/torch_module_engine.py (nn.Linear, (out, in)) and
examples/torch_module_conv1d.py (GPT-2's Conv1D, (in, out)) served through
examples/mg_torch.py with one thing wrong. Usage: torch_module_cases.py CASE
[--no-map-check], run from the repository root.

  linear-transposed   usual model, attn_wq (square) declared transpose=True
  conv1d-no-hooks     GPT-2 layout, attn_wo (square) not transposed, and no
                      module hooks: the dispatcher's view of the products alone
  typo                a parameter name the model lacks
  bias                a trainable parameter the map leaves out
  betas               torch.optim.Adam's default betas
  tied                lm_head tied to the token embedding
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import mg_torch  # noqa: E402
import torch_module_conv1d as gpt2  # noqa: E402
import torch_module_engine as usual  # noqa: E402

case = sys.argv[1]
check = "--no-map-check" not in sys.argv[2:]
nm, make_model, make_opt, loss, ops = dict(usual.NAME_MAP), usual.make_model, usual.make_optimizer, "token-mean", True
if case == "linear-transposed":
    nm["layer{i}.attn_wq"] = mg_torch.param("blocks.{i}.attn.query.weight", transpose=True)
elif case == "conv1d-no-hooks":
    nm, make_model, make_opt, loss, ops = dict(gpt2.NAME_MAP), gpt2.make_model, gpt2.make_optimizer, None, False
    nm["layer{i}.attn_wo"] = "h.{i}.attn.c_proj.weight"
elif case == "typo":
    nm["layer{i}.mlp_fc1"] = "blocks.{i}.mlp.fc1.weight"
elif case == "bias":
    def make_model(c):
        m = usual.make_model(c)
        m.lm_head = nn.Linear(c["n_embd"], c["vocab_size"], bias=True)
        return m
elif case == "betas":
    def make_opt(model, c):
        return torch.optim.Adam(model.parameters(), lr=c["lr"])
elif case == "tied":
    def make_model(c):
        m = usual.make_model(c)
        m.lm_head.weight = m.tok_emb.weight
        return m
else:
    sys.exit("unknown case %r" % case)
mg_torch.serve(make_model, make_opt, nm, loss=loss, check_map=check, report_ops=ops)
