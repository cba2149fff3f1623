# The tensor engine's CPU backend (the reference for the CUDA kernels).
# layers.c is written once and compiled twice: real = double (*_f64) and
# real = float (*_f32).
LIB_SRC += tensor_gpu/cpu/engine_cpu.c tensor_gpu/cpu/mixed.c

CPU_LAYERS_OBJ := $(BUILD)/obj/tensor_gpu/cpu/layers_f64.o $(BUILD)/obj/tensor_gpu/cpu/layers_f32.o
LIB_OBJ_EXTRA += $(CPU_LAYERS_OBJ)

$(CPU_LAYERS_OBJ): $(BUILD)/obj/tensor_gpu/cpu/layers_f%.o: tensor_gpu/cpu/layers.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) -DREAL_BITS=$* -c $< -o $@
