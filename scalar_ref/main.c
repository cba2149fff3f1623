// microgpt: the faithful C port of Karpathy's microgpt.py. Trains the tiny GPT
// with the scalar autograd engine and samples names; with no flags its output
// is byte-identical to the original's.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_scalar.h"
#include "common/atomic_file.h"
#include "common/engine.h"
#include "common/dataset.h"
#include "common/interrupt.h"
#include "common/model.h"
#include "common/pyrandom.h"
#include "common/settings.h"
#include "common/util.h"
#include "traces/timeline.h"
#include "traces/trace.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: microgpt [flags]\n"
            "Train the tiny GPT of microgpt.py with a scalar autograd engine, bit-identical to\n"
            "the original, then sample names. Prints what the original prints.\n\n"
            "flags:\n");
    settings_print_help(f, 0);
    fprintf(f, "  --help               this text\n\n"
               "Exit codes: 0 ok, 1 runtime failure (a non-finite loss, gradient or parameter; an\n"
               "output that cannot be written), 2 bad usage, bad data or not enough memory.\n");
}

// The step's phases from the engine's time counters (they follow each other).
static void timeline_scalar_step(const Engine *e, const ScalarStats *before, double t0, int step) {
    ScalarStats now;
    scalar_engine_stats(e, &now);
    const char *name[4] = {"forward", "order (DFS)", "backward", "adam"};
    double dur[4] = {now.t_forward - before->t_forward, now.t_order - before->t_order,
                     now.t_backward - before->t_backward, now.t_adam - before->t_adam};
    for (int k = 0; k < 4; k++) {
        timeline_event(0, name[k], t0, dur[k], step);
        t0 += dur[k];
    }
}

static void print_sample(const Dataset *d, const int *tok, int n, int idx) {
    printf("sample %2d: ", idx);
    for (int i = 0; i < n; i++) {
        char u[4];
        fwrite(u, 1, (size_t)utf8_encode(d->vocab[tok[i]], u), stdout);
    }
    putchar('\n');
}

// Between steps and samples: a SIGINT, SIGTERM or SIGHUP noted (with a trace
// or a timeline to write: common/interrupt.h) writes them marked interrupted
// and ends the run by the signal; a closed stdout (EPIPE) stops it with exit 1,
// the trace marked incomplete (die's hook).
static void stop_if_asked(Trace *t) {
    if (ferror(stdout)) stdout_check();
    const int sig = interrupt_pending();
    if (!sig) return;
    timeline_commit();
    if (t->path) trace_exit_on_signal(t, sig);
    fflush(stdout);
    fprintf(stderr, "%s: interrupted by %s after step %d\n", prog_name(), interrupt_signal_name(sig), t->step);
    interrupt_exit(sig);
}

int main(int argc, char **argv) {
    set_prog_name(argv[0]);
    interrupt_install();
    Settings s;
    settings_defaults(&s);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            stdout_check();   // a help text that could not be written is not a success (exit 1)
            return 0;
        }
        if (!settings_parse_flag(&s, argc, argv, &i))
            die(EXIT_USAGE, "unknown flag '%s' (see --help)", argv[i]);
    }
    settings_validate(&s);
    trace_set_pretty(s.pretty);
    // outputs checked before the run: neither the data nor each other
    outfile_note_input_as(s.data_path, "--data");
    cli_check_outputs((CliOut[]){{"--trace", s.trace_path}, {"--timeline", s.timeline_path}}, 2);

    PyRandom rng;
    pyrandom_seed_text(&rng, s.seed);
    Dataset d;
    char err[512];
    if (dataset_load(&d, s.data_path, err, sizeof err)) die(EXIT_USAGE, "%s", err);
    Trace trace = {0};
    if (s.trace_path) trace_open(&trace, s.trace_path, "train");
    if (s.timeline_path) {
        timeline_open(s.timeline_path);
        timeline_track(0, "scalar engine");
    }
    if (s.trace_path || s.timeline_path) interrupt_defer();

    dataset_shuffle(&d, &rng);
    printf("num docs: %d\n", d.n_docs);
    printf("vocab size: %d\n", d.vocab_size);
    ModelShape shape = model_shape(&s, d.vocab_size);
    ParamLayout L;
    layout_init(&L, &shape);
    memory_check(scalar_engine_bytes(&L, &d, s.batch, s.steps), "the scalar engine at these settings",
                 "use a smaller --batch, --n-embd, --n-layer or --block-size");
    double *init = xmalloc(L.n_params * sizeof *init);
    params_init(&L, &rng, s.init_std, init);
    printf("num params: %zu\n", L.n_params);

    EngineConfig cfg = {.s = &s, .L = &L, .precision = PREC_FP64, .fault = FAULT_NONE, .max_batch = s.batch};
    Engine *e = scalar_engine_create(&cfg, init);
    free(init);

    cJSON *steps = NULL;
    if (s.trace_path) steps = trace_train_header(&trace, &s, &shape, &d, L.n_params);

    double *grads = xmalloc(L.n_params * sizeof *grads);
    Batch b = {0};
    double t_train = now_seconds();
    for (int step = 0; step < s.steps; step++) {
        stop_if_asked(&trace);
        trace.step = step + 1;
        batch_make(&b, &d, step, s.batch, s.block_size);
        ScalarStats st0;
        scalar_engine_stats(e, &st0);
        double t0 = now_seconds();
        double loss = e->ops->step(e, &b, step);
        double dt = now_seconds() - t0;
        if (timeline_active()) timeline_scalar_step(e, &st0, t0, step + 1);
        if (steps) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "step", step + 1);
            trace_add_number(o, "lr", lr_at(s.lr, step, s.steps));
            trace_add_number(o, "loss", loss);
            trace_add_number(o, "time_s", dt);
            cJSON_AddItemToArray(steps, o);
        }
        if (!isfinite(loss))
            die(EXIT_MISMATCH, "step %d: the loss is %g, not finite: training diverged; try a smaller --lr",
                step + 1, loss);
        engine_check_finite(e, &L, grads, step + 1);
        printf("step %4d / %4d | loss %.4f\n", step + 1, s.steps, loss);
    }
    t_train = now_seconds() - t_train;

    printf("\n--- inference (new, hallucinated names) ---\n");
    int *tok = xmalloc((size_t)s.block_size * sizeof *tok);
    cJSON *samples = steps ? cJSON_AddArrayToObject(trace.root, "samples") : NULL;
    for (int i = 0; i < s.samples; i++) {
        stop_if_asked(&trace);
        int n = e->ops->sample(e, &rng, s.temperature, tok);
        print_sample(&d, tok, n, i + 1);
        if (samples) {
            char *text = xmalloc((size_t)n * 4 + 1);
            size_t k = 0;
            for (int j = 0; j < n; j++) k += (size_t)utf8_encode(d.vocab[tok[j]], text + k);
            text[k] = '\0';
            cJSON_AddItemToArray(samples, cJSON_CreateString(text));
            free(text);
        }
    }
    stop_if_asked(&trace);
    stdout_check();
    if (s.trace_path) {
        trace_add_number(trace.root, "train_time_s", t_train);
        trace_commit(&trace);
    }
    timeline_commit();
    // a signal noted while they were written: they are complete, the run still ends by it
    if (interrupt_pending()) interrupt_exit(interrupt_pending());
    free(tok);
    batch_free(&b);
    e->ops->destroy(e);
    layout_free(&L);
    dataset_free(&d);
    free(grads);
    return 0;
}
