#!/usr/bin/env python3
"""An outside program's run recorded for `compare --against`: train the numpy
engine (or, --engine torch, examples/torch_engine.py on the CPU) from what
`compare --export-init DIR` wrote, and write a trace (microgpt-trace, kind
"train") with each step's loss and, every K steps, a safetensors file of the
logits, gradients and updated parameters.

    build/compare --export-init /tmp/run --steps 20
    python3 examples/record_trace.py /tmp/run /tmp/run/trace.json --tensors-every 5
    build/compare --against /tmp/run/trace.json --engines scalar
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mg_protocol  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("export_dir")
ap.add_argument("trace")
ap.add_argument("--tensors-every", type=int, default=0, help="write tensors every K steps (0: never)")
ap.add_argument("--precision", default="fp64", choices=["fp64", "fp32"])
ap.add_argument("--broken-rmsnorm", action="store_true", help="numpy_engine.py's planted bug")
ap.add_argument("--engine", default="numpy", choices=["numpy", "torch"],
                help="the implementation that trains: examples/numpy_engine.py, or examples/torch_engine.py on "
                     "the CPU (torch >= 2.3)")
args = ap.parse_args()
if args.engine == "torch":
    # torch_engine.py reads its own flags from the command line when imported
    sys.argv = [sys.argv[0], "--device", "cpu"] + (["--broken-rmsnorm"] if args.broken_rmsnorm else [])
    import torch_engine  # noqa: E402
    Engine = torch_engine.TorchEngine
else:
    import numpy_engine  # noqa: E402
    Engine = numpy_engine.NumpyEngine

with open(os.path.join(args.export_dir, "settings.json")) as f:
    exp = json.load(f)
s = exp["settings"]
with open(os.path.join(args.export_dir, exp["files"]["init"]), "rb") as f:
    init = mg_protocol.st_decode(f.read())
with open(os.path.join(args.export_dir, exp["files"]["batches"]), "rb") as f:
    batches = mg_protocol.st_decode(f.read())

# the engine's configuration, as the process protocol's create request has it
cfg = dict(s, bos=exp["bos"], precision=args.precision, fault="none", max_batch=s["batch"],
           tensors=exp["tensors"])
engine = Engine(cfg, {"params/" + k: v for k, v in init.items()})
out_dir = os.path.dirname(os.path.abspath(args.trace))
steps = []
for k in range(1, s["steps"] + 1):
    loss = engine.step({"tokens": batches["step%d/tokens" % k], "n": batches["step%d/n" % k]}, k - 1)
    entry = {"step": k, "loss": loss if math.isfinite(loss) else None}  # null: not finite
    if args.tensors_every and k % args.tensors_every == 0 or (args.tensors_every and k == 1):
        name = "step%d.safetensors" % k
        t = engine.get("logits")
        t.update(engine.get("grads"))
        t.update(engine.get("params"))
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(mg_protocol.st_encode(t))
        entry["tensors"] = name
    steps.append(entry)
trace = {"format": "microgpt-trace", "version": 1, "kind": "train", "settings": s, "dataset": exp["dataset"],
         "engine": {"name": "%s (recorded)" % args.engine, "precision": args.precision}, "steps": steps}
with open(args.trace, "w") as f:
    json.dump(trace, f, indent=1)
