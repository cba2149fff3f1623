"""examples/numpy_engine.py without its activations (the create reply says
"activations": false), for tests/test_localize.c: an engine that reports no
op outputs is localized from its gradient tensors alone. Flags as the numpy
engine's (--broken-rmsnorm)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import mg_protocol  # noqa: E402
import numpy_engine  # noqa: E402


class NoActivations(numpy_engine.NumpyEngine):
    activations = False


mg_protocol.serve(NoActivations)
