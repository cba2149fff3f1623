// The recipe's conversions to L (bf16, fp16, tf32), one functor per L, for
// the kernels that write an operand straight in L (mixed.cu, attention.cu).
// Every rounding is tensor_gpu/lowp.h's, the CPU emulation's own code.
#ifndef TENSOR_GPU_CUDA_LOWP_OUT_CUH
#define TENSOR_GPU_CUDA_LOWP_OUT_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "tensor_gpu/cuda/mixed.cuh"   // Lowp

#include "tensor_gpu/lowp.h"   // static inline C: the CPU's rounding, __host__ __device__ here

namespace mgpt {

// x rounded to bf16 (nearest even, lowp.h), as the bf16 whose bits are the
// rounded float's upper half (exact: the rounded float is a bf16 value).
__device__ inline __nv_bfloat16 bf16_of(float x) {
    return __ushort_as_bfloat16((unsigned short)(lowp_bits(round_bf16(x)) >> 16));
}

// x rounded to fp16 by lowp.h, as a __half (the conversion of an fp16 value,
// or of +-inf or NaN, is exact)
__device__ inline __half fp16_of(float x) { return __float2half_rn(round_fp16(x)); }

// The operand conversions, one functor per L: the L value of x (tf32: the
// rounded float, which cuBLAS reads as fp32). exact_operands (bf16, fp16):
// the recipe's attention takes its inputs (q, k, v and the output gradient)
// as L values (rounded as the kernels load them, attention_tiled.cuh's
// InputOf), whose products are exact in fp32 (8 + 8 or 11 + 11 significant
// bits, fp16's range well inside fp32's normal range; a bf16 product below
// 2^-126, fp32's normal range, is the exception), so the attention kernels
// writing L fuse their score products' multiply and add (attention_tiled.cuh).
// tf32 keeps its outputs unrounded fp32: its attention inputs are not L values.
struct ToBf16 {
    using T = __nv_bfloat16;
    static constexpr bool exact_operands = true;
    __device__ T operator()(float x) const { return bf16_of(x); }
    __device__ static float widen(T x) { return __bfloat162float(x); }   // exact
};
struct ToFp16 {
    using T = __half;
    static constexpr bool exact_operands = true;
    __device__ T operator()(float x) const { return fp16_of(x); }
    __device__ static float widen(T x) { return __half2float(x); }   // exact
};
struct ToTf32 {
    using T = float;
    __device__ T operator()(float x) const { return round_tf32(x); }
};

// fn(F{}) for lp's conversion functor F
template <class Fn> inline void with_lowp(Lowp lp, Fn &&fn) {
    if (lp == Lowp::BF16) fn(ToBf16{});
    else if (lp == Lowp::FP16) fn(ToFp16{});
    else fn(ToTf32{});
}

}  // namespace mgpt

#endif
