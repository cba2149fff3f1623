# The tensor engine's CPU backend (the reference for the CUDA kernels).
