# The tensor engine's CUDA backend.
