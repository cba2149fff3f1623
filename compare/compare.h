// The comparator's pieces: the command line (cli.c), a run's shared set-up
// and trace envelope (run.c), and the three modes: lockstep.c, free.c and
// bench.c. main.c parses and dispatches.
#ifndef COMPARE_COMPARE_H
#define COMPARE_COMPARE_H

#include <cjson/cJSON.h>

#include "tolerance.h"
#include "common/dataset.h"
#include "common/engine.h"
#include "common/model.h"
#include "common/pyrandom.h"
#include "common/settings.h"
#include "traces/trace.h"

typedef enum { MODE_LOCKSTEP, MODE_FREE } Mode;

#define MAX_ENGINES 8     // --engines E1,E2,... (lockstep and free take exactly 2)
#define MAX_SIZES 32      // --sizes

// What --bench does besides the common options (bench.c).
typedef struct {
    const char *sizes;        // --sizes (NULL: default)
    int both_precisions;      // --precision both
    int repeats;              // --repeats (5): the fewest timed runs
    int max_repeats;          // --max-repeats (20, at least --repeats): the most, while the noise is over target
    double noise_target;      // --noise-target (0.02): stop once the median's interval's relative half-width is this; 0: off
    int warmup;               // --warmup (5)
    double budget_s;          // --time-budget, seconds per size and engine (20)
    double loss_rtol;         // --loss-rtol: relative loss agreement from step 3 on (3e-2)
    int raw_docs;             // --bench-data raw (0: packed, block-long documents)
    const char *baseline;     // --baseline torch (NULL: none)
    const char *markdown;     // --markdown FILE
    const char *python;       // --python (python3)
    int steps_given;          // --steps appeared on the command line
} BenchOptions;

// Test-only (--plant): an error set into one element of what the candidate
// reported, so that the tests can put it just inside or just outside a
// bound they compute from the table (tests/test_bounds.c).
typedef struct {
    int on;
    Quantity q;
    char tensor[96];     // a parameter tensor (grads, params, m, v); empty for loss, logits, probs
    int step;            // 1-based step (probs: the sample)
    double delta;        // lockstep: the element becomes expected + delta * rms(expected of the tensor);
                         // free: the candidate's loss + delta; bench: the last engine's loss * (1 + delta)
    int noise;           // lockstep: set into the noise reference's member J (1..; noise: is 1, noise2: 2) instead
    int relu;            // lockstep, relu@STEP=DELTA: the first ReLU unit's reported inputs become
                         // +DELTA in REF and -DELTA in CAND (a gate flip of that size)
} Plant;

typedef struct {
    Settings s;
    int n_engines;
    const char *names[MAX_ENGINES];   // [0] the reference, [1] the candidate (lockstep, free)
    Precision prec;
    Mode mode;
    int mode_given;
    int bench;
    BenchOptions b;
    Fault fault;
    int fault_op;             // --inject-fault op-fwd:OP / op-bwd:OP: the op (common/activations.h; act_count: loss)
    char fault_op_name[48];
    Tolerance tol[Q_NUM];
    double rtol, atol;        // --rtol/--atol (< 0: not given)
    Tolerance extra[Q_NUM];   // --tol QUANTITY=RTOL[:ATOL]: added to the bound of the rule in force (0: none)
    double drift_tol_arg;     // --drift-tol (< 0: not given)
    double drift_tol;         // for o->prec
    int drift_window;         // --drift-window (0: not given)
    double relu_margin;
    int keep_going, quiet, every;
    const char *against;      // --against TRACE: check a recorded trace (against.c)
    const char *export_dir;   // --export-init DIR: write the run's inputs (export.c)
    int prec_given;           // --precision appeared
    // lockstep
    int tol_ratio;            // --tolerance ratio (default in fp32 with an fp64 reference) or fixed
    int tol_given;            // --tolerance appeared
    RatioRule ratio[Q_NUM];   // the ratio rule per quantity
    int max_excused;          // --max-excused (< 0: max(3, 1% of the steps))
    int samples_given;        // --samples appeared: compare the sampled names at the end
    int sampler_own;          // --sampler own: CAND samples with its own randomness; the distribution is tested
    double loss_scale;        // --loss-scale: fp16's initial loss scale (0: the default, 2^16)
    Plant plant[2];           // --plant (test only): up to two, comma-separated
    int n_plants;
} Options;

// cli.c: parse argv into o; bad usage exits 2 with a message.
void cli_parse(Options *o, int argc, char **argv);
// outputs.c: before the run, note every file it reads and check its
// outputs: writable, none of them an input, no two the same file (exit 2).
void outputs_check(const Options *o);
// The precision engine k computes in (the scalar engine: always fp64).
Precision engine_prec(const Options *o, int k);
// The loss-drift tolerance for a precision: --drift-tol, else the table's (tolerance.c).
double drift_tol_for(const Options *o, Precision p);
// The fixed rule's tolerance of quantity q in precision p: the table's, or
// --rtol/--atol (absolute, per element).
Tolerance fixed_tolerance(const Options *o, Precision p, Quantity q);

// Free mode's window: --drift-window, else 1 (fp64, fp32) or 50 (mixed).
int drift_window_for(const Options *o);

// The excused steps lockstep allows: --max-excused, else max(3, steps/100).
int max_excused_for(const Options *o);

// Everything one lockstep or free run needs (run.c).
typedef struct {
    Options *o;
    Dataset d;
    ParamLayout L;
    double *init;
    PyRandom rng;   // after the shuffle and the init draws
    Engine *e[2];
} Run;

void run_setup(Run *r, Options *o);
Engine *run_make_engine(Run *r, int k);
void run_teardown(Run *r);
// The compare trace's envelope (settings, dataset, engines, mode,
// tolerances); returns the "steps" array.
cJSON *run_trace_header(Trace *t, Run *r);
// A step's trace entry: its number, lr, and each engine's loss and time.
// At the start of step `step` (0-based): a pending SIGINT/SIGTERM stops the
// run here (trace and timeline written), and a failure from here on is
// traced at this step.
void run_step_begin(Trace *t, int step);
// The timeline of engine k's step (--timeline): the step [t0, t0+dt) and,
// inside it, the phases the engine reports (EngineOps.step_phases).
void run_timeline_step(Engine *e, int k, double t0, double dt, int step);
cJSON *run_trace_step(const Options *o, int step, const double loss[2], const double dt[2]);

// The modes; each returns 1 on a mismatch, 0 if the engines agree.
int lockstep_run(Run *r, Trace *t, cJSON *steps);
int free_run(Run *r, Trace *t, cJSON *steps);
// A trace another program wrote, checked against engine names[0] (against.c).
int against_main(Options *o);
// The settings, initial parameters, documents and batches (export.c).
int export_main(Options *o);
// The benchmark runs its own sizes and engines (and writes its own trace).
int bench_main(Options *o);

#endif
