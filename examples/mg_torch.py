"""Check a PyTorch model written your own way against the harness
(docs/outside_engines.md, "Check my PyTorch model in 10 minutes").

Give serve() the model (an nn.Module, or a function of compare's config that
builds one), an optimizer factory and a name map from the harness's tensor
names to the model's parameters; it speaks the exec protocol of
examples/mg_protocol.py:

    import mg_torch
    NAME_MAP = {"wte": "tok_emb.weight", "wpe": "pos_emb.weight", "lm_head": "lm_head.weight",
                "layer{i}.attn_wq": "blocks.{i}.attn.query.weight", ...}
    mg_torch.serve(lambda cfg: GPT(...), lambda model, cfg: torch.optim.Adam(model.parameters(), ...),
                   NAME_MAP, loss="token-mean")

It imports and exports the parameters, their gradients and Adam's moments
(exp_avg, exp_avg_sq) through the map, sets the optimizer's step count to
the harness's step and each step's learning rate from the harness's linear
decay, and samples. The map's values are parameter names (as
model.named_parameters() spells them), or param(name, transpose=True) for a
weight stored (in, out) (GPT-2's Conv1D, a hand-written x @ W), or
param(name, rows=...) for part of one: rows="first" (the model's tensor has
extra rows, e.g. a wpe longer than the block size: they are left out) or
(start, stop) (a fused qkv weight), or a function of the config giving
either. "{i}" in a name stands for each layer.

At create it refuses, naming the tensor, a map that misses a tensor or a
trainable parameter, a shape that does not fit (and says when the transpose
is what is wrong), tied weights, dropout, and an optimizer whose betas, eps,
weight decay or amsgrad differ from the harness's Adam. Then one forward
pass on a probe batch (check_map) watches every matrix product at torch's
dispatcher: an operand that is a view of a mapped weight is the weight as
stored or its transpose (its strides tell), so a square weight given the
wrong transpose is named too, whether a module or inline code multiplies by
it. The same pass finds the modules that own exactly one mapped weight and
compute input @ W^T with it (nn.Linear, GPT-2's Conv1D; report_ops): their
inputs and outputs are reported as the harness's ops (layer0.q, layer0.fc1,
logits...: get "activations"), so that a failing step names the op that
broke, and the MLP's ReLU inputs (get "relu_inputs").

The helpers below (to_torch, from_torch, harness_loss, set_lr_and_step,
adam_state, sample_tokens) are also what examples/torch_engine.py uses.
"""
import bisect
import contextlib
import difflib
import inspect
import itertools
import math
import os
import random
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mg_protocol  # noqa: E402

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "I32": torch.int32}


def to_torch(t, device, dtype):
    """A protocol array (dtype, shape, bytes) -> a torch tensor on device in dtype."""
    kind, shape, raw = t
    return torch.frombuffer(bytearray(raw), dtype=_DTYPES[kind]).reshape(shape).to(device=device, dtype=dtype)


def from_torch(x):
    """A torch tensor -> a protocol array, F64."""
    x = x.detach().to("cpu", torch.float64).contiguous()
    return ("F64", list(x.shape), x.numpy().tobytes())


def harness_loss(logits, targets, n, which):
    """The loss compare asks for (config "loss") from logits (B,T,V), targets
    (B,T) with -1 past each document and n (B): "token-mean", F.cross_entropy's
    own mean over the real tokens, or "doc-mean", the original's mean over
    documents of each document's mean."""
    B, T = targets.shape
    flat = logits.reshape(B * T, -1)
    if which == "token-mean":
        return F.cross_entropy(flat, targets.reshape(-1), ignore_index=-1)
    per_pos = F.cross_entropy(flat, targets.reshape(-1), ignore_index=-1, reduction="none").view(B, T)
    return (per_pos.sum(1) / n.to(logits.dtype)).mean()


def adam_state(opt, p):
    """opt.state[p], created as torch's Adam creates it (step 0, zero moments)
    when the optimizer has not stepped p yet, so that compare's moments and
    step count can be set before the first step."""
    st = opt.state[p]
    if "exp_avg" not in st:
        group = next(g for g in opt.param_groups if any(q is p for q in g["params"]))
        on_dev = group.get("capturable") or group.get("fused")
        st["step"] = torch.tensor(0.0, device=p.device if on_dev else "cpu")
        st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return st


def set_lr_and_step(opt, params, cfg, step):
    """Before opt.step() of the harness's step `step` (0-based): the learning
    rate lr (1 - step/steps) in every group, and the step count of every
    parameter that has Adam state set to `step` (torch adds one before it
    uses it: the bias corrections are 1 - beta^(step+1), as the harness's)."""
    lr = cfg["lr"] * (1 - step / cfg["steps"])
    for g in opt.param_groups:
        if torch.is_tensor(g["lr"]):
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr
    for p in params:
        st = opt.state.get(p)
        if st and "step" in st:
            old = st["step"]
            st["step"] = torch.tensor(float(step), dtype=old.dtype, device=old.device) if torch.is_tensor(old) \
                else float(step)


def sample_tokens(next_logits, uniforms, temperature, cfg):
    """The harness's sampling rule (docs/outside_engines.md, section 3): from
    BOS, at position i w = logits * temperature**-1, the token
    bisect_right(cumsum(softmax(w)), uniforms[i] * sum) among 0..V-1, until BOS
    or block_size tokens. next_logits(seq) gives the logits after the token
    ids seq as V floats. Returns the reply {"tokens": ...} without BOS."""
    bos, V = cfg["bos"], cfg["vocab_size"]
    seq, out = [bos], []
    for pos in range(cfg["block_size"]):
        w = [x * temperature ** -1 for x in next_logits(seq)]
        mx = max(w)
        w = [math.exp(x - mx) for x in w]
        inv = 1.0 / sum(w)
        cum = list(itertools.accumulate(x * inv for x in w))
        tok = bisect.bisect(cum, uniforms[pos] * cum[-1], 0, V - 1)
        if tok == bos:
            break
        out.append(tok)
        seq.append(tok)
    raw = torch.tensor(out, dtype=torch.int32).numpy().tobytes()
    return {"tokens": ("I32", [len(out)], raw)}


# ---- the name map ----

class Param:
    """One value of the name map: the model's parameter `name`; transpose:
    the model stores it (in, out), the harness (out, in); rows: None (the
    whole tensor), "first" (the harness's tensor is its first rows) or
    (start, stop), in the harness's orientation; or a function of the config
    giving one of those."""

    def __init__(self, name, transpose=False, rows=None):
        self.name, self.transpose, self.rows = name, transpose, rows

    def __repr__(self):
        extra = (", transpose=True" if self.transpose else "") + (", rows=%r" % (self.rows,) if self.rows else "")
        return "param(%r%s)" % (self.name, extra)


def param(name, transpose=False, rows=None):
    return Param(name, transpose, rows)


# The op (common/activations.h) a mapped weight's module reads and the one it
# writes, when that module computes input @ W^T and nothing else.
_PRODUCT_OPS = {"attn_wq": ("norm1", "q"), "attn_wk": ("norm1", "k"), "attn_wv": ("norm1", "v"),
                "attn_wo": ("attn", "attn_proj"), "mlp_fc1": ("norm2", "fc1"), "mlp_fc2": ("relu", "fc2")}


def _shape(t):
    return "(%s)" % ", ".join(str(d) for d in t)


class _Entry:
    """A canonical tensor and where it lives in the model."""

    def __init__(self, canonical, spec, shape, cfg, params, mods):
        self.canonical, self.shape = canonical, tuple(shape)
        spec = spec if isinstance(spec, Param) else Param(spec)
        self.pname, self.transpose = spec.name, bool(spec.transpose)
        self.desc = "%s -> %r%s" % (canonical, self.pname, " (transpose=True)" if self.transpose else "")
        if self.pname not in params:
            close = difflib.get_close_matches(self.pname, list(params), n=3)
            raise ValueError("name map: %s: the model has no parameter %r%s" % (
                canonical, self.pname, "; did you mean %s?" % " or ".join(map(repr, close)) if close else ""))
        self.p = params[self.pname]
        if self.p.dim() != 2:
            raise ValueError("name map: %s: %r is %s, not a matrix" % (self.desc, self.pname, _shape(self.p.shape)))
        stored, want = tuple(self.p.shape), self.shape
        self.rows, got = self._rows(spec.rows, cfg, stored[::-1] if self.transpose else stored)
        if got != want:
            part = "" if self.rows is None else ", rows %d:%d of it%s" % (
                self.rows.start, self.rows.stop, " transposed" if self.transpose else "")
            msg = "name map: %s: the harness's %s is %s (out, in), as nn.Linear stores a weight; the model's " \
                  "%r is %s%s" % (canonical, canonical, _shape(want), self.pname, _shape(stored), part)
            if self._rows(spec.rows, cfg, stored if self.transpose else stored[::-1])[1] == want:
                msg += ": " + self.transpose_fix()
            raise ValueError(msg)
        # the module that owns the weight, when it is a plain product of it
        mod = mods.get(self.pname.rpartition(".")[0])
        own = list(mod.parameters(recurse=False)) if mod is not None else []
        self.owner = mod if (mod is not None and self.rows is None and canonical.split(".")[-1] in
                             ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2", "lm_head")
                             and not list(mod.children()) and len(own) == 1 and own[0] is self.p
                             and not isinstance(mod, nn.Embedding)) else None
        self.owner_name = self.pname.rpartition(".")[0]

    def _rows(self, spec, cfg, seen):
        """The row slice the spec gives on a tensor of shape seen (the harness's
        orientation), and the shape it leaves."""
        rows = spec(cfg) if callable(spec) else spec
        if rows == "first":
            rows = (0, self.shape[0]) if seen[0] >= self.shape[0] else None
        if rows is None:
            return None, tuple(seen)
        rows = slice(*rows)
        return rows, (len(range(seen[0])[rows]), seen[1])

    def transpose_fix(self):
        """What to change in the map when the model contradicts its transpose."""
        if self.transpose:
            return "it is stored (out, in) already, as nn.Linear's: its map entry must not say transpose=True"
        return "it is stored (in, out), so its map entry needs transpose=True: mg_torch.param(%r, transpose=True%s)" \
            % (self.pname, "" if self.rows is None else ", rows=...")

    def row_range(self):
        """The rows of the parameter (in the harness's orientation) this tensor takes."""
        r = range(self.p.shape[1] if self.transpose else self.p.shape[0])
        return r[self.rows] if self.rows is not None else r

    def view(self, t):
        """t (the parameter, its gradient or a moment) in the harness's layout: a view."""
        v = t.t() if self.transpose else t
        return v[self.rows] if self.rows is not None else v

    def ops(self, n_layer):
        """The ops this weight's module reads and writes."""
        if self.canonical == "lm_head":
            return ("layer%d.res2" % (n_layer - 1) if n_layer else "embed_norm", "logits")
        layer, _, k = self.canonical.partition(".")
        return tuple("%s.%s" % (layer, o) for o in _PRODUCT_OPS[k])


def _canonical_names(cfg):
    return [t["name"] for t in cfg["tensors"]]


def _expand(name_map, cfg):
    """The map with "{i}" expanded over the layers."""
    out = {}
    for k, v in name_map.items():
        if "{i}" in k:
            for i in range(cfg["n_layer"]):
                sub = lambda s: s.replace("{i}", str(i))  # noqa: E731
                out[sub(k)] = Param(sub(v.name), v.transpose, v.rows) if isinstance(v, Param) else sub(v)
        else:
            out[k] = v
    return out


class _Orientation(TorchDispatchMode):
    """During one forward pass, how the model multiplies by each parameter.
    Every product reaches the dispatcher as mm, addmm, bmm or baddbmm
    (F.linear, @, einsum included); an operand that is a view of a parameter
    is the parameter as stored (unit column stride) or its transpose (unit
    row stride): x @ W as stored, or W^T @ x, is "in_out" (W stored (in,
    out)); x @ W^T or W @ x is "out_in" (stored (out, in), as nn.Linear's).
    seen: id(parameter) -> the set of ways it was used."""
    OPS = {torch.ops.aten.mm.default: (0, 1), torch.ops.aten.bmm.default: (0, 1),
           torch.ops.aten.addmm.default: (1, 2), torch.ops.aten.baddbmm.default: (1, 2)}

    def __init__(self, params):
        super().__init__()
        by_storage = {}
        for p in params:
            by_storage.setdefault(p.untyped_storage().data_ptr(), []).append(p)
        self.params = {k: v[0] for k, v in by_storage.items() if len(v) == 1}   # one storage, one parameter
        self.seen = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for side, i in zip(("left", "right"), self.OPS.get(func, ())):
            t = args[i]
            p = self.params.get(t.untyped_storage().data_ptr()) if torch.is_tensor(t) and t.dim() >= 2 else None
            if p is None or p.dim() != 2:
                continue
            rs, cs = t.stride()[-2:]
            if cs == 1 and rs == p.stride(0):
                as_stored = True
            elif rs == 1 and cs == p.stride(0):
                as_stored = False
            else:
                continue
            self.seen.setdefault(id(p), set()).add("in_out" if as_stored == (side == "right") else "out_in")
        return func(*args, **(kwargs or {}))


class ModuleEngine:
    """The exec-protocol engine around a model (see serve)."""
    name = "torch-module"

    def __init__(self, cfg, data, model, make_optimizer, name_map, loss, forward, device, check_map, report_ops,
                 sample_seed):
        if cfg["fault"] != "none":
            raise ValueError("this engine has no injected faults")
        if cfg["precision"] not in ("fp64", "fp32"):
            raise ValueError("this engine computes in fp64 or fp32, not %s" % cfg["precision"])
        want_loss = cfg.get("loss", "doc-mean")
        if loss is not None and loss != want_loss:
            raise ValueError("this model's own loss is the %s (%s), and compare asks for the %s: run compare with "
                             "--loss %s" % (loss, "F.cross_entropy's mean over the batch's tokens"
                                            if loss == "token-mean" else "mean of the documents' means",
                                            want_loss, loss))
        self.cfg, self.loss_kind = cfg, loss
        self.dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dt = {"fp64": torch.float64, "fp32": torch.float32}[cfg["precision"]]
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.allow_tf32 = False
        self.device = "%s (torch %s)" % (torch.cuda.get_device_name(self.dev) if self.dev.type == "cuda" else "cpu",
                                         torch.__version__)
        m = model if isinstance(model, nn.Module) else model(cfg)
        self.model = m.to(self.dev, self.dt)
        for name, mod in self.model.named_modules():
            if isinstance(mod, nn.Dropout) and mod.p > 0:
                raise ValueError("the module %r is dropout with p=%g; the harness's model has none: build the model "
                                 "with dropout 0" % (name, mod.p))
        # the map, checked
        params = dict(self.model.named_parameters(remove_duplicate=False))
        mods = dict(self.model.named_modules(remove_duplicate=False))
        shapes = {t["name"]: t["shape"] for t in cfg["tensors"]}
        nm = _expand(name_map, cfg)
        unknown = sorted(set(nm) - set(shapes))
        if unknown:
            raise ValueError("name map: %s: no such tensor in the harness's model (its tensors: %s)"
                             % (", ".join(unknown), ", ".join(shapes)))
        missing = [k for k in shapes if k not in nm]
        if missing:
            raise ValueError("name map: it lacks %s (every tensor of the harness's model needs a parameter)"
                             % ", ".join(missing))
        self.entries = [_Entry(k, nm[k], shapes[k], cfg, params, mods) for k in _canonical_names(cfg)]
        for a, b in itertools.combinations(self.entries, 2):
            if a.p is b.p and (a.rows is None or b.rows is None or a.transpose != b.transpose or
                               set(a.row_range()) & set(b.row_range())):
                raise ValueError("name map: %s and %s are the same parameter%s (tied weights?): the harness's "
                                 "model has them as two tensors" % (a.desc, b.desc, "'s rows" if a.rows else ""))
        mapped = {id(e.p) for e in self.entries}
        free = [k for k, p in params.items() if p.requires_grad and id(p) not in mapped]
        if free:
            raise ValueError("the model's trainable parameter%s %s %s in no tensor of the name map: the harness's "
                             "model has no bias, no norm weight (rmsnorm has none) and nothing else to train; "
                             "remove %s or set requires_grad=False" % (
                                 "s" if len(free) > 1 else "", ", ".join(map(repr, free)),
                                 "are" if len(free) > 1 else "is", "them" if len(free) > 1 else "it"))
        self.params = [e.p for e in {id(e.p): e for e in self.entries}.values()]
        self.load("params", data)
        # the optimizer, checked against the harness's Adam
        self.opt = make_optimizer(self.model, cfg)
        if not isinstance(self.opt, (torch.optim.Adam, torch.optim.AdamW)):
            raise ValueError("the optimizer is %s; the harness's is Adam (torch.optim.Adam)" % type(self.opt).__name__)
        b = (cfg["beta1"], cfg["beta2"])
        for g in self.opt.param_groups:
            betas = tuple(float(x) for x in g["betas"])
            bad = ["betas %r, the harness's %r: betas=(cfg['beta1'], cfg['beta2'])" % (betas, b)] if betas != b else []
            if g["eps"] != cfg["eps"]:
                bad.append("eps %r, the harness's %r: eps=cfg['eps']" % (g["eps"], cfg["eps"]))
            bad += ["weight_decay %r: the harness's Adam has none" % g["weight_decay"]] if g.get("weight_decay") else []
            bad += ["amsgrad=True: the harness's Adam is not AMSGrad"] if g.get("amsgrad") else []
            bad += ["maximize=True"] if g.get("maximize") else []
            if bad:
                raise ValueError("the optimizer's %s" % "; ".join(bad))
        in_opt = {id(p) for g in self.opt.param_groups for p in g["params"]}
        left = [e.pname for e in self.entries if id(e.p) not in in_opt]
        if left:
            raise ValueError("the optimizer does not train %s" % ", ".join(sorted(set(left))))
        # the forward: model(idx, targets) when forward takes two arguments, else model(idx)
        if forward is None:
            try:
                inspect.signature(self.model.forward).bind(None, None)
                forward = lambda mdl, idx, targets: mdl(idx, targets)  # noqa: E731
            except TypeError:
                forward = lambda mdl, idx, targets: mdl(idx)  # noqa: E731
        self.forward = forward
        self.logits = self.grads = None
        self.rng = random.Random(sample_seed)  # --sampler own
        self.hooked, self.calls, self.recording = [], None, False
        if check_map or report_ops:
            self._probe(check_map, report_ops)
        self.activations = bool(self.hooked)
        fc1 = {e.canonical for e in self.hooked if e.canonical.endswith("mlp_fc1")}
        self.relu_inputs = cfg["n_layer"] > 0 and len(fc1) == cfg["n_layer"]

    # ---- parameters, gradients, moments through the map ----

    def load(self, prefix, data):
        with torch.no_grad():
            for e in self.entries:
                e.view(e.p).copy_(to_torch(data[prefix + "/" + e.canonical], self.dev, self.dt))

    def export(self, prefix, tensor_of):
        return {prefix + "/" + e.canonical: from_torch(e.view(tensor_of(e))) for e in self.entries}

    # ---- the probe: how the model multiplies by each weight; which modules to report ----

    def _wrong_transpose(self, e, how):
        """The error of a map entry whose transpose the model contradicts."""
        return ValueError("name map: %s: the model %s; %s" % (e.desc, how, e.transpose_fix()))

    def _probe(self, check_map, report_ops):
        """One forward pass on a probe batch. check_map: every product the
        model computes with a mapped weight (any mm, inline or in a module)
        must use it the way the map's transpose says, else the run stops
        naming the tensor. report_ops: a hook on every module that owns
        exactly one mapped weight; one that computes input @ W^T (W as the map
        reads it) is kept and its input and output reported as the harness's
        ops."""
        cands = [e for e in self.entries if e.owner is not None] if report_ops else []
        seen = {id(e): [] for e in cands}
        handles = [e.owner.register_forward_hook(lambda mod, args, out, e=e: seen[id(e)].append((args, out)))
                   for e in cands]
        T = min(self.cfg["block_size"], 8)
        idx = (torch.arange(T, device=self.dev) % (self.cfg["vocab_size"] - 1)).unsqueeze(0)
        usage = _Orientation(self.params) if check_map else None
        try:
            with torch.no_grad(), usage if usage is not None else contextlib.nullcontext():
                self.forward(self.model, idx, torch.zeros_like(idx))
        finally:
            for h in handles:
                h.remove()
        for e in self.entries if usage is not None else []:
            if e.canonical in ("wte", "wpe"):
                continue   # looked up, not multiplied
            how = usage.seen.get(id(e.p), set())
            want = "in_out" if e.transpose else "out_in"
            if len(how) == 1 and want not in how:
                raise self._wrong_transpose(e, "multiplies by it as x @ W with W as stored (not x @ W^T, as "
                                               "nn.Linear does)" if want == "out_in" else "multiplies by it as "
                                               "x @ W^T with W as stored (as nn.Linear does)")
        tol = 1e-9 if self.dt == torch.float64 else 1e-3
        for e in cands:
            calls = seen[id(e)]
            if len(calls) != 1 or not calls[0][0] or not torch.is_tensor(calls[0][0][0]) or \
                    not torch.is_tensor(calls[0][1]):
                continue   # not called once with a tensor: not reported
            x, y = calls[0][0][0], calls[0][1]
            W = e.view(e.p).detach()
            if x.dim() != 3 or y.dim() != 3 or x.shape[-1] != W.shape[1] or y.shape[-1] != W.shape[0]:
                continue
            err = lambda ref: float((y - ref).abs().max() / ref.pow(2).mean().sqrt().clamp_min(1e-300))  # noqa: E731
            if err(F.linear(x, W)) <= tol:
                self.hooked.append(e)
            elif W.shape[0] == W.shape[1] and err(F.linear(x, W.t())) <= tol:
                if check_map:
                    raise self._wrong_transpose(e, "module %r computes input @ W%s with W as stored" % (
                        e.owner_name, "^T" if e.transpose else ""))
                self.hooked.append(e)   # a product all the same: lockstep names the op that is off
            else:
                print("mg_torch: the module %r computes something besides input @ W^T (W = %s): its ops are not "
                      "reported" % (e.owner_name, e.canonical), file=sys.stderr)
        L = self.cfg["n_layer"]
        for e in self.hooked:
            e.handle = e.owner.register_forward_hook(lambda mod, args, out, e=e: self._record(e, args[0], out))
            e.op_in, e.op_out = e.ops(L)

    def _record(self, e, x, y):
        if not self.recording:
            return
        self.calls.setdefault(e.op_out, []).append((y, y.detach().clone()))
        self.calls.setdefault(e.op_in, []).append((x, x.detach().clone()))
        for t in (x, y):
            if t.requires_grad and not t.is_leaf:
                t.retain_grad()

    # ---- the protocol ----

    def step(self, data, step):
        tokens = to_torch(data["tokens"], self.dev, torch.long)
        n = to_torch(data["n"], self.dev, torch.long)
        B, T = tokens.shape[0], tokens.shape[1] - 1
        idx, targets = tokens[:, :T].clamp(min=0), tokens[:, 1:].contiguous()   # inputs past n[b] are -1: padding
        self.opt.zero_grad(set_to_none=True)
        self.calls, self.recording = {}, self.activations
        try:
            out = self.forward(self.model, idx, targets)
        finally:
            self.recording = False
        logits, loss = (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, None)
        V = self.cfg["vocab_size"]
        if tuple(logits.shape) != (B, T, V):
            raise ValueError("the model's logits are %s for a batch of %d document(s) of %d positions; the harness's "
                             "are (B, T, V) = %s%s" % (_shape(logits.shape), B, T, _shape((B, T, V)),
                                                       ": build the model with vocab_size = config['vocab_size'] "
                                                       "(extra vocabulary rows take part in the softmax)"
                                                       if logits.shape[-1] != V else ""))
        if loss is None:
            loss = harness_loss(logits, targets, n, self.loss_kind or self.cfg.get("loss", "doc-mean"))
        elif self.loss_kind is None:
            raise ValueError("the model returned a loss: say which one it is, serve(..., loss='token-mean') "
                             "(F.cross_entropy over the batch) or 'doc-mean'")
        loss.backward()
        self.logits, self.n = logits.detach(), n
        # a parameter autograd never reached has no .grad: report it as zero
        self.grads = {id(p): p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                      for p in self.params}
        for p in self.params:
            adam_state(self.opt, p)
        set_lr_and_step(self.opt, self.params, self.cfg, step)
        self.opt.step()
        return loss.item()

    def get(self, what):
        if what == "logits":
            return {"logits": from_torch(self.logits)}
        if what == "grads":
            return self.export("grads", lambda e: self.grads[id(e.p)])
        if what == "params":
            return self.export("params", lambda e: e.p)
        if what == "moments":
            out = self.export("adam_m", lambda e: adam_state(self.opt, e.p)["exp_avg"])
            out.update(self.export("adam_v", lambda e: adam_state(self.opt, e.p)["exp_avg_sq"]))
            return out
        if what == "relu_inputs":  # (L,B,T,4C)
            L = self.cfg["n_layer"]
            return {"relu_inputs": from_torch(torch.stack([self.calls["layer%d.fc1" % l][0][1] for l in range(L)]))}
        if what == "activations":
            out = {}
            for op, seen in self.calls.items():
                if len(seen) == 1 or all(t is seen[0][0] for t, _ in seen):   # one tensor (q, k, v read one norm1)
                    t = seen[0][0]
                    out["acts/" + op] = from_torch(seen[0][1])
                    out["dacts/" + op] = from_torch(t.grad if t.grad is not None else torch.zeros_like(t))
            return out
        raise ValueError("cannot get %r" % what)

    def set_state(self, data):
        self.load("params", data)
        if "adam_m/" + self.entries[0].canonical in data:
            with torch.no_grad():
                for e in self.entries:
                    st = adam_state(self.opt, e.p)
                    e.view(st["exp_avg"]).copy_(to_torch(data["adam_m/" + e.canonical], self.dev, self.dt))
                    e.view(st["exp_avg_sq"]).copy_(to_torch(data["adam_v/" + e.canonical], self.dev, self.dt))

    @torch.no_grad()
    def sample(self, data, temperature, own=False):
        u = [self.rng.random() for _ in range(self.cfg["block_size"])] if own else \
            to_torch(data["uniforms"], "cpu", torch.float64).tolist()
        V = self.cfg["vocab_size"]

        def next_logits(seq):
            out = self.forward(self.model, torch.tensor([seq], device=self.dev), None)
            logits = out[0] if isinstance(out, (tuple, list)) else out
            return logits.reshape(1, -1, V)[0, -1].to("cpu", torch.float64).tolist()
        return sample_tokens(next_logits, u, temperature, self.cfg)


def serve(model, make_optimizer, name_map, loss="token-mean", forward=None, device=None, check_map=True,
          report_ops=True, sample_seed=0):
    """Answer compare's requests (mg_protocol.serve) with this model.

    model: an nn.Module, or a function config -> nn.Module (the config of the
      create request: vocab_size, n_embd, n_head, n_kv_head, head_dim, n_layer,
      block_size, lr, beta1, beta2, eps, ...). Moved to the device and to the
      precision compare asks for (fp64 or fp32).
    make_optimizer(model, config) -> torch.optim.Adam (or AdamW without weight
      decay) with betas (config["beta1"], config["beta2"]) and eps config["eps"].
    name_map: {harness name: model parameter name or param(...)}; "layer{i}.x"
      keys stand for every layer.
    loss: the loss the model returns ("token-mean": F.cross_entropy over the
      batch with ignore_index=-1; "doc-mean"); None when the model returns
      logits alone (the loss compare asks for is then computed here).
    forward(model, idx, targets) -> logits or (logits, loss): how to call it
      (idx (B,T) token ids, targets (B,T) with -1 past each document, or None
      when sampling); by default model(idx, targets), or model(idx) when its
      forward takes one argument.
    device: "cuda" when torch sees a GPU, else "cpu", unless given.
    check_map: at create, check on a probe batch that the model multiplies by
      each weight the way the map's transpose says (else stop, naming it).
    report_ops: report the input and output of each module that computes
      input @ W^T with one mapped weight as the harness's ops.
    sample_seed: the seed of the generator behind compare --sampler own.
    """
    mg_protocol.serve(lambda cfg, data: ModuleEngine(cfg, data, model, make_optimizer, name_map, loss, forward,
                                                     device, check_map, report_ops, sample_seed))
