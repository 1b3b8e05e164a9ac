# fuzz/fuzz.mk: libFuzzer harnesses built with clang, ASan and UBSan.
#
# Included from the Makefile (`include fuzz/fuzz.mk`), or used on its own from
# the repository root (`make -f fuzz/fuzz.mk fuzz`). Targets:
#   fuzz-build    builds fuzz/checkpoint_fuzz, fuzz/tokenizer_fuzz, fuzz/flags_fuzz
#   fuzz          runs each for FUZZ_SECONDS (default 60) from the seeds in
#                 fuzz/corpus/NAME, prints executions and any crash, and fails
#                 when one crashed; new inputs and crashes go to fuzz/work/NAME
#   fuzz-regress  runs each harness once over its saved inputs in
#                 fuzz/regressions/NAME (a quick check that fixed crashes stay fixed)
#   fuzz-clean    removes the binaries, objects and fuzz/work
# Needs clang with compiler-rt (Debian: clang-14, libclang-rt-14-dev) and, for
# OpenMP, libomp (libomp-14-dev); without a working libomp it builds without
# OpenMP (FUZZ_NO_OMP=1 forces that).

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
# libFuzzer's seed: 0 picks a new one each run; CI fixes it (FUZZ_SEED=1) so that
# its bounded runs follow the same mutations every time
FUZZ_SEED    ?= 0
FUZZ_NAMES   := checkpoint tokenizer flags
FUZZ_OBJDIR  := fuzz/obj
FUZZ_WORK    := fuzz/work

# Library sources: the Makefile's LIB_SRC (read from it when used on its own).
ifndef FUZZ_LIB_SRC
FUZZ_LIB_SRC := $(wildcard $(if $(LIB_SRC),$(LIB_SRC),\
                $(shell sed -n 's/^LIB_SRC *:*= *//p' Makefile)))
endif
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_OBJDIR)/%.o,$(FUZZ_LIB_SRC))
# An archive, so each harness links only the objects it needs.
FUZZ_LIB     := $(FUZZ_OBJDIR)/libgame_fuzz.a
FUZZ_HEADERS := $(wildcard *.h)

# UBSan findings abort (no recovery), so the fuzzer saves the input.
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := -O1 -g -fno-omit-frame-pointer -std=gnu11 -I. \
                -Wall -Wextra -Wshadow -Wno-unknown-pragmas -Wno-pass-failed
# Libraries: the Makefile's LDLIBS (read from it when used on its own).
FUZZ_LDLIBS  := $(or $(LDLIBS),$(shell sed -n 's/^LDLIBS *[+:]*= *//p' Makefile),-lm -lz)
FUZZ_RUNFLAGS := -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
                 -print_final_stats=1

# OpenMP only when clang can build and link a parallel loop with it.
ifneq ($(FUZZ_NO_OMP),1)
FUZZ_OMP := $(shell printf '%s\n' 'int main(void){int s=0;' \
  '_Pragma("omp parallel for reduction(+:s)") for(int i=0;i<4;i++)s+=i;' \
  'return s!=6;}' | $(FUZZ_CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo -fopenmp)
endif

# The flag-parsing entry points, when the programs' headers declare them.
FUZZ_TRAIN_ARGS := $(shell grep -qs 'train_parse_args' train.h && echo yes)
FUZZ_RUN_ARGS   := $(shell grep -qs 'run_parse_args' run.h && echo yes)
FUZZ_RUN_H      := $(shell test -f run.h && grep -qs 'encode_prompt' run.h && echo yes)
FUZZ_FLAGS_DEFS := $(if $(FUZZ_TRAIN_ARGS),-DFUZZ_HAVE_TRAIN_ARGS) \
                   $(if $(FUZZ_RUN_ARGS),-DFUZZ_HAVE_RUN_ARGS)
FUZZ_FLAGS_OBJ  := $(if $(FUZZ_TRAIN_ARGS),$(FUZZ_OBJDIR)/train_lib.o) \
                   $(if $(FUZZ_RUN_ARGS)$(FUZZ_RUN_H),$(FUZZ_OBJDIR)/run_lib.o)

# FUZZ_EXTRA adds flags to the harness builds, e.g. -DFUZZ_GUARD_PARAM_ALLOC.
FUZZ_EXTRA ?=

.PHONY: fuzz-build fuzz fuzz-regress fuzz-clean

fuzz-build: $(foreach h,$(FUZZ_NAMES),fuzz/$(h)_fuzz)
	@echo "fuzz: built with $(FUZZ_CC) $(if $(FUZZ_OMP),with,without) OpenMP;" \
	  "train flags $(if $(FUZZ_TRAIN_ARGS),on,off (no train_parse_args in train.h))," \
	  "run flags $(if $(FUZZ_RUN_ARGS),on,off (no run_parse_args in run.h))"

# Library objects: coverage and sanitizers, no fuzzer main.
$(FUZZ_OBJDIR)/%.o: %.c $(FUZZ_HEADERS)
	@mkdir -p $(FUZZ_OBJDIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_OMP) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_OBJDIR)/train_lib.o: train.c $(FUZZ_HEADERS)
	@mkdir -p $(FUZZ_OBJDIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_OMP) $(FUZZ_SAN) -fsanitize=fuzzer-no-link \
	  -DGAME_NO_MAIN -c train.c -o $@

$(FUZZ_OBJDIR)/run_lib.o: run.c $(FUZZ_HEADERS)
	@mkdir -p $(FUZZ_OBJDIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_OMP) $(FUZZ_SAN) -fsanitize=fuzzer-no-link \
	  -DGAME_NO_MAIN -c run.c -o $@

$(FUZZ_LIB): $(FUZZ_LIB_OBJ)
	rm -f $@
	ar rcs $@ $(FUZZ_LIB_OBJ)

# Harnesses: linked with libFuzzer's main.
fuzz/checkpoint_fuzz: fuzz/fuzz_checkpoint.c $(FUZZ_LIB) $(FUZZ_HEADERS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_OMP) $(FUZZ_SAN) -fsanitize=fuzzer $(FUZZ_EXTRA) \
	  $< $(FUZZ_LIB) -o $@ $(FUZZ_LDLIBS)

fuzz/tokenizer_fuzz: fuzz/fuzz_tokenizer.c $(FUZZ_LIB) $(FUZZ_HEADERS) \
                     $(if $(FUZZ_RUN_H),$(FUZZ_OBJDIR)/run_lib.o)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_OMP) $(FUZZ_SAN) -fsanitize=fuzzer $(FUZZ_EXTRA) \
	  $(if $(FUZZ_RUN_H),-DFUZZ_HAVE_RUN_H) $< \
	  $(if $(FUZZ_RUN_H),$(FUZZ_OBJDIR)/run_lib.o) $(FUZZ_LIB) -o $@ $(FUZZ_LDLIBS)

fuzz/flags_fuzz: fuzz/fuzz_flags.c $(FUZZ_LIB) $(FUZZ_FLAGS_OBJ) $(FUZZ_HEADERS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_OMP) $(FUZZ_SAN) -fsanitize=fuzzer $(FUZZ_EXTRA) \
	  $(FUZZ_FLAGS_DEFS) $< $(FUZZ_FLAGS_OBJ) $(FUZZ_LIB) -o $@ $(FUZZ_LDLIBS)

# Each harness in turn: its seeds, a dictionary when there is one, a working
# corpus and crash files under fuzz/work/NAME. A crash, leak, timeout or
# out-of-memory shows its report and makes the target fail at the end.
fuzz: fuzz-build
	@status=0; \
	for h in $(FUZZ_NAMES); do \
	  work=$(FUZZ_WORK)/$$h; mkdir -p $$work/corpus; \
	  dict=""; [ -f fuzz/$$h.dict ] && dict="-dict=fuzz/$$h.dict"; \
	  ./fuzz/$${h}_fuzz $(FUZZ_RUNFLAGS) -seed=$(FUZZ_SEED) -max_total_time=$(FUZZ_SECONDS) \
	    $$dict \
	    -artifact_prefix=$$work/ $$work/corpus fuzz/corpus/$$h > $$work/log 2>&1; \
	  rc=$$?; \
	  execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $$work/log | tail -1); \
	  secs=$$(sed -n 's/^stat::average_exec_per_sec: *//p' $$work/log | tail -1); \
	  if [ $$rc -eq 0 ]; then \
	    echo "fuzz $$h: $${execs:-?} executions, $${secs:-?}/s, $(FUZZ_SECONDS) s, no crash"; \
	  else \
	    status=1; \
	    echo "fuzz $$h: FAILED (exit $$rc) after $${execs:-?} executions; report:"; \
	    grep -E 'ERROR|SUMMARY|invariant|#[0-9]+ 0x|artifact|Test unit written' \
	      $$work/log | head -40; \
	    echo "fuzz $$h: full log $$work/log; move the saved input into" \
	      "fuzz/regressions/$$h/ once understood"; \
	  fi; \
	done; \
	exit $$status

fuzz-regress: fuzz-build
	@mkdir -p $(FUZZ_WORK)
	@status=0; \
	for h in $(FUZZ_NAMES); do \
	  pass=0; failed=0; \
	  for f in fuzz/regressions/$$h/*; do \
	    [ -f "$$f" ] || continue; \
	    log=$(FUZZ_WORK)/regress-$$h-$$(basename $$f).log; \
	    if ./fuzz/$${h}_fuzz $(FUZZ_RUNFLAGS) $$f > $$log 2>&1; then \
	      pass=$$((pass + 1)); rm -f $$log; \
	    else \
	      failed=$$((failed + 1)); status=1; \
	      echo "fuzz-regress $$h: $$f FAILS: $$(grep -m1 -E 'ERROR|invariant' $$log)"; \
	    fi; \
	  done; \
	  [ $$((pass + failed)) -gt 0 ] && \
	    echo "fuzz-regress $$h: $$pass of $$((pass + failed)) inputs pass"; \
	done; \
	exit $$status

fuzz-clean:
	rm -rf $(FUZZ_OBJDIR) $(FUZZ_WORK) $(foreach h,$(FUZZ_NAMES),fuzz/$(h)_fuzz)
