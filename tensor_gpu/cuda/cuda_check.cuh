// Error checking for the CUDA backend: one macro per API, each naming the
// failed call, the file and the line.
//
//   CUDA_CHECK(call)     a CUDA runtime call (cudaMalloc, cudaMemcpyAsync, ...)
//   CUBLAS_CHECK(call)   a cuBLAS call
//   KERNEL_CHECK(name)   right after a kernel launch: a launch that failed
//                        (bad configuration, no kernel image for this GPU)
//
// A failure throws mgpt::CudaError with the message; the engine's entry
// points (engine_cuda.cu) catch it: cuda_engine_create() returns NULL with
// the message, a failure inside step() and the other EngineOps ends the run
// with exit code 1. device_malloc() says how many bytes were asked for when
// the device is out of memory.
#ifndef TENSOR_GPU_CUDA_CUDA_CHECK_CUH
#define TENSOR_GPU_CUDA_CUDA_CHECK_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>

namespace mgpt {

struct CudaError : std::runtime_error {
    explicit CudaError(const std::string &what) : std::runtime_error(what) {}
};

[[noreturn]] void throw_cuda_error(cudaError_t e, const char *call, const char *file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t s, const char *call, const char *file, int line);
const char *cublas_status_name(cublasStatus_t s);

// cudaMalloc of `bytes` for `what`; throws with the size and the free/total
// device memory when it fails.
void *device_malloc(size_t bytes, const char *what, const char *file, int line);
// cudaMallocHost (pinned host memory), likewise.
void *host_malloc_pinned(size_t bytes, const char *what, const char *file, int line);

}  // namespace mgpt

#define CUDA_CHECK(call)                                                              \
    do {                                                                              \
        cudaError_t mgpt_err_ = (call);                                               \
        if (mgpt_err_ != cudaSuccess) ::mgpt::throw_cuda_error(mgpt_err_, #call, __FILE__, __LINE__); \
    } while (0)

#define CUBLAS_CHECK(call)                                                            \
    do {                                                                              \
        cublasStatus_t mgpt_st_ = (call);                                             \
        if (mgpt_st_ != CUBLAS_STATUS_SUCCESS)                                        \
            ::mgpt::throw_cublas_error(mgpt_st_, #call, __FILE__, __LINE__);          \
    } while (0)

#define KERNEL_CHECK(name)                                                            \
    do {                                                                              \
        cudaError_t mgpt_err_ = cudaGetLastError();                                   \
        if (mgpt_err_ != cudaSuccess)                                                 \
            ::mgpt::throw_cuda_error(mgpt_err_, "launch of kernel " name, __FILE__, __LINE__); \
    } while (0)

#define DEVICE_MALLOC(bytes, what) ::mgpt::device_malloc((bytes), (what), __FILE__, __LINE__)
#define HOST_MALLOC_PINNED(bytes, what) ::mgpt::host_malloc_pinned((bytes), (what), __FILE__, __LINE__)

#endif
