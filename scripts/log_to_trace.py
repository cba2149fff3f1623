#!/usr/bin/env python3
"""Turn a training log into a trace that `build/compare --against` checks.

    python3 scripts/log_to_trace.py run.log -o run.json [--steps N --batch B ...]
    build/compare --against run.json --engines scalar

Reads the lines `step    1 / 1000 | loss 3.3660` the original microgpt.py
prints (and, loosely, any line with `step N` followed by `loss X`, such as
`step 5, lr 0.01, loss: 3.2`); other lines are skipped. The steps must be 1,
2, 3, ... without a gap (--against checks every step). `num docs: N`, `vocab
size: V` and `num params: P` lines, where present, are recorded too, and
--against checks them against its own data and model.

The settings are the flags below; a flag not given is the original's value
(`step N / TOTAL` gives --steps). The trace records them under "settings",
and the most decimals a loss was printed with under "loss_decimals": --against
then allows half a unit of that last digit (a log with 4 decimals: 5e-05).

Adam's beta1 0.85, beta2 0.99 and eps 1e-8 are the original's. Standard
library only. Exit 0 on success, 2 on bad usage or a log it cannot use (the
message says why).
"""
import argparse
import hashlib
import json
import os
import re
import sys

# The original's settings (../SPEC.md; common/settings.c), flag -> default.
ORIGINAL = {"seed": "42", "steps": 1000, "batch": 1, "loss": "doc-mean", "n_embd": 16, "n_head": 4,
            "n_kv_head": None, "n_layer": 1, "block_size": 16, "lr": 0.01, "init_std": 0.08}
ADAM = {"beta1": 0.85, "beta2": 0.99, "eps": 1e-8}   # no flags: the original's constants

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf(?:inity)?"
STEP = re.compile(r"\bstep\s*[:=#]?\s*(\d+)(?:\s*/\s*(\d+))?\b.*?\bloss\s*[:=]?\s*(" + NUMBER + r")(?![\w.])",
                  re.IGNORECASE)
HEADER = {"documents": re.compile(r"^\s*num docs:\s*(\d+)\s*$"),
          "vocab_size": re.compile(r"^\s*vocab size:\s*(\d+)\s*$"),
          "num_params": re.compile(r"^\s*num params:\s*(\d+)\s*$")}


class LogError(Exception):
    pass


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("'%s' is not an integer" % text)
    if v < 1:
        raise argparse.ArgumentTypeError("'%s' is not >= 1" % text)
    return v


def finite_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("'%s' is not a number" % text)
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError("'%s' is not finite" % text)
    return v


def seed_text(text):
    try:
        int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("'%s' is not an integer" % text)
    return text


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="log_to_trace.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n"
               "  python3 microgpt.py > run.log\n"
               "  python3 scripts/log_to_trace.py run.log -o run.json\n"
               "  build/compare --against run.json --engines scalar")
    ap.add_argument("log", help="the program's output ('-': standard input)")
    ap.add_argument("-o", "--output", metavar="TRACE", default="-",
                    help="the trace to write ('-': standard output) (-)")
    ap.add_argument("--name", help="what recorded the run, shown by --against (the log's file name)")
    ap.add_argument("--precision", choices=["fp64", "fp32"], default="fp64",
                    help="what the program computed in; fp32 gives --against's fp32 tolerances (fp64)")
    ap.add_argument("--data", metavar="FILE", help="the training file the program read: its sha256 is recorded "
                                                   "and --against checks it reads the same bytes (not recorded)")
    g = ap.add_argument_group("settings of the run (build/microgpt's flags; not given: the original's value)")
    g.add_argument("--seed", metavar="N", type=seed_text, help="random seed (42)")
    g.add_argument("--steps", metavar="N", type=positive_int,
                   help="training steps, the learning-rate schedule's horizon (the log's 'step N / TOTAL', else 1000)")
    g.add_argument("--batch", metavar="B", type=positive_int, help="documents per step (1)")
    g.add_argument("--loss", choices=["doc-mean", "token-mean"], help="the batch's loss (doc-mean)")
    g.add_argument("--n-embd", metavar="N", type=positive_int, help="embedding width (16)")
    g.add_argument("--n-head", metavar="N", type=positive_int, help="attention heads (4)")
    g.add_argument("--n-kv-head", metavar="N", type=positive_int, help="key/value heads (n-head)")
    g.add_argument("--n-layer", metavar="N", type=positive_int, help="transformer layers (1)")
    g.add_argument("--block-size", metavar="N", type=positive_int, help="context length (16)")
    g.add_argument("--lr", metavar="X", type=finite_float, help="Adam learning rate (0.01)")
    g.add_argument("--init-std", metavar="X", type=finite_float, help="std of the initial weights (0.08)")
    return ap.parse_args(argv)


def decimals(text):
    """Digits after the point as printed, less the exponent (3.366e+00: 3)."""
    m = re.fullmatch(r"[-+]?(\d*)\.?(\d*)(?:[eE]([-+]?\d+))?", text)
    if not m:
        return None   # nan, inf
    return max(0, len(m.group(2)) - int(m.group(3) or 0))


def read_log(text, where):
    """The steps [(step, total or None, loss text)] and the header counts."""
    steps, header = [], {}
    for n, line in enumerate(text.splitlines(), 1):
        for key, rx in HEADER.items():
            m = rx.match(line)
            if m:
                header[key] = int(m.group(1))
        m = STEP.search(line)
        if not m:
            continue
        step, total, loss = int(m.group(1)), m.group(2), m.group(3)
        if steps and step <= steps[-1][0]:
            raise LogError("%s:%d: step %d after step %d: the steps do not increase" % (where, n, step, steps[-1][0]))
        want = steps[-1][0] + 1 if steps else 1
        if step != want:
            raise LogError("%s:%d: step %d where step %d was due: --against needs every step's loss (1, 2, 3, "
                           "...); log every step" % (where, n, step, want))
        if total is not None and steps and steps[-1][1] is not None and int(total) != steps[-1][1]:
            raise LogError("%s:%d: step %d / %s, but earlier lines say / %d" % (where, n, step, total, steps[-1][1]))
        steps.append((step, int(total) if total is not None else None, loss))
    if not steps:
        raise LogError("%s: no step lines found (expected lines like 'step    1 / 1000 | loss 3.3660', or "
                       "'step N ... loss X')" % where)
    return steps, header


def settings_of(args, steps):
    totals = {t for _, t, _ in steps if t is not None}
    total = totals.pop() if totals else None
    if args.steps is not None and total is not None and args.steps != total:
        raise LogError("--steps %d, but the log's lines say 'step N / %d'" % (args.steps, total))
    s = {k: getattr(args, k) for k in ORIGINAL}
    s["steps"] = args.steps or total
    for k, v in ORIGINAL.items():
        if s[k] is None:
            s[k] = v
    if s["n_kv_head"] is None:
        s["n_kv_head"] = s["n_head"]
    if len(steps) > s["steps"]:
        raise LogError("the log has %d steps, more than the %d-step schedule (--steps)" % (len(steps), s["steps"]))
    if s["n_embd"] % s["n_head"]:
        raise LogError("--n-embd %d is not divisible by --n-head %d" % (s["n_embd"], s["n_head"]))
    s["head_dim"] = s["n_embd"] // s["n_head"]
    s.update(ADAM)
    order = ["seed", "steps", "batch", "loss", "n_embd", "n_head", "n_kv_head", "head_dim", "n_layer", "block_size",
             "lr", "beta1", "beta2", "eps", "init_std"]   # as build/microgpt writes them (traces/trace.c)
    return {k: s[k] for k in order}


def build_trace(args, text, where):
    steps, header = read_log(text, where)
    settings = settings_of(args, steps)
    trace = {"format": "microgpt-trace", "version": 1, "kind": "train", "settings": settings}
    dataset = {k: header[k] for k in ("documents", "vocab_size") if k in header}
    if "vocab_size" in header:
        settings["vocab_size"] = header["vocab_size"]
    if args.data:
        try:
            with open(args.data, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise LogError("--data %s: %s" % (args.data, e.strerror))
        dataset.update(path=args.data, bytes=len(raw), sha256=hashlib.sha256(raw).hexdigest())
    if dataset:
        trace["dataset"] = dataset
    name = args.name or (os.path.basename(args.log) if args.log != "-" else "a log")
    trace["engine"] = {"name": name, "precision": args.precision}
    if "num_params" in header:
        trace["num_params"] = header["num_params"]
    last = steps[-1][0]
    if last == settings["steps"]:
        trace["complete"] = True
    else:
        trace.update(complete=False, stop_reason="the log ends at step %d of %d" % (last, settings["steps"]),
                     stop_step=last)
    digits = [d for d in (decimals(x) for _, _, x in steps) if d is not None]
    if digits:
        trace["loss_decimals"] = max(digits)
    out = []
    for step, _, x in steps:
        v = float(x)
        out.append({"step": step, "loss": v if v == v and abs(v) != float("inf") else None})   # null: not finite
    trace["steps"] = out
    return trace


def main(argv):
    args = parse_args(argv)
    try:
        if args.log == "-":
            where, text = "<stdin>", sys.stdin.read()
        else:
            where = args.log
            try:
                with open(args.log, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError as e:
                raise LogError("cannot read %s: %s" % (args.log, e.strerror))
        if args.output != "-" and args.log != "-" and os.path.exists(args.output) and \
                os.path.samefile(args.output, args.log):
            raise LogError("--output %s is the log itself" % args.output)
        trace = build_trace(args, text, where)
        body = json.dumps(trace, indent=1) + "\n"
        if args.output == "-":
            sys.stdout.write(body)
        else:
            tmp = "%s.tmp-%d" % (args.output, os.getpid())   # whole or untouched
            try:
                with open(tmp, "w") as f:
                    f.write(body)
                os.replace(tmp, args.output)
            except OSError as e:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise LogError("cannot write %s: %s" % (args.output, e.strerror))
    except LogError as e:
        print("log_to_trace: %s" % e, file=sys.stderr)
        return 2
    s = trace["settings"]
    print("log_to_trace: %s: steps 1-%d of %d, losses with %s decimals; settings: seed %s, batch %d, n_embd %d, "
          "n_head %d, n_layer %d, block_size %d, lr %g, init_std %g"
          % (args.output if args.output != "-" else "<stdout>", len(trace["steps"]), s["steps"],
             trace.get("loss_decimals", "no"), s["seed"], s["batch"], s["n_embd"], s["n_head"], s["n_layer"],
             s["block_size"], s["lr"], s["init_std"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
