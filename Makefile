# Makefile for game: `make` builds train and run, `make test` runs the tests,
# `make demo` trains the default model and samples from it.

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
CFLAGS  += -fopenmp
LDFLAGS += -fopenmp
else
$(info OpenMP: not found, building single-threaded)
endif
endif

LIB_SRC := game.c kernels.c sampler.c tokenizer.c weights.c ame.c plot.c
LIB_OBJ := $(LIB_SRC:.c=.o)
HEADERS := $(wildcard *.h)
TEST_SRC := $(wildcard tests/*.c)

.PHONY: all test demo debug clean deps xor bench bench-deps

all: deps train run

# Debian packages the build and the tests need; installed when missing.
DEB_PACKAGES := libcriterion-dev zlib1g-dev libstb-dev
deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" \
	    || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi

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

test: deps train run tests/test_all
	./tests/test_all --jobs 1

# The default recipe on the bundled text, then a sample of the best model.
demo: deps train run
	./train
	./run model.bin -n 500 -t 0.8 -i "ROMEO:"

# Benchmarks against OpenBLAS and the PyTorch reference (bench-only packages).
BENCH_PACKAGES := libopenblas-dev python3-torch
bench-deps:
	@missing=""; \
	for p in $(BENCH_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" \
	    || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the benchmarks:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi

bench/matmul: bench/matmul.c kernels.o game.o tokenizer.o weights.o ame.o sampler.o plot.o
	$(CC) $(CFLAGS) -I. bench/matmul.c kernels.o game.o tokenizer.o weights.o ame.o \
	  sampler.o plot.o -o $@ $(LDFLAGS) -lopenblas $(LDLIBS)

bench: deps bench-deps train run bench/matmul
	./bench/run.sh

xor: deps xor.c ame.o
	$(CC) $(CFLAGS) xor.c ame.o -o $@ $(LDFLAGS) $(LDLIBS)

debug: OPT := -O1 -fsanitize=address,undefined -fno-omit-frame-pointer
debug: LDFLAGS += -fsanitize=address,undefined
debug: clean all

clean:
	rm -f train run xor *.o tests/test_all bench/matmul
	rm -rf bench/out
include fuzz/fuzz.mk
