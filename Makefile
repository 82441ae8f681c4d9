# resnet-c build.
#   make                 build ./train and ./infer (OpenMP and SIMD on when available)
#   make test            build and run the test suite (tests/run.sh prints "N passed, N failed")
#   make OPENMP=0 SIMD=0 the plain C99 build (same tests)
#   make SIMD=auto       a portable x86-64 build: the GEMM kernel is chosen at run time
#   make setup           find stb (libstb-dev) or install it with apt-get
#   make bench           ResNet-50 and EfficientNet-B0 speed, side by side with PyTorch and
#                        ONNX Runtime when available
#   make ort-setup       install ONNX Runtime for make bench (npm, into third_party/onnxruntime)
#   make demo            transfer learning end to end on generated tasks, no download (tools/demo.sh)
#   make test T=pattern  only the test binaries and shell tests whose name holds pattern
#                        (SKIP_TESTS=pattern: all but those)
#   make asan / tsan     the suite under AddressSanitizer + UBSan / ThreadSanitizer (clang)
#   make fuzz            bounded libFuzzer runs of the decoder and the safetensors readers
#   make fuzz-long       the same fuzzers for an hour each (FUZZ_LONG_SECONDS)
#   make MPI=1           ./train and ./infer with MPI (mpicc; mpirun -np N runs N ranks)
#   make setup MPI=1     also install Debian's openmpi-bin and libopenmpi-dev
#   make clean
# Out-of-tree builds: make BUILD=/tmp/b BIN=/tmp/b

CC      ?= cc
OPENMP  ?= 1
SIMD    ?= 1
BUILD   ?= build
BIN     ?= .
SHARED  ?= ../shared
MPI     ?= 0
# Where stb_image.h, stb_image_write.h and stb_easy_font.h live (Debian/Ubuntu libstb-dev:
# /usr/include/stb).
STB_DIR ?= $(firstword $(wildcard /usr/include/stb /usr/local/include/stb third_party/stb))

# -Wno-missing-field-initializers: ConvSpec and friends are filled positionally, trailing
# fields (e.g. ConvSpec.groups) left to their zero default, as C99 defines.
# CFLAGS / LDFLAGS given on the command line (e.g. sanitizers, -Werror) are added to, not
# replace, the flags the project needs: hence `override`.
CFLAGS  ?= -O2 -g
# -fno-math-errno: sqrtf and friends never set errno, so loops calling them vectorise
# (results are unchanged: IEEE sqrt is correctly rounded either way).
# -ffp-contract=off: x * a + b in C is two roundings, as in the vector kernels' vmul and vadd
# (gcc does not fuse it in C99 mode, clang would), so fused and layer-by-layer passes give
# the same bits with either compiler.
override CFLAGS += -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -pthread \
                   -fno-math-errno -ffp-contract=off
override LDLIBS += -lm -pthread

# MPI=1: data-parallel training and sharded inference over MPI (dist.c, the only file that
# sees it); built with Open MPI's compiler wrapper (OMPI_CC picks the compiler under it).
ifeq ($(MPI),1)
  override CC := mpicc
  override CFLAGS += -DRN_MPI=1
endif

ifeq ($(OPENMP),1)
  override CFLAGS  += -fopenmp
  override LDFLAGS += -fopenmp
endif
# The machine the compiler builds for: a cross compiler (CC=aarch64-linux-gnu-gcc) names
# another one than this machine's. MINGW: a Windows target (.exe, the Win32 platform code).
TARGET := $(shell $(CC) -dumpmachine 2>/dev/null)
TARGET_CPU := $(firstword $(subst -, ,$(TARGET)))
NATIVE := $(if $(filter $(shell uname -m)-%,$(TARGET)),$(if $(findstring mingw,$(TARGET)),,1))
EXE := $(if $(findstring mingw,$(TARGET)),.exe)
# SIMD=1: the target's vector unit, read by simd.h from the compiler's predefined macros:
#   AVX-512 or AVX2+FMA on x86-64, NEON on AArch64, else plain C. A native build targets
#   this machine (-march=native); a cross build the target's baseline (AArch64: NEON),
#   or the ISA named with ARCH= (-march=$(ARCH), e.g. ARCH=armv8.2-a, ARCH=x86-64-v3) or
#   any flags in TARGET_CFLAGS.
# SIMD=auto: a portable x86-64 binary: the GEMM is built for AVX-512, AVX2+FMA and plain C
#   and picks at run time (RN_SIMD_KERNEL=avx512|avx2|scalar forces one); the rest of the
#   code uses the x86-64 baseline. On other CPUs SIMD=auto means SIMD=1.
# SIMD=0: plain C everywhere (the reference build).
# (only from the command line: some shells export ARCH for other purposes)
ifneq ($(origin ARCH),command line)
  ARCH := $(if $(NATIVE),native)
endif
ifeq ($(SIMD),auto)
  ifeq ($(filter x86_64 amd64,$(TARGET_CPU)),)
    override SIMD := 1
  endif
endif
# 32-bit x86: float arithmetic in SSE registers, as on every other target. The x87 unit
# evaluates float expressions in 80 bits (FLT_EVAL_METHOD 2), which changes results
# (Adam's steps differ from torch's by 2 ulps) and breaks rn_fmaf's exact double sums.
# Needs SSE2 (every x86 CPU since 2001).
ifneq ($(filter i386 i486 i586 i686,$(TARGET_CPU)),)
  override CFLAGS += -msse2 -mfpmath=sse
endif
override CFLAGS += $(TARGET_CFLAGS)
GEMM_VARIANT_OBJS :=
ifeq ($(SIMD),1)
  override CFLAGS += $(if $(ARCH),-march=$(ARCH)) -DRN_SIMD=1
else ifeq ($(SIMD),auto)
  override CFLAGS += -DRN_SIMD=1
  GEMM_VARIANT_OBJS := $(BUILD)/gemm_avx512.o $(BUILD)/gemm_avx2.o
  GEMM_BASE_FLAGS := -DRN_GEMM_VARIANT=base -DRN_GEMM_DISPATCHER
else
  override CFLAGS += -DRN_SIMD=0
endif
# Windows: C99 printf formats (%zu, %lld) from mingw-w64's own stdio, and executables that
# carry their runtime (libgomp, winpthreads) so they run from anywhere.
ifneq ($(EXE),)
  override CFLAGS += -D__USE_MINGW_ANSI_STDIO=1
  override LDFLAGS += -static
  override LDLIBS += -lpsapi
endif
ifneq ($(STB_DIR),)
  STB_CFLAGS = -isystem $(STB_DIR)
endif

# Objects depend on the flags they were built with (OPENMP, SIMD, CC, CFLAGS), so one BUILD
# folder can switch between builds without `make clean`.
FLAGS_STAMP := $(BUILD)/flags.txt
FLAGS_NOW := $(CC) $(CFLAGS) $(LDFLAGS) SIMD=$(SIMD) $(STB_DIR)
$(shell mkdir -p $(BUILD) && (echo '$(FLAGS_NOW)' | cmp -s - $(FLAGS_STAMP) || \
        echo '$(FLAGS_NOW)' > $(FLAGS_STAMP)))

LIB_SRCS := $(filter-out train.c infer.c,$(wildcard *.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o) $(GEMM_VARIANT_OBJS)
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%$(EXE))
PROGS := $(BIN)/train$(EXE) $(BIN)/infer$(EXE)

.PHONY: all test clean setup check-stb bench ort-setup demo fuzz fuzz-long fuzz-seeds golden-check asan tsan
all: $(PROGS)

STB_HEADERS := stb_image.h stb_image_write.h stb_easy_font.h
check-stb:
	@for h in $(STB_HEADERS); do \
	  if [ -z "$(STB_DIR)" ] || [ ! -f "$(STB_DIR)/$$h" ]; then \
	    echo "error: $$h not found. Run 'make setup' (installs Debian's libstb-dev)"; \
	    echo "       or pass STB_DIR=/path/to/dir/with/the/stb/headers (see third_party/README.md)"; \
	    exit 1; fi; done

setup:
	@if [ -f /usr/include/stb/stb_image.h ] && [ -f /usr/include/stb/stb_image_write.h ] && \
	    [ -f /usr/include/stb/stb_easy_font.h ]; then \
	  echo "stb found in /usr/include/stb"; \
	else \
	  echo "installing libstb-dev with apt-get"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  ($$SUDO apt-get update -qq || true) && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libstb-dev; \
	fi
ifeq ($(MPI),1)
	@if command -v mpicc > /dev/null && command -v mpirun > /dev/null; then \
	  echo "Open MPI found: $$(command -v mpicc)"; \
	else \
	  echo "installing openmpi-bin and libopenmpi-dev with apt-get"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  ($$SUDO apt-get update -qq || true) && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev; \
	fi
endif

$(BUILD)/%.o: %.c $(wildcard *.h) $(FLAGS_STAMP) | check-stb
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(STB_CFLAGS) -I. -c $< -o $@

$(BUILD)/gemm.o: gemm.c $(wildcard *.h) $(FLAGS_STAMP) | check-stb
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(GEMM_BASE_FLAGS) -I. -c $< -o $@

# The SIMD=auto kernels: gemm.c again for each instruction set, named by the suffix.
GEMM_ISA_avx512 := -mavx512f -mfma
GEMM_ISA_avx2 := -mavx2 -mfma
$(BUILD)/gemm_%.o: gemm.c $(wildcard *.h) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(GEMM_ISA_$*) -DRN_GEMM_VARIANT=$* -I. -c $< -o $@

$(BUILD)/libresnet.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BIN)/train$(EXE): $(BUILD)/train.o $(BUILD)/libresnet.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/infer$(EXE): $(BUILD)/infer.o $(BUILD)/libresnet.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%$(EXE): tests/%.c tests/test.h $(BUILD)/libresnet.a $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(STB_CFLAGS) -I. $(LDFLAGS) -o $@ $< $(BUILD)/libresnet.a $(LDLIBS)

# The textbook loop of the README, built against the library like any user program.
EXAMPLES := $(BUILD)/examples/train_min$(EXE)
$(BUILD)/examples/%$(EXE): examples/%.c $(BUILD)/libresnet.a $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I. $(LDFLAGS) -o $@ $< $(BUILD)/libresnet.a $(LDLIBS)

T ?=
SKIP_TESTS ?=
test: $(TEST_BINS) $(PROGS) $(EXAMPLES)
	@SHARED="$(SHARED)" BUILD="$(BUILD)" BIN="$(BIN)" EXE="$(EXE)" RUNNER="$(RUNNER)" T="$(T)" SKIP_TESTS="$(SKIP_TESTS)" MPI="$(MPI)" sh tests/run.sh $(TEST_BINS)

# The suite under sanitizers, each in its own build folder (clang; Debian's
# libclang-rt-14-dev). tsan keeps OpenMP off: libgomp is not instrumented, so its barriers
# would be false reports; it checks the pthread loader and everything around it.
SAN_FLAGS = -O1 -g -fno-omit-frame-pointer
asan:
	$(MAKE) BUILD=build-asan BIN=build-asan CC=clang OPENMP=0 \
	  CFLAGS="$(SAN_FLAGS) -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" test
tsan:
	$(MAKE) BUILD=build-tsan BIN=build-tsan CC=clang OPENMP=0 \
	  CFLAGS="$(SAN_FLAGS) -fsanitize=thread" LDFLAGS="-fsanitize=thread" test

bench: $(BUILD)/tests/bench
	@SHARED="$(SHARED)" ONNX_DIR="$(BUILD)/onnx" sh tools/bench.sh $(BUILD)/tests/bench

# ONNX Runtime 1.30's CPU binaries are inside the npm package; its install script only
# fetches GPU extras, so it is skipped. Nothing here is needed to build, test or run.
ORT_VERSION ?= 1.30.0
ort-setup:
	npm install --ignore-scripts --no-audit --no-fund --prefix third_party/onnxruntime \
	  onnxruntime-node@$(ORT_VERSION)

$(BUILD)/tests/bench: tools/bench.c $(BUILD)/libresnet.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I. $(LDFLAGS) -o $@ $< $(BUILD)/libresnet.a $(LDLIBS)

demo: $(PROGS)
	@BIN="$(BIN)" sh tools/demo.sh

clean:
	rm -rf $(BUILD) $(BIN)/train$(EXE) $(BIN)/infer$(EXE)

# libFuzzer targets (clang only): tests/fuzz_decode.c (image decoding and preprocessing) and
# tests/fuzz_safetensors.c (safetensors, model files, checkpoints), each seeded with small
# valid files of every format written at build time by tests/fuzz_seeds.c. `make fuzz`: a
# bounded run of each (a fixed seed and run count keep it close to repeatable; FUZZ_SECONDS
# caps each one's time). `make fuzz-long`: FUZZ_LONG_SECONDS of open-ended fuzzing each,
# one after the other, keeping the grown corpora in $(BUILD)/fuzz_corpus_*.
FUZZ_SECONDS ?= 180
FUZZ_RUNS_decode ?= 80000
FUZZ_RUNS_safetensors ?= 400000
FUZZ_SEED ?= 1
FUZZ_LONG_SECONDS ?= 3600
FUZZ_TARGETS := decode safetensors
FUZZ_CFLAGS := -std=c99 -D_POSIX_C_SOURCE=200809L -DRN_SIMD=0 -g -O1 -pthread \
               -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_SRCS_decode := tests/fuzz_decode.c data.c dist.c util.c platform.c
# stb_image 2.27 shifts by more than 31 bits on some corrupt JPEG entropy data
# (stb_image.h:2065; upstream stb issue 1293, fixed after 2.27): when a marker cuts the
# entropy stream short, code_bits is driven below -8 and the next refill computes
# 0 << (24 - code_bits). The value shifted is always 0 there (the stream has ended, so
# stb feeds zero bytes), so every compiler's result is the defined one; it is reported,
# not fatal, so the target goes on to find real faults.
# RN_MAX_IMAGE_PIXELS: decodes up to 64 M pixels (16 KB inputs at data.c's 4096 pixels a
# byte) ran at ~56 executions a second under ASan; at 2^18 pixels the size checks still
# refuse the larger ones (with their reason) and the fuzzer spends its time in the parsers.
FUZZ_EXTRA_decode := -fsanitize-recover=shift-exponent -DRN_MAX_IMAGE_PIXELS=262144
FUZZ_SRCS_safetensors := tests/fuzz_safetensors.c $(LIB_SRCS)
FUZZ_FLAGS_decode := -max_len=16384
FUZZ_FLAGS_safetensors := -max_len=65536
FUZZ_COMMON := -rss_limit_mb=2048 -timeout=20 -print_final_stats=1

$(BUILD)/fuzz_%: tests/fuzz_%.c tests/fuzz.h $(wildcard *.c *.h) | check-stb
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(FUZZ_EXTRA_$*) -isystem $(STB_DIR) -I. $(FUZZ_SRCS_$*) -o $@ -lm

$(BUILD)/fuzz_seeds: tests/fuzz_seeds.c tests/fuzz.h $(wildcard *.c *.h) | check-stb
	@mkdir -p $(dir $@)
	clang -std=c99 -D_POSIX_C_SOURCE=200809L -DRN_SIMD=0 -O1 -g -pthread -isystem $(STB_DIR) \
	  -I. tests/fuzz_seeds.c $(LIB_SRCS) -o $@ -lm

fuzz-seeds: $(BUILD)/fuzz_seeds
	$(BUILD)/fuzz_seeds $(BUILD)/fuzz_corpus_decode $(BUILD)/fuzz_corpus_safetensors

fuzz: fuzz-seeds $(FUZZ_TARGETS:%=$(BUILD)/fuzz_%)
	@for t in $(FUZZ_TARGETS); do \
	  case $$t in decode) runs=$(FUZZ_RUNS_decode); flags="$(FUZZ_FLAGS_decode)";; \
	              *) runs=$(FUZZ_RUNS_safetensors); flags="$(FUZZ_FLAGS_safetensors)";; esac; \
	  echo "== fuzz_$$t: $$runs runs, at most $(FUZZ_SECONDS) s"; \
	  $(BUILD)/fuzz_$$t -seed=$(FUZZ_SEED) -runs=$$runs -max_total_time=$(FUZZ_SECONDS) \
	    $$flags $(FUZZ_COMMON) $(BUILD)/fuzz_corpus_$$t || exit 1; \
	done

fuzz-long: fuzz-seeds $(FUZZ_TARGETS:%=$(BUILD)/fuzz_%)
	@for t in $(FUZZ_TARGETS); do \
	  case $$t in decode) flags="$(FUZZ_FLAGS_decode)";; *) flags="$(FUZZ_FLAGS_safetensors)";; esac; \
	  echo "== fuzz_$$t: $(FUZZ_LONG_SECONDS) s"; \
	  $(BUILD)/fuzz_$$t -seed=0 -max_total_time=$(FUZZ_LONG_SECONDS) $$flags $(FUZZ_COMMON) \
	    $(BUILD)/fuzz_corpus_$$t || exit 1; \
	done
