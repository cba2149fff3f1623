"""A numpy model of the part of cuda.tile (cuTile 1.7.0) that
examples/cutile_kernels.py uses, so that the cuTile engine's kernels run on
the CPU (examples/cutile_engine.py --device cpu): cuTile itself has no CPU
mode and no interpreter. It runs each kernel's Python body block by block
(ct.bid), with tiles as numpy arrays, following the semantics cuda.tile's
documentation and source give:

- ct.load / ct.store address tiles, not elements: index (i, j) with shape
  (tm, tn) is array[i*tm : (i+1)*tm, j*tn : (j+1)*tn]. A load pads what lies
  past the array's end with padding_mode (ZERO, NEG_INF; UNDETERMINED, the
  default, is NaN here so that a read of it shows); a store drops it. A
  tile lying wholly outside the array is undefined in cuTile: an error here.
- a store casts implicitly only where cuTile does (the array's dtype is the
  promotion of the two: fp32 into fp64, an integer into a float); an fp64
  tile into an fp32 array is refused, as cuTile refuses to compile it.
- ct.gather checks every index against its dimension (a negative one is out
  of bounds) and the mask; what fails reads padding_value.
- reductions, where, exp, log, sqrt and matmul keep the tile's dtype (fp32
  products accumulate in fp32, as cuTile's FMA products do; a matmul of two
  dtypes takes their promotion); division and sqrt round to nearest, as
  cuTile's defaults.

It models cuTile's semantics, not its compiler or the GPU: a kernel that
passes here can still fail to compile (tests/cutile_engine_check.py
--compile-for 90 compiles every variant) or differ on the GPU in the order
of its sums. load_kernels() imports a kernel module on it.
"""
import builtins
import enum
import inspect
import sys
import types

import numpy as np

__version__ = "1.7.0 (numpy emulator)"
EMULATOR = True  # cutile_kernels._launch: no CUDA stream

int32, int64, float32, float64, bool_ = np.int32, np.int64, np.float32, np.float64, np.bool_


class PaddingMode(enum.Enum):
    UNDETERMINED = 0
    ZERO = 1
    NEG_INF = 2


class _ConstantOf:
    """what Constant[T] stands for in a kernel's signature: a value known
    when the kernel is compiled (a shape, a switch), passed as it is"""

    def __init__(self, of):
        self.of = of


class Constant:
    def __class_getitem__(cls, of):
        return _ConstantOf(of)


_block = [0, 0, 0]  # ct.bid of the block being run


class Kernel:
    def __init__(self, pyfunc):
        self.pyfunc = pyfunc
        self.__name__ = pyfunc.__name__
        params = inspect.signature(pyfunc).parameters.values()
        self.constant = [isinstance(p.annotation, _ConstantOf) for p in params]

    def run(self, grid, args):
        if len(args) != len(self.constant):
            raise TypeError("%s takes %d arguments, %d given" % (self.__name__, len(self.constant), len(args)))
        args = [a if const else _argument(a) for a, const in zip(args, self.constant)]
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        with np.errstate(all="ignore"):  # inf and NaN arise silently, as on the GPU
            for x in range(grid[0]):
                for y in range(grid[1]):
                    for z in range(grid[2]):
                        _block[:] = [x, y, z]
                        self.pyfunc(*args)


def _argument(a):
    """an array argument as a numpy array sharing its memory (a CPU torch
    tensor through .numpy()), an integer one as an int32 scalar"""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "numpy") and hasattr(a, "is_cuda"):
        if a.is_cuda:
            raise TypeError("the cuTile emulator runs on the CPU: a CUDA tensor was passed")
        if not a.is_contiguous():
            raise TypeError("the cuTile emulator takes contiguous tensors")
        return a.detach().numpy()
    if isinstance(a, (bool, np.bool_)):
        return np.bool_(a)
    if isinstance(a, (int, np.integer)):
        return np.int32(a)
    raise TypeError("the cuTile emulator cannot pass a %s to a kernel" % type(a).__name__)


def kernel(pyfunc=None, **options):
    return Kernel(pyfunc) if pyfunc is not None else Kernel


def launch(stream, grid, kern, args):
    kern.run(grid, args)


def bid(axis):
    return np.int32(_block[axis])


def cdiv(a, b):
    return -(-int(a) // int(b))


def arange(size, *, dtype):
    return np.arange(size, dtype=dtype)


def zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype)


def _tile_of(array, index, shape):
    """the element slices of tile `index` of shape `shape`, cut at the
    array's end, and the matching slices of the tile"""
    index = tuple(int(i) for i in (index if isinstance(index, tuple) else (index,)))
    if len(index) != array.ndim or len(shape) != array.ndim:
        raise IndexError("a tile of rank %d at index %s of an array of rank %d" % (len(shape), index, array.ndim))
    starts = [i * s for i, s in zip(index, shape)]
    if builtins.any(st < 0 or st >= n for st, n in zip(starts, array.shape)):
        raise IndexError("tile %s of shape %s lies outside the array of shape %s (undefined in cuTile)"
                         % (index, shape, array.shape))
    src = tuple(slice(st, builtins.min(st + s, n)) for st, s, n in zip(starts, shape, array.shape))
    return src, tuple(slice(0, sl.stop - sl.start) for sl in src)


def load(array, index, shape, *, padding_mode=PaddingMode.UNDETERMINED, **hints):
    shape = tuple(shape)
    # a 0-d tile is the element at index: a tile of ones
    src, dst = _tile_of(array, index, shape or (1,) * array.ndim)
    pad = {PaddingMode.ZERO: 0, PaddingMode.NEG_INF: -np.inf}.get(padding_mode, np.nan)
    if not np.issubdtype(array.dtype, np.floating) and padding_mode != PaddingMode.ZERO:
        pad = -12345  # undetermined integers: a value no kernel expects
    out = np.full(shape or (1,) * array.ndim, pad, dtype=array.dtype)
    out[dst] = array[src]
    return out.reshape(shape)


def store(array, index, tile, **hints):
    tile = np.asarray(tile)
    if tile.ndim == 0:
        tile = tile.reshape((1,) * array.ndim)
    # cuTile casts implicitly only where the array's dtype is the two's
    # promotion (an integer into a float, fp32 into fp64; not fp64 into fp32)
    widening = (tile.dtype.kind in "biu" and array.dtype.kind == "f") or \
        np.promote_types(tile.dtype, array.dtype) == array.dtype
    if not widening:
        raise TypeError("a %s tile stored into a %s array (no implicit narrowing cast)" % (tile.dtype, array.dtype))
    dst, src = _tile_of(array, index, tile.shape)
    array[dst] = tile[src].astype(array.dtype)


def gather(array, indices, *, mask=None, padding_value=0, check_bounds=True, **hints):
    indices = indices if isinstance(indices, tuple) else (indices,)
    if len(indices) != array.ndim:
        raise IndexError("gather: %d indices into an array of rank %d" % (len(indices), array.ndim))
    idx = np.broadcast_arrays(*[np.asarray(i) for i in indices])
    ok = np.ones(idx[0].shape, dtype=bool)
    for d, i in enumerate(idx):
        if not np.issubdtype(i.dtype, np.integer):
            raise TypeError("gather: indices of %s" % i.dtype)
        if check_bounds:
            ok &= (i >= 0) & (i < array.shape[d])
    if mask is not None:
        ok &= np.broadcast_to(np.asarray(mask), ok.shape)
    values = array[tuple(np.where(ok, i, 0) for i in idx)]
    return np.where(ok, values, np.asarray(padding_value).astype(array.dtype)).astype(array.dtype)


def sum(x, axis=None, *, keepdims=False, **options):
    x = np.asarray(x)
    return np.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype)


def max(x, axis=None, *, keepdims=False, **options):
    return np.max(np.asarray(x), axis=axis, keepdims=keepdims)


def where(cond, x, y):
    # a Python number takes the other operand's dtype (cuTile's loosely typed constants)
    loose = lambda a: type(a) in (int, float)  # noqa: E731  (not numpy scalars: they carry a dtype)
    if loose(x) and not loose(y):
        x = np.asarray(y).dtype.type(x)
    elif loose(y) and not loose(x):
        y = np.asarray(x).dtype.type(y)
    return np.where(cond, x, y)


def exp(x, **options):
    return np.exp(x)


def log(x, **options):
    return np.log(x)


def sqrt(x, **options):
    return np.sqrt(x)


def astype(x, dtype):
    return np.asarray(x).astype(dtype)


def reshape(x, shape):
    return np.asarray(x).reshape(shape)


def transpose(x, axis0=None, axis1=None):
    x = np.asarray(x)
    if axis0 is None:
        if x.ndim != 2:
            raise ValueError("transpose without axes takes a 2-d tile")
        return x.T
    return np.swapaxes(x, axis0, axis1)


def matmul(a, b):
    # 1-d, 2-d or 3-d tiles, broadcast to the last two axes; both promoted to
    # their common dtype, which the products accumulate in
    a, b = np.asarray(a), np.asarray(b)
    if not (1 <= a.ndim <= 3 and 1 <= b.ndim <= 3):
        raise ValueError("matmul takes 1-d, 2-d or 3-d tiles, not %d-d and %d-d" % (a.ndim, b.ndim))
    dt = np.promote_types(a.dtype, b.dtype)
    return np.matmul(a.astype(dt), b.astype(dt))


def load_kernels(path, name="cutile_kernels_emulated"):
    """the kernel module at path (examples/cutile_kernels.py) imported with
    this emulator as its cuda.tile, under its own name: `import cuda.tile`
    sees the emulator while the module loads, and sys.modules is restored
    after, so that the real cuda.tile (and the module on it) can live in the
    same process"""
    import importlib.util
    saved = {k: sys.modules.get(k) for k in ("cuda", "cuda.tile")}
    cuda = types.ModuleType("cuda")
    cuda.tile = sys.modules[__name__]
    sys.modules["cuda"], sys.modules["cuda.tile"] = cuda, cuda.tile
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module
