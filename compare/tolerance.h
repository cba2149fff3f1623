// The comparator's rules: one table per precision of every constant a
// verdict rests on (tolerance.c), the statistics the rules use, and the
// element-wise comparison. docs/compare.md says how each constant was
// measured; `make calibrate` measures them again and checks the table.
//
// An element a of the candidate agrees with b, what it should be, when
//     |a - b| <= atol + rtol * |b| + scaled * rms(b of the tensor)
// NaN never agrees, not even with NaN: a NaN in either engine is a failure.
#ifndef COMPARE_TOLERANCE_H
#define COMPARE_TOLERANCE_H

#include <stddef.h>

#include "common/engine.h"
#include "tensor_gpu/layers.h"

// Lockstep compares, per step: the logits, the loss, the gradients, and the
// update (the parameters and Adam's moments m and v after the step); at the
// end the sampling probabilities of the sampled names; and where the
// candidate reports them, every op's output (acts) and the gradient with
// respect to it (dacts): common/activations.h.
typedef enum { Q_LOSS, Q_LOGITS, Q_GRADS, Q_PARAMS, Q_M, Q_V, Q_PROBS, Q_ACTS, Q_DACTS, Q_NUM } Quantity;
// The quantities the trace's per-step max_err/max_rel objects hold (the
// older format; the "errors" list has them all).
#define Q_NUM_LEGACY 4

// One tensor's tolerance: atol and rtol per element, `scaled` in units of
// the RMS of what the tensor should be (so that one constant fits a tensor
// of any width or magnitude).
typedef struct {
    double atol, rtol, scaled;
} Tolerance;

// The ratio rule of the fp32 and mixed-precision candidates (docs/compare.md):
// per tensor, with e(x) = max|x - expected| / rms(expected),
//     e(candidate) <= min(k * e(noise) + floor, cap)         (cap 0: none)
// where e(noise) is the largest error of the noise reference: the CPU engine
// in the candidate's precision with its sums in NOISE_ORDERS' orders, each on
// the same state. The noise reference is itself held to a fixed bound every
// step, e(noise) <= ref_cap, so that a bug in it cannot widen the tolerance.
typedef struct {
    double k, floor, cap;
    double ref_cap;
} RatioRule;

// Everything a verdict in one precision rests on.
typedef struct {
    Tolerance fixed[Q_NUM];    // the fixed rule (fp64's default; fp32's with --tolerance fixed; mixed: none)
    RatioRule ratio[Q_NUM];    // the ratio rule (fp32 and mixed candidates; fp64: unused)
    double drift_tol;          // free mode: the loss band (--drift-tol)
    int drift_window;          // free mode: the window of steps whose mean loss is compared (--drift-window)
    double relu_margin;        // how near 0 both inputs of a flipped ReLU gate must be (--relu-margin)
    double bench_rtol[2];      // the bench's loss agreement at step 1 and step 2 (later: --loss-rtol)
    int bench_window;          // the bench: from step 3 on, the mean of this many steps (1: each step)
} PrecisionRules;

// The noise reference's members: the CPU engine with its sums in each order.
#define NOISE_MEMBERS 3
extern const ReduceOrder NOISE_ORDERS[NOISE_MEMBERS];
// The bench's relative loss agreement from step 3 on (--loss-rtol).
#define BENCH_LOSS_RTOL 3e-2
// --against, a record's tensors: max|a-b| <= AGAINST_FP64_SCALED[q] (fp64
// records, every step) or AGAINST_FP32_SCALED[q] (fp32 records from step 2
// on; step 1, the same start, takes fp32's fixed table) x the tensor's RMS,
// for q = logits, grads, params (0 for the others). A record is a
// free-running run (its own trajectory, not re-synchronized each step as
// lockstep is), so lockstep's constants do not bound it: these are measured
// on records of independent implementations checked against the CPU
// engines (scripts/calibrate.py, family "against").
extern const double AGAINST_FP64_SCALED[Q_NUM];
extern const double AGAINST_FP32_SCALED[Q_NUM];

// The rules of precision p (never NULL for p < PREC_NUM).
const PrecisionRules *rules_for(Precision p);
// The whole table as JSON text (compare --rules); the caller frees it.
char *rules_json(void);

const char *quantity_name(Quantity q);
// Q_NUM if the name is none of the quantities.
Quantity quantity_from_name(const char *name);
// What each quantity is compared against, for the messages.
const char *quantity_what(Quantity q);

typedef struct {
    size_t n;            // elements compared
    double max_abs;      // largest |a - b|
    size_t max_abs_at;
    double max_rel;      // relative error: max|a - b| / max|b| (0 if b is all zero)
    size_t max_rel_at;   // where max|a - b| is
    double max_ratio;    // largest |a - b| / (its tolerance): > 1 means a failure
    size_t worst_at;     // where max_ratio is
    long n_bad;          // elements out of tolerance (NaN included)
    size_t first_bad;    // the first of them (valid when n_bad > 0)
} ErrStats;

// The ratio rule for one tensor: r, without the cap for the gradient of
// mlp_fc1 when gates are not matched (tolerance.c).
RatioRule ratio_for_tensor(RatioRule r, Quantity q, const char *tensor);
// min(k * ref_err + floor, cap): the largest scaled error allowed.
double ratio_bound(RatioRule r, double ref_err);
// Root mean square of x (n elements; NaN if any is NaN).
double rms_of(const double *x, size_t n);
// max|a - b| / rms(b) (max|a-b| itself when rms(b) is 0; NaN if any is NaN).
double scaled_err(const double *a, const double *b, size_t n);

// Compare a and b (n elements) and accumulate into *st (zero it first). The
// relative error is taken against the largest |b| of this call (a tensor, or
// a document's logits): an elementwise |a-b|/|b| means nothing for entries
// that cancel to rounding noise. t.scaled is taken against rms(b) of this call.
void err_compare(const double *a, const double *b, size_t n, Tolerance t, ErrStats *st);
// Merge statistics into a running maximum (offset: where s's indices start).
void err_merge(ErrStats *into, const ErrStats *s, size_t offset);

#endif
