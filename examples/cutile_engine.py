#!/usr/bin/env python3
"""microgpt's training step with its kernels written in cuTile, NVIDIA's
Python tile language (cuda.tile; examples/cutile_kernels.py): RMSNorm
forward and backward, causal grouped-query attention forward and backward,
softmax cross-entropy with its gradient, ReLU, the embedding gather and its
scatter, and Adam. The linear layers are torch.matmul in the run's dtype
with TF32 off. The backward is written by hand (no autograd). compare runs
it as a process engine, on an NVIDIA GPU:

    build/compare --engines scalar,exec:'python3 examples/cutile_engine.py' --precision fp32 --steps 50

--precision fp32 or fp64 (the same kernels in either dtype); the
mixed-precision recipes (bf16, fp16, tf32) are refused. --loss doc-mean or
token-mean. It answers get "activations" (acts/<op> and dacts/<op>, the
ACTIVATIONS table of examples/tile_engine.py) and takes --plant-bug NAME
(PLANTED_BUGS, the same names and the same mistakes as the Triton engine's).

The host side is examples/tile_engine.py, shared with the Triton engine
(examples/triton_engine.py): only the kernels differ. cuTile has no CPU mode
and no interpreter; --device cpu runs the same kernels on
examples/cutile_emu.py, a numpy model of cuda.tile's documented semantics
(torch CPU tensors, no cuda-tile needed): it checks the kernels' logic, not
cuTile's compiler or the GPU. Without a GPU,
tests/cutile_engine_check.py --compile-for 90 compiles every kernel variant
for an H100 ahead of time. docs/outside_engines.md ("cuTile") has the
commands and what cuTile needs.

Only numpy is needed to import this module (tests/cutile_engine_check.py
checks the tables, the packing and the protocol without torch or cuda.tile).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tile_engine  # noqa: E402
from tile_engine import (ACTIVATIONS, EPS_NORM, PLANTED_BUGS, ParamLayout, activation_table,  # noqa: E402
                         attention_fits, decode, dims, encode, sample_token)

__all__ = ["ACTIVATIONS", "EPS_NORM", "GPU_ONLY", "NO_GPU", "PLANTED_BUGS", "CuTileEngine", "ParamLayout",
           "activation_table", "attention_fits", "capability_supported", "decode", "dims", "encode", "main",
           "parse_args", "sample_token"]

GPU_ONLY = ("cuTile runs on NVIDIA GPUs only (compute capability 8.x, 9.0 with cuda-tile >= 1.4 and tileiras >= "
            "13.3, 10.x, 12.x)")
NO_GPU = GPU_ONLY + ("; no CUDA device here (--device cpu runs the kernels on examples/cutile_emu.py, a numpy model "
                     "of cuda.tile)")


def capability_supported(major, minor, cutile_version):
    """whether cuda.tile of cutile_version ("1.7.0") compiles for compute
    capability major.minor: Ampere/Ada, Blackwell and, since 1.4, Hopper"""
    if (major, minor) == (9, 0):
        return tuple(int(p) for p in cutile_version.split(".")[:2]) >= (1, 4)
    return major in (8, 10, 12)


class CuTileEngine(tile_engine.TileEngine):
    name = "cutile"

    def __init__(self, cfg, data, device="cuda", bug=None):
        tile_engine.check_config(cfg, "cuTile")
        if device not in ("cuda", "cpu"):
            raise ValueError("--device %s: cuda, or cpu for the emulator" % device)
        try:
            import torch
        except ImportError as e:
            raise ValueError("the cuTile engine keeps its tensors in torch (pip install torch): %s" % e)
        if device == "cpu":  # the kernels on the numpy model of cuda.tile
            import cutile_emu
            kernels = cutile_emu.load_kernels(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                           "cutile_kernels.py"))
            description = "cpu (cuTile emulator: examples/cutile_emu.py, not the compiler; torch %s)" % (
                torch.__version__)
            super().__init__(cfg, data, torch, kernels, device, description, bug)
            return
        if not torch.cuda.is_available():
            raise ValueError(NO_GPU)
        try:
            import cuda.tile as ct
        except ImportError as e:
            raise ValueError("the cuTile engine needs cuda.tile (pip install cuda-tile; its compiler tileiras, with "
                             "ptxas and libnvvm of CUDA >= 13.3, on PATH or from the nvidia-cuda-tileiras, "
                             "nvidia-cuda-nvcc and nvidia-nvvm packages): %s" % e)
        major, minor = torch.cuda.get_device_capability()
        if not capability_supported(major, minor, ct.__version__):
            raise ValueError("%s is compute capability %d.%d, and cuda-tile %s does not compile for it: %s" % (
                torch.cuda.get_device_name(), major, minor, ct.__version__, GPU_ONLY))
        import cutile_kernels
        description = "%s (cuTile %s, torch %s)" % (torch.cuda.get_device_name(), ct.__version__, torch.__version__)
        super().__init__(cfg, data, torch, cutile_kernels, device, description, bug)


def parse_args(argv):
    return tile_engine.argument_parser(
        "microgpt with cuTile kernels, a process engine for build/compare", ("cuda", "cpu"), "cuda",
        "cuda (an NVIDIA GPU), or cpu: the kernels on examples/cutile_emu.py, a numpy model of cuda.tile "
        "(their logic, not cuTile's compiler)").parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tile_engine.serve(CuTileEngine, args.device, args.plant_bug)


if __name__ == "__main__":
    main()
