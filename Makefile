# kvsweep build. `make` (CUDA auto-detected), `make CUDA=0`, `make test`,
# `make test-gpu`, `make demo`, `make asan`, `make fuzz`, `make bench`,
# `make bench-policy`, `make bench-gpu`, `make soak`, `make V=1` for full command lines.
#
# Layout of the products (dependency direction kernels <- engine <- CLIs):
#   build/libkernels.a   kernels/cpu/*.c + kernels/cuda_loader.c (dlopens libkvcuda.so on first use)
#   build/libkvcuda.so   kernels/cuda/*.cu, CUDA=1 only: cuBLAS + our kernels behind the kn_cuda.h
#                        table; nothing else links CUDA, so CPU-only use needs no CUDA libraries
#   build/libengine.a    engine/*.c except engine/*_main.c
#   build/kvrun          engine/kvrun_main.c
#   build/libkvq.a       worker/*.c except *_main.c: job codec, msgpack guard, Redis queue
#   build/libsubmit.a    submit/*.c except *_main.c + schema/*.sql (embedded): sweep, results.db
#   build/kvworker       worker/kvworker_main.c (engine + libkvq)
#   build/kvsubmit       submit/kvsubmit_main.c (libsubmit + libkvq; no engine)
#   build/tests/test_*   tests/test_*.c, one CUnit binary per module
# (Keep comments off assignment lines: make keeps the trailing spaces.)

CC        ?= cc
NVCC      ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA      ?= $(if $(NVCC),1,0)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
BUILD     ?= build
SAN       ?=

# OpenBLAS: the OpenMP build, so that BLAS threads and our own OpenMP loops
# share one thread pool instead of fighting over the cores.
BLAS_DIR  ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_INC  ?= /usr/include/x86_64-linux-gnu/openblas-openmp

CPPFLAGS  += -Ikernels -Iengine -Iworker -Isubmit -I$(BLAS_INC) -MMD -MP -D_GNU_SOURCE -DKN_CUDA=$(CUDA)
# OPT, not CFLAGS, on the command line (`make OPT="-O1 -g"`): a command-line
# CFLAGS would replace the warnings and $(SAN) below. Under a sanitizer every
# object is position-independent, so the mock libkvcuda_mock.so links too.
OPT       ?= -O2 -g
CFLAGS    += $(OPT) -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -fopenmp $(SAN) \
             $(if $(SAN),-fPIC)
NVCCFLAGS ?= -O3 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=[sm_90,compute_90]
NVCCFLAGS += -Werror all-warnings
# libkvcuda.so objects: position-independent, only kn_cuda_api_get exported,
# host-side warnings on (errors too, under -Werror all-warnings).
NVCC_SO   := -Xcompiler -fPIC,-fvisibility=hidden,-Wall,-Wextra
CUDA_LIBS  = -L$(CUDA_HOME)/lib64 -lcublas -lcublasLt -Xlinker -rpath,$(CUDA_HOME)/lib64 -Xlinker --no-undefined
LDFLAGS   += -fopenmp $(SAN) -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR)
LDLIBS    += -lopenblas -ljansson -lpcre2-8 -lutf8proc -lcrypto -lm -ldl
KVQ_LIBS  := -lhiredis -lmsgpackc -lcrypto
SUB_LIBS  := -lsqlite3 -ljansson $(KVQ_LIBS)

KERN_SRC  := $(wildcard kernels/cpu/*.c) kernels/cuda_loader.c
ifeq ($(CUDA),1)
  KERN_CU   := $(wildcard kernels/cuda/*.cu)
  CUDA_SO   := $(BUILD)/libkvcuda.so
endif
KERN_OBJ  := $(KERN_SRC:%.c=$(BUILD)/%.o)
CU_OBJ    := $(KERN_CU:%.cu=$(BUILD)/%.cu.o)
ENG_SRC   := $(filter-out %_main.c,$(wildcard engine/*.c))
ENG_OBJ   := $(ENG_SRC:%.c=$(BUILD)/%.o)
KVQ_SRC   := $(filter-out %_main.c,$(wildcard worker/*.c))
KVQ_OBJ   := $(KVQ_SRC:%.c=$(BUILD)/%.o)
SUB_SRC   := $(filter-out %_main.c,$(wildcard submit/*.c))
SUB_OBJ   := $(SUB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/schema/schema_sql.o
TEST_SRC  := $(wildcard tests/test_*.c)
TEST_BIN  := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_HELP := $(BUILD)/tests/testutil.o
BINS      := $(BUILD)/kvrun $(BUILD)/kvworker $(BUILD)/kvsubmit

Q := $(if $(V),,@)

all: $(BINS) $(TEST_BIN) $(CUDA_SO)

# Rebuild everything when the flags change (redis' persist-settings idea).
FLAGS_LINE := $(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) CUDA=$(CUDA) $(NVCCFLAGS)
$(BUILD)/.flags: FORCE
	@mkdir -p $(@D)
	@echo '$(FLAGS_LINE)' | cmp -s - $@ || echo '$(FLAGS_LINE)' > $@
FORCE:

$(BUILD)/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(@D)
	@echo "  CC    $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/%.cu.o: %.cu $(BUILD)/.flags
	@mkdir -p $(@D)
	@echo "  NVCC  $<"
	$(Q)$(NVCC) -Ikernels -MMD -MP $(NVCCFLAGS) $(NVCC_SO) -c $< -o $@

# The CUDA backend as a shared library, found at run time by
# kernels/cuda_loader.c (beside the executable or one directory up).
$(BUILD)/libkvcuda.so: $(CU_OBJ)
	@echo "  LD    $@"
	$(Q)$(NVCC) -shared -cudart shared -o $@ $^ $(CUDA_LIBS)

# rm first: `ar rcs` only adds/replaces members, so a CUDA=1 object would
# survive in the archive after switching to CUDA=0.
$(BUILD)/libkernels.a: $(KERN_OBJ)
	$(Q)rm -f $@ && $(AR) rcs $@ $^
$(BUILD)/libengine.a: $(ENG_OBJ)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/libkvq.a: $(KVQ_OBJ)
	$(Q)rm -f $@ && $(AR) rcs $@ $^
$(BUILD)/libsubmit.a: $(SUB_OBJ)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

# schema/NNN_*.sql become C strings (kv_schema_sql[], in version order).
$(BUILD)/schema/schema_sql.c: $(sort $(wildcard schema/*.sql)) ops/embed-sql.sh
	@mkdir -p $(@D)
	$(Q)sh ops/embed-sql.sh $(sort $(wildcard schema/*.sql)) > $@

$(BUILD)/schema/schema_sql.o: $(BUILD)/schema/schema_sql.c
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

LIBS := $(BUILD)/libengine.a $(BUILD)/libkernels.a

$(BUILD)/kvrun: $(BUILD)/engine/kvrun_main.o $(LIBS)
	@echo "  LD    $@"
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/kvworker: $(BUILD)/worker/kvworker_main.o $(BUILD)/libkvq.a $(LIBS)
	@echo "  LD    $@"
	$(Q)$(CC) $(LDFLAGS) $^ $(KVQ_LIBS) $(LDLIBS) -o $@

$(BUILD)/kvsubmit: $(BUILD)/submit/kvsubmit_main.o $(BUILD)/libsubmit.a $(BUILD)/libkvq.a
	@echo "  LD    $@"
	$(Q)$(CC) $(LDFLAGS) $^ $(SUB_LIBS) -lm -o $@

# Benchmarks are plain programs (tests/bench_*.c), built by `make bench`.
$(BUILD)/bench_%: $(BUILD)/tests/bench_%.o $(LIBS)
	@echo "  LD    $@"
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_HELP) $(BUILD)/libsubmit.a $(BUILD)/libkvq.a $(LIBS)
	@echo "  LD    $@"
	$(Q)$(CC) $(LDFLAGS) $^ -lcunit $(SUB_LIBS) $(LDLIBS) -o $@

# The CUDA table's host-memory mock (CPU ops) is linked into the tests that
# drive engine/forward_gpu.c without a GPU; real binaries never see it.
# (Its own rule: the mock object must come before the libraries it uses.)
$(BUILD)/tests/test_forward_gpu: $(BUILD)/tests/test_forward_gpu.o $(BUILD)/tests/cuda_mock.o $(TEST_HELP) \
		$(BUILD)/libsubmit.a $(BUILD)/libkvq.a $(LIBS)
	@echo "  LD    $@"
	$(Q)$(CC) $(LDFLAGS) $^ -lcunit $(SUB_LIBS) $(LDLIBS) -o $@

# The same mock as a stand-in libkvcuda.so (KV_CUDA_LIB=...): lets
# tests/test_cli.sh run `kvrun --gpu 0` end to end without a GPU.
all: $(BUILD)/tests/libkvcuda_mock.so
$(BUILD)/tests/libkvcuda_mock.so: $(BUILD)/tests/cuda_mock_so.o $(BUILD)/tests/cuda_mock.o $(BUILD)/libkernels.a
	@echo "  LD    $@"
	$(Q)$(CC) -shared $(LDFLAGS) $^ -lopenblas -lm -o $@

# Tests find the real tokenizer through KV_TOKENIZER or ../shared/data.
KV_TOKENIZER ?= $(abspath ../shared/data/pythia-tokenizer.json)
export KV_TOKENIZER

deps:
	@sh ops/install-deps.sh --check || sh ops/install-deps.sh

test: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)sh tests/run_all.sh $(BUILD) $(TEST_BIN) $(wildcard tests/test_*.sh)

# The CUDA op tests against the CPU references and the device forward pass
# against the CPU engine; fails when no device is usable (plain `make test`
# prints SKIP for the device parts instead; test_forward_gpu's mock part
# always runs).
test-gpu: all
	$(Q)KV_REQUIRE_GPU=1 $(BUILD)/tests/test_cuda_ops
	$(Q)KV_REQUIRE_GPU=1 $(BUILD)/tests/test_forward_gpu
	$(Q)KV_REQUIRE_GPU=1 $(BUILD)/tests/test_offload

# Same tests under AddressSanitizer + UBSan, in their own build tree.
asan: deps
	$(Q)$(MAKE) --no-print-directory BUILD=build-asan OPT="-O1 -g" \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

# libFuzzer runs of the outside-input parsers (FUZZ_SECONDS each).
FUZZ_SECONDS ?= 60
fuzz: deps
	$(Q)sh tests/fuzz/run.sh $(FUZZ_SECONDS)

# README's main command: a real sweep end to end on the CPU with a private
# redis-server (ops/demo.sh stops everything it starts).
demo: deps all
	$(Q)sh ops/demo.sh $(BUILD)

# T4 at full size: 1000 jobs, kill -9 chaos (the CI run uses 200).
soak: deps all
	$(Q)KV_CHAOS_JOBS=1000 sh tests/test_chaos.sh $(BUILD)

# (bench_gpu is `make bench-gpu`'s alone: ops/bench.sh runs the CPU benches.)
BENCH_BIN := $(filter-out $(BUILD)/bench_gpu,$(patsubst tests/%.c,$(BUILD)/%,$(wildcard tests/bench_*.c)))
bench: deps all $(BENCH_BIN)
	$(Q)sh ops/bench.sh $(BUILD)

# KV policies: decode time vs context and eviction overhead (README "Measured").
# bench_policy times the policy hooks by wrapping them at link time (GNU ld).
BENCH_POLICY_HOOKS := call_begin room layer_evict rope_qk attn_keys layer_observe step_end
$(BUILD)/bench_policy: LDFLAGS += $(foreach h,$(BENCH_POLICY_HOOKS),-Wl,--wrap=eng_policy_$(h))
bench-policy: deps $(BUILD)/kvrun $(BUILD)/bench_policy
	$(Q)sh ops/bench_policy.sh $(BUILD)

# The CUDA backend: decode TPOT and prefill speed of random 410m/1b/2.8b
# checkpoints, full cache and streaming, against bytes read per token /
# measured device bandwidth (tests/bench_gpu.c, README "Measured").
# Prints SKIP without a device (KV_REQUIRE_GPU=1: fails).
bench-gpu: deps all $(BUILD)/bench_gpu
	$(Q)sh ops/bench_gpu.sh $(BUILD)

check-deps:
	@! grep -rEn '#include *[<"](hiredis|sqlite3|hiredis/hiredis)' engine kernels
	@! grep -rEn '#include *[<"](sqlite3)' worker

clean:
	rm -rf build build-asan build-fuzz

.PHONY: all deps test test-gpu asan fuzz bench bench-policy bench-gpu demo soak check-deps clean FORCE
.SECONDARY:
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
