# remora — build, test, run.  See README.md.
#
#   make            build/remora and the bench tools (optimised)
#   make test       unit + integration tests under ASan/UBSan (build/san/)
#   make run        remora on examples/remora.yaml in front of the bundled upstream
#   make deps       install the Debian packages the build and tests need
#
# Sources are found by directory, so a new .c file needs no Makefile edit:
#   proxy/**, filters/, xds/  -> libremora.a (proxy/main.c is the binary)
#   bench/upstream/ bench/load/ bench/relay/ -> one binary each
#   tests/unit/**             -> one Criterion binary
#   proto/**/*.proto          -> protoc-c output in $(BUILD)/gen (never committed)

BUILD ?= build
SAN   ?= 0
CC    ?= cc
PY    ?= /usr/bin/python3

PKGS := libnghttp2 libcares libprotobuf-c yaml-0.1 openssl libpcre2-8
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser

ifeq ($(SAN),1)
OPT := -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
else
OPT := -O2
endif

CFLAGS_COMMON := -std=c17 -D_GNU_SOURCE -g -pthread -MMD -MP $(OPT) -I. -I$(BUILD)/gen $(PKG_CFLAGS)
CFLAGS  := $(CFLAGS_COMMON) -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
GENFLAGS := $(CFLAGS_COMMON) -w
LDFLAGS := $(OPT) -pthread
LDLIBS  := $(PKG_LIBS) -lm

# ---- protobuf --------------------------------------------------------------
WKT_DIR    := /usr/include
WKT_PROTOS := google/protobuf/any.proto google/protobuf/duration.proto \
              google/protobuf/wrappers.proto google/protobuf/struct.proto \
              google/protobuf/empty.proto google/protobuf/timestamp.proto
OUR_PROTOS := $(patsubst proto/%,%,$(shell find proto -name '*.proto' 2>/dev/null | sort))
ALL_PROTOS := $(WKT_PROTOS) $(OUR_PROTOS)
GEN_C      := $(addprefix $(BUILD)/gen/,$(ALL_PROTOS:.proto=.pb-c.c))
GEN_O      := $(GEN_C:.c=.o)
GEN_STAMP  := $(BUILD)/gen/.stamp

$(GEN_STAMP): $(addprefix proto/,$(OUR_PROTOS))
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen -Iproto -I$(WKT_DIR) $(ALL_PROTOS)
	@touch $@

$(GEN_C): $(GEN_STAMP) ;

$(BUILD)/gen/%.pb-c.o: $(BUILD)/gen/%.pb-c.c
	$(CC) $(GENFLAGS) -c $< -o $@

# ---- the library and binaries ---------------------------------------------
LIB_SRC := $(shell find proxy filters xds -name '*.c' ! -path proxy/main.c 2>/dev/null | sort)
LIB_O   := $(addprefix $(BUILD)/obj/,$(LIB_SRC:.c=.o))
LIB     := $(BUILD)/libremora.a

$(BUILD)/obj/%.o: %.c | $(GEN_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_O) $(GEN_O)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/remora: $(BUILD)/obj/proxy/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

define bench_bin
$(1)_SRC := $$(sort $$(wildcard bench/$(1)/*.c))
$(BUILD)/remora-$(1): $$(addprefix $(BUILD)/obj/,$$($(1)_SRC:.c=.o))
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach b,upstream load relay,$(eval $(call bench_bin,$(b))))
BENCH_BINS := $(foreach b,upstream load relay,$(if $(wildcard bench/$(b)/*.c),$(BUILD)/remora-$(b)))

UNIT_SRC := $(shell find tests/unit -name '*.c' 2>/dev/null | sort)
UNIT_BIN := $(BUILD)/tests/unit_tests
$(UNIT_BIN): $(addprefix $(BUILD)/obj/,$(UNIT_SRC:.c=.o)) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcriterion

.DEFAULT_GOAL := all
.PHONY: all deps test unit integration run clean format check-format
all: $(BUILD)/remora $(BENCH_BINS)

deps:
	@scripts/deps.sh

# make test: everything under ASan/UBSan in build/san, unit then integration.
test:
	@$(MAKE) --no-print-directory SAN=1 BUILD=build/san all build/san/tests/unit_tests
	@$(MAKE) --no-print-directory SAN=1 BUILD=build/san unit integration

unit: $(UNIT_BIN)
	ASAN_OPTIONS=detect_leaks=1 $(UNIT_BIN) --jobs 2

integration: all
	$(PY) tests/integration/run.py --build $(BUILD)

run: all
	@scripts/run.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

check-format:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
