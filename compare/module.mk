# The comparator.
LIB_SRC += compare/tolerance.c compare/engines.c
COMPARE_SRC := compare/main.c compare/cli.c compare/run.c compare/lockstep.c compare/check.c compare/samples.c compare/free.c compare/bench.c
BINS += $(BUILD)/compare

$(BUILD)/compare: $(call obj,$(COMPARE_SRC)) $(LIB) $(CUDA_LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS) $(CUDA_LDLIBS)
