# The comparator.
LIB_SRC += compare/tolerance.c compare/engines.c compare/plugin_engine.c compare/exec_engine.c compare/grad_check.c \
           compare/localize.c compare/chisq.c
# the pure parts of the exec engine's reply reader and of --against's checks (fuzz/ calls them)
LIB_SRC += compare/exec_reply.c compare/against_check.c
# The bench's statistics: the trace tool recomputes them from a bench trace.
LIB_SRC += compare/bench_stats.c
COMPARE_SRC := compare/main.c compare/cli.c compare/outputs.c compare/run.c compare/lockstep.c compare/check.c compare/samples.c \
               compare/acts.c compare/free.c compare/bench.c compare/bench_sizes.c compare/bench_run.c compare/against.c compare/export.c \
               compare/samples_own.c
BINS += $(BUILD)/compare

# The CUDA backend is not linked in: engine_new loads it as a plugin
# ($(BUILD)/libmicrogpt_cuda_engine.so) when `cuda` is asked for.
$(BUILD)/compare: $(call obj,$(COMPARE_SRC)) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)
