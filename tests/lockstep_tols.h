// The tolerances of a CUDA implementation against the CPU engine in
// lockstep, each step from the CPU engine's state (tests/test_gpu.cu: the
// engine on each path, the fused step's shapes; tests/test_fused_emu.cc:
// the fused kernel on the CPU): |a - b| <= atol + rtol |b| elementwise for
// the loss, the logits and the gradients, the gradients not compared where a
// ReLU input lies within relu_margin of 0 (the two may gate it differently).
#ifndef TESTS_LOCKSTEP_TOLS_H
#define TESTS_LOCKSTEP_TOLS_H

struct Tol {
    double atol, rtol;
};

struct LockstepTols {
    Tol loss, logits, grads;
    double relu_margin;
};

inline LockstepTols lockstep_tols(bool fp64) {
    return fp64 ? LockstepTols{{1e-14, 1e-11}, {1e-14, 1e-11}, {1e-15, 1e-11}, 1e-12}
                : LockstepTols{{1e-6, 1e-5}, {1e-5, 1e-5}, {1e-6, 1e-4}, 1e-6};
}

#endif
