# postfix-odmr - top-level Makefile.
#
#   make                 build the library and every program into $(BUILD)/
#   make check           unit tests, sanitizer build, integration tests
#   make check-unit      unit tests only (cmocka)
#   make asan            ASan/UBSan build in build-asan/ and its unit tests
#   make clang           the whole build again with clang (warnings are errors)
#   make fuzz            libFuzzer targets, run longer (FUZZ_SECONDS=300)
#   make install DESTDIR=... PREFIX=/usr   (odmr-fetch to bin/, admin tools to sbin/)
#   make man             regenerate man/*.8 from the programs' header comments

CC      ?= cc
BUILD   ?= build
PREFIX  ?= /usr
LIBEXECDIR ?= $(PREFIX)/lib/postfix-odmr
SBINDIR ?= $(PREFIX)/sbin
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
# Where Debian's monitoring-plugins put plugins (and third-party ones).
PLUGINDIR ?= $(PREFIX)/lib/nagios/plugins
OPT     ?= -O2 -g
SAN     ?=
WARN    = -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes \
          -Wno-unused-parameter
CFLAGS_ALL = -std=gnu11 -D_GNU_SOURCE -Isrc/lib $(WARN) $(OPT) $(SAN) $(CFLAGS)
LDLIBS_ALL = -ldb -lssl -lcrypto $(LDLIBS)

LIB_SRC  := $(sort $(wildcard src/lib/*.c))
LIB_OBJ  := $(LIB_SRC:src/lib/%.c=$(BUILD)/lib/%.o)
LIB_A    := $(BUILD)/libodmr.a
PROGS    := $(sort $(notdir $(patsubst %/,%,$(wildcard src/odmr*/))))
PROG_BIN := $(PROGS:%=$(BUILD)/bin/%)
# Monitoring plugins (src/check_*/): installed to PLUGINDIR, man section 8.
PLUGINS  := $(sort $(notdir $(patsubst %/,%,$(wildcard src/check_*/))))
PLUGIN_BIN := $(PLUGINS:%=$(BUILD)/bin/%)
# Programs the administrator runs go to sbin, the customer's to bin (man
# section 1); the rest are run by Postfix.
ADMIN_PROGS := odmr-queue odmr-passwd
USER_PROGS := odmr-fetch
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))

.PHONY: all check check-unit check-integration asan clang fuzz fuzz-quick install clean man

all: $(LIB_A) $(PROG_BIN) $(PLUGIN_BIN) $(UNIT_BIN)

$(BUILD)/lib/%.o: src/lib/%.c $(wildcard src/lib/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(LIB_A): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

.SECONDEXPANSION:
$(BUILD)/bin/%: $$(wildcard src/%/*.c) $$(wildcard src/%/*.h) $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS) -Isrc/$* -o $@ $(filter %.c,$^) $(LIB_A) $(LDLIBS_ALL)

# tests/unit/test_PROG_PART.c also links src/PROG/PROG_PART.c when that exists
# (program modules without main(), e.g. src/odmrd/odmrd_atrn.c).
unit_extra = $(wildcard src/$(word 1,$(subst _, ,$(1:test_%=%)))/$(1:test_%=%).c)
$(BUILD)/tests/%: tests/unit/%.c $$(call unit_extra,$$*) $(LIB_A) $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes -Isrc/$(word 1,$(subst _, ,$(*:test_%=%))) \
	    -o $@ $(filter %.c,$^) $(LIB_A) $(LDLIBS_ALL) -lcmocka

# tests/unit/test_fetch_*.c link odmr-fetch's modules (all but its main file).
FETCH_MODS := $(filter-out src/odmr-fetch/odmr-fetch.c,$(wildcard src/odmr-fetch/*.c))
$(BUILD)/tests/test_fetch_%: tests/unit/test_fetch_%.c $(FETCH_MODS) $(wildcard src/odmr-fetch/*.h) \
    $(LIB_A) $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes -Isrc/odmr-fetch \
	    -o $@ $(filter %.c,$^) $(LIB_A) $(LDLIBS_ALL) -lcmocka -lpthread

check-unit: all
	BUILD=$(BUILD) tests/run-unit

check-integration: all
	BUILD=$(BUILD) tests/integration/run

# The README's test command. One closing line "N passed, N failed".
check: all
	BUILD=$(BUILD) tests/run-all

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" all
	BUILD=build-asan ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 tests/run-unit

clang:
	$(MAKE) CC=clang BUILD=build-clang all

FUZZ_SECONDS ?= 300
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run

fuzz-quick:
	FUZZ_SECONDS=10 tests/fuzz/run

install: all
	install -d $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	for p in $(PROGS); do \
	    case " $(ADMIN_PROGS) " in \
	    *" $$p "*) install -m 0755 $(BUILD)/bin/$$p $(DESTDIR)$(SBINDIR)/$$p; continue ;; \
	    esac; \
	    case " $(USER_PROGS) " in \
	    *" $$p "*) install -m 0755 $(BUILD)/bin/$$p $(DESTDIR)$(BINDIR)/$$p ;; \
	    *) install -m 0755 $(BUILD)/bin/$$p $(DESTDIR)$(LIBEXECDIR)/$$p ;; \
	    esac; \
	done
	install -d $(DESTDIR)$(PLUGINDIR)
	for p in $(PLUGINS); do install -m 0755 $(BUILD)/bin/$$p $(DESTDIR)$(PLUGINDIR)/$$p; done
	install -m 0755 scripts/postfix-odmr-setup $(DESTDIR)$(SBINDIR)/postfix-odmr-setup
	install -m 0755 scripts/odmr-expire $(DESTDIR)$(LIBEXECDIR)/odmr-expire
	for m in $(wildcard man/*.1); do install -m 0644 $$m $(DESTDIR)$(MANDIR)/man1/; done
	for m in $(wildcard man/*.8); do install -m 0644 $$m $(DESTDIR)$(MANDIR)/man8/; done
	for m in $(wildcard man/*.5); do install -m 0644 $$m $(DESTDIR)$(MANDIR)/man5/; done

# Man pages come from the man text at the top of each program's main file:
# section 1 for USER_PROGS, 8 for the others.
man:
	for p in $(PROGS); do \
	    case " $(USER_PROGS) " in *" $$p "*) s=1 ;; *) s=8 ;; esac; \
	    scripts/srctoman src/$$p/$$p.c $$s > man/$$p.$$s; \
	done
	for p in $(PLUGINS); do scripts/srctoman src/$$p/$$p.c 8 > man/$$p.8; done

clean:
	rm -rf build build-asan build-clang build-fuzz
