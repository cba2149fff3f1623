#!/usr/bin/env python3
"""Checks of examples/triton_engine.py that build/compare does not make.

(a) numpy only (CI): the parameter packing, the activation table against the
    model's shape, safetensors round trips through mg_protocol, the create
    reply's "activations": true, the sampling rule, the planted-bug names.
(b) where torch and triton import (a GPU, or Triton's interpreter on the
    CPU): one training step of the Triton engine and of an fp64 numpy
    reference on the same random weights and ragged batch; every acts/<op>
    and dacts/<op> of get("activations"), the logits, the loss, the gradients
    and the Adam update must agree (fp32: max|a-b| < 1e-4 of the reference
    tensor's RMS; fp64: 1e-10). The reference is itself checked against
    examples/numpy_engine.py. The same under --loss token-mean (the
    reference's token mean checked against numpy_engine.py's too). Then each
    planted bug must show first in the op of the kernel it breaks
    (token-mean-doc-grad under token-mean; under doc-mean it changes
    nothing). Prints SKIP for (b) without torch or triton.

--compile-for SM instead compiles every kernel variant that runs of a few
shapes launch (each planted bug too, fp32 and fp64, the largest tiles the
engine accepts) for sm_SM with Triton's own LLVM and ptxas: no GPU needed.
It finds what the interpreter cannot: a kernel that reads a global which is
not a tl.constexpr, a tl.dot the target lacks, a tile that overflows the
block's shared memory. Minutes on two cores.

Exits 1 on any failure. Run: python3 tests/triton_engine_check.py [--compile-for 90]
"""
import contextlib
import io
import json
import math
import os
import random
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import mg_protocol  # noqa: E402
import triton_engine as te  # noqa: E402

# the engine these checks run: its class and its script in examples/
# (tests/cutile_engine_check.py points te, ENGINE and ENGINE_SCRIPT at the cuTile engine)
ENGINE, ENGINE_SCRIPT = te.TritonEngine, "triton_engine.py"
RESULTS = {"passed": 0, "failed": 0, "skipped": 0}


def check(ok, what, detail=""):
    RESULTS["passed" if ok else "failed"] += 1
    print("%s %s%s" % ("ok  " if ok else "FAIL", what, (": " + detail) if detail else ""))
    return ok


def config(V=27, C=16, NH=4, NKV=4, L=1, T=16, precision="fp32", loss="doc-mean"):
    """a create request's config, as compare sends it"""
    HS = C // NH
    tensors = [("wte", [V, C]), ("wpe", [T, C]), ("lm_head", [V, C])]
    for l in range(L):
        tensors += [("layer%d.%s" % (l, k), s) for k, s in
                    (("attn_wq", [C, C]), ("attn_wk", [NKV * HS, C]), ("attn_wv", [NKV * HS, C]),
                     ("attn_wo", [C, C]), ("mlp_fc1", [4 * C, C]), ("mlp_fc2", [C, 4 * C]))]
    return dict(vocab_size=V, n_embd=C, n_head=NH, n_kv_head=NKV, head_dim=HS, n_layer=L, block_size=T, bos=V - 1,
                steps=10, lr=0.01, beta1=0.85, beta2=0.99, eps=1e-8, precision=precision, max_batch=4, fault="none",
                loss=loss, tensors=[{"name": n, "shape": s} for n, s in tensors])


def random_params(cfg, seed):
    rng = np.random.default_rng(seed)  # N(0, 0.08^2) as compare's initialisation (--init-std)
    return {t["name"]: rng.normal(0.0, 0.08, t["shape"]) for t in cfg["tensors"]}


def ragged_batch(cfg, n, seed):
    """tokens (B, T+1) with -1 past each document, T = max(n)"""
    rng = np.random.default_rng(seed)
    n = np.array(n, dtype=np.int32)
    tokens = np.full((len(n), n.max() + 1), -1, dtype=np.int32)
    for b, nb in enumerate(n):
        tokens[b, :nb + 1] = rng.integers(0, cfg["vocab_size"], nb + 1)
    return tokens, n


# ---- (a) numpy only ----

# the ops of a layer as common/activations.h lists them (written out here
# again so that the engine's table is checked against it)
LAYER_OPS = ["norm1", "q", "k", "v", "scores", "softmax", "attn", "attn_proj", "res1", "norm2", "fc1", "relu", "fc2",
             "res2"]


def unit_checks():
    cfg = config(C=16, NH=4, NKV=2, L=2)
    # packing
    layout = te.ParamLayout(cfg["tensors"])
    arrays = random_params(cfg, 1)
    flat = layout.pack(arrays)
    back = layout.unpack(flat)
    check(layout.size == sum(a.size for a in arrays.values()) and flat.shape == (layout.size,),
          "ParamLayout: the flat buffer holds every element once", "size %d" % layout.size)
    check(all(np.array_equal(back[k], arrays[k]) for k in arrays),
          "ParamLayout: pack then unpack gives the tensors back")
    spans = sorted(layout.span(k) for k in layout.names)
    check(spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] == layout.size,
          "ParamLayout: the spans tile the buffer in order")
    try:
        bad = dict(arrays, wte=arrays["wte"].T)
        layout.pack(bad)
        check(False, "ParamLayout: a wrongly shaped tensor is refused")
    except ValueError as e:
        check("wte" in str(e), "ParamLayout: a wrongly shaped tensor is refused", str(e))

    # the activation table
    B, T = 3, 7
    C, NH, KV = cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"] * cfg["head_dim"]
    table = te.activation_table(cfg, B, T)
    names = [n for n, _ in table]
    want = ["embed", "embed_norm"] + ["layer%d.%s" % (l, op) for l in range(cfg["n_layer"]) for op in LAYER_OPS] + [
        "logits"]
    check(names == want, "activation table: the ops in canonical order", "%d ops" % len(names))
    if hasattr(mg_protocol, "op_names"):  # the harness's table (common/activations.h), where mg_protocol has it
        check(names == mg_protocol.op_names(cfg["n_layer"]), "activation table: the harness's (mg_protocol.op_names)")
    shapes = dict(table)
    expect = {"embed": (B, T, C), "embed_norm": (B, T, C), "layer1.q": (B, T, C), "layer1.k": (B, T, KV),
              "layer1.v": (B, T, KV), "layer0.scores": (B, NH, T, T), "layer0.softmax": (B, NH, T, T),
              "layer0.attn": (B, T, C), "layer0.fc1": (B, T, 4 * C), "layer0.relu": (B, T, 4 * C),
              "layer1.res2": (B, T, C), "logits": (B, T, cfg["vocab_size"])}
    check(all(shapes[k] == v for k, v in expect.items()), "activation table: shapes from the model's shape (GQA: k, v "
          "are KV wide)", ", ".join("%s %s" % (k, shapes[k]) for k in ("layer1.k", "layer0.scores")))
    check([n for n, _ in te.activation_table(config(L=0), 2, 5)] == ["embed", "embed_norm", "logits"],
          "activation table: no layers, only embed, embed_norm and logits")

    # safetensors round trips through mg_protocol
    rng = np.random.default_rng(2)
    tensors = {"a64": rng.normal(size=(3, 4)), "a32": rng.normal(size=(2, 3, 5)).astype(np.float32),
               "i32": rng.integers(-5, 5, (7,)).astype(np.int32)}
    enc = {"a64": te.encode(tensors["a64"]), "a32": te.encode(tensors["a32"], "F32"), "i32": te.encode(tensors["i32"],
                                                                                                       "I32")}
    dec = mg_protocol.st_decode(mg_protocol.st_encode(enc))
    check(all(np.array_equal(te.decode(dec[k]), tensors[k]) for k in tensors) and dec["a32"][0] == "F32"
          and dec["i32"][0] == "I32", "safetensors: F64, F32, I32 round trips through mg_protocol")
    try:
        te.decode(dec["a64"], (4, 3))
        check(False, "decode: a tensor of another shape is refused")
    except ValueError as e:
        check(True, "decode: a tensor of another shape is refused", str(e))

    # the create reply announces activations, through mg_protocol.serve
    class Fake:
        name, device = "fake", "none"
        relu_inputs, activations = ENGINE.relu_inputs, ENGINE.activations

        def __init__(self, cfg, data):
            if cfg.get("refuse"):
                raise ValueError("refused")
            self.x = te.decode(data["params/wte"])

        def get(self, what):
            return {"x": te.encode(self.x)}

    def talk(cfg):
        payload = mg_protocol.st_encode({"params/wte": te.encode(np.arange(6.0).reshape(2, 3))})
        req = (json.dumps({"op": "create", "protocol": 1, "config": cfg, "bytes": len(payload)}).encode() + b"\n" +
               payload + b'{"op":"get","what":"x"}\n{"op":"quit"}\n')
        out = io.BytesIO()
        mg_protocol.serve(Fake, stdin=io.BytesIO(req), stdout=out)
        return out.getvalue()

    raw = talk({})
    first, rest = raw.split(b"\n", 1)
    reply = json.loads(first)
    check(reply.get("ok") is True and reply.get("activations") is True and reply.get("relu_inputs") is True,
          "create reply: \"activations\": true and \"relu_inputs\": true", first.decode())
    get_line, rest = rest.split(b"\n", 1)
    nbytes = json.loads(get_line)["bytes"]
    got = mg_protocol.st_decode(rest[:nbytes])
    check(np.array_equal(te.decode(got["x"]), np.arange(6.0).reshape(2, 3)) and rest[nbytes:] == b'{"ok": true}\n',
          "protocol: a get's data and the quit follow")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        reply = json.loads(talk({"refuse": True}).split(b"\n", 1)[0])
    line = Fake.__init__.__code__.co_firstlineno + 2
    where = "%s:%d in __init__" % (__file__, line)
    check(reply.get("ok") is False and reply.get("error", "").startswith("ValueError: refused (at ") and
          where in reply["error"], "protocol: a refused create says why and where", reply.get("error", ""))
    check("Traceback (most recent call last)" in err.getvalue() and
          'File "%s", line %d, in __init__' % (__file__, line) in err.getvalue() and "ValueError: refused" in err.getvalue(),
          "protocol: the engine's traceback goes to stderr", err.getvalue().strip().splitlines()[0])

    # the sampling rule is Python's random.choices
    class Fixed(random.Random):
        def __init__(self, u):
            super().__init__(0)
            self.u = u

        def random(self):
            return self.u

    rng = np.random.default_rng(3)
    agree = True
    for _ in range(200):
        logits, u, temp = rng.normal(0, 2, 6), float(rng.random()), float(rng.choice([0.5, 1.0, 2.0]))
        w = [math.exp(x / temp - max(logits / temp)) for x in logits]
        p = [x / sum(w) for x in w]
        agree &= te.sample_token(logits, temp, u, 6) == Fixed(u).choices(range(6), weights=p)[0]
    check(agree, "sample_token draws what random.choices draws, 200 cases")

    # the planted bugs are the brief's list, and the flag takes each
    brief = {"rmsnorm-fwd", "rmsnorm-bwd", "attn-scores", "attn-softmax", "attn-wsum", "attn-bwd-dq", "attn-bwd-dkv",
             "ce-grad", "relu-bwd", "adam-v", "gqa-kv-index", "token-mean-doc-grad"}
    check(set(te.PLANTED_BUGS) == brief and all(te.parse_args(["--plant-bug", b]).plant_bug == b for b in brief),
          "--plant-bug takes the 12 planted bugs", ", ".join(sorted(te.PLANTED_BUGS)))
    # a loss it does not compute is refused at create, naming it (before torch is imported)
    try:
        ENGINE(config(loss="sum"), {}, "cpu")
        check(False, "create refuses an unknown loss")
    except ValueError as e:
        check("sum" in str(e) and "token-mean" in str(e), "create refuses an unknown loss", str(e))
    check(te.parse_args([]).plant_bug is None, "--plant-bug: none by default")
    fits = [(16, 4), (32, 4), (128, 32), (64, 64), (100, 20)]
    check(all(te.attention_fits(T, D) for T, D in fits) and not any(
        te.attention_fits(T, D) for T, D in ((256, 4), (128, 64), (16, 128), (65, 64))),
        "attention_fits: the tiles the engine accepts")


# ---- (b) the engine against an fp64 reference ----

def reference_step(cfg, params, tokens, n):
    """fp64 numpy forward and hand-written backward that records every op's
    output and its gradient (written from the model's description); returns
    loss, logits (B,T,V), grads {tensor}, acts {op}, dacts {op}"""
    C, NH, NKV, HS, L = cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"], cfg["head_dim"], cfg["n_layer"]
    G = NH // NKV
    B, T = tokens.shape[0], tokens.shape[1] - 1
    real = np.arange(T)[None, :] < n[:, None]
    inp, tgt = np.where(real, tokens[:, :T], 0), np.where(real, tokens[:, 1:], 0)
    p = params
    causal = np.tril(np.ones((T, T), dtype=bool))

    def norm(x):
        r = (np.mean(x * x, axis=-1, keepdims=True) + 1e-5) ** -0.5
        return x * r, r

    def norm_back(x, r, dy):
        return r * dy - r ** 3 * x * np.mean(dy * x, axis=-1, keepdims=True)

    A, saved = {}, {}
    A["embed"] = p["wte"][inp] + p["wpe"][:T][None]
    A["embed_norm"], saved["r0"] = norm(A["embed"])
    x = A["embed_norm"]
    for l in range(L):
        w = lambda k: p["layer%d.%s" % (l, k)]  # noqa: E731
        a = lambda k: "layer%d.%s" % (l, k)  # noqa: E731
        A[a("norm1")], saved[a("r1")] = norm(x)
        A[a("q")], A[a("k")], A[a("v")] = (A[a("norm1")] @ w(k).T for k in ("attn_wq", "attn_wk", "attn_wv"))
        q = A[a("q")].reshape(B, T, NH, HS)
        ke = np.repeat(A[a("k")].reshape(B, T, NKV, HS), G, axis=2)
        ve = np.repeat(A[a("v")].reshape(B, T, NKV, HS), G, axis=2)
        s = np.einsum("bthd,bshd->bhts", q, ke) / np.sqrt(HS)
        e = np.exp(np.where(causal, s, -np.inf) - np.where(causal, s, -np.inf).max(-1, keepdims=True))
        A[a("scores")], A[a("softmax")] = np.where(causal, s, 0.0), e / e.sum(-1, keepdims=True)
        A[a("attn")] = np.einsum("bhts,bshd->bthd", A[a("softmax")], ve).reshape(B, T, C)
        A[a("attn_proj")] = A[a("attn")] @ w("attn_wo").T
        A[a("res1")] = x + A[a("attn_proj")]
        A[a("norm2")], saved[a("r2")] = norm(A[a("res1")])
        A[a("fc1")] = A[a("norm2")] @ w("mlp_fc1").T
        A[a("relu")] = np.maximum(A[a("fc1")], 0.0)
        A[a("fc2")] = A[a("relu")] @ w("mlp_fc2").T
        A[a("res2")] = x = A[a("res1")] + A[a("fc2")]
    A["logits"] = logits = x @ p["lm_head"].T
    z = logits - logits.max(-1, keepdims=True)
    lse = np.log(np.exp(z).sum(-1))
    nll = lse - np.take_along_axis(z, tgt[..., None], -1)[..., 0]
    loss = float(np.mean(np.where(real, nll, 0.0).sum(1) / n))
    dlog = np.exp(z - lse[..., None])
    np.put_along_axis(dlog, tgt[..., None], np.take_along_axis(dlog, tgt[..., None], -1) - 1, -1)
    if cfg.get("loss", "doc-mean") == "token-mean":  # the mean over all sum(n) real positions
        loss = float(np.where(real, nll, 0.0).sum() / n.sum())
        dlog *= (real / n.sum())[..., None]
    else:
        dlog *= (real / (n[:, None] * B))[..., None]
    g = {"lm_head": np.einsum("btv,btc->vc", dlog, x)}
    D = {"logits": dlog}
    dx = dlog @ p["lm_head"]
    for l in reversed(range(L)):
        w = lambda k: p["layer%d.%s" % (l, k)]  # noqa: E731
        a = lambda k: "layer%d.%s" % (l, k)  # noqa: E731
        x_in = A["layer%d.res2" % (l - 1)] if l else A["embed_norm"]
        D[a("res2")] = D[a("fc2")] = dx
        g[a("mlp_fc2")] = np.einsum("btc,btf->cf", dx, A[a("relu")])
        D[a("relu")] = dx @ w("mlp_fc2")
        D[a("fc1")] = D[a("relu")] * (A[a("fc1")] > 0)
        g[a("mlp_fc1")] = np.einsum("btf,btc->fc", D[a("fc1")], A[a("norm2")])
        D[a("norm2")] = D[a("fc1")] @ w("mlp_fc1")
        D[a("res1")] = D[a("attn_proj")] = dx + norm_back(A[a("res1")], saved[a("r2")], D[a("norm2")])
        g[a("attn_wo")] = np.einsum("btc,btd->cd", D[a("res1")], A[a("attn")])
        D[a("attn")] = D[a("res1")] @ w("attn_wo")
        do = D[a("attn")].reshape(B, T, NH, HS)
        att = A[a("softmax")]
        ve = np.repeat(A[a("v")].reshape(B, T, NKV, HS), G, axis=2)
        ke = np.repeat(A[a("k")].reshape(B, T, NKV, HS), G, axis=2)
        D[a("softmax")] = np.where(causal, np.einsum("bthd,bshd->bhts", do, ve), 0.0)
        D[a("scores")] = att * (D[a("softmax")] - np.sum(D[a("softmax")] * att, -1, keepdims=True))
        ds = D[a("scores")] / np.sqrt(HS)
        D[a("q")] = np.einsum("bhts,bshd->bthd", ds, ke).reshape(B, T, C)
        D[a("k")] = np.einsum("bhts,bthd->bshd", ds, A[a("q")].reshape(B, T, NH, HS)).reshape(
            B, T, NKV, G, HS).sum(3).reshape(B, T, NKV * HS)
        D[a("v")] = np.einsum("bhts,bthd->bshd", att, do).reshape(B, T, NKV, G, HS).sum(3).reshape(B, T, NKV * HS)
        for k, op in (("attn_wq", "q"), ("attn_wk", "k"), ("attn_wv", "v")):
            g[a(k)] = np.einsum("btd,btc->dc", D[a(op)], A[a("norm1")])
        D[a("norm1")] = sum(D[a(op)] @ w(k) for k, op in (("attn_wq", "q"), ("attn_wk", "k"), ("attn_wv", "v")))
        dx = D[a("res1")] + norm_back(x_in, saved[a("r1")], D[a("norm1")])
    D["embed_norm"] = dx
    D["embed"] = norm_back(A["embed"], saved["r0"], dx) * real[..., None]
    g["wte"] = np.zeros_like(p["wte"])
    np.add.at(g["wte"], inp[real], D["embed"][real])
    g["wpe"] = np.zeros_like(p["wpe"])
    g["wpe"][:T] = D["embed"].sum(0)
    return loss, logits, g, A, D


def reference_adam(cfg, params, grads, step):
    b1, b2, eps = cfg["beta1"], cfg["beta2"], cfg["eps"]
    lr_t = cfg["lr"] * (1 - step / cfg["steps"])
    out = {}
    for k, g in grads.items():
        m, v = (1 - b1) * g, (1 - b2) * g * g
        out[k] = params[k] - lr_t * (m / (1 - b1 ** (step + 1))) / (np.sqrt(v / (1 - b2 ** (step + 1))) + eps)
    return out


def compared(name, n, a):
    """the entries compare would look at: real positions, and s <= t for (B,NH,T,T)"""
    T = a.shape[-2] if a.ndim == 4 else a.shape[1]
    real = np.arange(T)[None, :] < n[:, None]
    if a.ndim == 4:
        causal = np.tril(np.ones((T, T), dtype=bool))
        return a[np.broadcast_to(real[:, None, :, None] & causal[None, None], a.shape)]
    return a[real]


def rel_err(a, b):
    rms = math.sqrt(float(np.mean(b * b))) if b.size else 0.0
    return float(np.max(np.abs(a - b))) / rms if rms > 0 else float(np.max(np.abs(a - b), initial=0.0))


def run_engine(cfg, params, tokens, n, device, bug=None):
    data = {"params/" + k: te.encode(v) for k, v in params.items()}
    eng = ENGINE(cfg, data, device, bug)
    loss = eng.step({"tokens": te.encode(tokens, "I32"), "n": te.encode(n, "I32")}, 0)
    acts = {k: te.decode(v) for k, v in eng.get("activations").items()}
    dtypes = {v[0] for v in eng.get("activations").values()}
    out = {"loss": loss, "acts": acts, "dtypes": dtypes}
    for what in ("logits", "grads", "params", "moments", "relu_inputs"):
        out.update({k: te.decode(v) for k, v in eng.get(what).items()})
    return out


def protocol_run(cfg, params, tokens, n, device):
    """the engine as compare runs it: a process reading requests on stdin;
    returns its replies [(reply, tensors or None)] to create, step, get
    activations and quit"""
    import subprocess

    def request(obj, tensors=None):
        payload = mg_protocol.st_encode(tensors) if tensors else b""
        if tensors:
            obj["bytes"] = len(payload)
        return json.dumps(obj).encode() + b"\n" + payload

    stdin = (request({"op": "create", "protocol": 1, "config": cfg}, {"params/" + k: te.encode(v)
                                                                      for k, v in params.items()}) +
             request({"op": "step", "step": 0}, {"tokens": te.encode(tokens, "I32"), "n": te.encode(n, "I32")}) +
             request({"op": "get", "what": "activations"}) + request({"op": "quit"}))
    engine = os.path.join(ROOT, "examples", ENGINE_SCRIPT)
    out = subprocess.run([sys.executable, engine, "--device", device], input=stdin, stdout=subprocess.PIPE,
                         timeout=600).stdout
    replies, i = [], 0
    while i < len(out):
        j = out.index(b"\n", i)
        reply, i = json.loads(out[i:j]), j + 1
        data = None
        if "bytes" in reply:
            data, i = mg_protocol.st_decode(out[i:i + reply["bytes"]]), i + reply["bytes"]
        replies.append((reply, data))
    return replies


def first_failure(cfg, ref, got, n, tol):
    """the first op whose forward output is off (forward order), else the
    first whose gradient is off (backward order), else None"""
    table = te.activation_table(cfg, got["acts"]["acts/embed"].shape[0], got["acts"]["acts/embed"].shape[1])
    for prefix, source, order in (("acts/", ref[3], table), ("dacts/", ref[4], table[::-1])):
        for name, _ in order:
            e = rel_err(compared(name, n, got["acts"][prefix + name]), compared(name, n, source[name]))
            if not e <= tol:
                return prefix + name, e
    return None, 0.0


def engine_checks(device):
    import numpy_engine
    cfg64 = config(C=16, NH=4, NKV=2, L=2, T=16, precision="fp64")
    params = random_params(cfg64, 10)
    tokens, n = ragged_batch(cfg64, [7, 3, 5], 11)
    ref = reference_step(cfg64, params, tokens, n)
    loss, logits, grads, acts, dacts = ref

    # the reference agrees with examples/numpy_engine.py (which compare checks against the oracle)
    npe = numpy_engine.NumpyEngine(cfg64, {"params/" + k: te.encode(v) for k, v in params.items()})
    np_loss = npe.step({"tokens": te.encode(tokens, "I32"), "n": te.encode(n, "I32")}, 0)
    real = np.arange(tokens.shape[1] - 1)[None, :] < n[:, None]
    e = max([abs(np_loss - loss), rel_err(npe.logits[real], logits[real])] +
            [rel_err(npe.g[k], grads[k]) for k in grads])
    check(e < 1e-10, "the fp64 reference agrees with numpy_engine.py (loss, logits, grads)", "max rel %.1e" % e)
    if getattr(numpy_engine.NumpyEngine, "activations", False):  # where numpy_engine.py reports them too
        theirs = {k: te.decode(v) for k, v in npe.get("activations").items()}
        table = te.activation_table(cfg64, *tokens.shape[:1], tokens.shape[1] - 1)
        errs = [(rel_err(compared(k, n, theirs[p + k].reshape(shape)), compared(k, n, src[k])), p + k)
                for p, src in (("acts/", acts), ("dacts/", dacts)) for k, shape in table if p + k in theirs]
        check(len(errs) == 2 * len(table) and max(errs)[0] < 1e-10,
              "the fp64 reference's acts and dacts agree with numpy_engine.py's", "%d of %d, worst %.1e (%s)" % (
                  (len(errs), 2 * len(table)) + max(errs)))

    for precision, tol in (("fp32", 1e-4), ("fp64", 1e-10)):
        cfg = dict(cfg64, precision=precision)
        got = run_engine(cfg, params, tokens, n, device)
        check(got["dtypes"] == {"F32" if precision == "fp32" else "F64"},
              "%s: activations sent as %s" % (precision, "/".join(sorted(got["dtypes"]))))
        table = te.activation_table(cfg, *tokens.shape[:1], tokens.shape[1] - 1)
        worst = {"acts/": (0.0, ""), "dacts/": (0.0, "")}
        bad = []
        for prefix, source in (("acts/", acts), ("dacts/", dacts)):
            for name, shape in table:
                a = got["acts"][prefix + name]
                if a.shape != shape:
                    bad.append("%s%s shape %s, expected %s" % (prefix, name, a.shape, shape))
                    continue
                err = rel_err(compared(name, n, a), compared(name, n, source[name]))
                worst[prefix] = max(worst[prefix], (err, name))
                if not err < tol:
                    bad.append("%s%s %.1e" % (prefix, name, err))
        check(not bad, "%s: %d acts and %d dacts within %.0e of the reference's RMS" % (
            precision, len(table), len(table), tol), "; ".join(bad) or "worst acts %.1e (%s), dacts %.1e (%s)" % (
            worst["acts/"] + worst["dacts/"]))
        e_log = rel_err(got["logits"][real], logits[real])
        e_grad = max((rel_err(got["grads/" + k], grads[k]), k) for k in grads)
        check(abs(got["loss"] - loss) < tol * abs(loss) and e_log < tol and e_grad[0] < tol,
              "%s: loss, logits and every gradient" % precision,
              "loss %.1e, logits %.1e, worst gradient %.1e (%s)" % ((abs(got["loss"] - loss), e_log) + e_grad))
        # Adam in fp64 on the engine's own gradients, as compare checks it: the
        # first step's update is about lr sign(g), ill-conditioned where g ~ 0
        own = {k: got["grads/" + k] for k in grads}
        upd = reference_adam(cfg, params, own, 0)
        e_p = max(rel_err(got["params/" + k] - params[k], upd[k] - params[k]) for k in upd)
        e_m = max(rel_err(got["adam_m/" + k], (1 - cfg["beta1"]) * own[k]) for k in own)
        check(e_p < tol and e_m < tol, "%s: the Adam update and moments" % precision,
              "update %.1e, m %.1e" % (e_p, e_m))
        relu = got["relu_inputs"]
        pad = ~real
        check(relu.shape == (2,) + tokens[:, 1:].shape + (64,) and np.isnan(relu[:, pad]).all()
              and rel_err(relu[:, real], np.stack([acts["layer%d.fc1" % l] for l in range(2)])[:, real]) < tol,
              "%s: relu_inputs (L,B,T,4C), NaN at padding" % precision)

    # the same through the protocol, as a process
    cfg = dict(cfg64, precision="fp32")
    replies = protocol_run(cfg, params, tokens, n, device)
    ok = [r.get("ok") for r, _ in replies] == [True] * 4
    check(ok and replies[0][0].get("activations") is True and replies[0][0].get("relu_inputs") is True,
          "protocol: create announces activations and relu_inputs", json.dumps(replies[0][0]) if replies else "none")
    if ok:
        data = replies[2][1]
        table = te.activation_table(cfg, *tokens.shape[:1], tokens.shape[1] - 1)
        want = ["acts/" + k for k, _ in table] + ["dacts/" + k for k, _ in table]
        errs = [rel_err(compared(k, n, te.decode(data[p + k])), compared(k, n, src[k]))
                for p, src in (("acts/", acts), ("dacts/", dacts)) for k, _ in table]
        check(list(data) == want and all(tuple(data[k][1]) == tuple(dict(table)[k.split("/", 1)[1]]) for k in want)
              and max(errs) < 1e-4 and abs(replies[1][0]["loss"] - loss) < 1e-4,
              "protocol: get activations gives acts/<op> then dacts/<op> in table order",
              "%d tensors, worst %.1e of the reference's RMS" % (len(data), max(errs)))

    # --loss token-mean: the reference's token mean against numpy_engine.py's,
    # then the engine's loss, gradients, acts and dacts against it
    cfg_tm = dict(cfg64, loss="token-mean")
    ref_tm = reference_step(cfg_tm, params, tokens, n)
    npe = numpy_engine.NumpyEngine(cfg_tm, {"params/" + k: te.encode(v) for k, v in params.items()})
    np_loss = npe.step({"tokens": te.encode(tokens, "I32"), "n": te.encode(n, "I32")}, 0)
    e = max([abs(np_loss - ref_tm[0]), rel_err(npe.logits[real], ref_tm[1][real])] +
            [rel_err(npe.g[k], ref_tm[2][k]) for k in grads])
    check(e < 1e-10 and abs(ref_tm[0] - loss) > 1e-3 * abs(loss),
          "token-mean: the fp64 reference agrees with numpy_engine.py's (and differs from the doc mean)",
          "max rel %.1e; token-mean %.9f, doc-mean %.9f" % (e, ref_tm[0], loss))
    for precision, tol in (("fp32", 1e-4), ("fp64", 1e-10)):
        cfg = dict(cfg_tm, precision=precision)
        got = run_engine(cfg, params, tokens, n, device)
        first, err = first_failure(cfg, ref_tm, got, n, tol)
        e_grad = max((rel_err(got["grads/" + k], ref_tm[2][k]), k) for k in grads)
        e_loss = abs(got["loss"] - ref_tm[0])
        check(first is None and e_loss < tol * abs(ref_tm[0]) and e_grad[0] < tol,
              "%s token-mean: loss, every gradient, acts and dacts" % precision,
              "loss %.1e, worst gradient %.1e (%s)%s" % ((e_loss,) + e_grad + (
                  "; first off: %s (%.1e of its RMS)" % (first, err) if first else "",)))

    # each planted bug shows first in the op of its kernel (fp32)
    cfg = dict(cfg64, precision="fp32")
    want = {"rmsnorm-fwd": "acts/embed_norm", "attn-scores": "acts/layer0.scores",
            "attn-softmax": "acts/layer0.softmax", "attn-wsum": "acts/layer0.attn",
            "gqa-kv-index": "acts/layer0.scores", "ce-grad": "dacts/logits",
            "relu-bwd": "dacts/layer1.fc1", "rmsnorm-bwd": "dacts/layer1.res1",
            "attn-bwd-dq": "dacts/layer1.q", "attn-bwd-dkv": "dacts/layer1.v", "adam-v": None}
    for bug, where in want.items():
        with np.errstate(divide="ignore", invalid="ignore"):  # the interpreter computes the buggy padding rows too
            got = run_engine(cfg, params, tokens, n, device, bug)
        first, err = first_failure(cfg, ref, got, n, 1e-4)
        if bug == "adam-v":  # the step is right; the update is not
            upd = reference_adam(cfg, params, {k: got["grads/" + k] for k in grads}, 0)
            e_p = max(rel_err(got["params/" + k] - params[k], upd[k] - params[k]) for k in upd)
            check(first is None and e_p > 1e-2, "--plant-bug adam-v: activations right, the update off",
                  "update off by %.1e of its RMS" % e_p)
        else:
            check(first == where, "--plant-bug %s: first off at %s" % (bug, where),
                  "first off: %s (%.1e of its RMS)" % (first, err))
    # token-mean-doc-grad: under token-mean the loss is right and dlogits
    # are off; under doc-mean (whose weights it keeps) nothing is
    bug = "token-mean-doc-grad"
    with np.errstate(divide="ignore", invalid="ignore"):
        got = run_engine(dict(cfg, loss="token-mean"), params, tokens, n, device, bug)
    first, err = first_failure(cfg, ref_tm, got, n, 1e-4)
    e_loss = abs(got["loss"] - ref_tm[0])
    check(first == "dacts/logits" and e_loss < 1e-4 * abs(ref_tm[0]),
          "--plant-bug %s (token-mean): the loss right, first off at dacts/logits" % bug,
          "loss off by %.1e; first off: %s (%.1e of its RMS)" % (e_loss, first, err))
    with np.errstate(divide="ignore", invalid="ignore"):
        got = run_engine(cfg, params, tokens, n, device, bug)
    first, err = first_failure(cfg, ref, got, n, 1e-4)
    check(first is None and abs(got["loss"] - loss) < 1e-4 * abs(loss),
          "--plant-bug %s (doc-mean): nothing off" % bug, "first off: %s (%.1e)" % (first, err) if first else "")


# the largest shared memory a block may have, bytes (CUDA's occupancy tables)
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}


def launch_every_kernel(K, e, tokens, n, keys, B, T, HS, NH, NKV, V, bugs):
    """call each launcher of the kernel module K once for a shape (both
    rmsnorm_bwd variants, both losses), on arrays made by e(*shape): the
    --compile-for checks of the Triton and the cuTile engine put a compiler
    where the launch would be. tokens (B,T+1) and n (B) int32, keys (B*T) int32."""
    C, KV, M = NH * HS, NKV * HS, B * T
    K.embed_fwd(tokens, n, e(V, C), e(T, C))
    K.rmsnorm_fwd(e(M, C), e(2), bugs["rmsnorm-fwd"])
    for dres in (e(M, C), None):
        K.rmsnorm_bwd(e(M, C), e(M), e(M, C), dres, bugs["rmsnorm-bwd"])
    K.attn_fwd(e(M, C), e(M, KV), e(M, KV), e(2), B, T, NH, NKV, HS, bugs)
    K.attn_bwd(e(M, C), e(M, KV), e(M, KV), e(B, NH, T, T), e(M, C), e(2), B, T, NH, NKV, HS, bugs)
    for token_mean in (False, True):
        K.cross_entropy(e(M, V), tokens, n, bugs["ce-grad"], token_mean, bugs["token-mean-doc-grad"])
    K.relu_fwd(e(M, 4 * C))
    K.relu_bwd(e(M, 4 * C), e(M, 4 * C), bugs["relu-bwd"])
    K.scatter_rows(keys, e(M, C), e(V, C))
    K.adam(e(1000), e(1000), e(1000), e(1000), e(8), bugs["adam-v"])


def compile_checks(sm):
    """compile, for sm_<sm>, every kernel variant the launchers of
    examples/triton_kernels.py launch for a few shapes; nothing runs"""
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    import triton_kernels as K
    target = GPUTarget("cuda", sm, 32)
    types = {torch.float32: "fp32", torch.float64: "fp64", torch.int32: "i32"}
    variants = {}

    def compile_launch(self, grid):
        # stands for kernel[grid](...): the signature a real launch would
        # specialize to (tensors as pointers, an int 1 as a constexpr), compiled
        def launch(*args, **kwargs):
            params = dict(zip(self.arg_names, args), **kwargs)
            sig, consts = {}, {}
            for name in self.arg_names:
                v = params[name]
                if isinstance(v, torch.Tensor):
                    sig[name] = "*" + types[v.dtype]
                elif name in kwargs or v == 1:
                    sig[name], consts[name] = "constexpr", v
                else:
                    sig[name] = "i32"
            key = (self.fn.__name__, tuple(sorted(sig.items())), tuple(sorted(consts.items())))
            if key not in variants:
                try:
                    variants[key] = triton.compile(ASTSource(self, sig, consts), target=target).metadata.shared
                except Exception as e:  # report every failing variant, not only the first
                    variants[key] = e
        return launch

    triton.runtime.jit.JITFunction.__getitem__ = compile_launch
    bugs = {b: False for b in te.PLANTED_BUGS}

    def launches(dt, B, T, HS, NH, NKV, V, bugs):
        tokens, n = torch.zeros(B, T + 1, dtype=torch.int32), torch.full((B,), T, dtype=torch.int32)
        launch_every_kernel(K, lambda *shape: torch.empty(*shape, dtype=dt), tokens, n,
                            torch.zeros(B * T, dtype=torch.int32), B, T, HS, NH, NKV, V, bugs)

    # (B, T, head_dim, n_head, n_kv_head, V): the default model, GQA, one
    # document of one token, the largest tiles attention_fits accepts
    shapes = [(1, 16, 4, 4, 4, 27), (3, 7, 4, 4, 2, 27), (1, 1, 4, 4, 1, 27), (2, 128, 32, 4, 4, 200),
              (2, 64, 64, 2, 1, 27)]
    for dt in (torch.float32, torch.float64):
        for shape in shapes:
            assert te.attention_fits(shape[1], shape[2])
            launches(dt, *shape, bugs)
    for bug in te.PLANTED_BUGS:
        launches(torch.float32, 3, 7, 4, 4, 2, 27, {b: b == bug for b in te.PLANTED_BUGS})
    limit = SHARED_LIMIT.get(sm)
    failed = [(k, v) for k, v in variants.items() if isinstance(v, Exception)]
    for (name, _, consts), e in failed:
        print("FAIL %s %s: %s" % (name, dict(consts), str(e).strip().splitlines()[-1][:300]))
    check(not failed, "compiled %d kernel variants for sm_%d" % (len(variants) - len(failed), sm),
          "%d failed" % len(failed) if failed else "")
    sizes = [(v, k[0], dict(k[1]).get("q_ptr", ""), dict(k[2])) for k, v in variants.items() if isinstance(v, int)]
    if sizes:
        big = max(sizes, key=lambda x: x[0])
        check(limit is None or big[0] <= limit, "shared memory within a block's %s bytes on sm_%d" % (limit, sm),
              "the most: %d bytes, %s %s %s" % big)


def main():
    if "--compile-for" in sys.argv[1:]:
        os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels; triton reads this when imported
        compile_checks(int(sys.argv[sys.argv.index("--compile-for") + 1]))
        print("triton_engine_check: %(passed)d passed, %(failed)d failed, %(skipped)d skipped" % RESULTS)
        return 1 if RESULTS["failed"] else 0
    unit_checks()
    try:
        import torch
        if not torch.cuda.is_available():
            # the interpreter; triton reads this when it is imported
            os.environ.setdefault("TRITON_INTERPRET", "1")
        import triton  # noqa: F401
    except ImportError as e:
        RESULTS["skipped"] += 1
        print("SKIP the Triton engine against the fp64 reference: %s (pip install torch triton)" % e)
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        print("the Triton engine on %s%s" % (device, " (Triton's interpreter)" if device == "cpu" else ""))
        engine_checks(device)
    print("triton_engine_check: %(passed)d passed, %(failed)d failed, %(skipped)d skipped" % RESULTS)
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
