# libFuzzer targets (clang), every fuzz/fuzz_<target>.c, each from its seed
# corpus in fuzz/corpus/<target>/: the dataset loader, the trace reader, the
# settings parser, the safetensors reader, the exec engine's reply reader,
# --against's tensor checks and the trace subcommands' output.
# `make fuzz FUZZ_SECONDS=N` builds them with ASan+UBSan in build-fuzz/ and
# runs each for N seconds; what they find new goes to build-fuzz/fuzz/corpus-*,
# a crash to build-fuzz/fuzz/crash-* (and make fails).
FUZZ_TARGETS := $(sort $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c)))
FUZZ_SECONDS ?= 60
FUZZ_BINS := $(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_TARGETS))

.PHONY: fuzz fuzz-run
ifeq ($(FUZZ),1)
$(BUILD)/fuzz/fuzz_%: $(call obj,fuzz/fuzz_%.c) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -fsanitize=fuzzer $(filter %.o,$^) $(filter %.a,$^) -o $@ $(LDLIBS)
# the trace subcommands are the trace tool's objects (all but its main)
$(BUILD)/fuzz/fuzz_trace_tools: $(call obj,$(filter-out traces/trace_tool.c,$(TRACE_TOOL_SRC)))

fuzz-run: $(FUZZ_BINS)
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(BUILD)/fuzz/corpus-$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  ASAN_OPTIONS=detect_leaks=1 $(BUILD)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=$(BUILD)/fuzz/crash-$$t- \
	    $(BUILD)/fuzz/corpus-$$t fuzz/corpus/$$t 2>$(BUILD)/fuzz/$$t.log || \
	    { tail -40 $(BUILD)/fuzz/$$t.log; echo "fuzz: $$t FAILED (log: $(BUILD)/fuzz/$$t.log)"; exit 1; }; \
	  grep -E "stat::number_of_executed_units|stat::new_units_added" $(BUILD)/fuzz/$$t.log | tr '\n' ' '; echo; \
	done
endif

fuzz:
	@command -v clang >/dev/null || { echo "fuzz: clang is needed (apt-get install clang)" >&2; exit 2; }
	@$(MAKE) --no-print-directory FUZZ=1 fuzz-run
