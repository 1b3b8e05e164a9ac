# Makefile for game: `make` builds train and run, `make test` runs the tests,
# `make demo` trains the default model and samples from it. `make test-asan`
# and `make test-valgrind` run checked builds of the suite, `make fuzz` the
# fuzzers (fuzz/fuzz.mk).

CC      ?= cc
ifeq ($(CC),cc)
CC      := gcc
endif
OPT     ?= -O3 -march=native -mprefer-vector-width=512
WARN    := -Wall -Wextra -Wshadow -Wno-unknown-pragmas
CFLAGS  += $(OPT) $(WARN) -std=gnu11 -g
LDLIBS  += -lm -lz -lstb

# OpenMP: on unless NO_OMP=1; detected with a probe compile.
ifeq ($(NO_OMP),1)
$(info OpenMP: off (NO_OMP=1))
else
ifeq ($(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo yes),yes)
OMP_FLAGS := -fopenmp
CFLAGS  += $(OMP_FLAGS)
LDFLAGS += $(OMP_FLAGS)
else
$(info OpenMP: not found, building single-threaded)
endif
endif

LIB_SRC := game.c int8.c kernels.c sampler.c tokenizer.c weights.c ame.c plot.c
LIB_OBJ := $(LIB_SRC:.c=.o)
HEADERS := $(wildcard *.h)
TEST_SRC := $(wildcard tests/*.c)

.PHONY: all test test-fast demo debug clean deps xor bench bench-deps test-asan test-valgrind \
        valgrind-deps fuzz-deps

all: deps train run

# $(call apt_install,PACKAGES,PURPOSE): installs those of the Debian PACKAGES
# that are missing, with apt-get (through sudo unless root).
define apt_install
	@missing=""; \
	for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" \
	    || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages$(2):$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

# Debian packages the build and the tests need; installed when missing.
DEB_PACKAGES := libcriterion-dev zlib1g-dev libstb-dev
deps:
	$(call apt_install,$(DEB_PACKAGES))

%.o: %.c $(HEADERS)
	$(CC) $(CFLAGS) -c $< -o $@

train: train.c $(LIB_OBJ) $(HEADERS)
	$(CC) $(CFLAGS) train.c $(LIB_OBJ) -o $@ $(LDFLAGS) $(LDLIBS)

run: run.c $(LIB_OBJ) $(HEADERS)
	$(CC) $(CFLAGS) run.c $(LIB_OBJ) -o $@ $(LDFLAGS) $(LDLIBS)

# The programs' functions, without their main, for the tests.
train_lib.o: train.c $(HEADERS)
	$(CC) $(CFLAGS) -DGAME_NO_MAIN -c train.c -o $@
run_lib.o: run.c $(HEADERS)
	$(CC) $(CFLAGS) -DGAME_NO_MAIN -c run.c -o $@

tests/test_all: $(TEST_SRC) $(LIB_OBJ) train_lib.o run_lib.o $(HEADERS) tests/testutil.h
	$(CC) $(CFLAGS) -I. $(TEST_SRC) $(LIB_OBJ) train_lib.o run_lib.o -o $@ \
	  $(LDFLAGS) -lcriterion $(LDLIBS)

# The suite on the normal build, then again with AddressSanitizer and UBSan.
test: test-fast test-asan

# The suite on the normal build alone.
test-fast: deps train run tests/test_all
	./tests/test_all --jobs 1

# The default recipe on the bundled text, then a sample of the best model.
demo: deps train run
	./train
	./run model.bin -n 500 -t 0.8 -i "ROMEO:"

# Benchmarks against OpenBLAS and the PyTorch reference (bench-only packages).
BENCH_PACKAGES := libopenblas-dev python3-torch
bench-deps:
	$(call apt_install,$(BENCH_PACKAGES), for the benchmarks)

bench/matmul: bench/matmul.c kernels.o game.o int8.o tokenizer.o weights.o ame.o sampler.o plot.o
	$(CC) $(CFLAGS) -I. bench/matmul.c kernels.o game.o int8.o tokenizer.o weights.o ame.o \
	  sampler.o plot.o -o $@ $(LDFLAGS) -lopenblas $(LDLIBS)

bench: deps bench-deps train run bench/matmul
	./bench/run.sh

xor: deps xor.c ame.o
	$(CC) $(CFLAGS) xor.c ame.o -o $@ $(LDFLAGS) $(LDLIBS)

debug: OPT := -O1 -fsanitize=address,undefined -fno-omit-frame-pointer
debug: LDFLAGS += -fsanitize=address,undefined
debug: clean all

# ----------------------------------------------------------------------------
# Checked builds, each in a folder of its own so the normal build stays as it
# is: build-asan/ with AddressSanitizer and UBSan (any finding stops the
# program), build-valgrind/ with portable -O1 code (valgrind cannot decode the
# AVX-512 instructions of a -march=native build).

ASAN_DIR   := build-asan
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
              -fno-sanitize-recover=undefined $(WARN) -std=gnu11 $(OMP_FLAGS)
VG_DIR     := build-valgrind
VG_FLAGS   := -O1 -g $(WARN) -std=gnu11 $(OMP_FLAGS) -DGAME_PLAIN_ALLOC

# $(call checked_build,FOLDER,FLAGS): rules for the library objects, train, run
# and the test binary, compiled and linked with FLAGS into FOLDER.
define checked_build
$(1)/%.o: %.c $$(HEADERS)
	@mkdir -p $(1)
	$$(CC) $(2) -c $$< -o $$@
$(1)/train_lib.o: train.c $$(HEADERS)
	@mkdir -p $(1)
	$$(CC) $(2) -DGAME_NO_MAIN -c train.c -o $$@
$(1)/run_lib.o: run.c $$(HEADERS)
	@mkdir -p $(1)
	$$(CC) $(2) -DGAME_NO_MAIN -c run.c -o $$@
$(1)/train: train.c $$(LIB_OBJ:%=$(1)/%) $$(HEADERS)
	$$(CC) $(2) train.c $$(LIB_OBJ:%=$(1)/%) -o $$@ $$(LDLIBS)
$(1)/run: run.c $$(LIB_OBJ:%=$(1)/%) $$(HEADERS)
	$$(CC) $(2) run.c $$(LIB_OBJ:%=$(1)/%) -o $$@ $$(LDLIBS)
$(1)/test_all: $$(TEST_SRC) $$(LIB_OBJ:%=$(1)/%) $(1)/train_lib.o $(1)/run_lib.o \
               $$(HEADERS) tests/testutil.h
	$$(CC) $(2) -I. $$(TEST_SRC) $$(LIB_OBJ:%=$(1)/%) $(1)/train_lib.o $(1)/run_lib.o \
	  -o $$@ -lcriterion $$(LDLIBS)
endef
$(eval $(call checked_build,$(ASAN_DIR),$(ASAN_FLAGS)))
$(eval $(call checked_build,$(VG_DIR),$(VG_FLAGS)))

# The whole suite on the sanitized library, and (GAME_BIN_DIR) on the
# sanitized train and run. The plain programs are built too, for tests that
# start ./run directly.
ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
test-asan: deps train run $(ASAN_DIR)/train $(ASAN_DIR)/run $(ASAN_DIR)/test_all
	GAME_BIN_DIR=$(ASAN_DIR) $(ASAN_ENV) ./$(ASAN_DIR)/test_all --jobs 1

# run under valgrind's memcheck (the robust suite's valgrind test, on the
# portable build of run).
valgrind-deps:
	$(call apt_install,valgrind, for test-valgrind)

test-valgrind: deps valgrind-deps train run tests/test_all $(VG_DIR)/run
	GAME_VALGRIND_RUN=$(VG_DIR)/run ./tests/test_all --jobs 1 \
	  --filter 'robust/run_under_valgrind'

clean:
	rm -f train run xor *.o tests/test_all bench/matmul
	rm -rf bench/out $(ASAN_DIR) $(VG_DIR)
include fuzz/fuzz.mk

# What the fuzzers need (fuzz/fuzz.mk): clang with its sanitizer and fuzzer
# runtimes, and libomp. fuzz.mk probes clang's OpenMP when the Makefile is
# read, so on a fresh machine run `make fuzz-deps` on its own first.
FUZZ_PACKAGES := clang libclang-rt-14-dev libomp-14-dev
fuzz-deps: deps
	$(call apt_install,$(FUZZ_PACKAGES), for the fuzzers)

fuzz-build: fuzz-deps
$(FUZZ_LIB_OBJ) $(FUZZ_OBJDIR)/train_lib.o $(FUZZ_OBJDIR)/run_lib.o: | fuzz-deps
