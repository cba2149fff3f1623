// bench_scalar: how fast the scalar engine trains, bit-exact, on the given
// settings (default: the original's). Prints ms/step with a breakdown, graph
// nodes per step and peak memory, then samples --samples names at
// --temperature from the trained model (the original's names at the
// defaults), and with --trace writes the best run as a train trace with the
// timings under "bench". Run by `make bench`; compare --bench times the
// scalar engine against the others.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "engine_scalar.h"
#include "common/dataset.h"
#include "common/model.h"
#include "common/pyrandom.h"
#include "common/settings.h"
#include "common/util.h"
#include "traces/trace.h"

int main(int argc, char **argv) {
    set_prog_name(argv[0]);
    Settings s;
    settings_defaults(&s);
    int repeats = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_scalar [--repeats N] [flags]\n"
                   "Time the scalar engine's training loop (the best of N runs, 3 by default), then\n"
                   "sample --samples names at --temperature from the trained model; --trace writes\n"
                   "the best run's losses and step times, the samples and the timings.\n\nflags:\n");
            settings_print_help(stdout, 0);
            return 0;
        }
        const char *v = cli_value(&s.seen, argc, argv, &i, "--repeats");
        if (v) {
            long r;
            if (parse_int(v, 1, 1000, &r)) die(EXIT_USAGE, "--repeats: '%s' is not an integer in [1, 1000]", v);
            repeats = (int)r;
            continue;
        }
        if (!settings_parse_flag(&s, argc, argv, &i)) die(EXIT_USAGE, "unknown flag '%s' (see --help)", argv[i]);
    }
    settings_validate(&s);
    trace_set_pretty(s.pretty);
    if (s.steps < 1) die(EXIT_USAGE, "--steps must be at least 1 to time anything");
    if (s.timeline_path) die(EXIT_USAGE, "--timeline applies to microgpt and compare, not to the benchmark");

    Dataset d;
    char err[512];
    if (dataset_load(&d, s.data_path, err, sizeof err)) die(EXIT_USAGE, "%s", err);
    ModelShape shape = model_shape(&s, d.vocab_size);
    ParamLayout L;
    layout_init(&L, &shape);
    memory_check(scalar_engine_bytes(&L, &d, s.batch, s.steps), "the scalar engine at these settings",
                 "use a smaller --batch, --n-embd, --n-layer or --block-size");
    double *init = xmalloc(L.n_params * sizeof *init);
    int *order0 = xmalloc((size_t)d.n_docs * sizeof *order0);
    memcpy(order0, d.order, (size_t)d.n_docs * sizeof *order0);

    Trace trace = {0};
    if (s.trace_path) trace_open(&trace, s.trace_path, "train");
    double best = 1e300;
    ScalarStats best_st = {0};
    double last_loss = 0;
    double *loss = xmalloc((size_t)s.steps * sizeof *loss), *dt = xmalloc((size_t)s.steps * sizeof *dt);
    double *best_dt = xmalloc((size_t)s.steps * sizeof *best_dt);
    Engine *last = NULL;   // the last run's engine samples
    PyRandom rng;
    for (int r = 0; r < repeats; r++) {
        pyrandom_seed_text(&rng, s.seed);
        memcpy(d.order, order0, (size_t)d.n_docs * sizeof *order0);
        dataset_shuffle(&d, &rng);
        params_init(&L, &rng, s.init_std, init);
        EngineConfig cfg = {.s = &s, .L = &L, .precision = PREC_FP64, .max_batch = s.batch};
        Engine *e = scalar_engine_create(&cfg, init);
        Batch b = {0};
        double t0 = now_seconds();
        for (int step = 0; step < s.steps; step++) {
            batch_make(&b, &d, step, s.batch, s.block_size);
            const double ts = now_seconds();
            last_loss = loss[step] = e->ops->step(e, &b, step);
            dt[step] = now_seconds() - ts;
            if (!isfinite(last_loss))
                die(EXIT_MISMATCH, "step %d: the loss is %g, not finite: training diverged; try a smaller --lr",
                    step + 1, last_loss);
        }
        double t = now_seconds() - t0;
        if (t < best) {
            best = t;
            scalar_engine_stats(e, &best_st);
            memcpy(best_dt, dt, (size_t)s.steps * sizeof *dt);
        }
        batch_free(&b);
        if (last) last->ops->destroy(last);
        last = e;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double n = (double)s.steps, ms = 1e3;
    printf("scalar engine, %d steps, batch %d, n_embd %d, n_layer %d (best of %d runs)\n", s.steps,
           s.batch, s.n_embd, s.n_layer, repeats);
    printf("  ms/step        %8.4f\n", best / n * ms);
    printf("    forward      %8.4f\n", best_st.t_forward / n * ms);
    printf("    order (DFS)  %8.4f\n", best_st.t_order / n * ms);
    printf("    backward     %8.4f\n", best_st.t_backward / n * ms);
    printf("    adam         %8.4f\n", best_st.t_adam / n * ms);
    printf("  nodes/step     %8.0f\n", best_st.nodes / n);
    printf("  estimated      %8.1f MiB (the check before a run)\n", scalar_engine_bytes(&L, &d, s.batch, s.steps) / 1048576.0);
    printf("  peak memory    %8.1f MiB (max RSS)\n", (double)ru.ru_maxrss / 1024.0);
    printf("  last loss      %.17g\n", last_loss);
    // sampling: the RNG goes on from the initial draws, as in the original
    int *tok = xmalloc((size_t)s.block_size * sizeof *tok);
    cJSON *samples = trace.root ? cJSON_CreateArray() : NULL;
    const double ts = now_seconds();
    for (int i = 0; i < s.samples; i++) {
        int n = last->ops->sample(last, &rng, s.temperature, tok);
        char *text = xmalloc((size_t)n * 4 + 1);
        size_t k = 0;
        for (int j = 0; j < n; j++) k += (size_t)utf8_encode(d.vocab[tok[j]], text + k);
        text[k] = '\0';
        printf("  sample %2d      %s\n", i + 1, text);
        if (samples) cJSON_AddItemToArray(samples, cJSON_CreateString(text));
        free(text);
    }
    const double t_sample = now_seconds() - ts;
    if (s.samples) printf("  ms/sample      %8.4f (temperature %g)\n", 1e3 * t_sample / s.samples, s.temperature);
    stdout_check();
    if (trace.root) {
        cJSON *steps = trace_train_header(&trace, &s, &shape, &d, L.n_params);
        for (int i = 0; i < s.steps; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "step", i + 1);
            trace_add_number(o, "lr", lr_at(s.lr, i, s.steps));
            trace_add_number(o, "loss", loss[i]);
            trace_add_number(o, "time_s", best_dt[i]);
            cJSON_AddItemToArray(steps, o);
        }
        cJSON_AddItemToObject(trace.root, "samples", samples);
        trace_add_number(trace.root, "train_time_s", best);
        cJSON *bo = cJSON_AddObjectToObject(trace.root, "bench");
        cJSON_AddNumberToObject(bo, "repeats", repeats);
        trace_add_number(bo, "ms_per_step", best / n * ms);
        trace_add_number(bo, "forward_ms", best_st.t_forward / n * ms);
        trace_add_number(bo, "order_ms", best_st.t_order / n * ms);
        trace_add_number(bo, "backward_ms", best_st.t_backward / n * ms);
        trace_add_number(bo, "adam_ms", best_st.t_adam / n * ms);
        trace_add_number(bo, "nodes_per_step", best_st.nodes / n);
        trace_add_number(bo, "peak_rss_bytes", (double)ru.ru_maxrss * 1024);
        trace_add_number(bo, "ms_per_sample", s.samples ? 1e3 * t_sample / s.samples : NAN);
        trace_commit(&trace);
    }
    free(tok);
    free(loss);
    free(dt);
    free(best_dt);
    last->ops->destroy(last);
    free(init);
    free(order0);
    layout_free(&L);
    dataset_free(&d);
    return 0;
}
