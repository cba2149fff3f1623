#!/usr/bin/env python3
"""An independent float64 implementation of microgpt's training semantics,
with batches, to make golden losses for tests/test_shared.c.

Written from the semantics in ../shared/SPEC.md, not from any engine here:
plain Python lists, an explicit forward and a hand-written backward (no
autograd). What it pins, that every engine of the harness shares:
  - the shuffle and the initial weights (CPython's own random module),
  - the batch of step s: document b is docs[(s*B + b) % N],
  - the loss: the mean over the batch of each document's mean loss,
  - the lr schedule lr * (1 - s / steps) and Adam (0.85, 0.99, 1e-8).
Summation order differs from the engines, so the losses agree to ~1e-15
relative, not bit for bit.

usage: golden_batch.py DATA BATCH STEPS [PRINT] [--n-layer L] [--n-head H]
                        [--block-size T] > tests/golden/py_NAME.txt
(PRINT: stop after that many steps, e.g. to check batch 1 against the
original's first steps of 1000.) The second line of the output, "# flags:",
gives the flags that make build/microgpt run the same settings.
"""
import math
import random
import sys

N_EMBD, N_HEAD, N_LAYER, BLOCK = 16, 4, 1, 16
LR, BETA1, BETA2, EPS, STD = 0.01, 0.85, 0.99, 1e-8, 0.08


def matvec(w, x):
    return [sum(wi * xi for wi, xi in zip(row, x)) for row in w]


def matvec_back(w, x, dy, dw, dx):
    # y = w x: dw[o][i] += dy[o] x[i]; dx[i] += sum_o w[o][i] dy[o]
    for o, g in enumerate(dy):
        if g == 0.0:
            continue
        row, drow = w[o], dw[o]
        for i in range(len(x)):
            drow[i] += g * x[i]
            dx[i] += row[i] * g


def rmsnorm(x):
    s = (sum(v * v for v in x) / len(x) + 1e-5) ** -0.5
    return [v * s for v in x], s


def rmsnorm_back(x, s, dy):
    # y = x s, s = (mean(x^2) + eps)^-1/2: dx = s dy - s^3 mean(dy x) x
    c = sum(a * b for a, b in zip(dy, x)) / len(x)
    return [s * d - s * s * s * c * v for d, v in zip(dy, x)]


def softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    t = sum(e)
    return [v / t for v in e]


def zeros_like(w):
    return [[0.0] * len(r) for r in w]


def doc_forward_backward(P, G, toks, scale):
    """Loss of one document (mean over its positions); adds scale * dloss/dP to G."""
    C, H = N_EMBD, N_HEAD
    hs = C // H
    n = min(BLOCK, len(toks) - 1)
    # forward, keeping what the backward needs
    emb, x0, s0 = [], [], []
    L = [dict(xin=[], a=[], sa=[], q=[], k=[], v=[], w=[], y=[], x2=[], b=[], sb=[], f=[], g=[], x3=[])
         for _ in range(N_LAYER)]
    logits_p, loss = [], 0.0
    for t in range(n):
        e = [a + b for a, b in zip(P['wte'][toks[t]], P['wpe'][t])]
        x, s = rmsnorm(e)
        emb.append(e), x0.append(x), s0.append(s)
        for l in range(N_LAYER):
            W, c = P['layers'][l], L[l]
            a, sa = rmsnorm(x)
            q, k, v = matvec(W['wq'], a), matvec(W['wk'], a), matvec(W['wv'], a)
            c['xin'].append(x), c['a'].append(a), c['sa'].append(sa)
            c['q'].append(q), c['k'].append(k), c['v'].append(v)
            y, ws = [0.0] * C, []
            for h in range(H):
                sl = slice(h * hs, (h + 1) * hs)
                sc = [sum(qi * ki for qi, ki in zip(q[sl], c['k'][j][sl])) / math.sqrt(hs) for j in range(t + 1)]
                w = softmax(sc)
                ws.append(w)
                for d in range(hs):
                    y[h * hs + d] = sum(w[j] * c['v'][j][h * hs + d] for j in range(t + 1))
            c['w'].append(ws), c['y'].append(y)
            x2 = [a_ + b_ for a_, b_ in zip(matvec(W['wo'], y), x)]
            b, sb = rmsnorm(x2)
            f = matvec(W['fc1'], b)
            g = [max(0.0, u) for u in f]
            x3 = [a_ + b_ for a_, b_ in zip(matvec(W['fc2'], g), x2)]
            c['x2'].append(x2), c['b'].append(b), c['sb'].append(sb), c['f'].append(f), c['g'].append(g)
            c['x3'].append(x3)
            x = x3
        p = softmax(matvec(P['lm_head'], x))
        logits_p.append((x, p))
        loss += -math.log(p[toks[t + 1]])
    loss /= n
    # backward: dloss/dlogit = (p - onehot) / n, times the batch's 1/B
    dx = []
    for t in range(n):
        x, p = logits_p[t]
        dl = [pi * scale / n for pi in p]
        dl[toks[t + 1]] -= scale / n
        d = [0.0] * N_EMBD
        matvec_back(P['lm_head'], x, dl, G['lm_head'], d)
        dx.append(d)
    for l in reversed(range(N_LAYER)):
        W, D, c = P['layers'][l], G['layers'][l], L[l]
        dxin = []
        dq = [[0.0] * C for _ in range(n)]
        dk = [[0.0] * C for _ in range(n)]
        dv = [[0.0] * C for _ in range(n)]
        dx2s = []
        for t in range(n):
            # MLP: x3 = fc2 relu(fc1 rmsnorm(x2)) + x2
            dg = [0.0] * (4 * C)
            matvec_back(W['fc2'], c['g'][t], dx[t], D['fc2'], dg)
            df = [dg[i] if c['f'][t][i] > 0 else 0.0 for i in range(4 * C)]
            db = [0.0] * C
            matvec_back(W['fc1'], c['b'][t], df, D['fc1'], db)
            dx2 = [a_ + b_ for a_, b_ in zip(dx[t], rmsnorm_back(c['x2'][t], c['sb'][t], db))]
            dx2s.append(dx2)
            # attention output: x2 = wo y + xin
            dy = [0.0] * C
            matvec_back(W['wo'], c['y'][t], dx2, D['wo'], dy)
            for h in range(H):
                sl = range(h * hs, (h + 1) * hs)
                w = c['w'][t][h]
                dw = [sum(dy[i] * c['v'][j][i] for i in sl) for j in range(t + 1)]
                for j in range(t + 1):
                    for i in sl:
                        dv[j][i] += w[j] * dy[i]
                dot = sum(wj * dwj for wj, dwj in zip(w, dw))
                for j in range(t + 1):
                    ds = w[j] * (dw[j] - dot) / math.sqrt(hs)
                    for i in sl:
                        dq[t][i] += ds * c['k'][j][i]
                        dk[j][i] += ds * c['q'][t][i]
        for t in range(n):
            da = [0.0] * C
            matvec_back(W['wq'], c['a'][t], dq[t], D['wq'], da)
            matvec_back(W['wk'], c['a'][t], dk[t], D['wk'], da)
            matvec_back(W['wv'], c['a'][t], dv[t], D['wv'], da)
            dxin.append([a_ + b_ for a_, b_ in zip(dx2s[t], rmsnorm_back(c['xin'][t], c['sa'][t], da))])
        dx = dxin
    for t in range(n):
        de = rmsnorm_back(emb[t], s0[t], dx[t])
        for i in range(N_EMBD):
            G['wte'][toks[t]][i] += de[i]
            G['wpe'][t][i] += de[i]
    return loss


def flat(P):
    mats = [P['wte'], P['wpe'], P['lm_head']]
    for W in P['layers']:
        mats += [W['wq'], W['wk'], W['wv'], W['wo'], W['fc1'], W['fc2']]
    return mats


def main():
    global N_LAYER, N_HEAD, BLOCK
    args = sys.argv[1:]
    if '-h' in args or '--help' in args:
        print(__doc__)
        return
    flags = {}
    while len(args) >= 2 and args[-2].startswith('--'):
        flags[args[-2]] = int(args[-1])
        args = args[:-2]
    N_LAYER = flags.pop('--n-layer', N_LAYER)
    N_HEAD = flags.pop('--n-head', N_HEAD)
    BLOCK = flags.pop('--block-size', BLOCK)
    if flags or len(args) not in (3, 4) or N_EMBD % N_HEAD:
        sys.exit(__doc__)
    path, B, steps = args[0], int(args[1]), int(args[2])
    stop = int(args[3]) if len(args) > 3 else steps
    random.seed(42)
    text = open(path, encoding='utf-8').read()
    docs = [l.strip() for l in text.strip().split('\n') if l.strip()]
    random.shuffle(docs)
    chars = sorted(set(''.join(docs)))
    bos, V, C = len(chars), len(chars) + 1, N_EMBD

    def mat(r, c):
        return [[random.gauss(0, STD) for _ in range(c)] for _ in range(r)]

    P = {'wte': mat(V, C), 'wpe': mat(BLOCK, C), 'lm_head': mat(V, C), 'layers': []}
    for _ in range(N_LAYER):
        P['layers'].append({'wq': mat(C, C), 'wk': mat(C, C), 'wv': mat(C, C), 'wo': mat(C, C),
                            'fc1': mat(4 * C, C), 'fc2': mat(C, 4 * C)})
    params = [row for m in flat(P) for row in m]
    m1 = [[0.0] * len(r) for r in params]
    m2 = [[0.0] * len(r) for r in params]
    print(f"# {path.split('/')[-1]}, seed 42, batch {B}, {steps} steps, defaults otherwise; "
          f"n_layer {N_LAYER}, n_head {N_HEAD}, block_size {BLOCK}; "
          f"scripts/golden_batch.py (independent float64 implementation)")
    print(f"# flags: --batch {B} --steps {steps} --n-layer {N_LAYER} --n-head {N_HEAD} --block-size {BLOCK}")
    for s in range(stop):
        G = {'wte': zeros_like(P['wte']), 'wpe': zeros_like(P['wpe']), 'lm_head': zeros_like(P['lm_head']),
             'layers': [{k: zeros_like(v) for k, v in W.items()} for W in P['layers']]}
        loss = 0.0
        for b in range(B):
            doc = docs[(s * B + b) % len(docs)]
            toks = [bos] + [chars.index(ch) for ch in doc] + [bos]
            loss += doc_forward_backward(P, G, toks, 1.0 / B)
        loss /= B
        lr_t = LR * (1 - s / steps)
        grads = [row for m in flat(G) for row in m]
        for row, grow, mrow, vrow in zip(params, grads, m1, m2):
            for i, g in enumerate(grow):
                mrow[i] = BETA1 * mrow[i] + (1 - BETA1) * g
                vrow[i] = BETA2 * vrow[i] + (1 - BETA2) * g * g
                mh = mrow[i] / (1 - BETA1 ** (s + 1))
                vh = vrow[i] / (1 - BETA2 ** (s + 1))
                row[i] -= lr_t * mh / (math.sqrt(vh) + EPS)
        print(f"{s + 1} {loss!r}")


if __name__ == '__main__':
    main()
