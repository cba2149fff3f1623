// The CPU stand-in of cooperative groups' grid (beside emu/cuda_runtime.h):
// under emu_launch_cooperative grid.sync() is the barrier of every thread of
// the grid; emu_launch runs the blocks one after another, so there it can
// join a grid of one block alone (a larger grid stops the program).
#ifndef TENSOR_GPU_CUDA_EMU_COOPERATIVE_GROUPS_H
#define TENSOR_GPU_CUDA_EMU_COOPERATIVE_GROUPS_H

#include <cstdio>
#include <cstdlib>

#include "cuda_runtime.h"

namespace cooperative_groups {
struct grid_group {
    void sync() const {
        if (emu_grid_barrier) {
            emu_grid_barrier->arrive_and_wait();
            return;
        }
        if (gridDim.x != 1) {
            std::fprintf(stderr, "emu: grid.sync() in a grid of %u blocks (the emulator runs one block at a time)\n",
                         gridDim.x);
            std::abort();
        }
        __syncthreads();
    }
};
inline grid_group this_grid() { return grid_group{}; }
}  // namespace cooperative_groups

#endif
