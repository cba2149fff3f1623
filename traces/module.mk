# Trace writing (shared) and the trace tool.
LIB_SRC += traces/trace.c
