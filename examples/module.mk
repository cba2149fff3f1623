# Example outside engines (docs/outside_engines.md): two plugins built by
# `make` (the CPU tensor engine behind the ABI, and naive_engine.c, written
# against include/microgpt/engine_abi.h alone); the Python engines run as
# they are.
EXAMPLE_PLUGIN := $(BUILD)/libmicrogpt_example_engine.so
NAIVE_PLUGIN := $(BUILD)/libmicrogpt_naive_engine.so
BINS += $(EXAMPLE_PLUGIN) $(NAIVE_PLUGIN)
$(NAIVE_PLUGIN): $(call obj,examples/naive_engine.c)
	$(CC) $(PLUGIN_LDFLAGS) $(LDFLAGS) $^ -o $@ -lm
$(EXAMPLE_PLUGIN): $(call obj,examples/example_plugin.c) $(LIB)
	$(CC) $(PLUGIN_LDFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)
