# Criterion tests: one binary per tests/test_*.c (linked with tests/helpers.c),
# run from the repository root by tests/run.sh.
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_HELPERS := $(call obj,tests/helpers.c)

$(BUILD)/tests/%: $(call obj,tests/%.c) $(TEST_HELPERS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ -lcriterion $(LDLIBS)

# Broken engine plugins for tests/test_outside.c (tests/bad_plugin.c, one per -DBAD).
BAD_PLUGINS := $(foreach i,1 2 3 4 5,$(BUILD)/tests/libbad_plugin$(i).so)
$(BUILD)/tests/libbad_plugin%.so: tests/bad_plugin.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DBAD=$* $(PLUGIN_LDFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/tests/test_outside: | $(BAD_PLUGINS)

# The Criterion binaries, a short parity suite on the CPU backend, then the
# GPU tests (which say why they skip where there is no GPU).
test: $(BINS) $(TEST_BINS) data/names.txt
	@bash tests/run.sh $(TEST_BINS)
	@bash scripts/parity.sh --backend cpu --steps 40 --build $(BUILD) --out $(BUILD)/parity-test
	@$(MAKE) --no-print-directory test-gpu
