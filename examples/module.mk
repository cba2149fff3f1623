# Example outside engines (docs/outside_engines.md): a plugin built by `make`;
# the Python engines run as they are.
EXAMPLE_PLUGIN := $(BUILD)/libmicrogpt_example_engine.so
BINS += $(EXAMPLE_PLUGIN)
$(EXAMPLE_PLUGIN): $(call obj,examples/example_plugin.c) $(LIB)
	$(CC) $(PLUGIN_LDFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)
