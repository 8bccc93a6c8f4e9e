# remora — build, test, run.  See README.md.
#
#   make            build/remora and the bench tools (optimised)
#   make test       unit + integration tests under ASan/UBSan (build/san/)
#   make run        remora on examples/remora.yaml in front of the bundled upstream
#   make deps       install the Debian packages the build and tests need
#
# Sources are found by directory, so a new .c file needs no Makefile edit:
#   proxy/**, filters/, xds/  -> libremora.a (proxy/main.c is the binary)
#   xds/cp/                   -> build/remora-xds, the reference control plane (not in the lib)
#   bench/upstream/ bench/load/ bench/relay/ -> one binary each
#   tests/unit/**             -> one Criterion binary
#   tests/tools/<name>.c      -> $(BUILD)/tests/<name> (test drivers linked with the library)
#   proto/**/*.proto          -> protoc-c output in $(BUILD)/gen (never committed)

comma := ,
BUILD ?= build
SAN   ?= 0
CC    ?= cc
PY    ?= /usr/bin/python3

PKGS := libnghttp2 libcares libprotobuf-c yaml-0.1 libpcre2-8
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) openssl 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# nghttp2 is linked statically (libnghttp2-dev ships libnghttp2.a), as Envoy links it: its
# calls skip the PLT and the shared object's relocations (-2.4 % instructions per proxied h2c
# request, bench/RESULTS-profile.md).  A Debian security update of libnghttp2 then needs a
# rebuild of remora.
PKG_LIBS   := $(patsubst -lnghttp2,-Wl$(comma)-Bstatic -lnghttp2 -Wl$(comma)-Bdynamic,$(PKG_LIBS))
# OpenSSL is not linked into remora, remora-xds, remora-relay or the test tools: the library
# dlopen()s it when the first TLS context is built (proxy/net/ssl_api.h), so a plaintext remora
# maps none of it, and their link fails if anything calls OpenSSL directly.  Only what calls it
# itself links it: the bench load tool and upstream, the unit tests.
SSL_LIBS   := $(shell pkg-config --libs openssl 2>/dev/null)
# HTTP/1.x parsing: llhttp, built here from the C sources Debian's node-llhttp ships
LLHTTP_SRC := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp

# The default flavour links with LTO: across remora's own files the small accessors of the
# request path (headers, buffers, timers) inline, -7 % instructions per proxied HTTP/1.1
# request, -3 % h2c (bench/RESULTS-profile.md).  The archive is made with gcc-ar so that it
# indexes the LTO objects.  LTO=0 builds without it.
LTO   ?= 1
# ... and with profile-guided optimisation (PGO): remora is first built instrumented, run by
# scripts/pgo-train.sh (generic proxy traffic on loopback, ~15 s), and the release objects are
# compiled with the profile it wrote: hot paths laid out together, branches ordered by what
# happened (bench/RESULTS-profile.md: -6 % instructions per HTTP/1.1 request).  Code the
# training does not run is optimised as without a profile.  A change to remora's sources
# retrains.  PGO=0 builds without (and needs no loopback at build time); SAN=1 never uses it.
PGO   ?= 1
PGO_GEN ?= 0
ifeq ($(SAN),1)
OPT := -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
override PGO := 0
else ifeq ($(LTO),1)
OPT := -O2 -flto=auto
else
OPT := -O2
endif
ifeq ($(PGO_GEN),1)
OPT += -fprofile-generate -fprofile-update=atomic
override PGO := 0
else ifeq ($(PGO),1)
OPT += -fprofile-use -fprofile-partial-training -Wno-missing-profile
endif
AR_CMD := $(if $(filter -flto%,$(OPT)),gcc-ar,ar)

CFLAGS_COMMON := -std=c17 -D_GNU_SOURCE -g -pthread -MMD -MP $(OPT) -I. -I$(BUILD)/gen -I$(LLHTTP_INC) \
                 $(PKG_CFLAGS)
CFLAGS  := $(CFLAGS_COMMON) -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wno-deprecated-declarations -Wno-format-truncation
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
# The headers too: objects that include one are then rebuilt in the same run that regenerates
# it (without a rule, make reads a header's time before protoc-c rewrites it and keeps a stale
# object: a struct with new fields read at old offsets).
GEN_H      := $(GEN_C:.c=.h)
$(GEN_H): $(GEN_STAMP) ;

$(BUILD)/gen/%.pb-c.o: $(BUILD)/gen/%.pb-c.c
	$(CC) $(GENFLAGS) -c $< -o $@

# The descriptor registry (proxy/config/pbtypes.h): an array of every message descriptor the
# generated headers declare, so an Any resolves by "type.googleapis.com/<full.name>".
REG_C := $(BUILD)/gen/rm_pb_registry.c
REG_O := $(REG_C:.c=.o)
GEN_O += $(REG_O)

$(REG_C): $(GEN_STAMP)
	find $(BUILD)/gen -name '*.pb-c.h' | LC_ALL=C sort | xargs sed -n \
	  's/^extern const ProtobufCMessageDescriptor \([A-Za-z0-9_]*\);$$/\1/p' | awk '\
	  BEGIN { print "/* Generated by the Makefile from the protoc-c headers: do not edit. */"; \
	          print "#include <stddef.h>"; print "#include <protobuf-c/protobuf-c.h>" } \
	  { d[NR] = $$1; print "extern const ProtobufCMessageDescriptor " $$1 ";" } \
	  END { print "const ProtobufCMessageDescriptor *const rm_pb_registry[] = {"; \
	        for (i = 1; i <= NR; i++) print "    &" d[i] ","; \
	        print "};"; print "const size_t rm_pb_registry_count = " NR ";" }' > $@.tmp
	mv $@.tmp $@

$(REG_O): $(REG_C)
	$(CC) $(GENFLAGS) -c $< -o $@

# ---- llhttp (node-llhttp's generated parser: their code, built with their warnings off) --------
LLHTTP_O := $(addprefix $(BUILD)/obj/llhttp/,llhttp.o api.o http.o)
$(BUILD)/obj/llhttp/%.o: $(LLHTTP_SRC)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(GENFLAGS) -c $< -o $@

# ---- the library and binaries ---------------------------------------------
LIB_SRC := $(shell find proxy filters xds -name '*.c' ! -path proxy/main.c ! -path 'xds/cp/*' \
                2>/dev/null | sort)
LIB_O   := $(addprefix $(BUILD)/obj/,$(LIB_SRC:.c=.o))
LIB     := $(BUILD)/libremora.a

$(BUILD)/obj/%.o: %.c | $(GEN_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_O) $(GEN_O) $(LLHTTP_O)
	@rm -f $@
	$(AR_CMD) rcs $@ $^

$(BUILD)/remora: $(BUILD)/obj/proxy/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

define bench_bin
$(1)_SRC := $$(sort $$(wildcard bench/$(1)/*.c))
$(BUILD)/remora-$(1): $$(addprefix $(BUILD)/obj/,$$($(1)_SRC:.c=.o)) $(LLHTTP_O)
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach b,upstream load relay,$(eval $(call bench_bin,$(b))))
$(BUILD)/remora-upstream $(BUILD)/remora-load: LDLIBS += $(SSL_LIBS)
BENCH_BINS := $(foreach b,upstream load relay,$(if $(wildcard bench/$(b)/*.c),$(BUILD)/remora-$(b)))

# ---- profile-guided optimisation (PGO=1, see OPT above) ---------------------------------------
# remora's objects are first built instrumented at their own paths (GCC keys the profile of a
# static function by its object's path), remora runs the training (scripts/pgo-train.sh) and
# writes *.gcda next to them, then they are rebuilt with the profile: every one of them depends
# on the stamp, which the instrumented build and the training precede.  The training's load tool
# and upstream are built apart (in $(BUILD)/pgo-tools), without a profile.
ifeq ($(PGO),1)
PGO_STAMP  := $(BUILD)/pgo.stamp
PGO_TOOLS  := $(BUILD)/pgo-tools
PGO_OBJS   := $(LIB_O) $(GEN_O) $(LLHTTP_O) $(BUILD)/obj/proxy/main.o
PGO_INPUTS := $(LIB_SRC) proxy/main.c $(shell find proxy filters xds -name '*.h' 2>/dev/null) \
              $(addprefix proto/,$(OUR_PROTOS)) scripts/pgo-train.sh Makefile
$(PGO_STAMP): $(PGO_INPUTS)
	@echo "pgo: an instrumented remora, its training run, then the build with the profile"
	@$(MAKE) --no-print-directory BUILD=$(PGO_TOOLS) PGO=0 \
	    $(PGO_TOOLS)/remora-upstream $(PGO_TOOLS)/remora-load
	@rm -f $(PGO_OBJS) $(LIB) $(BUILD)/remora
	@find $(BUILD)/obj $(BUILD)/gen -name '*.gcda' -delete 2>/dev/null || true
	@$(MAKE) --no-print-directory BUILD=$(BUILD) PGO_GEN=1 $(BUILD)/remora
	scripts/pgo-train.sh $(BUILD)/remora $(PGO_TOOLS)
	@touch $@
$(PGO_OBJS): $(PGO_STAMP)
endif

# ---- the reference xDS control plane: xds/cp/*.c -> $(BUILD)/remora-xds (kept out of the
# library, linked with it) -----------------------------------------------------------------------
CP_SRC := $(sort $(wildcard xds/cp/*.c))
CP_BIN := $(if $(CP_SRC),$(BUILD)/remora-xds)
$(BUILD)/remora-xds: $(addprefix $(BUILD)/obj/,$(CP_SRC:.c=.o)) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

UNIT_SRC := $(shell find tests/unit -name '*.c' 2>/dev/null | sort)
UNIT_BIN := $(BUILD)/tests/unit_tests
$(UNIT_BIN): $(addprefix $(BUILD)/obj/,$(UNIT_SRC:.c=.o)) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(SSL_LIBS) -lcriterion

# ---- test tools: tests/tools/<name>.c -> $(BUILD)/tests/<name>, linked with the library ------
TOOL_SRC  := $(sort $(wildcard tests/tools/*.c))
TOOL_BINS := $(patsubst tests/tools/%.c,$(BUILD)/tests/%,$(TOOL_SRC))
$(TOOL_BINS): $(BUILD)/tests/%: $(BUILD)/obj/tests/tools/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

.DEFAULT_GOAL := all
.PHONY: all deps test unit integration run run-xds clean format check-format
all: $(BUILD)/remora $(BENCH_BINS) $(TOOL_BINS) $(CP_BIN)

deps:
	@scripts/deps.sh

# make test: everything under ASan/UBSan in build/san, unit then integration.
test: deps check-format
	@$(MAKE) --no-print-directory SAN=1 BUILD=build/san all build/san/tests/unit_tests
	@$(MAKE) --no-print-directory SAN=1 BUILD=build/san unit integration

unit: $(UNIT_BIN)
	ASAN_OPTIONS=detect_leaks=1 $(UNIT_BIN) --jobs 2

integration: all
	$(PY) tests/integration/run.py --build $(BUILD)

run: deps all
	@scripts/run.sh $(BUILD)

run-xds: deps all
	@scripts/run.sh $(BUILD) xds

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

check-format:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
