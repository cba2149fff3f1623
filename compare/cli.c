// compare's command line: options, usage, parsing.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "chisq.h"
#include "compare.h"
#include "engines.h"
#include "plugin_engine.h"
#include "common/activations.h"
#include "common/util.h"
#include "traces/trace.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: compare --engines REF,CAND [flags]\n"
            "       compare --bench --engines E1[,E2,...] [bench flags]\n"
            "Run two engines on the same documents from the same initial weights and compare\n"
            "them. REF is the reference: an element a of CAND agrees with b of REF when\n"
            "|a-b| <= atol + rtol*|b|.\n\n"
            "  --engines REF,CAND   engines to compare, e.g. scalar,cpu or scalar,cuda (required).\n"
            "                       An engine is scalar, cpu, cuda (the fused step where the model\n"
            "                       fits, else the layered path), cuda:fused, cuda:layered (that path\n"
            "                       forced), plugin:PATH.so (a shared library\n"
            "                       exporting include/microgpt/engine_abi.h) or exec:'CMD ARGS' (a\n"
            "                       process speaking the protocol of docs/outside_engines.md), e.g.\n"
            "                       --engines scalar,exec:'python3 examples/numpy_engine.py'\n"
            "  --precision P        fp64, fp32, bf16, fp16 or tf32: the precision of the tensor\n"
            "                       engines; the scalar engine is always fp64 (fp64); --bench also\n"
            "                       takes both (fp64 and fp32), bf16 and tf32 (not fp16: its loss\n"
            "                       scale is decided on the host between steps). bf16, fp16, tf32:\n"
            "                       the mixed-precision recipe of docs/mixed_precision.md (fp32\n"
            "                       master state, products on operands rounded to nearest even, fp32\n"
            "                       sums; cpu emulates it, cuda runs it on tensor cores, layered path)\n"
            "  --loss-scale X       fp16: the initial loss scale, a power of two (65536); dynamic as\n"
            "                       torch's GradScaler: an overflowed step is skipped, the scale halved\n"
            "  --mode M             lockstep: every step both start from REF's parameters and Adam\n"
            "                       state; every logit, the loss and every gradient tensor are\n"
            "                       compared with REF's, and CAND's updated parameters with Adam\n"
            "                       applied in fp64 to CAND's own gradients (default)\n"
            "                       free: both train on their own; the loss curves are compared\n"
            "  --rtol X, --atol X   override the tolerance of every compared quantity\n"
            "  --tol Q=RTOL[:ATOL]  add atol + rtol*|b| to the bound of one quantity (loss, logits,\n"
            "                       grads, params, moments, m, v, probs, acts, dacts) on top of the\n"
            "                       rule in force, e.g. --tol loss=2e-8 for a loss of -log(p + 1e-10);\n"
            "                       repeatable (lockstep and --against)\n"
            "  --drift-tol X        free mode: largest allowed |loss difference| (fp64 1e-9, fp32 2e-3,\n"
            "                       bf16, fp16 and tf32 3e-2)\n"
            "  --drift-window W     free mode: compare the mean loss of the last W steps (1; 50 for\n"
            "                       bf16, fp16 and tf32)\n"
            "  --relu-margin X      lockstep: where rounding flips a ReLU gate and both inputs lie\n"
            "                       within X of 0, CAND's gradients are compared with the fp64 model's\n"
            "                       under CAND's own gates, so the flip must explain the difference\n"
            "                       (fp64 1e-12, fp32 1e-5, bf16 1e-2, fp16 and tf32 1e-3; 0: never)\n"
            "  --tolerance T        lockstep: the rule (docs/compare.md; every constant: --rules).\n"
            "                       fixed: per element |a-b| <= atol + rtol*|b| + scaled*rms(b) (fp64's\n"
            "                       default: max|a-b| <= scaled*rms(b)); ratio (fp32, bf16, fp16, tf32\n"
            "                       with an fp64 REF): per tensor e = max|a-b|/rms(b) at most\n"
            "                       min(k*e_noise + floor, cap), e_noise the largest e of the noise\n"
            "                       reference (the CPU engine in CAND's precision with its sums in 3\n"
            "                       other orders), itself held to a fixed bound; k, floor and caps per\n"
            "                       precision and quantity, calibrated (make calibrate). The mixed\n"
            "                       precisions have no fixed table (give --rtol and --atol)\n"
            "  --max-excused N      lockstep: more than N fp16 steps skipped by loss scaling fail the\n"
            "                       run (default max(3, 1%% of the steps))\n"
            "  --samples N          lockstep: at the end both engines sample N names from REF's final\n"
            "                       state; the names and each step's probabilities are compared\n"
            "  --sampler S          lockstep: how the samples are checked. harness (default): both\n"
            "                       engines sample with the harness's random stream; the names must\n"
            "                       agree. own: CAND samples --samples N names (1000) with its own\n"
            "                       randomness (an exec: engine its own generator, any other engine\n"
            "                       a stream independent of REF's), REF 4N with the harness's; two\n"
            "                       chi-square tests, the first character (BOS: the empty name)\n"
            "                       against REF's exact probabilities at position 0 and the name\n"
            "                       length against REF's names, categories with an expected count\n"
            "                       below 5 pooled, fail the run at a false-alarm rate of 1e-3 per\n"
            "                       run (5e-4 each, Bonferroni)\n"
            "  --keep-going         lockstep: go on after a failing step (exit 1 at the end)\n"
            "  --every N            print one line every N steps (1)\n"
            "  --quiet              print only the summary (bench: no progress on stderr)\n"
            "  --exec-timeout S     seconds to wait for each reply of an exec: engine before killing\n"
            "                       it (60)\n"
            "  --against TRACE      check a trace another program recorded (per-step losses, and\n"
            "                       logits, gradients and parameters where it names safetensors\n"
            "                       files) against the one engine of --engines run on the trace's\n"
            "                       settings (a flag may only repeat them; without settings, give\n"
            "                       them all as flags); losses rounded to D decimals are allowed\n"
            "                       half a unit of the last one. A printed log becomes a trace with\n"
            "                       scripts/log_to_trace.py (docs/outside_engines.md)\n"
            "  --export-init DIR    write the run's inputs to DIR, no engine run: settings.json, the\n"
            "                       initial parameters (init.safetensors), the documents in training\n"
            "                       order (documents.txt) and every step's batch (batches.safetensors)\n"
            "  --inject-fault F     test only: make CAND (the second engine) commit fault F\n"
            "                       (attn-scale, causal-mask, rmsnorm-bwd, grad-sign, adam-bias,\n"
            "                       small-grads: the cpu engine drops gradients below 1e-6,\n"
            "                       lowp-truncate: with bf16, fp16 or tf32 the cpu engine truncates\n"
            "                       instead of rounding to nearest; op-fwd:OP, op-bwd:OP: the cpu\n"
            "                       engine's op OP (common/activations.h, e.g. layer0.q; op-bwd also\n"
            "                       loss, the cross-entropy) is off by 1%% in one element of its\n"
            "                       output, or of the gradient its backward passes on) to show the\n"
            "                       check catches it and names the op\n"
            "  --plant SPEC[,SPEC]  test only: [noise[J]:]QUANTITY[:TENSOR]@STEP=DELTA sets one element of\n"
            "                       what CAND (or member J of the noise reference) reported at STEP to its expected\n"
            "                       value + DELTA x the tensor's RMS (free mode: CAND's loss + DELTA;\n"
            "                       bench: the last engine's loss x (1 + DELTA)); relu@STEP=DELTA makes\n"
            "                       the first ReLU unit's reported inputs +DELTA in REF, -DELTA in CAND;\n"
            "                       the tests put an error just inside or outside a bound with it\n"
            "  --rules              print the constants of every rule and precision as JSON (the one\n"
            "                       table of compare/tolerance.c; docs/compare.md) and exit\n"
            "  --help               this text\n"
            "\n"
            "benchmark (docs/BENCHMARKS.md):\n"
            "  --bench              time each engine on the same work and print a Markdown table:\n"
            "                       ms/step median (95%% confidence interval) [min-max], tokens/s,\n"
            "                       speedups (over E1 and over the fastest PyTorch row, with their\n"
            "                       intervals; none from a row of fewer than 3 runs), memory, the\n"
            "                       runs and what stopped them, verdict; every engine's losses\n"
            "                       are checked against the engines before it (exit 1 on a\n"
            "                       mismatch): step 1 (the forward from the shared weights)\n"
            "                       to 1e-12 relative (1e-6 with fp32, 3e-5 tf32, 1e-3 bf16), step 2 (one\n"
            "                       update) to 1e-5 (1e-4, 1e-3, 3e-3), later steps to --loss-rtol (with\n"
            "                       bf16 or tf32: the mean of the last 50 steps). E1 is the\n"
            "                       reference; --engines takes any number of engines. A bench\n"
            "                       that times nothing (every engine skipped at every size) exits 2\n"
            "  --sizes LIST         what to time, comma-separated: default (the model and data flags),\n"
            "                       sweep (b1,b32,b256,e64,e128,e512), one of those names, or a SPEC of\n"
            "                       key=value items (n_embd, n_head, n_kv_head, n_layer, block_size,\n"
            "                       batch, lr, init_std) on top of the flags; ';' or a name ends a SPEC, e.g.\n"
            "                       'b1,n_embd=128,n_layer=4,batch=256' (default)\n"
            "  --repeats N          the fewest timed runs per engine and size; the median with its\n"
            "                       95%% bootstrap interval, min and max are reported (5)\n"
            "  --max-repeats M      the most timed runs of our engines while the noise is over\n"
            "                       --noise-target; PyTorch's rows time --repeats runs (20, or N)\n"
            "  --noise-target X     stop timing an engine once its median's interval's half-width is\n"
            "                       at most X of the median (after N runs, 3 at least), at M runs or\n"
            "                       when the time budget is spent; the table says which; 0: exactly\n"
            "                       N runs (0.02)\n"
            "  --warmup N           untimed steps at the start of every run, at least 1 (5)\n"
            "                       (a run is --steps N steps, warm-up included: 100 with --bench)\n"
            "  --time-budget S      seconds per size and engine; a slow engine times fewer steps\n"
            "                       and repeats (the table says so) or is skipped; it also ends\n"
            "                       the runs past N of every engine (20)\n"
            "  --bench-data D       packed: documents are the data's lines joined by spaces into\n"
            "                       lines of at least block_size characters, so every position of\n"
            "                       every batch is real (default); raw: the data as it is\n"
            "  --baseline torch     also time scripts/torch_baseline.py (PyTorch on CUDA: rows\n"
            "                       torch-graph, the whole step as one CUDA graph; torch-compile, the\n"
            "                       same with the forward and loss torch.compile'd; torch-eager) on\n"
            "                       the same documents and initial weights; skipped with the reason\n"
            "                       where torch or a GPU is missing\n"
            "  --torch-compile M    --baseline torch: torch.compile's mode for the torch-compile row:\n"
            "                       default, max-autotune (without inductor's own CUDA graphs), or\n"
            "                       off (no torch-compile row); its compile time is printed, not\n"
            "                       timed (default)\n"
            "  --loss-rtol X        relative agreement of the losses from step 3 on, where training\n"
            "                       dynamics, not precision, set the differences (3e-2)\n"
            "  --python CMD         the Python interpreter for --baseline (python3)\n"
            "  --markdown FILE      also write the table to FILE\n"
            "\n"
            "model and data flags (as build/microgpt):\n");
    settings_print_help(f, 1);
    fprintf(f, "\nExit codes: 0 the engines agree, 1 a mismatch (or a run failure, or a table that\n"
               "could not be written), 2 bad usage, bad data, an engine that cannot run here (e.g. no\n"
               "GPU), or a bench that timed nothing.\n");
}

static double nonneg_flag(const char *flag, const char *v) {
    double x;
    if (parse_double(v, &x) || x < 0) die(EXIT_USAGE, "%s: '%s' is not a number >= 0", flag, v);
    return x;
}

// Split "a,b,c" into o->names (pointers into a copy of v).
static void parse_engines(Options *o, const char *v) {
    char *list = xstrdup(v);   // kept for the program's life: o->names point into it
    o->n_engines = 0;
    for (char *p = list;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        if (!*p) die(EXIT_USAGE, "--engines: '%s' has an empty engine name", v);
        if (!engine_known(p))
            die(EXIT_USAGE, "--engines: unknown engine '%s' (scalar, cpu, cuda, cuda:fused, cuda:layered, plugin:PATH.so or exec:CMD ARGS)", p);
        if (o->n_engines == MAX_ENGINES) die(EXIT_USAGE, "--engines: at most %d engines", MAX_ENGINES);
        for (int k = 0; k < o->n_engines; k++)
            if (!strcmp(o->names[k], p))
                die(EXIT_USAGE, "--engines: '%s' is named twice; an engine checked against itself proves "
                    "nothing (e.g. --engines scalar,%s)", p, strcmp(p, "scalar") ? p : "cpu");
        o->names[o->n_engines++] = p;
        if (!comma) break;
        p = comma + 1;
    }
}

// --tol QUANTITY=RTOL[:ATOL] (repeatable): atol + rtol*|b| added to each
// element's bound for that quantity ("moments": m and v), whatever the rule.
static void parse_tol(Options *o, const char *v) {
    const char *eq = strchr(v, '=');
    char name[16], num[64];
    if (!eq || eq == v || (size_t)(eq - v) >= sizeof name || strlen(eq + 1) >= sizeof num)
        die(EXIT_USAGE, "--tol: '%s' is not QUANTITY=RTOL[:ATOL] (e.g. --tol loss=2e-8 or --tol grads=1e-6:1e-9)", v);
    snprintf(name, sizeof name, "%.*s", (int)(eq - v), v);
    snprintf(num, sizeof num, "%s", eq + 1);
    char *colon = strchr(num, ':');
    if (colon) *colon = '\0';
    double rtol, atol = 0;
    if (parse_double(num, &rtol) || rtol < 0 || (colon && (parse_double(colon + 1, &atol) || atol < 0)))
        die(EXIT_USAGE, "--tol %s: '%s' is not RTOL[:ATOL] with both finite and >= 0", name, eq + 1);
    const int moments = !strcmp(name, "moments");
    const Quantity q = moments ? Q_M : quantity_from_name(name);
    if (q == Q_NUM)
        die(EXIT_USAGE, "--tol: unknown quantity '%s' (loss, logits, grads, params, moments, m, v, probs, acts, "
            "dacts)", name);
    for (int k = 0; k < 1 + moments; k++) {
        Tolerance *t = &o->extra[k ? Q_V : q];
        if (t->rtol > 0 || t->atol > 0) die(EXIT_USAGE, "--tol: %s is given twice", quantity_name(k ? Q_V : q));
        *t = (Tolerance){atol, rtol, 0};
    }
}

// --plant [noise:]QUANTITY[:TENSOR]@STEP=DELTA[,...] (test only; compare.h Plant).
static void parse_one_plant(Plant *p, const char *v) {
    char buf[256];
    if (strlen(v) >= sizeof buf) die(EXIT_USAGE, "--plant: '%.40s...' is too long", v);
    snprintf(buf, sizeof buf, "%s", v);
    char *s = buf;
    if (!strncmp(s, "noise:", 6)) p->noise = 1, s += 6;   // noise2:, noise3: the other members
    else if (!strncmp(s, "noise", 5) && s[5] >= '2' && s[5] < '1' + NOISE_MEMBERS && s[6] == ':') p->noise = s[5] - '0', s += 7;
    char *at = strchr(s, '@'), *eq = at ? strchr(at, '=') : NULL;
    if (!at || !eq) die(EXIT_USAGE, "--plant: '%s' is not [noise:]QUANTITY[:TENSOR]@STEP=DELTA", v);
    *at = *eq = '\0';
    if (!strcmp(s, "relu")) {   // a gate flip of size DELTA at the first unit
        p->relu = 1;
        p->q = Q_NUM;
    }
    char *colon = p->relu ? NULL : strchr(s, ':');
    if (colon) {
        *colon = '\0';
        if (strlen(colon + 1) >= sizeof p->tensor || !colon[1]) die(EXIT_USAGE, "--plant: bad tensor in '%s'", v);
        snprintf(p->tensor, sizeof p->tensor, "%s", colon + 1);
    }
    if (!p->relu && (p->q = quantity_from_name(s)) == Q_NUM) die(EXIT_USAGE, "--plant: unknown quantity '%s'", s);
    const int per_tensor = p->q == Q_GRADS || p->q == Q_PARAMS || p->q == Q_M || p->q == Q_V;
    if (per_tensor != (colon != NULL))
        die(EXIT_USAGE, "--plant: %s %s", s, per_tensor ? "needs :TENSOR" : "takes no tensor");
    long n;
    if (parse_int(at + 1, 1, 1000000000L, &n)) die(EXIT_USAGE, "--plant: '%s' is not a step >= 1", at + 1);
    p->step = (int)n;
    if (parse_double(eq + 1, &p->delta) || !isfinite(p->delta)) die(EXIT_USAGE, "--plant: '%s' is not a number", eq + 1);
    p->on = 1;
}

static void parse_plant(Options *o, const char *list) {
    char all[512];
    if (strlen(list) >= sizeof all) die(EXIT_USAGE, "--plant: '%.40s...' is too long", list);
    snprintf(all, sizeof all, "%s", list);
    for (char *v = strtok(all, ","); v; v = strtok(NULL, ",")) {
        if (o->n_plants == 2) die(EXIT_USAGE, "--plant: at most two");
        parse_one_plant(&o->plant[o->n_plants++], v);
    }
}

void cli_parse(Options *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    settings_defaults(&o->s);
    o->prec = PREC_FP64;
    o->mode = MODE_LOCKSTEP;
    o->fault = FAULT_NONE;
    o->drift_tol_arg = -1;
    o->relu_margin = -1;
    o->rtol = o->atol = -1;
    o->every = 1;
    o->max_excused = -1;
    o->b.repeats = 5;
    o->b.warmup = 5;
    o->b.budget_s = 20;
    o->b.noise_target = 0.02;
    o->b.loss_rtol = BENCH_LOSS_RTOL;
    const char *drift_flag = NULL;
    // flags that only apply to some modes, to refuse the rest
    const char *lockstep_flag = NULL, *bench_flag = NULL, *compare_flag = NULL, *tol_flag = NULL;
    const char *torch_compile_flag = NULL;   // --torch-compile (kept by bench_run.c)
    CliSeen *seen = &o->s.seen;  // one set for all flags: a repeat is refused
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        double x;
        long n;
#define VAL(name) (v = cli_value(seen, argc, argv, &i, name))
#define SWITCH(name) cli_switch(seen, argv, i, name)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            stdout_check();   // a help text that could not be written is not a success (exit 1)
            exit(0);
        } else if (!strcmp(a, "--rules")) {
            if (argc != 2) die(EXIT_USAGE, "--rules prints the table of every rule's constants and takes no other flag");
            char *j = rules_json();
            printf("%s\n", j);
            free(j);
            stdout_check();
            exit(0);
        } else if (VAL("--engines")) {
            parse_engines(o, v);
        } else if (VAL("--precision")) {
            o->b.both_precisions = 0;
            o->prec_given = 1;
            if (!strcmp(v, "both")) o->b.both_precisions = 1, bench_flag = "--precision both";
            else if ((o->prec = precision_from_name(v)) == PREC_NUM)
                die(EXIT_USAGE, "--precision: '%s' is not fp64, fp32, bf16, fp16, tf32 (or both, with --bench)", v);
        } else if (VAL("--loss-scale")) {
            // a power of two, so that scaling and unscaling are exact
            if (parse_double(v, &x) || !(x >= 0x1p-24 && x <= 0x1p100) || frexp(x, &(int){0}) != 0.5)
                die(EXIT_USAGE, "--loss-scale: '%s' is not a power of two from 2^-24 to 2^100 (e.g. 65536)", v);
            o->loss_scale = x;
            compare_flag = "--loss-scale";
        } else if (VAL("--mode")) {
            if (!strcmp(v, "lockstep")) o->mode = MODE_LOCKSTEP;
            else if (!strcmp(v, "free")) o->mode = MODE_FREE;
            else die(EXIT_USAGE, "--mode: '%s' is not lockstep or free", v);
            o->mode_given = 1;
            compare_flag = "--mode";
        } else if (!strcmp(a, "--tol") || !strncmp(a, "--tol=", 6)) {   // repeatable: not marked seen
            if (a[5] == '=') v = a + 6;
            else if (i + 1 < argc) v = argv[++i];
            else die(EXIT_USAGE, "--tol needs a value (see --help)");
            parse_tol(o, v);
            tol_flag = "--tol";
        } else if (VAL("--rtol")) {
            o->rtol = nonneg_flag("--rtol", v), compare_flag = "--rtol";
        } else if (VAL("--atol")) {
            o->atol = nonneg_flag("--atol", v), compare_flag = "--atol";
        } else if (VAL("--drift-tol")) {
            o->drift_tol_arg = nonneg_flag("--drift-tol", v), drift_flag = "--drift-tol";
        } else if (VAL("--drift-window")) {
            if (parse_int(v, 1, 1000000L, &n)) die(EXIT_USAGE, "--drift-window: '%s' is not an integer from 1 to 1000000", v);
            o->drift_window = (int)n;
            drift_flag = "--drift-window";
        } else if (VAL("--relu-margin")) {
            o->relu_margin = nonneg_flag("--relu-margin", v), lockstep_flag = "--relu-margin";
        } else if (VAL("--every")) {
            if (parse_int(v, 1, 1000000000L, &n)) die(EXIT_USAGE, "--every: '%s' is not an integer >= 1", v);
            o->every = (int)n;
            compare_flag = "--every";
        } else if (VAL("--tolerance")) {
            if (!strcmp(v, "fixed")) o->tol_ratio = 0;
            else if (!strcmp(v, "ratio")) o->tol_ratio = 1;
            else die(EXIT_USAGE, "--tolerance: '%s' is not fixed or ratio", v);
            o->tol_given = 1;
            lockstep_flag = "--tolerance";
        } else if (VAL("--sampler")) {
            if (!strcmp(v, "own")) o->sampler_own = 1;
            else if (strcmp(v, "harness")) die(EXIT_USAGE, "--sampler: '%s' is not harness or own", v);
            lockstep_flag = "--sampler";
        } else if (VAL("--max-excused")) {
            if (parse_int(v, 0, 1000000000L, &n)) die(EXIT_USAGE, "--max-excused: '%s' is not an integer >= 0", v);
            o->max_excused = (int)n;
            lockstep_flag = "--max-excused";
        } else if (SWITCH("--keep-going")) {
            o->keep_going = 1;
            lockstep_flag = "--keep-going";
        } else if (SWITCH("--quiet")) {
            o->quiet = 1;
        } else if (SWITCH("--bench")) {
            o->bench = 1;
        } else if (VAL("--sizes")) {
            o->b.sizes = v;
            bench_flag = "--sizes";
        } else if (VAL("--repeats") || VAL("--warmup")) {
            const char *f = a[2] == 'r' ? "--repeats" : "--warmup";
            if (parse_int(v, 1, 1000000L, &n)) die(EXIT_USAGE, "%s: '%s' is not an integer from 1 to 1000000", f, v);
            if (a[2] == 'r') o->b.repeats = (int)n;
            else o->b.warmup = (int)n;
            bench_flag = f;
        } else if (VAL("--max-repeats")) {
            if (parse_int(v, 1, BENCH_MAX_REPEATS, &n))
                die(EXIT_USAGE, "--max-repeats: '%s' is not an integer from 1 to %d", v, BENCH_MAX_REPEATS);
            o->b.max_repeats = (int)n;
            bench_flag = "--max-repeats";
        } else if (VAL("--noise-target")) {
            if (parse_double(v, &x) || !(x >= 0) || x > 10)
                die(EXIT_USAGE, "--noise-target: '%s' is not a relative half-width from 0 (off) to 10", v);
            o->b.noise_target = x;
            bench_flag = "--noise-target";
        } else if (VAL("--time-budget")) {
            if (parse_double(v, &x) || !(x > 0) || x > 1e6)
                die(EXIT_USAGE, "--time-budget: '%s' is not a number of seconds > 0", v);
            o->b.budget_s = x;
            bench_flag = "--time-budget";
        } else if (VAL("--loss-rtol")) {
            o->b.loss_rtol = nonneg_flag("--loss-rtol", v);
            bench_flag = "--loss-rtol";
        } else if (VAL("--bench-data")) {
            if (!strcmp(v, "packed")) o->b.raw_docs = 0;
            else if (!strcmp(v, "raw")) o->b.raw_docs = 1;
            else die(EXIT_USAGE, "--bench-data: '%s' is not packed or raw", v);
            bench_flag = "--bench-data";
        } else if (VAL("--baseline")) {
            if (strcmp(v, "torch")) die(EXIT_USAGE, "--baseline: '%s' is not a known baseline (torch)", v);
            o->b.baseline = v;
            bench_flag = "--baseline";
        } else if (VAL("--python")) {
            o->b.python = cli_path("--python", v);
            bench_flag = "--python";
        } else if (VAL("--torch-compile")) {
            if (bench_set_torch_compile(v))
                die(EXIT_USAGE, "--torch-compile: '%s' is not default, max-autotune or off", v);
            bench_flag = torch_compile_flag = "--torch-compile";
        } else if (VAL("--markdown")) {
            o->b.markdown = cli_path("--markdown", v);
            bench_flag = "--markdown";
        } else if (VAL("--against")) {
            o->against = cli_path("--against", v);
        } else if (VAL("--export-init")) {
            o->export_dir = cli_path("--export-init", v);
        } else if (VAL("--exec-timeout")) {
            if (parse_double(v, &x) || !(x > 0) || x > 1e6)
                die(EXIT_USAGE, "--exec-timeout: '%s' is not a number of seconds > 0", v);
            exec_engine_set_timeout(x);
        } else if (VAL("--plant")) {
            parse_plant(o, v);
        } else if (VAL("--inject-fault")) {
            const char *colon = strchr(v, ':');
            char name[32];
            snprintf(name, sizeof name, "%.*s", colon ? (int)(colon - v) : (int)strlen(v), v);
            o->fault = fault_from_name(name);
            if (o->fault == FAULT_NUM || o->fault == FAULT_NONE)
                die(EXIT_USAGE, "--inject-fault: unknown fault '%s' (attn-scale, causal-mask, rmsnorm-bwd, grad-sign, "
                    "adam-bias, small-grads, lowp-truncate, op-fwd:OP, op-bwd:OP)", v);
            const int op_fault = o->fault == FAULT_OP_FWD || o->fault == FAULT_OP_BWD;
            if (op_fault != (colon != NULL))
                die(EXIT_USAGE, "--inject-fault %s: %s", v, op_fault ? "name the op, e.g. op-fwd:layer0.q" :
                                                                       "takes no op");
            if (colon) snprintf(o->fault_op_name, sizeof o->fault_op_name, "%s", colon + 1);
        } else if (!settings_parse_flag(&o->s, argc, argv, &i)) {
            die(EXIT_USAGE, "unknown flag '%s' (see --help)", a);
        }
#undef VAL
#undef SWITCH
    }
    o->b.steps_given = cli_given(seen, "--steps");
    o->samples_given = cli_given(seen, "--samples");
    // shared settings that only lockstep's sampling at the end uses
    const char *sample_flag = o->samples_given                    ? "--samples"
                              : cli_given(seen, "--temperature") ? "--temperature"
                                                                 : NULL;
    if (o->sampler_own && !o->samples_given)   // a distribution needs counts: own has its own default
        o->s.samples = SAMPLER_OWN_NAMES, o->samples_given = 1;
    else if (o->sampler_own && o->s.samples < SAMPLER_OWN_MIN_NAMES)
        die(EXIT_USAGE, "--sampler own: --samples %d leaves too few names to test a distribution (at least %d; "
            "%d when not given)", o->s.samples, SAMPLER_OWN_MIN_NAMES, SAMPLER_OWN_NAMES);
    for (int i = 0; i < o->n_plants && o->sampler_own; i++)
        if (o->plant[i].q == Q_PROBS) die(EXIT_USAGE, "--plant probs@...: --sampler own compares no probabilities");
    if ((o->against || o->export_dir) && (o->bench || o->mode_given || lockstep_flag || bench_flag))
        die(EXIT_USAGE, "%s takes the model and data flags, --engines and the tolerances only",
            o->against ? "--against" : "--export-init");
    if (o->against && o->export_dir) die(EXIT_USAGE, "--against and --export-init: one at a time");
    if ((o->against || o->export_dir) && o->s.trace_path)
        die(EXIT_USAGE, "--trace does not apply to %s (it prints its report; --export-init writes files)",
            o->against ? "--against" : "--export-init");
    if (o->s.timeline_path && (o->bench || o->against || o->export_dir))
        die(EXIT_USAGE, "--timeline applies to --mode lockstep and free, not to %s",
            o->bench ? "--bench" : o->against ? "--against" : "--export-init");
    if (o->export_dir && o->n_engines) die(EXIT_USAGE, "--export-init runs no engine: drop --engines");
    if (!o->n_engines && !o->export_dir)
        die(EXIT_USAGE, "--engines is required, e.g. --engines scalar,cpu (see --help)");
    if (o->against && o->n_engines != 1)
        die(EXIT_USAGE, "--against: name the one reference engine, e.g. --engines scalar");
    if (o->against || o->export_dir) {
    } else if (o->bench) {
        if (compare_flag || lockstep_flag)
            die(EXIT_USAGE, "%s does not apply to --bench (the bench checks every step's loss against the "
                "first engine's within --drift-tol)", compare_flag ? compare_flag : lockstep_flag);
        if (drift_flag) die(EXIT_USAGE, "%s applies to --mode free; the bench takes --loss-rtol", drift_flag);
        if (sample_flag)
            die(EXIT_USAGE, "%s does not apply to --bench: the bench times training and samples no names",
                sample_flag);
        if (!o->b.steps_given) o->s.steps = 100;
        if (o->b.max_repeats && o->b.max_repeats < o->b.repeats)
            die(EXIT_USAGE, "--max-repeats %d is fewer than --repeats %d (the fewest runs)", o->b.max_repeats,
                o->b.repeats);
        if (!o->b.max_repeats) o->b.max_repeats = o->b.repeats > 20 ? o->b.repeats : 20;
        if (o->b.python && !o->b.baseline) die(EXIT_USAGE, "--python: only with --baseline torch");
        if (torch_compile_flag && !o->b.baseline) die(EXIT_USAGE, "--torch-compile: only with --baseline torch");
    } else {
        if (bench_flag) die(EXIT_USAGE, "%s only applies to --bench", bench_flag);
        if (o->n_engines != 2)
            die(EXIT_USAGE, "--engines: name exactly two engines, REF,CAND (e.g. scalar,cpu); only --bench "
                "takes %s", o->n_engines < 2 ? "one" : "more");
        if (o->mode == MODE_FREE && lockstep_flag) die(EXIT_USAGE, "%s only applies to --mode lockstep", lockstep_flag);
        if (o->mode == MODE_FREE && sample_flag)
            die(EXIT_USAGE, "%s only applies to --mode lockstep: --mode free compares the loss curves and samples "
                "no names", sample_flag);
        if (o->mode != MODE_FREE && drift_flag) die(EXIT_USAGE, "%s only applies to --mode free", drift_flag);
    }
    if (tol_flag && (o->bench || o->export_dir || (o->mode == MODE_FREE && !o->against)))
        die(EXIT_USAGE, "--tol applies to lockstep and --against (free mode judges the loss curves by --drift-tol)");
    for (int i = 0; i < o->n_plants; i++) {
        if (o->against || o->export_dir) die(EXIT_USAGE, "--plant applies to lockstep, free and --bench runs");
        if ((o->bench || o->mode == MODE_FREE) && (o->plant[i].q != Q_LOSS || o->plant[i].noise || o->plant[i].relu))
            die(EXIT_USAGE, "--plant: %s compares losses only: loss@STEP=DELTA", o->bench ? "--bench" : "free mode");
    }
    settings_validate(&o->s);
    trace_set_pretty(o->s.pretty);
    if (o->s.steps < 1) die(EXIT_USAGE, "--steps must be at least 1 to compare anything");
    int any_tensor = 0;
    for (int k = 0; k < o->n_engines; k++) any_tensor |= engine_supports(o->names[k], PREC_FP32);
    if ((o->prec != PREC_FP64 || o->b.both_precisions) && !any_tensor && !o->against && !o->export_dir)
        die(EXIT_USAGE, "--precision %s: the scalar engine computes in fp64 only; compare it "
            "with a tensor engine (cpu or cuda)", o->b.both_precisions ? "both" : precision_name(o->prec));
    if (o->fault == FAULT_OP_FWD || o->fault == FAULT_OP_BWD) {
        // the op's index in this model (common/activations.h); the cross-entropy is one past the table
        ModelShape m = model_shape(&o->s, 2);
        o->fault_op = !strcmp(o->fault_op_name, "loss") && o->fault == FAULT_OP_BWD ? act_count(&m)
                                                                                      : act_find(&m, o->fault_op_name);
        if (o->fault_op < 0)
            die(EXIT_USAGE, "--inject-fault: no op '%s' in this model (embed, embed_norm, layer0.norm1, layer0.q, ..., "
                "logits; op-bwd also loss: common/activations.h)", o->fault_op_name);
        if (o->n_engines < 2 || (engine_cpu_order(o->names[1]) == ORDER_NUM && strcmp(o->names[1], "cuda") &&
                                 !engine_cuda_path(o->names[1])))
            die(EXIT_USAGE, "--inject-fault %s: the cpu and cuda engines plant a fault in an op; put one second, "
                "e.g. --engines scalar,cpu", fault_name(o->fault));
    }
    const int mixed = precision_is_mixed(o->prec);
    if (o->fault == FAULT_LOWP_TRUNCATE && !mixed)
        die(EXIT_USAGE, "--inject-fault lowp-truncate: only the mixed precisions round to a low precision "
            "(--precision bf16, fp16 or tf32)");
    // fp16's loss scale changes between steps on the host (a skipped step
    // halves it), which a timed run of back-to-back steps cannot follow
    if (o->bench && o->prec == PREC_FP16)
        die(EXIT_USAGE, "--bench --precision fp16: fp16's loss scaling decides on the host after each step whether "
            "the update is skipped, so there is no back-to-back timed run of it; bench bf16 or tf32 (the same "
            "tensor-core products), or check fp16 with --engines scalar,cuda --precision fp16");
    if (mixed && (o->against || o->export_dir))
        die(EXIT_USAGE, "%s: fp64 or fp32 only (a recorded run in %s is not supported yet)",
            o->against ? "--against" : "--export-init", precision_name(o->prec));
    if (o->loss_scale > 0 && o->prec != PREC_FP16)
        die(EXIT_USAGE, "--loss-scale: only fp16 scales the loss (--precision fp16)");
    if (o->fault != FAULT_NONE && (o->n_engines < 2 || !strcmp(o->names[1], "scalar")))
        die(EXIT_USAGE, "--inject-fault: faults are injected into the candidate engine (the second), and the "
            "scalar engine has none; put a tensor engine second, e.g. --engines scalar,cpu");
    // mixed precisions have no fixed table: the rule is the ratio rule with
    // a cap (tolerance.c), or the fixed rule with both --rtol and --atol
    if (mixed && (o->rtol >= 0) != (o->atol >= 0))
        die(EXIT_USAGE, "--precision %s has no fixed tolerance table: give both --rtol and --atol, or neither "
            "(the ratio rule)", precision_name(o->prec));
    for (int q = 0; q < Q_NUM; q++) o->tol[q] = fixed_tolerance(o, o->prec, (Quantity)q);
    // the ratio rule needs an fp64 reference and a candidate in fp32 or a mixed precision
    const Precision cp = o->n_engines >= 2 ? engine_prec(o, 1) : PREC_FP64;
    int ratio_possible = o->n_engines >= 2 && engine_prec(o, 0) == PREC_FP64 && cp != PREC_FP64;
    if (!o->tol_given)   // --rtol/--atol alone mean the fixed rule
        o->tol_ratio = ratio_possible && o->mode == MODE_LOCKSTEP && !o->bench && o->rtol < 0 && o->atol < 0;
    else if (o->tol_ratio && !ratio_possible)
        die(EXIT_USAGE, "--tolerance ratio: the rule measures an fp32 (or bf16, fp16, tf32) candidate against an "
            "fp64 reference; use it with an fp64 reference, e.g. --engines scalar,cuda --precision fp32");
    if (o->tol_ratio && (o->rtol >= 0 || o->atol >= 0))
        die(EXIT_USAGE, "--rtol/--atol set fixed tolerances: use them with --tolerance fixed, not ratio");
    if (mixed && o->mode == MODE_LOCKSTEP && !o->bench && !o->tol_ratio && o->rtol < 0)
        die(EXIT_USAGE, "--precision %s: lockstep judges it by the ratio rule, which needs an fp64 reference "
            "(e.g. --engines scalar,cpu --precision %s); or give --tolerance fixed with --rtol and --atol",
            precision_name(o->prec), precision_name(o->prec));
    for (int q = 0; q < Q_NUM; q++) o->ratio[q] = rules_for(cp)->ratio[q];
    o->drift_tol = drift_tol_for(o, o->prec);
    if (o->relu_margin < 0) o->relu_margin = rules_for(o->prec)->relu_margin;
}

Tolerance fixed_tolerance(const Options *o, Precision p, Quantity q) {
    Tolerance t = rules_for(p)->fixed[q];
    if (o->rtol >= 0 || o->atol >= 0) t.scaled = 0;   // --rtol/--atol: absolute bounds
    if (o->rtol >= 0) t.rtol = o->rtol;
    if (o->atol >= 0) t.atol = o->atol;
    t.atol += o->extra[q].atol, t.rtol += o->extra[q].rtol;   // --tol
    return t;
}

double drift_tol_for(const Options *o, Precision p) {
    if (o->drift_tol_arg >= 0) return o->drift_tol_arg;
    return rules_for(p)->drift_tol;
}

int drift_window_for(const Options *o) {
    if (o->drift_window > 0) return o->drift_window;
    return rules_for(o->prec)->drift_window;
}

int max_excused_for(const Options *o) {
    if (o->max_excused >= 0) return o->max_excused;
    return o->s.steps / 100 > 3 ? o->s.steps / 100 : 3;
}

Precision engine_prec(const Options *o, int k) {
    return engine_supports(o->names[k], PREC_FP32) ? o->prec : PREC_FP64;
}
