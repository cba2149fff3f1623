#!/usr/bin/env python3
"""microgpt's training step with its kernels written in Triton
(examples/triton_kernels.py): RMSNorm forward and backward, causal
grouped-query attention forward and backward, softmax cross-entropy with its
gradient, ReLU, the embedding gather and its scatter, and Adam. The linear
layers are torch.matmul in the run's dtype with TF32 off. The backward is
written by hand (no autograd). compare runs it as a process engine:

    build/compare --engines scalar,exec:'python3 examples/triton_engine.py' --precision fp32 --steps 50
    TRITON_INTERPRET=1 build/compare --engines scalar,exec:'python3 examples/triton_engine.py --device cpu' \\
        --precision fp32 --steps 5        # no GPU: Triton's interpreter runs the kernels with numpy

--precision fp32 or fp64 (the same kernels in either dtype); the
mixed-precision recipes (bf16, fp16, tf32) are refused. --loss doc-mean (the
original's: the mean over documents of each document's mean) or token-mean
(the mean over all the batch's real positions, F.cross_entropy's). Besides what
numpy_engine.py answers, it answers get "activations": every op's forward
output (acts/<op>) and the loss's gradient with respect to it (dacts/<op>),
the ops of the ACTIVATIONS table (examples/tile_engine.py).

--plant-bug NAME switches on one realistic bug in one kernel (PLANTED_BUGS);
compare must then fail. docs/outside_engines.md ("Triton") has what it reported.

The host side (the parameters, the forward and backward, the protocol, the
tables) is examples/tile_engine.py, shared with the cuTile engine
(examples/cutile_engine.py); this module adds what is Triton's: the device
(--device cpu is Triton's interpreter) and the kernel module.

Only numpy is needed to import this module (tests/triton_engine_check.py
checks the tables, the packing and the protocol without torch or triton).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tile_engine  # noqa: E402
from tile_engine import (ACTIVATIONS, EPS_NORM, PLANTED_BUGS, ParamLayout, activation_table,  # noqa: E402
                         attention_fits, decode, dims, encode, sample_token)

# what scripts and tests/triton_engine_check.py import from here
__all__ = ["ACTIVATIONS", "EPS_NORM", "PLANTED_BUGS", "ParamLayout", "TritonEngine", "activation_table",
           "attention_fits", "decode", "dims", "encode", "main", "parse_args", "sample_token"]


class TritonEngine(tile_engine.TileEngine):
    name = "triton"

    def __init__(self, cfg, data, device="cuda", bug=None):
        tile_engine.check_config(cfg, "Triton")
        if device == "cpu":
            # Triton runs on the CPU only in its interpreter
            if os.environ.get("TRITON_INTERPRET", "1") != "1":
                raise ValueError("--device cpu needs Triton's interpreter (TRITON_INTERPRET=1)")
            os.environ["TRITON_INTERPRET"] = "1"
        import torch
        import triton
        import triton.language as tl
        import triton_kernels
        # triton decides interpreted or compiled when a function is defined: its
        # own tl.sum etc. at "import triton", which must see the variable too
        interpreted = type(tl.standard.sum).__name__ == "InterpretedFunction"
        if interpreted != (device == "cpu"):
            raise ValueError("triton was imported %s TRITON_INTERPRET=1 but the engine runs on %s: set the variable "
                             "in the environment, before anything imports triton" %
                             ("with" if interpreted else "without", device))
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("no CUDA device (without a GPU: --device cpu, Triton's interpreter)")
        description = "%s (Triton %s%s, torch %s)" % (
            torch.cuda.get_device_name(torch.device(device)) if device == "cuda" else "cpu", triton.__version__,
            " interpreter" if device == "cpu" else "", torch.__version__)
        super().__init__(cfg, data, torch, triton_kernels, device, description, bug)


def parse_args(argv):
    return tile_engine.argument_parser(
        "microgpt with Triton kernels, a process engine for build/compare", ("cuda", "cpu"), None,
        "cuda (default when available) or cpu (Triton's interpreter, TRITON_INTERPRET=1)").parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = args.device
    if device is None:  # cuda where torch sees one (without importing torch when it is not asked for)
        try:
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            device = "cuda"
    tile_engine.serve(TritonEngine, device, args.plant_bug)


if __name__ == "__main__":
    main()
