#!/usr/bin/env python3
"""The measurement behind the fp32 ratio rule's k and floor (docs/compare.md).

  ratio_stats.py TRACE...              lockstep traces under the ratio rule
                                       (e.g. build/parity/cuda/*.json): each
                                       errors entry has the candidate's
                                       err_rms and the fp32 CPU engine's
                                       ref_err_rms of the same step
  ratio_stats.py --pair CAND CLEAN ... pairs of traces of the same run, the
                                       candidate's err_rms from CAND and the
                                       CPU engine's from CLEAN (a second
                                       sound fp32 engine built as the CPU
                                       engine: scripts/ratio_measure.sh)
  ratio_stats.py --caps TRACE...       the candidate's own err_rms per
                                       quantity and tensor kind (layer
                                       number dropped): for scalar,cpu runs
                                       in bf16/fp16/tf32 the emulation's
                                       error against the fp64 oracle, the
                                       measurement behind the mixed
                                       precisions' caps
                                       (docs/mixed_precision.md)

Prints per quantity the distribution of err/err_cpu and, for several k, the
largest err - k*err_cpu: the floor that k needs.
"""
import collections
import json
import sys


def entries(path):
    with open(path) as f:
        t = json.load(f)
    for s in t.get('steps', []):
        for e in s.get('errors', []):
            yield e


def caps(files):
    errs = collections.defaultdict(list)   # (quantity, tensor kind) -> [err_rms]
    for p in files:
        for e in entries(p):
            if e.get('err_rms') is not None:
                kind = e['tensor'].split('.', 1)[1] if e['tensor'].startswith('layer') else e['tensor']
                errs[(e['quantity'], kind)].append(e['err_rms'])
    if not errs:
        sys.exit('ratio_stats: no errors entries with err_rms (a lockstep trace under the ratio rule?)')
    print(f"{'quantity':8} {'tensor':10} {'n':>6} {'p50':>9} {'p99':>9} {'max':>9}")
    for (q, k), v in sorted(errs.items()):
        v.sort()
        print(f'{q:8} {k:10} {len(v):6} {v[len(v) // 2]:9.2e} {v[min(len(v) - 1, int(.99 * len(v)))]:9.2e} {v[-1]:9.2e}')


def main(argv):
    if argv and argv[0] == '--caps':
        return caps(argv[1:])
    pairs = collections.defaultdict(list)   # quantity -> [(err, err_cpu)]
    if argv and argv[0] == '--pair':
        files = argv[1:]
        if not files or len(files) % 2:
            sys.exit('ratio_stats: --pair needs CAND CLEAN pairs')
        for a, b in zip(files[::2], files[1::2]):
            for ea, eb in zip(entries(a), entries(b)):
                if (ea['quantity'], ea['tensor']) != (eb['quantity'], eb['tensor']):
                    sys.exit(f'ratio_stats: {a} and {b} are not the same run')
                pairs[ea['quantity']].append((ea['err_rms'], eb['err_rms']))
    else:
        for p in argv:
            for e in entries(p):
                if 'ref_err_rms' in e:
                    pairs[e['quantity']].append((e['err_rms'], e['ref_err_rms']))
    if not pairs:
        sys.exit('ratio_stats: no errors entries with err_rms (a lockstep trace under the ratio rule?)')

    def pct(v, p):
        v = sorted(v)
        return v[min(len(v) - 1, int(p * len(v)))]

    ks = [2, 3, 4, 5, 8]
    print(f"{'quantity':8} {'n':>6} {'p50':>6} {'p99':>7} {'p99.9':>7} {'max':>7}  cpu err max  "
          + ' '.join(f'floor(k={k})' for k in ks))
    for q in ['loss', 'logits', 'grads', 'params', 'm', 'v', 'probs']:
        if q not in pairs:
            continue
        v = pairs[q]
        r = [c / e for c, e in v if e and e > 0 and c is not None]
        need = [max(c - k * e for c, e in v) for k in ks]
        print(f'{q:8} {len(v):6} {pct(r, .5):6.2f} {pct(r, .99):7.2f} {pct(r, .999):7.2f} {max(r):7.2f}  '
              f'{max(e for _, e in v):.2e}     ' + ' '.join(f'{x:10.1e}' for x in need))


if __name__ == '__main__':
    main(sys.argv[1:])
