# The comparator.
LIB_SRC += compare/tolerance.c compare/engines.c
BINS += $(BUILD)/compare

$(BUILD)/compare: $(call obj,compare/main.c) $(LIB) $(CUDA_LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS) $(CUDA_LDLIBS)
