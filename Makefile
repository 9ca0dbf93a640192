# forge-stream: plain make.  `make` builds bin/forge-stream; `make test` runs the
# Check suites; `make test-asan` the same under AddressSanitizer + UBSan;
# `make fuzz` the fuzzer of tools/fuzz.c (FUZZ_N inputs) on the sanitizer build;
# `make test-tsan` the backend, ops and threaded suites under ThreadSanitizer;
# `make check-clients` checks the outputs with transformers / compressed-tensors
# (a venv from PyPI; not part of make test); `make demo` quantizes a layer of the real stories260K model; `make bench`
# prints the benchmark table.  Each runs `make deps` first (tools/deps.sh).
#
# CUDA=auto (default) builds cuda/*.cu when nvcc is found; CUDA=0 never, CUDA=1
# always (an error without nvcc).  The binary runs without a GPU either way.

CC      ?= gcc
NVCC    ?= nvcc
CUDA    ?= auto
ARCH    ?= -march=native
BUILD   ?= build
SHARED  ?= ../shared

ifeq ($(CUDA),auto)
  HAVE_CUDA := $(if $(shell command -v $(NVCC) 2>/dev/null),1,0)
else
  HAVE_CUDA := $(CUDA)
endif

CHECK_FLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS  := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -pthread)

# the tokenizer's regex engine and Unicode library (src/tokenizer/)
TOK_PKGS   := libpcre2-8 libutf8proc
TOK_CFLAGS := $(shell pkg-config --cflags $(TOK_PKGS) 2>/dev/null)
TOK_LIBS   := $(shell pkg-config --libs $(TOK_PKGS) 2>/dev/null || echo -lpcre2-8 -lutf8proc)

CFLAGS_COMMON = $(TOK_CFLAGS) -I. -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -fopenmp -ffp-contract=off $(ARCH)
OPT     ?= -O3
CFLAGS  += $(CFLAGS_COMMON) $(OPT)
LDLIBS  = -fopenmp -lopenblas -llapacke -ljansson -lxxhash -luring -llz4 $(TOK_LIBS) -lm -lpthread

# one folder per part (README "Layout"); every .c of these folders is built
CORE_SRC = $(wildcard src/core/*.c src/backend/*.c src/quant/*.c src/formats/*.c src/models/*.c src/forward/*.c src/tokenizer/*.c \
                      src/pipeline/*.c cpu/*.c hessian/*.c stream/*.c)
CLI_SRC  = $(wildcard src/cli/*.c)
TEST_SRC = $(filter-out $(TEST_WIP),$(wildcard tests/*.c))
TEST_WIP ?=
CUDA_SRC = $(wildcard cuda/*.cu)

ifeq ($(HAVE_CUDA),1)
  CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC)))
  CFLAGS   += -DFS_HAVE_CUDA
  # sm_80 (A100), sm_86, sm_89 (L4/L40), sm_90 (H100/H200), sm_100 (B200) where this
  # nvcc has it, and PTX of the newest for what comes later (README "CUDA")
  ifndef NV_ARCHS
    NV_ARCHS := 80 86 89 90 $(if $(filter compute_100,$(shell $(NVCC) --list-gpu-arch 2>/dev/null)),100)
  endif
  NV_PTX   := $(lastword $(NV_ARCHS))
  NVFLAGS  ?= -I. -O3 -fmad=false -std=c++17 -DFS_HAVE_CUDA -Xcompiler -Wall,-Wextra,-Werror \
              $(foreach a,$(NV_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
              -gencode arch=compute_$(NV_PTX),code=compute_$(NV_PTX)
  LDLIBS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcusolver -lcublas -lcudart -lstdc++
  CUDA_OBJ = $(CUDA_SRC:%.cu=$(BUILD)/%.o)
endif

CORE_OBJ = $(CORE_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  = $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ = $(TEST_SRC:%.c=$(BUILD)/%.o)
LIB      = $(BUILD)/libforge.a

.PHONY: all deps test test-asan test-tsan fuzz demo bench bench-tokenizer bench-gpu gpu-check bench-quality clean check-clients check-vllm
all: deps bin/forge-stream

deps:
	@sh tools/deps.sh

bin/forge-stream: $(CLI_OBJ) $(LIB)
	@mkdir -p bin
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(LIB): $(CORE_OBJ) $(CUDA_OBJ)
	@rm -f $@
	ar rcs $@ $^

# Test builds: the crash points and injected I/O faults (src/core/testhooks.c
# with -DFS_TEST) exist only in the library the suites link and in the binary
# they run, $(BUILD)/forge-stream-test; bin/forge-stream never reads them.
TESTLIB = $(BUILD)/libforge-test.a
$(BUILD)/src/core/testhooks-test.o: src/core/testhooks.c $(HEADERS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DFS_TEST -c -o $@ $<

$(TESTLIB): $(filter-out $(BUILD)/src/core/testhooks.o,$(CORE_OBJ)) $(BUILD)/src/core/testhooks-test.o $(CUDA_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/forge-stream-test: $(CLI_OBJ) $(TESTLIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

HEADERS  = $(wildcard src/*/*.h cpu/*.h hessian/*.h cuda/*.h cuda/*.cuh tests/*.h stream/*.h)

# deps is order-only: with make -j it still runs before anything compiles
$(BUILD)/%.o: %.c $(HEADERS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(if $(findstring tests/,$<),$(CHECK_FLAGS)) -c -o $@ $<

$(BUILD)/%.o: %.cu $(HEADERS) | deps
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c -o $@ $<

$(BUILD)/run-tests: $(TEST_OBJ) $(TESTLIB)
	$(CC) $(CFLAGS) -o $@ $^ $(CHECK_LIBS) $(LDLIBS)

$(BUILD)/bench: $(BUILD)/tools/bench.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

test: deps bin/forge-stream $(BUILD)/forge-stream-test $(BUILD)/run-tests $(BUILD)/gen-tiny $(BUILD)/fuzz
	FS_BIN=$(CURDIR)/$(BUILD)/forge-stream-test FS_BIN_RELEASE=$(CURDIR)/bin/forge-stream FS_GEN_TINY=$(CURDIR)/$(BUILD)/gen-tiny FS_FUZZ=$(CURDIR)/$(BUILD)/fuzz FS_SHARED=$(SHARED) $(BUILD)/run-tests

ASAN_OPT = -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

test-asan: deps bin/forge-stream
	$(MAKE) BUILD=build-asan CUDA=0 OPT="$(ASAN_OPT)" \
	    bin-asan/forge-stream build-asan/run-tests build-asan/gen-tiny build-asan/fuzz
	ASAN_OPTIONS=detect_leaks=1 CK_FORK=no FS_BIN=$(CURDIR)/bin-asan/forge-stream FS_BIN_RELEASE=$(CURDIR)/bin/forge-stream FS_GEN_TINY=$(CURDIR)/build-asan/gen-tiny FS_FUZZ=$(CURDIR)/build-asan/fuzz FS_SHARED=$(SHARED) build-asan/run-tests

# The fuzzer (tools/fuzz.c): FUZZ_N mutated inputs (safetensors headers, index
# files, configs, token files, tensor data, layer inputs) through inspect,
# inspect --verify, eval, quantize, plan and layer of the ASan + UBSan binary,
# FUZZ_JOBS at a time; findings (with their reproducers) in FUZZ_REPORT.
FUZZ_N      ?= 10000
FUZZ_JOBS   ?= 3
FUZZ_SEED   ?= 25482428960
FUZZ_REPORT ?= $(CURDIR)/build-asan/fuzz-report
fuzz: deps
	$(MAKE) BUILD=build-asan CUDA=0 OPT="$(ASAN_OPT)" bin-asan/forge-stream build-asan/gen-tiny build-asan/fuzz
	ASAN_OPTIONS=detect_leaks=0 build-asan/fuzz --bin bin-asan/forge-stream --gen-tiny build-asan/gen-tiny \
	    --work build-asan/fuzz-work --report $(FUZZ_REPORT) --n $(FUZZ_N) --jobs $(FUZZ_JOBS) --seed $(FUZZ_SEED)

# the fuzzer links nothing of the project: its checks are its own
$(BUILD)/fuzz: $(BUILD)/tools/fuzz.o
	$(CC) $(CFLAGS) -o $@ $^ -ljansson -lm

bin-asan/forge-stream: $(CLI_OBJ) $(TESTLIB)
	@mkdir -p bin-asan
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# ThreadSanitizer: the suites whose threads are ours (the backends' queues, the
# writer, the spill writer, the prefetcher) and that run clean under it.  One
# OpenMP and one OpenBLAS thread: libgomp and OpenBLAS are not instrumented, so
# their own barriers would read as races (the cpu-async queue threads, which
# are what is tested, are plain pthreads either way).
TSAN_SUITES ?= ops backend dtype qmeta grid hessian pack writer prefetch spill actcache trace async
test-tsan: deps
	$(MAKE) BUILD=build-tsan CUDA=0 OPT="-O1 -fno-omit-frame-pointer -fsanitize=thread" \
	    bin-tsan/forge-stream build-tsan/run-tests build-tsan/gen-tiny
	for s in $(TSAN_SUITES); do \
	    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" CK_FORK=no \
	    CK_RUN_SUITE=$$s FS_BIN=$(CURDIR)/bin-tsan/forge-stream FS_GEN_TINY=$(CURDIR)/build-tsan/gen-tiny \
	    FS_SHARED=$(SHARED) build-tsan/run-tests || exit 1; done

bin-tsan/forge-stream: $(CLI_OBJ) $(TESTLIB)
	@mkdir -p bin-tsan
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench-tok: $(BUILD)/tools/bench-tok.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# the tokenizer's row of make bench alone
bench-tokenizer: deps $(BUILD)/bench-tok
	sh tools/bench-tokenizer.sh $(SHARED)

$(BUILD)/bench-prefetch: $(BUILD)/tools/bench-prefetch.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/gen-tiny: $(BUILD)/tools/gen-tiny.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

demo: deps bin/forge-stream
	sh tools/demo.sh $(SHARED)

# The outputs through the real clients (not part of make test: it needs PyPI):
# a venv under $(BUILD) with torch, transformers, compressed-tensors and
# gptqmodel; compressed-tensors decompression bit for bit vs forge-stream's,
# transformers perplexity vs forge-stream eval (tools/check_clients.py).
check-clients: deps bin/forge-stream $(BUILD)/gen-tiny
	BUILD=$(BUILD) FS_BIN=$(CURDIR)/bin/forge-stream FS_GEN_TINY=$(CURDIR)/$(BUILD)/gen-tiny sh tools/check-clients.sh

# vLLM's CPU build (large): prompt log-probs of the gptq and compressed-tensors
# outputs against transformers on the dequantized weights (tools/check_vllm.py).
check-vllm: deps bin/forge-stream $(BUILD)/gen-tiny
	BUILD=$(BUILD) FS_BIN=$(CURDIR)/bin/forge-stream FS_GEN_TINY=$(CURDIR)/$(BUILD)/gen-tiny sh tools/check-vllm.sh

# perplexity per quantization method (issue 18): minutes, outside make test
bench-quality: deps bin/forge-stream
	sh tools/bench-quality.sh $(SHARED)

# the binary before the layer forward moved onto the ops (issue 14 §2), for its ratio
BENCH_BEFORE ?= be704b8
bench: deps bin/forge-stream $(BUILD)/bench $(BUILD)/bench-prefetch $(BUILD)/gen-tiny $(BUILD)/bench-tok
	$(BUILD)/bench
	sh tools/bench-tokenizer.sh $(SHARED)
	sh tools/bench-pipeline.sh $(SHARED)
	sh tools/bench-forward.sh $(SHARED) $(BENCH_BEFORE)

# The CUDA benchmark (tools/bench-gpu.cu): ratios to cuBLAS and cudaMemcpy in
# the same run, and a DeepSeek-V3-shaped MoE layer; BENCH_GPU_ARGS are its
# flags (--seconds, --experts, --tokens, --wave, --json FILE).
BENCH_GPU_ARGS ?=
ifeq ($(HAVE_CUDA),1)
$(BUILD)/bench-gpu: $(BUILD)/tools/bench-gpu.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

bench-gpu: deps $(BUILD)/bench-gpu
	$(BUILD)/bench-gpu $(BENCH_GPU_ARGS)
else
bench-gpu:
	@echo "bench-gpu: this build has no CUDA (nvcc not found, or CUDA=0); run make bench-gpu CUDA=1" >&2; exit 2
endif

# The whole GPU check (tools/gpu-check.sh) into GPU_REPORT.
GPU_REPORT ?= gpu-report
gpu-check:
	bash tools/gpu-check.sh $(GPU_REPORT)

clean:
	rm -rf build build-asan build-tsan bin bin-asan bin-tsan
