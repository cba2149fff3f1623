# microgpt-harness build. `make` builds every tool into build/, `make test`
# runs the test suite, `make help` lists the targets. Each folder adds its
# sources through its module.mk.
CC      := gcc
# Sanitizer builds go to their own folders (their objects do not mix with the
# plain build's) and leave CUDA out: nvcc's objects are not linked with the
# sanitizer runtimes. clang when there is one: it also has float-cast-overflow.
#   make test SANITIZE=1    ASan + UBSan, the whole test suite (build-san/)
#   make fuzz               libFuzzer targets (fuzz/, build-fuzz/)
HAVE_CLANG := $(shell command -v clang 2>/dev/null)
SAN :=
ifeq ($(SANITIZE),1)
  CC    := $(if $(HAVE_CLANG),clang,gcc)
  BUILD ?= build-san
  CUDA  := 0
  SAN   := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
endif
ifeq ($(FUZZ),1)
  CC    := clang
  BUILD ?= build-fuzz
  CUDA  := 0
  SAN   := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
endif
ifeq ($(CC),clang)
  SAN += $(if $(SAN),-fsanitize=float-cast-overflow)
endif
BUILD   ?= build
# Warnings are errors. No fast-math anywhere: the scalar engine's bits depend
# on IEEE semantics, and FMA contraction is off so a*b+c rounds twice as in Python.
# -fPIC: the library also goes into the engine plugins (shared libraries).
CFLAGS  := -std=c11 -O2 -g -Wall -Wextra -Werror -ffp-contract=off -D_GNU_SOURCE -fPIC -I. -Iinclude $(SAN) $(EXTRA_CFLAGS)
LDFLAGS += $(SAN)
LDLIBS  := -lcjson -lm -lpthread -ldl
# Extra places to find headers and libraries (e.g. unpacked .deb files on a
# machine without the packages installed): make DEPS_PREFIX=/tmp/deps
ifneq ($(DEPS_PREFIX),)
  CFLAGS += -I$(DEPS_PREFIX)/usr/include
  LDFLAGS += -L$(DEPS_PREFIX)/usr/lib/x86_64-linux-gnu -Wl,-rpath,$(DEPS_PREFIX)/usr/lib/x86_64-linux-gnu
endif
DEPFLAGS = -MMD -MP

# CUDA: on by default when nvcc is found (the CUDA code must compile in CI,
# which has no GPU); `make CUDA=0` builds without it.
CUDA_HOME ?= /usr/local/cuda
NVCC := $(if $(wildcard $(CUDA_HOME)/bin/nvcc),$(CUDA_HOME)/bin/nvcc,nvcc)
ifeq ($(origin CUDA),undefined)
  CUDA := $(if $(wildcard $(CUDA_HOME)/bin/nvcc)$(shell command -v nvcc 2>/dev/null),1,0)
endif

.DEFAULT_GOAL := all
# keep intermediate objects (test objects are built by a chain of rules)
.SECONDARY:

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

# An engine plugin (include/microgpt/engine_abi.h): a shared library that
# exports only microgpt_engine_abi_v1.
PLUGIN_LDFLAGS = -shared -Wl,--version-script=include/microgpt/engine_abi.map $(if $(SAN),,-Wl,-z,defs)

# Library sources (no main); module.mk files append to these.
LIB_SRC := common/util.c common/cli.c common/pyrandom.c common/dataset.c common/sha256.c \
           common/settings.c common/model.c common/engine.c common/atomic_file.c common/interrupt.c \
           common/safetensors.c common/strbuf.c common/engine_export.c common/activations.c
LIB_OBJ_EXTRA :=
LIB := $(BUILD)/libmicrogpt.a
BINS :=

include scalar_ref/module.mk
include traces/module.mk
include tensor_gpu/cpu/module.mk
include tensor_gpu/cuda/module.mk
include compare/module.mk
include examples/module.mk

LIB_OBJ := $(call obj,$(LIB_SRC)) $(LIB_OBJ_EXTRA)

NAMES_URL := https://raw.githubusercontent.com/karpathy/makemore/refs/heads/master/names.txt

.PHONY: all run data test test-gpu bench parity calibrate calibrate-check deps tile-compile clean help
all: $(BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# names.txt is fetched on first use, as the original does.
data: data/names.txt
data/names.txt:
	@mkdir -p data
	@echo "fetching names.txt from $(NAMES_URL)"
	@curl -fsSL --retry 3 -o $@.tmp $(NAMES_URL) && mv $@.tmp $@ || \
	  { rm -f $@.tmp; echo "could not download names.txt: copy it to data/names.txt by hand" >&2; exit 1; }

run: $(BUILD)/microgpt data/names.txt
	$(BUILD)/microgpt

bench: $(BUILD)/bench_scalar data/names.txt
	$(BUILD)/bench_scalar

# The parity suite: scalar vs the tensor engine (BACKEND=cuda by default).
# On cuda it runs once per path: layered forced, then auto (the fused step
# wherever it fits); PARITY_JOBS runs at a time.
BACKEND ?= cuda
PARITY_STEPS ?= 1000
PARITY_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CUDA_PATHS ?= layered auto
parity: $(BUILD)/compare data/names.txt
ifeq ($(BACKEND),cuda)
	@st=0; for p in $(CUDA_PATHS); do \
	  bash scripts/parity.sh --backend cuda --path $$p --steps $(PARITY_STEPS) --jobs $(PARITY_JOBS) --build $(BUILD) || st=$$?; \
	done; exit $$st
else
	bash scripts/parity.sh --backend $(BACKEND) --steps $(PARITY_STEPS) --jobs $(PARITY_JOBS) --build $(BUILD)
endif

# make deps TORCH=1: PyTorch into .venv as well (scripts/install-deps.sh --torch),
# for the tests and examples that use it; TORCH_INDEX_URL=URL picks pip's index
deps:
	bash scripts/install-deps.sh $(if $(filter-out 0,$(TORCH)),--torch)

# The cuTile engine's kernels (examples/cutile_kernels.py), every variant it
# launches, compiled for an H100 (sm_90) without a GPU: cuda-tile[tileiras]
# from PyPI into .venv-cutile (scripts/install-deps.sh --cutile, ~160 MB)
tile-compile:
	bash scripts/install-deps.sh --cutile
	.venv-cutile/bin/python tests/cutile_engine_check.py --compile-for 90

# The calibration of compare's rules (scripts/calibrate.py, docs/compare.md):
# measure the CPU family (hours on 2 cores; runs already measured are kept)
# and the records --against checks (numpy, and torch on the CPU where
# $(PYTHON) has it: make deps TORCH=1), reduce, plot, write
# docs/calibration/report.md, derive the constants and check the table. The GPU family is measured on a GPU machine
# (scripts/gpu_session.sh --calibrate) into docs/calibration/measured-gpu.json.
# CALIBRATE_JOBS runs at a time.
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
CALIBRATE_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
calibrate: $(BUILD)/compare data/names.txt
	$(PYTHON) scripts/calibrate.py measure --family cpu --jobs $(CALIBRATE_JOBS) --build $(BUILD)
	$(PYTHON) scripts/calibrate.py reduce --family cpu
	$(PYTHON) scripts/calibrate.py measure --family against --jobs $(CALIBRATE_JOBS) --build $(BUILD)
	$(PYTHON) scripts/calibrate.py reduce --family against
	$(PYTHON) scripts/calibrate.py plot
	$(PYTHON) scripts/calibrate.py report
	$(PYTHON) scripts/calibrate.py derive --check
# CI's short version: the table against its measurement, and a fresh run's fingerprint
calibrate-check: $(BUILD)/compare data/names.txt
	$(PYTHON) scripts/calibrate.py check --build $(BUILD)

include tests/module.mk
include mutants/module.mk
include fuzz/module.mk

help:
	@echo "make            build every tool into $(BUILD)/ (CUDA=$(CUDA))"
	@echo "make run        train and sample with the scalar engine (fetches data/names.txt first)"
	@echo "make test       the test suite (Criterion; no GPU or network needed)"
	@echo "make test SANITIZE=1   the test suite built with ASan+UBSan (in build-san/, without CUDA)"
	@echo "make fuzz FUZZ_SECONDS=N   libFuzzer on every target of fuzz/ (the readers and parsers; N s each)"
	@echo "make test-gpu   the CUDA kernel tests (skipped with a message where there is no GPU)"
	@echo "make bench      time the scalar engine (ms/step, nodes/step, peak memory)"
	@echo "make parity BACKEND=cuda|cpu   the parity suite: scalar vs the tensor engine"
	@echo "make mutants MUTANTS=cpu|compare|gpu|all   plant each bug of mutants/ and show which check catches it"
	@echo "make calibrate  measure the rules' statistics on the CPU family and check the table (hours)"
	@echo "make calibrate-check   the table against its measurement, and a fresh run's fingerprint (CI)"
	@echo "make deps       install the Debian packages the build needs (root or sudo)"
	@echo "make deps TORCH=1   the same, and PyTorch into .venv (the torch tests and examples)"
	@echo "make tile-compile   compile the cuTile engine's kernels for sm_90 (no GPU; cuda-tile from PyPI)"
	@echo "make data       fetch data/names.txt"
	@echo "make clean      remove $(BUILD)/"

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
