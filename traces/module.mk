# Trace writing (shared) and the trace tool.
LIB_SRC += traces/trace.c
LIB_SRC += traces/trace_read.c
BINS += $(BUILD)/trace

$(BUILD)/trace: $(call obj,traces/trace_tool.c traces/bench_view.c) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# The tool's tests run $(BUILD)/trace: build it first (order-only, so it is
# not linked into the test binary).
$(BUILD)/tests/test_trace_tool: | $(BUILD)/trace
