// bench_scalar: how fast the scalar engine trains, bit-exact, on the given
// settings (default: the original's). Prints ms/step with a breakdown, graph
// nodes per step and peak memory. Run by `make bench`.
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

int main(int argc, char **argv) {
    set_prog_name(argv[0]);
    Settings s;
    settings_defaults(&s);
    int repeats = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_scalar [--repeats N] [flags]\n"
                   "Time the scalar engine's training loop (the best of N runs, 3 by default).\n\nflags:\n");
            settings_print_help(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--repeats")) {
            long r;
            if (i + 1 >= argc || parse_int(argv[++i], 1, 1000, &r))
                die(EXIT_USAGE, "--repeats needs an integer in [1, 1000]");
            repeats = (int)r;
            continue;
        }
        if (!settings_parse_flag(&s, argc, argv, &i)) die(EXIT_USAGE, "unknown flag '%s' (see --help)", argv[i]);
    }
    settings_validate(&s);
    if (s.steps < 1) die(EXIT_USAGE, "--steps must be at least 1 to time anything");

    Dataset d;
    char err[512];
    if (dataset_load(&d, s.data_path, err, sizeof err)) die(EXIT_USAGE, "%s", err);
    ModelShape shape = model_shape(&s, d.vocab_size);
    ParamLayout L;
    layout_init(&L, &shape);
    double *init = xmalloc(L.n_params * sizeof *init);
    int *order0 = xmalloc((size_t)d.n_docs * sizeof *order0);
    memcpy(order0, d.order, (size_t)d.n_docs * sizeof *order0);

    double best = 1e300;
    ScalarStats best_st = {0};
    double last_loss = 0;
    for (int r = 0; r < repeats; r++) {
        PyRandom rng;
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
            last_loss = e->ops->step(e, &b, step);
        }
        double t = now_seconds() - t0;
        if (t < best) {
            best = t;
            scalar_engine_stats(e, &best_st);
        }
        batch_free(&b);
        e->ops->destroy(e);
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
    printf("  peak memory    %8.1f MiB (max RSS)\n", (double)ru.ru_maxrss / 1024.0);
    printf("  last loss      %.17g\n", last_loss);
    free(init);
    free(order0);
    layout_free(&L);
    dataset_free(&d);
    return 0;
}
