// The benchmark's pieces (docs/BENCHMARKS.md): the sizes and the work they
// train (bench_sizes.c), one engine timed in a child process and the PyTorch
// baseline (bench_run.c), and the run, its checks and its report (bench.c).
#ifndef COMPARE_BENCH_H
#define COMPARE_BENCH_H

#include <stddef.h>

#include "compare.h"
#include "common/dataset.h"
#include "common/model.h"

// One size: every setting of its run, and the documents it trains.
typedef struct {
    char name[32];      // "b256", or "spec1" for a SPEC
    char spec[160];     // the settings that differ from the default model, as key=value
    Settings s;
    Dataset d;          // shuffled; packed into block-long lines unless --bench-data raw
    char data_desc[256];// what the documents are, for the report
    ParamLayout L;
    double *init;       // the initial parameters (drawn after the shuffle, as the original)
    Batch *batches;     // (steps) the batch of every step
    double positions;   // trained positions per step, averaged over the steps
    double flops;       // estimated floating-point operations of one training step
} BenchSize;

typedef enum { ROW_OK, ROW_SKIPPED, ROW_UNAVAILABLE, ROW_FAILED } RowStatus;

#define BENCH_MAX_REPEATS 64

// Why a row's timing stopped at the runs it has (bench_run.c): the noise
// target was met, --max-repeats was reached, the time budget was spent, or
// the number of runs was fixed (--noise-target 0, and the PyTorch rows,
// which time --repeats runs).
typedef enum { STOP_NONE, STOP_NOISE, STOP_MAX, STOP_BUDGET, STOP_FIXED } StopReason;
// "noise", "max_repeats", "budget", "fixed" (NULL for STOP_NONE): the trace's words.
const char *bench_stop_name(StopReason s);

// One engine at one precision on one size, as measured.
typedef struct {
    char engine[160];         // "scalar", "cpu", "cuda", "plugin:...", "exec:...", "torch-graph", "torch-compile",
                              // "torch-eager"
    Precision prec;
    RowStatus status;
    char why[512];            // skipped / failed: the reason
    char device[128];         // where it ran
    int repeats;              // timed runs done
    int warmup;               // untimed steps at the start of each run
    int timed_steps;          // steps in each timed run
    double ms[BENCH_MAX_REPEATS];   // ms/step of each timed run
    double ms_med, ms_min, ms_max;
    double ci_lo, ci_hi;      // the median's 95% bootstrap interval (NaN: fewer than BENCH_CI_MIN_RUNS runs)
    double noise;             // its relative half-width (NaN: none)
    StopReason stop;          // why the timing stopped
    int steps_ran;            // losses[0 .. steps_ran-1] are known
    double *losses;
    double peak_host_bytes, peak_device_bytes;   // NaN: unknown
    double compile_s;         // torch-compile: the warm-up's wall seconds, compile included (not timed); NaN: none
    char compile_mode[16];    // torch-compile: the mode it was compiled with (--torch-compile)
    // the check against the other engines
    int checked;              // 1 if compared with another engine
    char checked_against[64];
    double max_drift;         // largest |loss - reference loss| / |reference loss|
    int drift_step;           // where (1-based)
    double drift_tol;         // --loss-rtol
    int fail;                 // 1: a wrong loss or nondeterminism
    char verdict[256];
} BenchRow;

// bench_sizes.c
// Parse --sizes into sizes[] (at most max) on top of the settings base;
// exits 2 with a message on a bad list. Returns how many.
int bench_sizes_parse(const char *list, const Settings *base, BenchSize *sizes, int max);
// Load the data, build the documents (packed unless raw), shuffle, draw the
// initial weights and make every step's batch; exits 2 on bad data.
void bench_size_prepare(BenchSize *z, int raw_docs);
// Every step's batch (z->batches), built once, when the first engine that
// fits runs (exit 2 when they alone cannot fit in memory).
void bench_size_batches(BenchSize *z);
void bench_size_free(BenchSize *z);
// Bytes of host memory engine `name` needs for size z (an estimate, to
// refuse what cannot fit).
double bench_host_bytes_estimate(const char *name, const BenchSize *z, Precision p);

// bench_run.c
// Time engine `name` at precision p on size z in a child process (so that
// its peak memory is its own and a runaway run can be stopped): `fault` is
// injected, o gives repeats, warm-up and budget. Fills row.
void bench_run_engine(const Options *o, BenchSize *z, const char *name, Precision p, Fault fault,
                      BenchRow *row);
// The PyTorch baseline on size z at precision p, in this order: the CUDA
// graph of the eager step ("torch-graph"), the CUDA graph of the
// torch.compile'd one ("torch-compile", unless --torch-compile off) and eager
// ("torch-eager"). Every row is skipped with the reason where torch or a GPU
// is missing. Fills rows[0 ..] and returns how many (at most BENCH_TORCH_ROWS).
#define BENCH_TORCH_ROWS 3
int bench_run_torch(const Options *o, BenchSize *z, Precision p, const char *workdir,
                    BenchRow rows[BENCH_TORCH_ROWS]);
// --torch-compile default|max-autotune|off (cli.c): torch_baseline.py's
// --compile-mode; default until set. 0, or -1 for a value it does not know.
int bench_set_torch_compile(const char *mode);
// The host CPU's model name (/proc/cpuinfo), or "unknown CPU".
void bench_host_cpu(char *out, size_t n);
// Median, min, max, the median's interval and its noise of row->ms[0 .. repeats-1].
void bench_row_stats(BenchRow *row);

#endif
