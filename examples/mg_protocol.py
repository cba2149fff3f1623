"""The process-engine protocol of docs/outside_engines.md, in plain Python
(standard library only): read compare's requests from stdin, write replies to
stdout. An engine supplies a class with create/step/get/set_state/sample and
calls serve(Engine). Copy this file next to your engine. sample(data,
temperature) draws with data["uniforms"], one per position; under compare
--sampler own it is called as sample({}, temperature, own=True) and draws
with the engine's own random generator (an engine without the own
parameter fails there with a TypeError, and works as before otherwise).

A partial engine declares what it offers with an `offers` dict on the
class or the instance, e.g. offers = {"logits": False} for an engine that
fuses the cross-entropy and keeps no logits, or {"moments": False,
"set_moments": False} for one whose optimizer is its own; a key left out is
offered. serve() sends it in the reply to create, and refuses (with an error
reply naming the protocol) a request for what was not offered, which compare
never sends.

A message is one line of JSON; when it has "bytes": N, N bytes of a
safetensors buffer follow. Arrays are dicts name -> (dtype, shape, bytes),
dtype one of "F64", "F32", "I32" (little-endian); helpers convert to numpy or
torch without this module depending on either.
"""
import json
import math
import os
import struct
import sys
import traceback

PROTOCOL = 1
_SIZES = {"F64": 8, "F32": 4, "I32": 4}


def st_decode(buf):
    """safetensors bytes -> {name: (dtype, shape, raw bytes)}"""
    if len(buf) < 8:
        raise ValueError("safetensors: shorter than 8 bytes")
    (hl,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + hl].decode("utf-8"))
    data = buf[8 + hl:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = (info["dtype"], list(info["shape"]), data[begin:end])
    return out


def st_encode(tensors):
    """{name: (dtype, shape, raw bytes)} -> safetensors bytes (header padded to 8)"""
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        n = _SIZES[dtype]
        for d in shape:
            n *= d
        if len(raw) != n:
            raise ValueError("tensor %s: %d bytes for %s %s" % (name, len(raw), dtype, shape))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        blobs.append(raw)
        off += n
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


# The ops whose outputs (acts/<name>) and gradients (dacts/<name>) an engine
# may report after a step, in forward order (the harness's table:
# common/activations.h); layer{l}. is prefixed to the per-layer ones.
OPS_GLOBAL_FIRST = ("embed", "embed_norm")
OPS_PER_LAYER = ("norm1", "q", "k", "v", "scores", "softmax", "attn", "attn_proj", "res1", "norm2", "fc1", "relu",
                 "fc2", "res2")
OPS_GLOBAL_LAST = ("logits",)


def op_names(n_layer):
    """Every op's name in forward order."""
    return list(OPS_GLOBAL_FIRST) + ["layer%d.%s" % (l, k) for l in range(n_layer) for k in OPS_PER_LAYER] + \
        list(OPS_GLOBAL_LAST)


OFFERS = ("logits", "moments", "set_moments")


def offers_of(engine):
    """The engine's "offers" for the create reply: every key of OFFERS, True
    unless the engine's offers dict says otherwise."""
    declared = dict(getattr(engine, "offers", None) or {})
    unknown = sorted(set(declared) - set(OFFERS))
    if unknown:
        raise ValueError("offers: unknown key(s) %s; the keys are %s" % (", ".join(unknown), ", ".join(OFFERS)))
    return {k: bool(declared.get(k, True)) for k in OFFERS}


def _not_offered(what):
    raise RuntimeError("protocol violation: compare asked for %s, which this engine's create reply did not offer "
                       "(docs/outside_engines.md, \"Partial engines\")" % what)


def _number(x):
    """A loss for JSON: a number, or "nan"/"inf"/"-inf" (JSON has no NaN)."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def error_text(e):
    """An engine's exception as its reply says it: the type, the message and
    where it was raised (file:line in function); the full traceback goes to
    stderr, which the harness passes through."""
    traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    sys.stderr.flush()
    tb = traceback.extract_tb(e.__traceback__)
    where = " (at %s:%d in %s)" % (tb[-1].filename, tb[-1].lineno, tb[-1].name) if tb else ""
    return "%s: %s%s" % (type(e).__name__, e, where)


def serve(make_engine, stdin=None, stdout=None):
    """Answer compare's requests until "quit" or the end of stdin.
    make_engine(config, params) -> engine; config is the create request's
    "config" dict, params {name: (dtype, shape, raw)} of the initial
    parameters (names "params/<tensor>")."""
    rd = stdin or sys.stdin.buffer
    wr = stdout or sys.stdout.buffer
    # $MG_PROTOCOL_LOG=PATH: append every request line to PATH.requests and
    # every reply line to PATH.replies (the tests check them against
    # docs/schemas/exec_*.schema.json)
    log = os.environ.get("MG_PROTOCOL_LOG")

    def logline(kind, line):
        if log:
            with open(log + "." + kind, "ab") as f:
                f.write(line if line.endswith(b"\n") else line + b"\n")

    def reply(obj, tensors=None):
        payload = st_encode(tensors) if tensors is not None else None
        if payload is not None:
            obj["bytes"] = len(payload)
        line = json.dumps(obj, allow_nan=False).encode("utf-8") + b"\n"
        logline("replies", line)
        wr.write(line)
        if payload is not None:
            wr.write(payload)
        wr.flush()

    engine = None
    offers = dict.fromkeys(OFFERS, True)
    while True:
        line = rd.readline()
        if not line:
            return
        logline("requests", line)
        req = json.loads(line)
        data = st_decode(rd.read(req["bytes"])) if "bytes" in req else {}
        op = req["op"]
        try:
            if op == "quit":
                reply({"ok": True})
                return
            if op == "create":
                if req.get("protocol") != PROTOCOL:
                    raise ValueError("this engine speaks protocol %d" % PROTOCOL)
                engine = make_engine(req["config"], data)
                offers = offers_of(engine)
                reply({"ok": True, "protocol": PROTOCOL, "name": engine.name, "device": engine.device,
                       "relu_inputs": bool(getattr(engine, "relu_inputs", False)),
                       "activations": bool(getattr(engine, "activations", False)), "offers": offers})
            elif op == "step":
                loss = engine.step(data, req["step"])
                reply({"ok": True, "loss": _number(loss)})
            elif op == "get":
                if req["what"] in ("logits", "moments") and not offers[req["what"]]:
                    _not_offered("'get %s'" % req["what"])
                reply({"ok": True}, engine.get(req["what"]))
            elif op == "set_state":
                if not offers["set_moments"] and any(k.startswith(("adam_m/", "adam_v/")) for k in data):
                    _not_offered("'set_state' with Adam moments")
                engine.set_state(data)
                reply({"ok": True})
            elif op == "sample":
                if req.get("own"):   # --sampler own: no uniforms; the engine draws with its own generator
                    reply({"ok": True}, engine.sample(data, req["temperature"], own=True))
                else:
                    reply({"ok": True}, engine.sample(data, req["temperature"]))
            else:
                raise ValueError("unknown op %r" % op)
        except Exception as e:  # the harness prints it and stops
            reply({"ok": False, "error": error_text(e)})
