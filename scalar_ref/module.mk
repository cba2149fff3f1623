# The faithful scalar engine and its tools.
LIB_SRC += scalar_ref/pymath.c scalar_ref/pymath_fast.c scalar_ref/autograd.c \
           scalar_ref/gpt.c scalar_ref/engine_scalar.c
BINS += $(BUILD)/microgpt $(BUILD)/bench_scalar

$(BUILD)/microgpt: $(call obj,scalar_ref/main.c) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/bench_scalar: $(call obj,scalar_ref/bench.c) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)
