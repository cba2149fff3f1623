# Criterion tests: one binary per tests/test_*.c, run from the repository root.
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

$(BUILD)/tests/%: tests/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) $< -o $@ $(LIB) -lcriterion $(LDLIBS)

test: $(BINS) $(TEST_BINS) data/names.txt
	@bash tests/run.sh $(TEST_BINS)
