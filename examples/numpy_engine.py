#!/usr/bin/env python3
"""microgpt in numpy, written from the model's description (not from the
harness's code): its own batching, loss, backward and Adam. compare runs it as
a process engine and checks it against the scalar reference:

    build/compare --engines scalar,exec:'python3 examples/numpy_engine.py' --steps 20

It computes in float64, or float32 when compare asks for --precision fp32.
--broken-rmsnorm plants the classic custom-kernel bug: no gradient flows back
through RMSNorm (as a custom op whose output has no grad_fn), so compare
fails at step 1 and names the tensors left without a gradient.

The loss is the one compare asks for (config "loss": doc-mean, the mean of
per-document means, or token-mean, the mean over the batch's tokens).
--always-token-mean computes the token mean whatever is asked (a port written
with F.cross_entropy over the batch, run against the original's loss);
--token-mean-doc-grad plants a wrong token-mean gradient: the loss is the
token mean, the gradient the document mean's.

Sampling draws with the uniforms compare sends, or under compare --sampler
own with the engine's own numpy generator, seeded with --sample-seed N (0).
--sampler-no-bos-first plants a sampler bug that only its own randomness
shows: BOS's probability is set to zero at the first position, so no name is
ever empty.

A partial engine (docs/outside_engines.md, "Partial engines"): --no-logits
offers no logits (as an engine whose cross-entropy is fused), --no-moments
neither reports nor takes Adam's moments (as an optimizer of its own, e.g.
torch.optim.Adam with its own step counter), --no-set-moments reports them
but does not take them. The create reply's "offers" says so, and the engine
fails the request if compare asks for what it did not offer.
--wrong-beta2 plants an Adam bug that only the stored moments carry: the
second moment decays with 0.999 instead of beta2 (the first update is the
same, the bias correction cancels it; from the second step on it is not).
"""
import bisect
import itertools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mg_protocol  # noqa: E402

EPS_NORM = 1e-5


def rmsnorm(x):
    r = (np.mean(x * x, axis=-1, keepdims=True) + EPS_NORM) ** -0.5
    return x * r, r


BROKEN_RMSNORM = "--broken-rmsnorm" in sys.argv[1:]
ALWAYS_TOKEN_MEAN = "--always-token-mean" in sys.argv[1:]
TOKEN_MEAN_DOC_GRAD = "--token-mean-doc-grad" in sys.argv[1:]
SAMPLER_NO_BOS_FIRST = "--sampler-no-bos-first" in sys.argv[1:]
NO_LOGITS = "--no-logits" in sys.argv[1:]
NO_MOMENTS = "--no-moments" in sys.argv[1:]
NO_SET_MOMENTS = NO_MOMENTS or "--no-set-moments" in sys.argv[1:]
WRONG_BETA2 = "--wrong-beta2" in sys.argv[1:]


def flag_value(name, default):
    """The value after a flag of argv (--sample-seed 7), else default."""
    args = sys.argv[1:]
    return int(args[args.index(name) + 1]) if name in args else default


SAMPLE_SEED = flag_value("--sample-seed", 0)


def rmsnorm_back(x, r, dy):
    # y = x r, r = (mean(x^2) + eps)^-1/2: dx = r dy - r^3 x mean(dy x)
    if BROKEN_RMSNORM:
        return np.zeros_like(x)
    return r * dy - (r ** 3) * x * np.mean(dy * x, axis=-1, keepdims=True)


class NumpyEngine:
    name = "numpy"
    relu_inputs = True  # get("relu_inputs"): lets compare match a ReLU gate that flips between precisions
    activations = True  # get("activations"): every op's output and gradient, so a failure names the op
    device = "cpu (numpy %s)" % np.__version__
    # what it offers (mg_protocol sends it in the create reply)
    offers = {"logits": not NO_LOGITS, "moments": not NO_MOMENTS, "set_moments": not NO_SET_MOMENTS}

    def __init__(self, cfg, data):
        self.cfg = cfg
        if cfg["precision"] not in ("fp64", "fp32"):
            raise ValueError("this engine computes in fp64 or fp32, not %s" % cfg["precision"])
        self.dt = {"fp64": np.float64, "fp32": np.float32}[cfg["precision"]]
        if cfg["fault"] != "none":
            raise ValueError("this engine has no injected faults")
        self.token_mean = cfg.get("loss", "doc-mean") == "token-mean" or ALWAYS_TOKEN_MEAN
        self.names = [t["name"] for t in cfg["tensors"]]
        self.shapes = {t["name"]: tuple(t["shape"]) for t in cfg["tensors"]}
        self.p = {k: self._array(data["params/" + k], self.shapes[k]) for k in self.names}
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.g = None
        self.logits = None
        self.acts, self.dacts = {}, {}   # the last step's, by op name (mg_protocol.op_names)
        self.rng = np.random.default_rng(SAMPLE_SEED)   # --sampler own: the engine's own randomness

    def _array(self, t, shape):
        dtype, sh, raw = t
        if tuple(sh) != tuple(shape):
            raise ValueError("shape %s, expected %s" % (sh, shape))
        return np.frombuffer(raw, dtype={"F64": "<f8", "F32": "<f4"}[dtype]).reshape(shape).astype(self.dt)

    def _out(self, prefix, arrays):
        return {prefix + "/" + k: ("F64", list(arrays[k].shape), arrays[k].astype("<f8").tobytes())
                for k in self.names}

    # ---- the model ----

    def forward(self, inp):
        """inp (B,T) token ids; returns logits (B,T,V) and what backward needs."""
        c = self.cfg
        p = self.p
        B, T = inp.shape
        NH, NKV, HS = c["n_head"], c["n_kv_head"], c["head_dim"]
        G = NH // NKV
        acts = self.acts = {}
        x0 = p["wte"][inp] + p["wpe"][:T][None, :, :]
        x, r0 = rmsnorm(x0)
        acts["embed"], acts["embed_norm"] = x0, x
        causal = np.tril(np.ones((T, T), dtype=bool))
        layers = []
        for l in range(c["n_layer"]):
            w = lambda k: p["layer%d.%s" % (l, k)]  # noqa: E731
            a_ = lambda k, val: acts.__setitem__("layer%d.%s" % (l, k), val)  # noqa: E731
            L = {"x_in1": x}
            h1, L["r1"] = rmsnorm(x)
            q = (h1 @ w("attn_wq").T).reshape(B, T, NH, HS)
            k = (h1 @ w("attn_wk").T).reshape(B, T, NKV, HS)
            v = (h1 @ w("attn_wv").T).reshape(B, T, NKV, HS)
            ke, ve = np.repeat(k, G, axis=2), np.repeat(v, G, axis=2)  # query head h reads kv head h // G
            s = np.einsum("bthd,bshd->bhts", q, ke) / self.dt(np.sqrt(HS))
            a_("scores", np.where(causal, s, 0))
            s = np.where(causal, s, -np.inf)
            att = np.exp(s - s.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            o = np.einsum("bhts,bshd->bthd", att, ve).reshape(B, T, NH * HS)
            proj = o @ w("attn_wo").T
            a_("norm1", h1), a_("q", q.reshape(B, T, -1)), a_("k", k.reshape(B, T, -1)), a_("v", v.reshape(B, T, -1))
            a_("softmax", att), a_("attn", o), a_("attn_proj", proj)
            x = proj + x
            L.update(h1=h1, q=q, ke=ke, ve=ve, att=att, o=o, x_in2=x)
            h2, L["r2"] = rmsnorm(x)
            u = h2 @ w("mlp_fc1").T
            a = np.maximum(u, 0)
            down = a @ w("mlp_fc2").T
            a_("res1", x), a_("norm2", h2), a_("fc1", u), a_("relu", a), a_("fc2", down)
            x = down + x
            a_("res2", x)
            L.update(h2=h2, u=u, a=a)
            layers.append(L)
        logits = x @ p["lm_head"].T
        acts["logits"] = logits
        return logits, (x0, r0, layers, x)

    def step(self, data, step):
        c = self.cfg
        tokens = np.frombuffer(data["tokens"][2], dtype="<i4").reshape(data["tokens"][1])
        n = np.frombuffer(data["n"][2], dtype="<i4")
        B, T = tokens.shape[0], tokens.shape[1] - 1
        real = np.arange(T)[None, :] < n[:, None]  # (B,T) positions that are trained
        inp = np.where(real, tokens[:, :T], 0)
        tgt = np.where(real, tokens[:, 1:], 0)
        logits, (x0, r0, layers, xf) = self.forward(inp)
        self.logits = logits
        self.relu = np.stack([L["u"] for L in layers]) if layers else np.zeros((0, B, T, 4 * c["n_embd"]))
        # loss: the mean over documents of each document's mean over its
        # positions (doc-mean), or the mean over all positions (token-mean)
        z = logits - logits.max(axis=-1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=-1))
        nll = lse - np.take_along_axis(z, tgt[..., None], axis=-1)[..., 0]
        if self.token_mean:
            wpos = real / (n[:, None] * B) if TOKEN_MEAN_DOC_GRAD else real / float(n.sum())
            loss = float(np.sum(np.where(real, nll, 0)) / n.sum())
        else:
            wpos = real / (n[:, None] * B)
            loss = float(np.sum(np.where(real, nll, 0).sum(axis=1) / n) / B)
        # backward
        p = self.p
        g = {k: np.zeros_like(v) for k, v in p.items()}
        prob = np.exp(z - lse[..., None])
        dlog = prob
        np.put_along_axis(dlog, tgt[..., None], np.take_along_axis(prob, tgt[..., None], axis=-1) - 1, axis=-1)
        dlog = dlog * wpos[..., None].astype(self.dt)
        d = self.dacts = {"logits": dlog}   # the loss's gradient with respect to each op's output
        g["lm_head"] = np.einsum("btv,btc->vc", dlog, xf)
        dx = dlog @ p["lm_head"]
        NH, NKV, HS = c["n_head"], c["n_kv_head"], c["head_dim"]
        G = NH // NKV
        for l in reversed(range(c["n_layer"])):
            L = layers[l]
            name = lambda k: "layer%d.%s" % (l, k)  # noqa: E731
            # x = relu(rmsnorm(x) W1^T) W2^T + x
            d[name("res2")] = d[name("fc2")] = dx
            g[name("mlp_fc2")] = np.einsum("btc,btf->cf", dx, L["a"])
            d[name("relu")] = dx @ p[name("mlp_fc2")]
            du = d[name("relu")] * (L["u"] > 0)
            d[name("fc1")] = du
            g[name("mlp_fc1")] = np.einsum("btf,btc->fc", du, L["h2"])
            d[name("norm2")] = du @ p[name("mlp_fc1")]
            dx = dx + rmsnorm_back(L["x_in2"], L["r2"], d[name("norm2")])
            d[name("res1")] = d[name("attn_proj")] = dx
            # x = attn(rmsnorm(x)) Wo^T + x
            g[name("attn_wo")] = np.einsum("btc,btd->cd", dx, L["o"])
            do = (dx @ p[name("attn_wo")]).reshape(B, T, NH, HS)
            att = L["att"]
            datt = np.einsum("bthd,bshd->bhts", do, L["ve"])
            dve = np.einsum("bhts,bthd->bshd", att, do)
            dsm = att * (datt - np.sum(datt * att, axis=-1, keepdims=True))   # the scores' gradient
            ds = dsm / self.dt(np.sqrt(HS))
            dq = np.einsum("bhts,bshd->bthd", ds, L["ke"]).reshape(B, T, NH * HS)
            dke = np.einsum("bhts,bthd->bshd", ds, L["q"])
            dk = dke.reshape(B, T, NKV, G, HS).sum(axis=3).reshape(B, T, NKV * HS)
            dv = dve.reshape(B, T, NKV, G, HS).sum(axis=3).reshape(B, T, NKV * HS)
            d[name("attn")], d[name("softmax")], d[name("scores")] = do.reshape(B, T, NH * HS), datt, dsm
            d[name("q")], d[name("k")], d[name("v")] = dq, dk, dv
            h1 = L["h1"]
            g[name("attn_wq")] = np.einsum("btd,btc->dc", dq, h1)
            g[name("attn_wk")] = np.einsum("btd,btc->dc", dk, h1)
            g[name("attn_wv")] = np.einsum("btd,btc->dc", dv, h1)
            dh1 = dq @ p[name("attn_wq")] + dk @ p[name("attn_wk")] + dv @ p[name("attn_wv")]
            d[name("norm1")] = dh1
            dx = dx + rmsnorm_back(L["x_in1"], L["r1"], dh1)
        d["embed_norm"] = dx
        dx0 = rmsnorm_back(x0, r0, dx) * real[..., None]
        d["embed"] = dx0
        np.add.at(g["wte"], inp[real], dx0[real])
        g["wpe"][:T] = dx0.sum(axis=0)
        self.g = g
        # Adam, bias-corrected, with the linearly decaying learning rate
        b1, b2, eps = c["beta1"], c["beta2"], c["eps"]
        b2_store = 0.999 if WRONG_BETA2 and b2 != 0.999 else b2   # --wrong-beta2: the planted bug
        lr_t = c["lr"] * (1 - step / c["steps"])
        for k in self.names:
            self.m[k] = b1 * self.m[k] + (1 - b1) * g[k]
            self.v[k] = b2_store * self.v[k] + (1 - b2_store) * g[k] ** 2
            mhat = self.m[k] / (1 - b1 ** (step + 1))
            vhat = self.v[k] / (1 - b2_store ** (step + 1))
            self.p[k] = self.p[k] - lr_t * mhat / (np.sqrt(vhat) + eps)
        return loss

    def get(self, what):
        if not self.offers.get(what, True):   # compare must never ask (its create reply said so)
            raise RuntimeError("asked for %s, which this engine does not offer" % what)
        if what == "logits":
            return {"logits": ("F64", list(self.logits.shape), self.logits.astype("<f8").tobytes())}
        if what == "grads":
            return self._out("grads", self.g)
        if what == "relu_inputs":  # (L,B,T,4C)
            return {"relu_inputs": ("F64", list(self.relu.shape), self.relu.astype("<f8").tobytes())}
        if what == "activations":  # acts/<op>, dacts/<op> (mg_protocol.op_names), padding included
            out = {}
            for prefix, src in (("acts", self.acts), ("dacts", self.dacts)):
                for k, v in src.items():
                    out[prefix + "/" + k] = ("F64", list(v.shape), np.ascontiguousarray(v).astype("<f8").tobytes())
            return out
        if what == "params":
            return self._out("params", self.p)
        if what == "moments":
            out = self._out("adam_m", self.m)
            out.update(self._out("adam_v", self.v))
            return out
        raise ValueError("cannot get %r" % what)

    def set_state(self, data):
        self.p = {k: self._array(data["params/" + k], self.shapes[k]) for k in self.names}
        if "adam_m/" + self.names[0] in data:
            if NO_SET_MOMENTS:   # compare must never send them (its create reply said so)
                raise RuntimeError("set_state sent Adam moments, which this engine does not take")
            self.m = {k: self._array(data["adam_m/" + k], self.shapes[k]) for k in self.names}
            self.v = {k: self._array(data["adam_v/" + k], self.shapes[k]) for k in self.names}

    def sample(self, data, temperature, own=False):
        # from BOS, one uniform per position: probabilities = softmax(logits /
        # temperature), then random.choices' rule: bisect the cumulative weights.
        # own (compare --sampler own): the uniforms come from our generator
        bos, V = self.cfg["bos"], self.cfg["vocab_size"]
        u = self.rng.random(self.cfg["block_size"]) if own else np.frombuffer(data["uniforms"][2], dtype="<f8")
        seq, out = [bos], []
        for pos in range(self.cfg["block_size"]):
            logits, _ = self.forward(np.array([seq]))
            w = [float(x) * temperature ** -1 for x in logits[0, -1]]
            mx = max(w)
            w = [np.exp(x - mx) for x in w]
            if SAMPLER_NO_BOS_FIRST and pos == 0:   # the planted bug: a name can never be empty
                w[bos] = 0.0
            inv = 1.0 / sum(w)
            cum = list(itertools.accumulate(x * inv for x in w))
            tok = bisect.bisect(cum, float(u[pos]) * cum[-1], 0, V - 1)
            if tok == bos:
                break
            out.append(tok)
            seq.append(tok)
        return {"tokens": ("I32", [len(out)], np.array(out, dtype="<i4").tobytes())}


if __name__ == "__main__":
    mg_protocol.serve(NumpyEngine)
