# The tensor engine's CUDA backend. Without CUDA, a stand-in whose engine
# reports that the build has none.
LIB_SRC += tensor_gpu/cuda/no_cuda.c
CUDA_LIB :=
CUDA_LDLIBS :=
