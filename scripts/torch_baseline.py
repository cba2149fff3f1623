#!/usr/bin/env python3
"""The PyTorch baseline of `compare --bench --baseline torch` (docs/BENCHMARKS.md).

The same model, documents and initial weights as the harness's engines,
written the way a strong PyTorch user writes it: tensors on the GPU, autograd
for the backward, scaled_dot_product_attention, fused Adam, and the whole
training step captured once as a CUDA graph and replayed (row "torch-graph");
the same with the forward and loss compiled by torch.compile(fullgraph=True,
dynamic=False) (row "torch-compile": the compiled forward, its backward and
the fused Adam captured as one CUDA graph; the compile happens in the untimed
warm-up before the capture and its wall time is the row's "compile_s"); the
same step run eagerly is row "torch-eager". fp32 runs with TF32 off; tf32 is
fp32 with TF32 on; bf16 is fp32 weights under torch.autocast(bf16).

    torch_baseline.py --work FILE.safetensors --out RESULT.json [--repeats N] [--warmup N]
                      [--compile-mode default|max-autotune|off]

FILE is written by compare --bench: the parameters by their canonical names
(float64), "tokens" (steps, batch, block_size+1) int32 with -1 past a
document's end, "n" (steps, batch) the positions each document trains, "lr"
(steps) the learning rate of each step, and the settings as JSON metadata.
RESULT gets {"status": "ok", "device", "torch", "rows": [...]} with each
row's ms/step per timed run, the losses of every step of the first run and
the peak memory (the torch-compile row's from after the compile, so not the
compiler's own buffers; and its "compile_s" and "compile_mode"; a row that
could not run: a "note" saying why and no timings); or {"status": "skipped" |
"failed", "why"}. Exit code 0
(ok), 3 (skipped: no torch or no GPU), 1 (failed).

Each timed run starts from the initial weights and zero Adam state, runs
the warm-up steps untimed, then the remaining steps between two CUDA events
with no host synchronization in between; every step's batch and learning
rate are on the GPU before the run and are copied into the graph's static
inputs on the GPU, as the harness's CUDA engine does.
"""
import argparse
import json
import os
import struct
import sys
import time


def write_result(path, obj, code):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)
    sys.exit(code)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (hl,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + hl])
    meta = header.pop("__metadata__", {})
    base = 8 + hl
    return header, meta, data, base


def vm_bytes(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --compile-mode to torch.compile's mode. The script captures the whole step
# as one CUDA graph itself, so max-autotune is inductor's variant without its
# own CUDA graphs (they would be captured inside ours); off: no compile row.
COMPILE_MODES = {"default": "default", "max-autotune": "max-autotune-no-cudagraphs", "off": None}


def first_line(e, limit=300):
    """An exception as one short line: torch.compile's errors span pages."""
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()]
    text = f"{type(e).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="the work file compare --bench wrote (safetensors)")
    ap.add_argument("--out", required=True, help="where to write the result (JSON)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs (5)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of each run (5)")
    ap.add_argument("--compile-mode", choices=COMPILE_MODES, default="default",
                    help="row torch-compile: torch.compile's mode (default), or off: no such row")
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # no torch here: the bench says why and goes on
        write_result(a.out, {"status": "skipped", "why": f"torch is not installed for {sys.executable} ({e})"}, 3)
    if not torch.cuda.is_available():
        write_result(a.out, {"status": "skipped", "why": "torch sees no CUDA GPU (torch.cuda.is_available() is False)"}, 3)

    header, meta, data, base = read_safetensors(a.work)
    cfg = json.loads(meta["settings"])
    dev = torch.device("cuda")
    prec = cfg["precision"]
    if prec not in ("fp64", "fp32", "bf16", "tf32"):
        write_result(a.out, {"status": "skipped", "why": f"no PyTorch baseline for precision {prec}"}, 3)
    dtype = torch.float64 if prec == "fp64" else torch.float32   # bf16, tf32: fp32 weights and Adam state
    tf32 = prec == "tf32"   # fp32 tensors, matrix products on TF32 tensor cores
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    # bf16: autocast, as a PyTorch user trains in bf16 (products and attention
    # in bf16, the loss and the normalizations in fp32, fp32 master weights)
    # (no weight cache: a CUDA graph capture needs it off, as PyTorch documents)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=prec == "bf16", cache_enabled=False)

    def tensor(name, tdtype):
        h = header[name]
        lo, hi = h["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + lo : base + hi]), dtype=tdtype)
        return t.reshape(h["shape"])

    V, C, NH, NKV, L = cfg["vocab_size"], cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"], cfg["n_layer"]
    T, B, S = cfg["block_size"], cfg["batch"], cfg["steps"]
    HS = C // NH
    W = min(a.warmup, S - 1)
    names = cfg["params"]
    init = {n: tensor(n, torch.float64).to(dev, dtype) for n in names}
    tokens = tensor("tokens", torch.int32).to(dev).long()           # (S,B,T+1), -1 past the end
    npos = tensor("n", torch.int32).to(dev).long()                  # (S,B)
    lrs = tensor("lr", torch.float64).to(dev, dtype)                # (S)
    # the loss is the mean over documents of each document's mean over its
    # positions: a weight 1/(B*n_b) on each real position, 0 on padding
    t_idx = torch.arange(T, device=dev)
    weights = (t_idx[None, None, :] < npos[:, :, None]).to(dtype) / (B * npos[:, :, None].to(dtype))
    inputs = tokens[:, :, :T].clamp(min=0)
    targets = tokens[:, :, 1:]
    del tokens

    def rmsnorm(x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)

    def loss_fn(p, inp, tgt, w):
        with autocast:
            return loss_body(p, inp, tgt, w)

    def loss_body(p, inp, tgt, w):
        x = rmsnorm(p["wte"][inp] + p["wpe"][:T])                        # (B,T,C)
        for l in range(L):
            pre = f"layer{l}."
            h = rmsnorm(x)
            q = (h @ p[pre + "attn_wq"].T).view(B, T, NH, HS).transpose(1, 2)
            k = (h @ p[pre + "attn_wk"].T).view(B, T, NKV, HS).transpose(1, 2)
            v = (h @ p[pre + "attn_wv"].T).view(B, T, NKV, HS).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=NKV != NH)
            x = y.transpose(1, 2).reshape(B, T, C) @ p[pre + "attn_wo"].T + x
            h = rmsnorm(x)
            x = torch.relu(h @ p[pre + "mlp_fc1"].T) @ p[pre + "mlp_fc2"].T + x
        logits = x @ p["lm_head"].T                                      # (B,T,V)
        ce = F.cross_entropy(logits.reshape(B * T, V), tgt.reshape(B * T), reduction="none", ignore_index=-1)
        return (ce.to(w.dtype) * w.reshape(B * T)).sum()   # (fp32 under autocast)

    def loss_fn_fresh_autocast(p, inp, tgt, w):
        """loss_fn with its autocast context made inside the function, the form
        torch.compile traces (fullgraph): a context object from outside would be
        a closure over a live context manager."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=prec == "bf16", cache_enabled=False):
            return loss_body(p, inp, tgt, w)

    adam_kw = dict(betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"], capturable=True)

    def adam_impl():
        """Fused Adam where it takes a learning-rate tensor of this dtype (fp32), else foreach."""
        try:
            probe = torch.zeros(2, device=dev, dtype=dtype, requires_grad=True)
            probe.grad = torch.ones_like(probe)
            torch.optim.Adam([probe], lr=torch.zeros((), device=dev, dtype=dtype), fused=True, **adam_kw).step()
            torch.cuda.synchronize()
            return "fused"
        except RuntimeError:
            return "foreach"

    impl = adam_impl()

    def make_state():
        p = {n: init[n].clone().requires_grad_(True) for n in names}
        lr = torch.zeros((), device=dev, dtype=dtype)
        opt = torch.optim.Adam([p[n] for n in names], lr=lr, **{impl: True}, **adam_kw)
        return p, lr, opt

    def reset(p, opt):
        with torch.no_grad():
            for n in names:
                p[n].copy_(init[n])
            for st in opt.state.values():
                for key in ("exp_avg", "exp_avg_sq", "step"):
                    if key in st:
                        st[key].zero_()

    def timed_runs(step_fn, p, opt):
        """Every run: reset, W warm-up steps, then S-W steps between two events."""
        ms, first, note = [], None, None
        losses = torch.empty(S, device=dev, dtype=dtype)
        for rep in range(a.repeats):
            reset(p, opt)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            for i in range(S):
                if i == W:
                    start.record()
                step_fn(i, losses)
            end.record()
            end.synchronize()
            ms.append(start.elapsed_time(end) / (S - W))
            got = losses.double().cpu().tolist()
            if first is None:
                first = got
            elif got != first and note is None:
                j = next(i for i in range(S) if got[i] != first[i])
                note = f"torch's losses differ between timed runs (first at step {j + 1}): nondeterministic kernels"
        return ms, first, note

    rows = []
    adam_note = None if impl == "fused" else f"Adam: foreach (fused Adam does not take a {dtype} learning-rate tensor)"

    def graph_row(engine, step_loss, compiling):
        """The whole step (forward, backward, fused Adam) captured once as a CUDA
        graph and replayed. step_loss is the loss function; compiling: it is
        torch.compile'd, so its first call in the warm-up compiles the forward
        and backward, and the warm-up's wall time is the row's compile_s."""
        base_rss = vm_bytes("VmRSS")
        reset_peak_rss()
        torch.cuda.reset_peak_memory_stats()
        row = {"engine": engine, "warmup": W, "timed_steps": S - W}
        stage, t0 = "warm-up before the CUDA graph capture", None
        try:
            p, lr, opt = make_state()
            s_inp = inputs[0].clone()
            s_tgt = targets[0].clone()
            s_w = weights[0].clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            if compiling:
                stage = "torch.compile"
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            with torch.cuda.stream(side):   # warm-up before capture, as PyTorch's docs do it
                for _ in range(3):
                    opt.zero_grad(set_to_none=True)
                    step_loss(p, s_inp, s_tgt, s_w).backward()
                    opt.step()
            torch.cuda.current_stream().wait_stream(side)
            if compiling:
                torch.cuda.synchronize()
                row["compile_s"] = time.perf_counter() - t0
                # the peak from here: what the compiled step holds, not the
                # compiler's transient buffers (max-autotune benchmarks kernels)
                torch.cuda.reset_peak_memory_stats()
            stage = "CUDA graph capture"
            graph = torch.cuda.CUDAGraph()
            opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                s_loss = step_loss(p, s_inp, s_tgt, s_w)
                s_loss.backward()
                opt.step()
            stage = "the replayed graph"

            def graph_step(i, losses):
                s_inp.copy_(inputs[i])
                s_tgt.copy_(targets[i])
                s_w.copy_(weights[i])
                lr.copy_(lrs[i])
                graph.replay()
                losses[i].copy_(s_loss.detach())

            ms, first, note = timed_runs(graph_step, p, opt)
            row.update(ms_per_step=ms, losses=first, peak_device_bytes=torch.cuda.max_memory_allocated())
            if note or adam_note:
                row["note"] = "; ".join(x for x in (adam_note, note) if x)
            del graph, p, opt
        except Exception as e:
            after = f" after {time.perf_counter() - t0:.1f} s" if stage == "torch.compile" and t0 is not None else ""
            row.update(ms_per_step=[], losses=[], note=f"{stage} failed{after}: {first_line(e)}")
        hwm = vm_bytes("VmHWM")
        row["peak_host_bytes"] = hwm - base_rss if hwm and base_rss else None
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        return row

    # --- CUDA graph of the eager step, then of the compiled one (rows in this order: graph, compile, eager)
    rows.append(graph_row("torch-graph", loss_fn, False))
    mode = COMPILE_MODES[a.compile_mode]
    if mode:
        row, compiled = None, None
        try:
            compiled = torch.compile(loss_fn_fresh_autocast, fullgraph=True, dynamic=False, mode=mode)
        except Exception as e:   # compiling itself is lazy: this fails only on a bad option
            row = {"engine": "torch-compile", "warmup": W, "timed_steps": S - W, "ms_per_step": [], "losses": [],
                   "peak_host_bytes": None, "note": f"torch.compile failed: {first_line(e)}"}
        row = row or graph_row("torch-compile", compiled, True)
        row["compile_mode"] = a.compile_mode
        rows.append(row)
        del compiled

    # --- eager: the same step without the graph
    base_rss = vm_bytes("VmRSS")
    reset_peak_rss()
    torch.cuda.reset_peak_memory_stats()
    p, lr, opt = make_state()

    def eager_step(i, losses):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(p, inputs[i], targets[i], weights[i])
        loss.backward()
        lr.copy_(lrs[i])
        opt.step()
        losses[i].copy_(loss.detach())

    row = {"engine": "torch-eager", "warmup": W, "timed_steps": S - W}
    try:
        ms, first, note = timed_runs(eager_step, p, opt)
        row.update(ms_per_step=ms, losses=first, peak_device_bytes=torch.cuda.max_memory_allocated())
        if note or adam_note:
            row["note"] = "; ".join(x for x in (adam_note, note) if x)
    except Exception as e:
        row.update(ms_per_step=[], losses=[], note=f"eager run failed: {type(e).__name__}: {e}")
    hwm = vm_bytes("VmHWM")
    row["peak_host_bytes"] = hwm - base_rss if hwm and base_rss else None
    rows.append(row)
    write_result(a.out, {"status": "ok", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                         "rows": rows}, 0)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:  # a failure still leaves a result that says what happened
        out = None
        for i, x in enumerate(sys.argv):
            if x == "--out" and i + 1 < len(sys.argv):
                out = sys.argv[i + 1]
        msg = f"{type(e).__name__}: {e}"
        print(f"torch_baseline: {msg}", file=sys.stderr)
        if out:
            write_result(out, {"status": "failed", "why": msg}, 1)
        sys.exit(1)
