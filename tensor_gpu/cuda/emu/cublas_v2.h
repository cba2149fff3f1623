// The types of cuBLAS that cuda_check.cuh names, for the CPU stand-in of
// cuda_runtime.h beside it (no cuBLAS call is made there).
#ifndef TENSOR_GPU_CUDA_EMU_CUBLAS_V2_H
#define TENSOR_GPU_CUDA_EMU_CUBLAS_V2_H
typedef int cublasStatus_t;
typedef struct cublasContext *cublasHandle_t;
#endif
