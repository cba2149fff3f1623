// --against's checks of one step's tensor file (compare/against.c runs the
// reference engine and reads the files; these compare what a file holds
// with the reference's values). Apart so that fuzz/fuzz_against.c can run
// them on arbitrary files without an engine.
#ifndef COMPARE_AGAINST_CHECK_H
#define COMPARE_AGAINST_CHECK_H

#include "common/model.h"
#include "common/safetensors.h"
#include "compare/tolerance.h"

// The first failure of a run: its step and what failed.
typedef struct {
    int failed, step;
    char what[512];
} AgainstFirst;

void against_first_fail(AgainstFirst *f, int step, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// The reference a file is checked against. get(ctx, q, out) fills out with
// the reference's Q_LOGITS (B,T,V) or Q_GRADS / Q_PARAMS (the layout's
// order), or returns -1 when it has none of q (the logits of a partial
// engine); it is asked for Q_GRADS and Q_PARAMS at every file, for Q_LOGITS
// when the file holds logits.
typedef struct {
    const ParamLayout *L;
    const Tolerance *tol;   // [Q_NUM]
    const char *engine;     // the reference's name (messages)
    const char *recorder;   // the record's engine (messages)
    int (*get)(void *ctx, Quantity q, double *out);
    void *ctx;
    double *lg, *rlg;       // room for B*T*V numbers each (the largest batch)
    double *rec, *ref;      // room for the layout's parameters each
} AgainstRef;

// What one step's file held.
typedef struct {
    int have[Q_NUM];    // 1 for each quantity it records (logits, grads, params)
    double err[Q_NUM];  // the largest |a-b| of each
    double scaled[Q_NUM];   // the largest max|a-b| / rms(b) of each over its tensors (fp64's statistic)
    int bad;            // a value out of tolerance (the first goes to AgainstFirst)
    char *zero_note;    // malloc'd: the tensors whose recorded gradient is all zero (or NULL)
} AgainstStep;

// Check the file `file` of step `step`: "logits" (B,T,V) of a batch whose
// documents have n[b] real positions, and every grads/<tensor> and
// params/<tensor> of the layout or none of them; at least one of the three,
// nothing else. A file that holds anything else, a tensor of another shape
// or only some tensors of a quantity is refused (exit 2, naming the file).
void against_check_file(const AgainstRef *r, const StFile *sf, const char *file, int B, int T, const int *n, int step,
                        AgainstFirst *f, AgainstStep *out);

#endif
