# Criterion tests: one binary per tests/test_*.c (linked with tests/helpers.c),
# run from the repository root by tests/run.sh. tests/test_gpu.cu (CUDA, no
# Criterion) is not one of them: tensor_gpu/cuda/module.mk builds it into
# $(BUILD)/test_gpu with nvcc (`make test-gpu`).
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_HELPERS := $(call obj,tests/helpers.c)

$(BUILD)/tests/%: $(call obj,tests/%.c) $(TEST_HELPERS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ -lcriterion $(LDLIBS)

# Broken engine plugins for tests/test_outside.c and tests/test_hardening.c
# (tests/bad_plugin.c, one per -DBAD).
BAD_PLUGINS := $(foreach i,1 2 3 4 5 6 7 8,$(BUILD)/tests/libbad_plugin$(i).so)
$(BUILD)/tests/libbad_plugin%.so: tests/bad_plugin.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DBAD=$* $(PLUGIN_LDFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/tests/test_outside $(BUILD)/tests/test_hardening $(BUILD)/tests/test_hostile: | $(BAD_PLUGINS)

# Partial engine plugins for tests/test_partial.c (tests/partial_plugin.c,
# one per -DPARTIAL): the CPU engine offering no logits, no moments, or a
# table from before offers() with get_logits and get_moments NULL.
PARTIAL_PLUGINS := $(foreach i,1 2 3,$(BUILD)/tests/libpartial_plugin$(i).so)
$(BUILD)/tests/libpartial_plugin%.so: tests/partial_plugin.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DPARTIAL=$* $(PLUGIN_LDFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/tests/test_partial: | $(PARTIAL_PLUGINS)

# Under SANITIZE=1 any sanitizer report fails the test that ran into it
# (-fno-sanitize-recover); leaks are not checked (the tools exit through
# die() without freeing), and an impossible allocation returns NULL, as
# malloc does, so that the tools' own out-of-memory message is what is seen.
export ASAN_OPTIONS ?= detect_leaks=0:allocator_may_return_null=1
export UBSAN_OPTIONS ?= print_stacktrace=1

# The Criterion binaries, a short parity suite on the CPU backend, then the
# GPU tests (which say why they skip where there is no GPU).
test: $(BINS) $(TEST_BINS) data/names.txt
	@bash tests/run.sh $(TEST_BINS)
	@bash scripts/parity.sh --backend cpu --steps 40 --jobs 2 --build $(BUILD) --out $(BUILD)/parity-test
	@$(PYTHON) scripts/calibrate.py check --build $(BUILD)
	@$(MAKE) --no-print-directory test-gpu
