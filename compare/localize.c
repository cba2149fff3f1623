#include "localize.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

// Append to a text buffer.
static void cat(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cat(char *out, size_t n, const char *fmt, ...) {
    const size_t len = strlen(out);
    if (len + 1 >= n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + len, n - len, fmt, ap);
    va_end(ap);
}

// The ops that read op x's output (its consumers); returns how many.
static int consumers(const ModelShape *m, int x, int *out, int max) {
    int k = 0, in[2];
    for (int i = 0; i < act_count(m) && k < max; i++) {
        const int ni = act_inputs(m, i, in);
        for (int j = 0; j < ni; j++)
            if (in[j] == x) out[k++] = i;
    }
    return k;
}

// The index of parameter tensor (kind, layer) in the layout, or -1.
static int tensor_index(const ParamLayout *L, ParamKind kind, int layer) {
    for (int i = 0; i < L->n_tensors; i++)
        if (L->t[i].kind == kind && (L->t[i].layer == layer || L->t[i].layer < 0)) return i;
    return -1;
}

static void op_text(const ModelShape *m, int i, char *out, size_t n) {
    ActOp op;
    act_op(m, i, &op);
    snprintf(out, n, "%s (%s)", op.what, op.name);
}

// The ops not reported (state -1) that op i's forward depends on through
// other unreported ops (dir 0: what it reads, back to reported ones), or
// whose backward runs before its own (dir 1: its consumers, onward); their
// names appended to out. Returns how many.
static int unreported_near(const ModelShape *m, const signed char *state, int na, int i, int dir, char *out,
                           size_t n) {
    int stack[64], top = 0, count = 0;
    unsigned char seen[1024] = {0};
    if (na > (int)sizeof seen) return 0;
    stack[top++] = i;
    while (top) {
        const int x = stack[--top];
        int next[8], nn = dir ? consumers(m, x, next, 8) : act_inputs(m, x, next);
        for (int j = 0; j < nn; j++) {
            const int y = next[j];
            if (y >= na || seen[y] || state[y] != -1) continue;
            seen[y] = 1;
            ActOp op;
            act_op(m, y, &op);
            cat(out, n, "%s%s", count++ ? ", " : " ", op.name);
            if (top < (int)(sizeof stack / sizeof stack[0])) stack[top++] = y;
        }
    }
    return count;
}

void localize_ops(const ModelShape *m, const ParamLayout *L, const StepEvidence *ev, Divergence *d) {
    memset(d, 0, sizeof *d);
    d->err = d->bound = NAN;
    const int n = ev->n_ops, ce = act_count(m);
    char what[160];
    // forward: the first op whose output is off
    for (int i = 0; i < n; i++) {
        if (ev->fwd[i] != 1) continue;
        op_text(m, i, what, sizeof what);
        d->found = 1, d->op = i, d->backward = 0;
        d->err = ev->fwd_err[i], d->bound = ev->fwd_bound[i];
        ActOp op;
        act_op(m, i, &op);
        snprintf(d->op_name, sizeof d->op_name, "%s", op.name);
        snprintf(d->text, sizeof d->text, "first divergence: %s, forward: its output is off (err %.3g of its RMS, "
                 "allowed %.3g)", what, d->err, d->bound);
        int in[2], ni = act_inputs(m, i, in), agree = 1;
        for (int j = 0; j < ni; j++) agree &= ev->fwd[in[j]] == 0;
        char unrep[256] = "";
        if (unreported_near(m, ev->fwd, n, i, 0, unrep, sizeof unrep)) {
            // an op before it may have broken unseen: name it as the first
            // reported op that is off, and the ops that could be at fault
            snprintf(d->text, sizeof d->text, "first divergence: %s, forward: the first reported op whose output is "
                     "off (err %.3g of its RMS, allowed %.3g); what it reads is not reported, so the fault lies in it "
                     "or in the unreported ops before it:%s", what, d->err, d->bound, unrep);
        } else if (ni && agree) {
            cat(d->text, sizeof d->text, "; what it reads agrees:");
            for (int j = 0; j < ni; j++) {
                act_op(m, in[j], &op);
                cat(d->text, sizeof d->text, " %s", op.name);
            }
        } else if (!ni) {
            cat(d->text, sizeof d->text, "; it reads the parameters wte and wpe");
        }
        return;
    }
    if (ev->loss_bad && ev->logits_bad == 0) {   // not when the logits were not compared (-1)
        d->found = 1, d->op = ce, d->backward = 0;
        snprintf(d->op_name, sizeof d->op_name, "loss");
        snprintf(d->text, sizeof d->text, "first divergence: the cross-entropy (the loss), forward: the logits agree, "
                 "the loss does not");
        return;
    }
    // backward: the op whose backward runs first (the latest in forward
    // order) among those that received a gradient that agrees and passed
    // one that does not, to an input or to its weight
    int best = -1, best_input = -1, best_weight = -1;
    for (int x = 0; x < n; x++) {
        if (ev->bwd[x] != 1) continue;
        int c[8], nc = consumers(m, x, c, 8), ok = 1;
        for (int j = 0; j < nc; j++) ok &= ev->bwd[c[j]] != 1;
        if (!ok) continue;
        const int culprit = x == n - 1 ? ce : nc ? c[nc - 1] : x;
        if (culprit > best) best = culprit, best_input = x, best_weight = -1;
    }
    for (int y = 0; y < n; y++) {
        ActOp op;
        act_op(m, y, &op);
        ParamKind second, k = act_weight(&op, &second);
        if (k == P_NUM_KINDS || ev->bwd[y] == 1) continue;
        int t = tensor_index(L, k, op.layer), t2 = second != P_NUM_KINDS ? tensor_index(L, second, op.layer) : -1;
        const int bad = (t >= 0 && ev->grad_bad[t]) || (t2 >= 0 && ev->grad_bad[t2]);
        if (bad && y > best) best = y, best_input = -1, best_weight = ev->grad_bad[t] ? t : t2;
    }
    if (best < 0) return;
    d->found = 1, d->op = best, d->backward = 1;
    if (best == ce) {
        snprintf(d->op_name, sizeof d->op_name, "loss");
        d->err = ev->bwd_err[n - 1], d->bound = ev->bwd_bound[n - 1];
        snprintf(d->text, sizeof d->text, "first divergence: the cross-entropy, backward: the logits' gradient is off "
                 "(err %.3g of its RMS, allowed %.3g) %s", d->err, d->bound,
                 ev->logits_bad == 0   ? "while the logits agree"
                 : ev->logits_bad > 0 ? "and so are the logits"
                                       : "(the logits are not offered: whether they agree is not known)");
        return;
    }
    ActOp op;
    act_op(m, best, &op);
    snprintf(d->op_name, sizeof d->op_name, "%s", op.name);
    if (best_input >= 0) {   // the op named: the first of those that pass gradient into the input, a residual add last
        int c[8], nc = consumers(m, best_input, c, 8), pick = -1;
        for (int j = 0; j < nc && pick < 0; j++) {
            ActOp co;
            act_op(m, c[j], &co);
            if (co.kind != ACT_RES1 && co.kind != ACT_RES2) pick = c[j];
        }
        if (pick >= 0) {
            act_op(m, pick, &op);
            snprintf(d->op_name, sizeof d->op_name, "%s", op.name);
            d->op = pick;
        }
    }
    char unrep[256] = "";   // the ops whose backward runs before this one's and were not reported
    if (best_weight >= 0) {
        if (ev->bwd[best] == -1) {   // what it received, and the unreported ops' backward before that
            cat(unrep, sizeof unrep, " %s", op.name);
            unreported_near(m, ev->bwd, n, best, 1, unrep, sizeof unrep);
        }
        if (unrep[0])
            snprintf(d->text, sizeof d->text, "first divergence: %s (%s), backward: its weight gradient %s is off; the "
                     "gradient it received is not reported, so the fault lies in its backward or in the unreported "
                     "ops' after it:%s", op.what, op.name, L->t[best_weight].name, unrep);
        else
            snprintf(d->text, sizeof d->text, "first divergence: %s (%s), backward: its weight gradient %s is off "
                     "while the gradient it received agrees", op.what, op.name, L->t[best_weight].name);
        return;
    }
    // the input x's gradient is off: name every op that passes gradient into x
    int c[8], nc = consumers(m, best_input, c, 8);
    ActOp xo;
    act_op(m, best_input, &xo);
    d->err = ev->bwd_err[best_input], d->bound = ev->bwd_bound[best_input];
    snprintf(d->text, sizeof d->text, "first divergence: ");
    for (int j = 0; j < nc; j++) {
        ActOp co;
        act_op(m, c[j], &co);
        cat(d->text, sizeof d->text, "%s%s (%s)", j ? (j + 1 == nc ? " or " : ", ") : "", co.what, co.name);
    }
    cat(d->text, sizeof d->text, ", backward: the gradient %s into %s is off (err %.3g of its RMS, allowed %.3g)",
        nc > 1 ? "they pass" : "it passes", xo.name, d->err, d->bound);
    if (unreported_near(m, ev->bwd, n, best_input, 1, unrep, sizeof unrep))
        cat(d->text, sizeof d->text, "; the gradient %s received is not reported, so the fault lies there or in the "
            "unreported ops' backward after it:%s", nc > 1 ? "they" : "it", unrep);
    else
        cat(d->text, sizeof d->text, " while the gradient %s received agrees", nc > 1 ? "they" : "it");
}

int localize_grads(const ModelShape *m, const ParamLayout *L, const signed char *grad_bad, char *out, size_t n) {
    // the tensors in backward order, with the op each belongs to
    int order[256], op_of[256], k = 0;
    for (int i = act_count(m) - 1; i >= 0 && k < 254; i--) {
        ActOp op;
        act_op(m, i, &op);
        ParamKind second, kind = act_weight(&op, &second);
        if (kind == P_NUM_KINDS) continue;
        int t = tensor_index(L, kind, op.layer);
        if (t >= 0) order[k] = t, op_of[k++] = i;
        if (second != P_NUM_KINDS && (t = tensor_index(L, second, op.layer)) >= 0) order[k] = t, op_of[k++] = i;
    }
    out[0] = '\0';
    int first_bad = -1, last_good = -1;
    cat(out, n, "gradients in backward order:");
    for (int j = 0; j < k; j++) {
        cat(out, n, " %s %s%s", L->t[order[j]].name, grad_bad[order[j]] ? "OFF" : "ok", j + 1 < k ? "," : "");
        if (grad_bad[order[j]] && first_bad < 0) first_bad = j;
        if (!grad_bad[order[j]] && first_bad < 0) last_good = j;
    }
    if (first_bad < 0) return 0;
    cat(out, n, "\n  the first off is %s", L->t[order[first_bad]].name);
    ActOp op;
    if (last_good < 0) {
        cat(out, n, ", the first in backward order: what lies before it is the cross-entropy's backward and ");
        act_op(m, op_of[first_bad], &op);
        cat(out, n, "%s (%s)", op.what, op.name);
        return 1;
    }
    // the ops whose backward runs after the last that agrees and up to the first that does not
    const int hi = op_of[last_good], lo = op_of[first_bad];
    cat(out, n, "; between it and the last that agrees (%s) lie the backward of:", L->t[order[last_good]].name);
    int any = 0;
    for (int i = hi - (hi == lo ? 0 : 1); i >= lo; i--) {
        act_op(m, i, &op);
        cat(out, n, "%s %s (%s)", any++ ? "," : "", op.what, op.name);
    }
    return 1;
}

int loss_definition_note(const double *ref_logits, const int *tokens, const int *n, int B, int T, int V,
                         double cand_loss, int token_mean, char *out, size_t len) {
    double doc_mean = 0, sum = 0, n_all = 0;
    const double *l = ref_logits;
    for (int b = 0; b < B; b++) {
        double doc = 0;
        for (int t = 0; t < n[b]; t++, l += V) {   // -log softmax(l)[target], max-shifted
            double mx = l[0], z = 0;
            for (int i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
            for (int i = 0; i < V; i++) z += exp(l[i] - mx);
            doc += log(z) - (l[tokens[(size_t)b * (T + 1) + t + 1]] - mx);
        }
        doc_mean += doc / n[b] / B, sum += doc, n_all += n[b];
    }
    const double token = sum / n_all, ours = token_mean ? token : doc_mean, other = token_mean ? doc_mean : token;
    const char *ours_name = token_mean ? "token-mean" : "doc-mean", *other_name = token_mean ? "doc-mean" : "token-mean";
    const double d_ours = fabs(cand_loss - ours), d_other = fabs(cand_loss - other);
    if (d_other * 1000 <= d_ours) {
        snprintf(out, len, "the candidate's loss %.9g is the %s of the reference's logits (%.9g, |a-b| %.2g), not "
                 "the %s this run uses (%.9g): %s; run with --loss %s to check it as it is, or compute the %s",
                 cand_loss, other_name, other, d_other, ours_name, ours,
                 token_mean ? "it averages each document first (the original's loss)"
                            : "it averages over all the batch's tokens (F.cross_entropy's default)",
                 other_name, ours_name);
        return 1;
    }
    snprintf(out, len, "the loss from the reference's logits: doc-mean %.9g, token-mean %.9g; the candidate's "
             "%.9g is neither", doc_mean, token, cand_loss);
    return 0;
}
