# The tensor engine's CUDA backend (docs/cuda_backend.md).
# CUDA=1 (nvcc found): the kernels and the engine (tensor_gpu/cuda/*.cu) go
# into $(BUILD)/libmicrogpt_cuda.a and the engine plugin
# $(BUILD)/libmicrogpt_cuda_engine.so; $(BUILD)/test_gpu (tests/test_gpu.cu)
# checks them against the CPU reference (`make test-gpu`; it skips with a
# message where there is no GPU), and $(BUILD)/test_attn_emu and
# $(BUILD)/test_fused_emu run the tiled attention kernels and the fused step
# on the CPU (no GPU needed). CUDA=0: a stand-in (no_cuda.c) whose engine
# reports that the build has none.

# The kernels' own code run on the CPU (emu/cuda_runtime.h: threads for CUDA
# threads) against the reference: a C++20 compiler (std::barrier) is all
# they need, so their rules stand in either build (the mutation kit's CPU
# part builds test_fused_emu with CUDA=0); with CUDA they are part of the
# build and of make test-gpu, so CI runs them.
EMU_CXXFLAGS := -std=c++20 -O1 -g -Wall -Wextra -Werror -Wno-unknown-pragmas -ffp-contract=off -D_GNU_SOURCE \
                -Itensor_gpu/cuda/emu -I. -Iinclude
EMU_HEADERS := tensor_gpu/cuda/device_util.cuh tensor_gpu/cuda/cuda_check.cuh tensor_gpu/cuda/emu/cuda_runtime.h \
               tensor_gpu/cuda/emu/cublas_v2.h
TEST_ATTN_EMU := $(BUILD)/test_attn_emu
$(TEST_ATTN_EMU): tensor_gpu/cuda/test_attn_emu.cc tensor_gpu/cuda/attention_tiled.cuh $(EMU_HEADERS) $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) $(LDFLAGS) $< $(LIB) -o $@ $(LDLIBS)
# the fused step (fused.cu) in lockstep with the CPU engine (tests/test_fused_emu.cc)
TEST_FUSED_EMU := $(BUILD)/test_fused_emu
$(TEST_FUSED_EMU): tests/test_fused_emu.cc tests/lockstep_tols.h tensor_gpu/cuda/fused.cu tensor_gpu/cuda/fused.cuh \
                   tensor_gpu/cuda/kernels.cuh tensor_gpu/cuda/emu/cooperative_groups.h $(EMU_HEADERS) $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) $(LDFLAGS) $< $(LIB) -o $@ $(LDLIBS)

ifeq ($(CUDA),1)

# Hopper machine code plus PTX, which newer GPUs compile at load time.
# Another GPU: make NVCC_ARCH='-gencode arch=compute_80,code=sm_80'
NVCC_ARCH ?= -gencode arch=compute_90,code=[sm_90,compute_90]
# No fused multiply-add in the kernels (as -ffp-contract=off in the C code):
# they round as the reference does. Warnings are errors.
NVCCFLAGS := -std=c++17 -O2 -g -lineinfo $(NVCC_ARCH) --fmad=false -Werror all-warnings \
             -Xcompiler -Wall,-Wextra,-Werror,-ffp-contract=off,-fPIC -D_GNU_SOURCE -I. -Iinclude \
             $(if $(DEPS_PREFIX),-I$(DEPS_PREFIX)/usr/include) $(if $(FUSED_PROFILE),-DFUSED_PROFILE)

CUDA_SRC := tensor_gpu/cuda/kernels.cu tensor_gpu/cuda/attention.cu tensor_gpu/cuda/fused.cu tensor_gpu/cuda/mixed.cu tensor_gpu/cuda/engine_cuda.cu
CUDA_OBJ := $(patsubst %.cu,$(BUILD)/obj/%.o,$(CUDA_SRC))
CUDA_LIB := $(BUILD)/libmicrogpt_cuda.a
CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++

$(BUILD)/obj/tensor_gpu/cuda/%.o: tensor_gpu/cuda/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $(@:.o=.d) -c $< -o $@

$(CUDA_LIB): $(CUDA_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The engine plugin compare loads for `cuda` (the kernels, the engine, the
# library, cuBLAS and the CUDA runtime in one shared library).
CUDA_PLUGIN := $(BUILD)/libmicrogpt_cuda_engine.so
BINS += $(CUDA_PLUGIN)
$(CUDA_PLUGIN): $(call obj,tensor_gpu/cuda/plugin.c) $(CUDA_OBJ) $(LIB)
	$(CC) $(PLUGIN_LDFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS) $(CUDA_LDLIBS)

# The per-kernel and engine tests, tests/test_gpu.cu (plain C++/CUDA with
# their own checks; no Criterion, and not one of tests/module.mk's
# tests/test_*.c): compiled by nvcc with the kernels' flags, linked with the
# CPU reference in $(LIB).
TEST_GPU := $(BUILD)/test_gpu
BINS += $(TEST_GPU)
$(BUILD)/obj/tests/test_gpu.o: tests/test_gpu.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $(@:.o=.d) -c $< -o $@
$(TEST_GPU): $(BUILD)/obj/tests/test_gpu.o $(CUDA_LIB) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS) $(CUDA_LDLIBS)

BINS += $(TEST_ATTN_EMU) $(TEST_FUSED_EMU)
test-gpu: $(TEST_ATTN_EMU) $(TEST_FUSED_EMU) $(TEST_GPU)
	$(TEST_ATTN_EMU)
	$(TEST_FUSED_EMU)
	$(TEST_GPU)

else

LIB_SRC += tensor_gpu/cuda/no_cuda.c
CUDA_LIB :=
CUDA_LDLIBS :=

test-gpu:
	@echo "test-gpu: skipped: this build has no CUDA (nvcc not found, or CUDA=0); BACKEND=cpu checks the tensor math on the CPU"

endif
