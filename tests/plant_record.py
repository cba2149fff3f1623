#!/usr/bin/env python3
"""Plant one error in a recorded run (tests/test_bounds.c): copy the trace
TRACE (kind "train", examples/record_trace.py's) and its tensor files to OUT's
folder, with one value moved to what it should be plus F times its bound.
What it should be is taken from REF, the same run recorded in fp64 (within
1e-15 of the reference engine's).

  plant_record.py TRACE REF OUT WHAT STEP F MODE

WHAT: loss, logits, grads/<tensor> or params/<tensor>; STEP 1-based.
MODE: add:X        the value + F*X (the loss: free mode's absolute band)
      scaled:S     element 0 + F*S*rms(the tensor's real values)
      elem:A:R     element 0 + F*(A + R*|element 0|)
Only numpy is needed."""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import mg_protocol  # noqa: E402


def load(path):
    with open(path) as f:
        return json.load(f)


def tensors(path):
    with open(path, "rb") as f:
        return mg_protocol.st_decode(f.read())


def main(trace, ref, out, what, step, f, mode):
    step, f = int(step), float(f)
    t, r = load(trace), load(ref)
    src, dst = os.path.dirname(os.path.abspath(trace)), os.path.dirname(os.path.abspath(out))
    os.makedirs(dst, exist_ok=True)
    kind, _, arg = mode.partition(":")
    if what == "loss":
        if kind != "add":
            sys.exit("plant_record: the loss takes add:X")
        t["steps"][step - 1]["loss"] = r["steps"][step - 1]["loss"] + f * float(arg)
    else:
        name = t["steps"][step - 1].get("tensors")
        if not name:
            sys.exit("plant_record: step %d has no tensors" % step)
        tt = tensors(os.path.join(src, name))
        rt = tensors(os.path.join(os.path.dirname(os.path.abspath(ref)), r["steps"][step - 1]["tensors"]))
        dtype, shape, raw = tt[what]
        npt = {"F64": "<f8", "F32": "<f4"}[dtype]
        a = np.frombuffer(raw, dtype=npt).astype(np.float64).reshape(shape)
        b = np.frombuffer(rt[what][2], dtype={"F64": "<f8", "F32": "<f4"}[rt[what][0]]).astype(np.float64)
        b = b.reshape(rt[what][1])
        if what == "logits":   # the real positions only (compare --export-init wrote the batches beside it)
            n = np.frombuffer(tensors(os.path.join(src, "batches.safetensors"))["step%d/n" % step][2], dtype="<i4")
            real = np.concatenate([b[d, :n[d]].ravel() for d in range(b.shape[0])])
        else:
            real = b
        if kind == "scaled":
            delta = f * float(arg) * np.sqrt(np.mean(real.ravel() ** 2))
        elif kind == "elem":
            atol, rtol = (float(x) for x in arg.split(":"))
            delta = f * (atol + rtol * abs(b.ravel()[0]))
        else:
            sys.exit("plant_record: a tensor takes scaled:S or elem:A:R")
        a = a.ravel().copy()
        a[0] = b.ravel()[0] + delta
        tt[what] = ("F64", shape, a.astype("<f8").tobytes())
        for k, v in list(tt.items()):   # keep one dtype: F64
            if v[0] != "F64":
                tt[k] = ("F64", v[1], np.frombuffer(v[2], dtype="<f4").astype("<f8").tobytes())
        newname = "planted-" + name
        with open(os.path.join(dst, newname), "wb") as fh:
            fh.write(mg_protocol.st_encode(tt))
        t["steps"][step - 1]["tensors"] = newname
    for s in t["steps"]:   # the other tensor files, beside the planted trace
        n = s.get("tensors")
        if n and not n.startswith("planted-") and src != dst:
            shutil.copy(os.path.join(src, n), os.path.join(dst, n))
    with open(out, "w") as fh:
        json.dump(t, fh)


if __name__ == "__main__":
    if len(sys.argv) != 8:
        sys.exit(__doc__)
    main(*sys.argv[1:])
