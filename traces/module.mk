# Trace writing (shared) and the trace tool.
LIB_SRC += traces/trace.c traces/timeline.c
LIB_SRC += traces/trace_read.c
BINS += $(BUILD)/trace

TRACE_TOOL_SRC := traces/trace_tool.c traces/tool_common.c traces/tool_inspect.c traces/tool_diff.c \
                  traces/tool_plot.c traces/tool_svg.c traces/bench_view.c traces/tool_validate.c \
                  traces/tool_export.c
$(BUILD)/trace: $(call obj,$(TRACE_TOOL_SRC)) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# The tool's tests run $(BUILD)/trace: build it first (order-only, so it is
# not linked into the test binary).
$(BUILD)/tests/test_trace_tool: | $(BUILD)/trace
$(BUILD)/tests/test_trace_analysis: | $(BUILD)/trace
