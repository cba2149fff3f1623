# The mutation kit (scripts/mutants.sh, docs/parity.md): `make mutants`
# plants each bug of mutants/*.patch in a scratch copy under build/mutants/
# and checks that some check catches it. MUTANTS=cpu (default; no GPU
# needed), gpu (the CUDA kernels; needs a GPU) or all.
MUTANTS ?= cpu
.PHONY: mutants
mutants: data/names.txt
	bash scripts/mutants.sh --part $(MUTANTS)
