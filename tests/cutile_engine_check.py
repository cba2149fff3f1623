#!/usr/bin/env python3
"""Checks of examples/cutile_engine.py (the training step with cuTile
kernels) that build/compare does not make: the checks of
tests/triton_engine_check.py, run on the cuTile engine, and cuTile's own.

(a) numpy only (CI): the Triton check's unit checks on cutile_engine (the
    parameter packing, the activation table, safetensors round trips, the
    create reply, the sampling rule, the planted-bug names, attention_fits:
    the host side is examples/tile_engine.py for both), then what is the
    cuTile engine's own: cutile_kernels.py offers triton_kernels.py's launch
    functions with the same arguments, every kernel a planted bug names has
    its switch there, create refuses the mixed precisions and --device cpu
    naming cuTile, and says "cuTile runs on NVIDIA GPUs only" where there is
    no CUDA device; which compute capabilities it takes.
(b) where torch sees a CUDA device and cuda.tile imports: the Triton check's
    engine checks on the cuTile engine: one training step against the fp64
    numpy reference (every acts/<op> and dacts/<op>, the logits, the loss,
    the gradients, the Adam update; fp32 within 1e-4 of the reference
    tensor's RMS, fp64 1e-10), through the protocol too, under --loss
    token-mean, and each planted bug first off at the op of its kernel.
    Prints SKIP for (b), saying why, elsewhere.

--compile-for SM instead compiles, for sm_SM, every kernel variant that the
launchers of examples/cutile_kernels.py launch for a few shapes (fp32 and
fp64, every planted bug, doc-mean and token-mean, the largest tiles the
engine accepts: T 128 x head_dim 32, T 64 x head_dim 64, the vocabulary
padded to 32 and 64, C 512 and 4C 2048) with cuda.tile's ahead-of-time
compiler (export_kernel: tileiras, ptxas): the engine's own launchers run,
on stand-in arrays (no torch needed), with cutile_kernels._launch replaced
by the compiler, so what compiles is what the engine launches, with the
same ct.Constant values. No GPU needed. Prints ok/FAIL per variant with its
shared memory, which must fit a block's on sm_SM.

Exits 1 on any failure. Run: python3 tests/cutile_engine_check.py [--compile-for 90]
"""
import ast
import inspect
import io
import os
import struct
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import cutile_engine as ce  # noqa: E402
import triton_engine_check as shared  # noqa: E402  (its checks and reference, pointed at the cuTile engine below)

shared.te, shared.ENGINE, shared.ENGINE_SCRIPT = ce, ce.CuTileEngine, "cutile_engine.py"
check, config, RESULTS = shared.check, shared.config, shared.RESULTS


# ---- (a) numpy only ----

def launch_functions(path):
    """{name: (argument names)} of the public functions of a kernel module, read from its source"""
    tree = ast.parse(open(os.path.join(ROOT, "examples", path)).read())
    return {f.name: tuple(a.arg for a in f.args.args) for f in tree.body
            if isinstance(f, ast.FunctionDef) and not f.name.startswith("_") and not f.decorator_list}


def kernels_of(path):
    """{kernel name: [parameter names]} of the decorated kernels of a kernel module"""
    tree = ast.parse(open(os.path.join(ROOT, "examples", path)).read())
    return {f.name: [a.arg for a in f.args.args] for f in tree.body
            if isinstance(f, ast.FunctionDef) and f.decorator_list}


def cutile_unit_checks():
    theirs, ours = launch_functions("triton_kernels.py"), launch_functions("cutile_kernels.py")
    check(theirs == ours, "cutile_kernels.py offers triton_kernels.py's launch functions, with the same arguments",
          ", ".join(sorted(ours)) if theirs == ours else "differ: %s" % sorted(set(theirs.items()) ^ set(ours.items())))
    kernels = kernels_of("cutile_kernels.py")
    missing, switched = [], set()
    for bug, what in ce.PLANTED_BUGS.items():
        named = what.split(":")[0]  # "rmsnorm_fwd_kernel", or "attn kernels" for both attention kernels
        hit = [k for k in kernels if k == named or (named == "attn kernels" and k.startswith("attn_"))]
        if not hit or not all(any(p.startswith("BUG") for p in kernels[k]) for k in hit):
            missing.append("%s (%s)" % (bug, named))
        switched.update(hit)
    check(not missing, "every kernel a planted bug names is in cutile_kernels.py with a BUG switch",
          "missing: " + ", ".join(missing) if missing else "%d bugs in %d of its %d kernels: %s" % (
              len(ce.PLANTED_BUGS), len(switched), len(kernels), ", ".join(sorted(switched))))

    for precision in ("bf16", "fp16", "tf32"):
        try:
            ce.CuTileEngine(config(precision=precision), {}, "cuda")
            check(False, "create refuses --precision %s" % precision)
        except ValueError as e:
            check("cuTile engine computes in fp32 or fp64, not %s" % precision in str(e),
                  "create refuses --precision %s, naming cuTile" % precision, str(e))
    check(ce.parse_args([]).device == "cuda" and ce.parse_args([]).plant_bug is None,
          "--device cuda by default, no planted bug")
    table = {(8, 0, "1.0.0"): True, (8, 9, "1.0.0"): True, (9, 0, "1.3.0"): False, (9, 0, "1.4.0"): True,
             (9, 0, "1.7.0"): True, (10, 0, "1.0.0"): True, (12, 0, "1.2.0"): True, (7, 5, "1.7.0"): False}
    got = {k: ce.capability_supported(*k) for k in table}
    check(got == table, "compute capabilities: 8.x, 9.0 with cuda-tile >= 1.4, 10.x, 12.x",
          "" if got == table else "got %s" % got)

    # without a CUDA device, create says what cuTile needs
    try:
        import torch
        has_torch, has_cuda = True, torch.cuda.is_available()
    except ImportError:
        has_torch, has_cuda = False, False
    if not has_cuda:
        try:
            ce.CuTileEngine(config(), {}, "cuda")
            check(False, "create without a CUDA device is refused")
        except ValueError as e:
            want = ce.NO_GPU if has_torch else "pip install torch"
            check(want in str(e), "create without a CUDA device is refused, saying why", str(e))


# ---- the emulator (examples/cutile_emu.py): numpy only ----

class EmuTensor(np.ndarray):
    """What the launchers use of a torch tensor (view, new_empty,
    new_tensor, numel, sum().item()), as a numpy array, for the kernels on
    the emulator without torch. new_empty fills NaN: an element a kernel
    leaves unwritten shows."""

    def view(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        out = np.ndarray.reshape(self, shape)
        assert out.size == 0 or np.shares_memory(out, self), "view copied"
        return out

    def new_empty(self, shape):
        a = np.full(shape, np.nan if self.dtype.kind == "f" else -777, dtype=self.dtype)
        return a.view(EmuTensor)

    def new_tensor(self, data):
        return np.array(data, dtype=self.dtype).view(EmuTensor)

    def numel(self):
        return self.size


def emulator_semantics():
    """the emulator keeps cuTile's documented rules (examples/cutile_emu.py)"""
    import cutile_emu as ct
    a = np.arange(10, dtype=np.float32)
    t = ct.load(a, index=(2,), shape=(4,), padding_mode=ct.PaddingMode.ZERO)
    check(t.tolist() == [8, 9, 0, 0], "emulator: ct.load takes a tile index and pads past the end", str(t.tolist()))
    t = ct.load(a, index=(2,), shape=(4,))
    check(np.isnan(t[2:]).all(), "emulator: undetermined padding reads NaN", str(t.tolist()))
    refused = []
    for what, f in (("a load of a tile wholly outside", lambda: ct.load(a, index=(3,), shape=(4,))),
                    ("a store of a tile wholly outside", lambda: ct.store(a, index=(3,), tile=np.zeros(4, np.float32))),
                    ("an fp64 tile stored into fp32", lambda: ct.store(a, index=(0,), tile=np.zeros(4)))):
        try:
            f()
            refused.append(what + ": accepted")
        except (IndexError, TypeError, ValueError):
            pass
    check(not refused, "emulator: refuses what cuTile leaves undefined or does not compile", "; ".join(refused))
    b = np.zeros(10, np.float32)
    ct.store(b, index=(2,), tile=np.ones(4, np.float32))
    check(b.tolist() == [0] * 8 + [1, 1], "emulator: ct.store drops what lies past the end", str(b.tolist()))
    wide = np.zeros(4)
    ct.store(wide, index=(0,), tile=np.full(4, 0.1, np.float32))
    check(wide[0] == np.float64(np.float32(0.1)), "emulator: ct.store casts fp32 into an fp64 array (a widening)",
          repr(wide[0]))
    g = ct.gather(a, np.array([-1, 3, 12, 5], np.int32), mask=np.array([True, True, True, False]), padding_value=7)
    check(g.tolist() == [7, 3, 7, 7], "emulator: ct.gather reads padding_value out of bounds and where masked",
          str(g.tolist()))
    w = ct.where(np.array([True, False]), np.ones(2, np.float32), 0.0)
    check(w.dtype == np.float32, "emulator: a Python number takes the tile's dtype", str(w.dtype))


def emulator_kernels():
    """every kernel variant the launchers launch (the shapes and planted
    bugs of --compile-for) runs on the emulator: no tile outside its array,
    no store across dtypes, and every element of every output written and
    finite, from inputs in [0.5, 1.5) (valid constants and Adam state)"""
    import cutile_emu
    K = cutile_emu.load_kernels(os.path.join(ROOT, "examples", "cutile_kernels.py"))
    rng = np.random.default_rng(5)
    made, failures, count = [], [], 0

    def launches(dt, B, T, HS, NH, NKV, V, bugs):
        n = np.array([T] + [int(x) for x in rng.integers(1, T + 1, size=B - 1)], np.int32)
        tokens = rng.integers(0, V - 1, size=(B, T + 1)).astype(np.int32)
        keys = np.where(np.arange(T)[None, :] < n[:, None], tokens[:, :T], -1).reshape(-1).astype(np.int32)
        for b in range(B):
            tokens[b, n[b] + 1:] = -1  # past the document, as the engine sends it

        def e(*shape):
            return rng.uniform(0.5, 1.5, size=shape).astype(dt).view(EmuTensor)
        made.clear()
        real_new_empty = EmuTensor.new_empty

        def tracked(self, shape):
            out = real_new_empty(self, shape)
            made.append(out)
            return out
        EmuTensor.new_empty = tracked
        try:
            shared.launch_every_kernel(K, e, tokens.view(EmuTensor), n.view(EmuTensor), keys.view(EmuTensor),
                                       B, T, HS, NH, NKV, V, bugs)
            bad = [o.shape for o in made if o.dtype.kind == "f" and not np.isfinite(o).all()]
            if bad:
                failures.append("%s %s: outputs of shape %s not all written or not finite" % (
                    np.dtype(dt).name, (B, T, HS, NH, NKV, V), bad))
        except Exception as ex:  # every failing variant, not only the first
            failures.append("%s %s %s: %s: %s" % (np.dtype(dt).name, (B, T, HS, NH, NKV, V),
                                                  [b for b in bugs if bugs[b]], type(ex).__name__, ex))
        finally:
            EmuTensor.new_empty = real_new_empty

    shapes = [(1, 16, 4, 4, 4, 27), (3, 7, 4, 4, 2, 27), (1, 1, 4, 4, 1, 27), (2, 20, 8, 4, 2, 50)]
    no_bugs = {b: False for b in ce.PLANTED_BUGS}
    for dt in (np.float32, np.float64):
        for shape in shapes:
            launches(dt, *shape, no_bugs)
            count += 1
        for bug in ce.PLANTED_BUGS:
            launches(dt, 3, 7, 4, 4, 2, 27, {b: b == bug for b in ce.PLANTED_BUGS})
            count += 1
    check(not failures, "every kernel runs on the cuTile emulator, each output written and finite",
          "; ".join(failures[:3]) if failures else "%d launch sets (fp32 and fp64, %d shapes, %d planted bugs)" % (
              count, len(shapes), len(ce.PLANTED_BUGS)))


# ---- --compile-for: every kernel variant, ahead of time ----

class StandIn:
    """What the launchers of examples/cutile_kernels.py use of a torch CUDA
    tensor (shape, numel, view, new_empty, new_tensor, sum().item()), so that
    --compile-for runs them where there is neither torch nor a GPU. base:
    the allocation it views; value: every element's value."""

    def __init__(self, shape, dtype, base=None, value=0):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.base = base if base is not None else self
        self.value = value

    def numel(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def view(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        known = int(np.prod([s for s in shape if s != -1], dtype=np.int64))
        shape = tuple(self.numel() // known if s == -1 else s for s in shape)
        assert int(np.prod(shape, dtype=np.int64)) == self.numel(), (self.shape, shape)
        return StandIn(shape, self.dtype, self.base, self.value)

    def new_empty(self, shape):
        return StandIn(shape, self.dtype)

    def new_tensor(self, data):
        return StandIn((len(data),), self.dtype)

    def sum(self):
        return StandIn((), self.dtype, value=self.value * self.numel())

    def item(self):
        return self.value


def cubin_shared_bytes(cubin):
    """the static shared memory of the kernel in an ELF64 cubin: the sizes
    of its .nv.shared.<kernel> sections"""
    (section_headers,) = struct.unpack_from("<Q", cubin, 0x28)               # e_shoff
    entry_size, count, names_index = struct.unpack_from("<HHH", cubin, 0x3a)  # e_shentsize, e_shnum, e_shstrndx
    # each (sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, ...)
    sections = [struct.unpack_from("<IIQQQQ", cubin, section_headers + i * entry_size) for i in range(count)]
    names_at = sections[names_index][4]

    def name(section):
        start = names_at + section[0]
        return cubin[start:cubin.index(b"\0", start)].decode()
    return sum(sec[5] for sec in sections
               if name(sec).startswith(".nv.shared.") and not name(sec).startswith(".nv.shared.reserved"))


# the largest shared memory a block may have, bytes (CUDA's occupancy tables)
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448, 120: 101376}


def compile_checks(sm):
    """compile, for sm_<sm>, every kernel variant the launchers of
    examples/cutile_kernels.py launch for a few shapes; nothing runs"""
    # tileiras runs for every variant: cuda.tile's disk cache of cubins is
    # off unless $CUDA_TILE_CACHE_DIR names one (it is read at import)
    os.environ.setdefault("CUDA_TILE_CACHE_DIR", "off")
    import cuda.tile as ct
    from cuda.tile.compilation import (ArrayConstraint, CallingConvention, KernelSignature, ScalarConstraint,
                                       export_kernel)
    from cuda.tile._stub import ConstantAnnotation
    import cutile_kernels as K
    dtypes = {np.dtype(np.float32): (ct.float32, "fp32"), np.dtype(np.float64): (ct.float64, "fp64"),
              np.dtype(np.int32): (ct.int32, "i32")}
    limit = SHARED_LIMIT.get(sm)
    seen = set()
    largest = [0, ""]  # the most shared memory a variant takes, and which

    def divisor(x):
        # the largest power of two (at most 16) dividing x: the alignment a JIT launch sees
        return 16 if x == 0 else min(16, x & -x)

    def array_constraint(a, groups):
        strides = [int(np.prod(a.shape[i + 1:], dtype=np.int64)) for i in range(len(a.shape))]
        # a fresh torch allocation: the base 16-byte aligned (TMA may be used), contiguous strides
        return ArrayConstraint(dtypes[a.dtype][0], len(a.shape), index_dtype=ct.int32, stride_lower_bound_incl=0,
                               alias_groups=groups, may_alias_internally=False,
                               stride_divisible_by=[divisor(s) for s in strides], base_addr_divisible_by=16)

    def compile_launch(grid, kernel, args):
        # stands for ct.launch(stream, grid, kernel, args): the signature of
        # these arguments (arrays, int32 scalars, ct.Constant values), compiled
        pyfunc = kernel._annotated_function.pyfunc
        params = inspect.signature(pyfunc).parameters
        assert len(params) == len(args), (pyfunc.__name__, len(params), len(args))
        bases = [id(a.base) for a in args if isinstance(a, StandIn)]
        constraints, constants = [], []
        for (pname, p), a in zip(params.items(), args):
            if any(isinstance(m, ConstantAnnotation) for m in getattr(p.annotation, "__metadata__", ())):
                constraints.append(a)
                constants.append("%s=%s" % (pname, a))
            elif isinstance(a, StandIn):
                # an allocation passed twice (rmsnorm_bwd's dy for an absent dres) may alias itself
                groups = ("alloc%d" % id(a.base),) if bases.count(id(a.base)) > 1 else ()
                constraints.append(array_constraint(a, groups))
            else:
                constraints.append(ScalarConstraint(ct.int32))
        floats = sorted({dtypes[a.dtype][1] for a in args if isinstance(a, StandIn) and a.dtype != np.int32})
        what = " ".join([pyfunc.__name__] + floats + constants)
        if what in seen:
            return
        seen.add(what)
        sig = KernelSignature(constraints, calling_convention=CallingConvention.cutile_python_v2())
        out = io.BytesIO()
        try:
            export_kernel(kernel, [sig], out, gpu_code="sm_%d" % sm, output_format="cubin")
        except Exception as e:  # report every failing variant, not only the first
            lines = [line for line in str(e).strip().splitlines() if line.strip()] or [""]
            check(False, "compiled %s" % what, "%s: %s" % (type(e).__name__, lines[-1][:300]))
            return
        shared_bytes = cubin_shared_bytes(out.getvalue())
        largest[:] = max(largest, [shared_bytes, what])
        check(limit is None or shared_bytes <= limit, "compiled %s" % what,
              "shared %d bytes%s" % (shared_bytes, "" if limit is None else " of %d" % limit))

    K._launch = compile_launch

    def launches(dt, B, T, HS, NH, NKV, V, bugs):
        tokens, n = StandIn((B, T + 1), np.int32), StandIn((B,), np.int32, value=T)
        shared.launch_every_kernel(K, lambda *shape: StandIn(shape, dt), tokens, n, StandIn((B * T,), np.int32),
                                   B, T, HS, NH, NKV, V, bugs)

    # (B, T, head_dim, n_head, n_kv_head, V): the default model, GQA, one
    # document of one token; the largest tiles attention_fits accepts, T 128
    # x head_dim 32 and T 64 x head_dim 64, both at C 512 (4C 2048), the
    # vocabulary padded to 32 and to 64
    shapes = [(1, 16, 4, 4, 4, 27), (3, 7, 4, 4, 2, 27), (1, 1, 4, 4, 1, 27), (2, 128, 32, 16, 4, 50),
              (2, 64, 64, 8, 2, 27)]
    no_bugs = {b: False for b in ce.PLANTED_BUGS}
    for dt in (np.float32, np.float64):
        for shape in shapes:
            assert ce.attention_fits(shape[1], shape[2])
            launches(dt, *shape, no_bugs)
        for bug in ce.PLANTED_BUGS:
            launches(dt, 3, 7, 4, 4, 2, 27, {b: b == bug for b in ce.PLANTED_BUGS})
    print("%d variants; the most shared memory: %d bytes (%s)" % (len(seen), largest[0], largest[1]))


def main():
    if "--compile-for" in sys.argv[1:]:
        compile_checks(int(sys.argv[sys.argv.index("--compile-for") + 1]))
        print("cutile_engine_check: %(passed)d passed, %(failed)d failed, %(skipped)d skipped" % RESULTS)
        return 1 if RESULTS["failed"] else 0
    shared.unit_checks()
    cutile_unit_checks()
    emulator_semantics()
    emulator_kernels()
    # (b) on the GPU with cuda.tile; without one, on the emulator where torch imports
    device, why = "cuda", None
    try:
        import torch
        if not torch.cuda.is_available():
            device = "cpu"
        else:
            import cuda.tile as ct
    except ImportError as e:
        why = "%s (pip install torch, and cuda-tile on a GPU machine)" % e
    if why:
        RESULTS["skipped"] += 1
        print("SKIP the cuTile engine against the fp64 reference: %s" % why)
    elif device == "cpu":
        print("the cuTile engine on the emulator (examples/cutile_emu.py; no CUDA device; torch %s)" %
              torch.__version__)
        shared.engine_checks("cpu")
    else:
        print("the cuTile engine on %s (cuTile %s, torch %s)" % (torch.cuda.get_device_name(), ct.__version__,
                                                                 torch.__version__))
        shared.engine_checks("cuda")
    print("cutile_engine_check: %(passed)d passed, %(failed)d failed, %(skipped)d skipped" % RESULTS)
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
