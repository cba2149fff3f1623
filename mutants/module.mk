# The mutation kit (scripts/mutants.sh, docs/parity.md): `make mutants`
# plants each bug of mutants/*.patch in a scratch copy under build/mutants/
# and checks that some check catches it. MUTANTS=cpu (default; no GPU
# needed), gpu (the CUDA kernels; needs a GPU) or all. MUTANT_JOBS mutants
# are built and checked at a time, each in its own copy.
MUTANTS ?= cpu
MUTANT_JOBS ?= 2
.PHONY: mutants
mutants: data/names.txt
	bash scripts/mutants.sh --part $(MUTANTS) --jobs $(MUTANT_JOBS)
