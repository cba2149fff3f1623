# microgpt-harness. `make` builds everything into build/; `make test` runs the
# tests; `make help` lists the targets.
CC      := gcc
BUILD   := build
# Warnings are errors. No fast-math anywhere: the scalar engine's bits depend
# on IEEE semantics, and FMA contraction is off so a*b+c rounds twice as in Python.
CFLAGS  := -std=c11 -O2 -g -Wall -Wextra -Werror -ffp-contract=off -D_GNU_SOURCE -I. $(EXTRA_CFLAGS)
LDLIBS  := -lcjson -lm
DEPFLAGS = -MMD -MP

COMMON_SRC := common/util.c common/pyrandom.c common/dataset.c common/sha256.c \
              common/settings.c common/model.c common/engine.c traces/trace.c
SCALAR_SRC := scalar_ref/pymath.c scalar_ref/pymath_fast.c scalar_ref/autograd.c scalar_ref/gpt.c scalar_ref/engine_scalar.c

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
COMMON_OBJ := $(call obj,$(COMMON_SRC))
SCALAR_OBJ := $(call obj,$(SCALAR_SRC))

NAMES_URL := https://raw.githubusercontent.com/karpathy/makemore/refs/heads/master/names.txt

.PHONY: all run data test bench clean help
all: $(BUILD)/microgpt $(BUILD)/bench_scalar

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/microgpt: $(call obj,scalar_ref/main.c) $(SCALAR_OBJ) $(COMMON_OBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/bench_scalar: $(call obj,scalar_ref/bench.c) $(SCALAR_OBJ) $(COMMON_OBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

bench: $(BUILD)/bench_scalar data/names.txt
	$(BUILD)/bench_scalar

data: data/names.txt
data/names.txt:
	@mkdir -p data
	@echo "fetching names.txt from $(NAMES_URL)"
	curl -fsSL --retry 3 -o $@.tmp $(NAMES_URL) && mv $@.tmp $@ || \
	  { rm -f $@.tmp; echo "could not download names.txt; copy it to data/names.txt by hand" >&2; exit 1; }

run: $(BUILD)/microgpt data/names.txt
	$(BUILD)/microgpt

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
