# Trace writing (shared) and the trace tool.
LIB_SRC += traces/trace.c traces/timeline.c
LIB_SRC += traces/trace_read.c traces/json_schema.c
BINS += $(BUILD)/trace

TRACE_TOOL_SRC := traces/trace_tool.c traces/tool_common.c traces/tool_inspect.c traces/tool_diff.c \
                  traces/tool_plot.c traces/tool_svg.c traces/bench_view.c traces/tool_validate.c \
                  traces/tool_export.c
$(BUILD)/trace: $(call obj,$(TRACE_TOOL_SRC)) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# trace validate checks a trace against docs/trace.schema.json itself,
# compiled in as a C string (one line of the file per string literal).
$(BUILD)/gen/trace_schema.inc: docs/trace.schema.json
	@mkdir -p $(dir $@)
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $< >$@.tmp && mv $@.tmp $@
$(call obj,traces/tool_validate.c): $(BUILD)/gen/trace_schema.inc
$(call obj,traces/tool_validate.c): CFLAGS += -I$(BUILD)/gen

# The tool's tests run $(BUILD)/trace: build it first (order-only, so it is
# not linked into the test binary).
$(BUILD)/tests/test_trace_tool: | $(BUILD)/trace
$(BUILD)/tests/test_trace_analysis: | $(BUILD)/trace
# tests/test_trace_schema.c writes every kind of trace (the partial engines
# are tests/partial_plugin.c) and checks them with trace validate.
$(BUILD)/tests/test_trace_schema: | $(BUILD)/trace $(BUILD)/microgpt $(BUILD)/compare $(BUILD)/bench_scalar \
    $(foreach i,1 2 3,$(BUILD)/tests/libpartial_plugin$(i).so)
