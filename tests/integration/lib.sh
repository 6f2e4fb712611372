# shellcheck shell=bash
# lib.sh - helpers for the integration tests (tests/integration/t_*.sh).
#
# A test file is a bash script:
#
#     #!/bin/bash
#     set -eu
#     . "$(dirname "$0")/lib.sh"
#     require_root
#     sandbox_start                 # private Postfix + odmr in a mktemp dir
#     if smtp_send a@sender.test b@example.org >/dev/null; then ok accept; else fail accept "no 250"; fi
#     check "log says sent" log_wait 10 'status=sent'
#     done_testing
#
# Results: ok NAME / fail NAME REASON / skip NAME REASON print one line each
# ("PASS: NAME", "FAIL: NAME: REASON", "SKIP: NAME: REASON") and, when the
# runner set T_RESULTS, append it to that file; the runner counts from there.
# A file that exits non-zero without having reported a failure counts as one
# failure ("aborted"). On exit the sandbox is stopped and its directory
# removed (kept when KEEP_SANDBOX=1 or, for inspection, printed when a test
# failed: the tails of the logs are shown).
#
# After sandbox_start these are set (see scripts/odmr-sandbox env):
#     SANDBOX_DIR SMTP_HOST SMTP_PORT ODMR_HOST ODMR_PORT ODMR_USERS
#     ODMR_PASSWORD_<user> ODMR_DOMAINS_<user> CONFIG_DIR POSTFIX_QUEUE_DIR
#     QUEUE_DIR LOG_FILE ODMR_LOG_FILE TLS_CA_FILE SINK_DOMAIN SINK_MAILDIR
#     BUILD_DIR
# and BIN=$BUILD_DIR/bin.

set -u

T_NAME=$(basename "$0")
LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$LIB_DIR/../.." && pwd)
SANDBOX_SCRIPT=$REPO_DIR/scripts/odmr-sandbox

# $BUILD (default build) is relative to the repository unless absolute.
case ${BUILD:-build} in
    /*) BUILD_DIR=${BUILD} ;;
    *) BUILD_DIR=$REPO_DIR/${BUILD:-build} ;;
esac
BIN=$BUILD_DIR/bin

T_PASSED=0
T_FAILED=0
T_SKIPPED=0
SANDBOX_DIR=
T_SANDBOX_STARTED=0
T_BUILD_COPY=

_t_record() {
    echo "$1"
    if [ -n "${T_RESULTS:-}" ]; then
        echo "$1" >>"$T_RESULTS"
    fi
}

# ok NAME
ok() {
    T_PASSED=$((T_PASSED + 1))
    _t_record "PASS: $*"
}

# fail NAME REASON...
fail() {
    local name=$1
    shift
    T_FAILED=$((T_FAILED + 1))
    _t_record "FAIL: $name: ${*:-failed}"
}

# skip NAME REASON...
skip() {
    local name=$1
    shift
    T_SKIPPED=$((T_SKIPPED + 1))
    _t_record "SKIP: $name: ${*:-skipped}"
}

# check NAME CMD... : ok when CMD succeeds, fail otherwise.
check() {
    local name=$1
    shift
    if "$@"; then
        ok "$name"
    else
        fail "$name" "command failed: $*"
    fi
}

# skip_all REASON: skip the whole file (counts as one skip) and exit 0.
skip_all() {
    skip "$T_NAME" "$*"
    exit 0
}

require_root() {
    [ "$(id -u)" = 0 ] || skip_all "needs root (runs a private Postfix)"
}

# require_cmd CMD...: skip the file when a command is missing.
require_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || skip_all "command not found: $c"
    done
}

# require_bin PROG...: skip the file when a program is not built yet.
require_bin() {
    local p
    for p in "$@"; do
        [ -x "$BIN/$p" ] || skip_all "$BIN/$p not built"
    done
}

# wait_for SECONDS CMD...: run CMD every 0.1 s until it succeeds; 1 on timeout.
wait_for() {
    local secs=$1 end
    shift
    end=$(($(date +%s%N) / 1000000 + secs * 1000))
    while :; do
        if "$@"; then
            return 0
        fi
        if [ "$(($(date +%s%N) / 1000000))" -ge "$end" ]; then
            return 1
        fi
        sleep 0.1
    done
}

# Is Postfix's queue (not the hold queue) empty?
postfix_queue_empty() {
    postqueue -c "$CONFIG_DIR" -p 2>/dev/null | grep -q '^Mail queue is empty'
}

# wait_queue_empty [SECONDS]: wait until Postfix's queue is empty (default 30 s).
wait_queue_empty() {
    wait_for "${1:-30}" postfix_queue_empty
}

# postfix_flush: ask Postfix to retry deferred mail now.
postfix_flush() {
    postqueue -c "$CONFIG_DIR" -f
}

# log_grep ERE: is the pattern in Postfix's maillog?
log_grep() {
    grep -Eq -- "$1" "$LOG_FILE" 2>/dev/null
}

# odmr_log_grep ERE: is the pattern in the odmr programs' log_file?
odmr_log_grep() {
    grep -Eq -- "$1" "$ODMR_LOG_FILE" 2>/dev/null
}

# log_count ERE: number of maillog lines that match.
log_count() {
    grep -Ec -- "$1" "$LOG_FILE" 2>/dev/null || true
}

# log_wait SECONDS ERE / odmr_log_wait SECONDS ERE: wait for a log line.
log_wait() {
    wait_for "$1" log_grep "$2"
}

odmr_log_wait() {
    wait_for "$1" odmr_log_grep "$2"
}

# smtp_send FROM TO [SWAKS ARGS...]: send a test message to the sandbox's
# SMTP port with swaks; prints the transcript; swaks' exit status (0 = all
# accepted, 24 = a recipient refused, ...).
smtp_send() {
    local from=$1 to=$2
    shift 2
    swaks --server "$SMTP_HOST:$SMTP_PORT" --helo client.test \
        --from "$from" --to "$to" --timeout 30 "$@" 2>&1
}

# listen_addrs PORT: the local addresses listening on TCP PORT, one a line.
listen_addrs() {
    ss -Hltn "sport = :$1" | awk '{ print $4 }'
}

# free_port: print a TCP port no socket uses, below the kernel's ephemeral
# range (odmr-sandbox free-port).
free_port() {
    "$SANDBOX_SCRIPT" free-port
}

# odmr_reachable_build: make sure user odmr exists and can run the programs
# in $BIN. When the checkout lives under a directory closed to others (a
# home directory), copy the programs to a world-readable temp dir and point
# BUILD_DIR and BIN there (removed on exit).
odmr_reachable_build() {
    id odmr >/dev/null 2>&1 ||
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin odmr
    if setpriv --reuid odmr --regid odmr --clear-groups test -x "$BIN/." 2>/dev/null; then
        return 0
    fi
    T_BUILD_COPY=$(mktemp -d "${TMPDIR:-/tmp}/odmr-build.XXXXXX")
    chmod 0755 "$T_BUILD_COPY"
    mkdir "$T_BUILD_COPY/bin"
    cp -p "$BIN"/* "$T_BUILD_COPY/bin/"
    chmod -R go+rX "$T_BUILD_COPY"
    echo "# $T_NAME: user odmr cannot reach $BIN; using a copy in $T_BUILD_COPY" >&2
    BUILD_DIR=$T_BUILD_COPY
    BIN=$T_BUILD_COPY/bin
}

# sandbox_start: make a sandbox in a new mktemp directory, start it and load
# its variables. Ports are chosen by the sandbox (--free-ports) unless
# SANDBOX_SMTP_PORT / SANDBOX_ODMR_PORT are set. Exits the file (as a
# failure) when it cannot start.
sandbox_start() {
    local out
    odmr_reachable_build
    SANDBOX_DIR=$(mktemp -d "${TMPDIR:-/tmp}/odmr-test.XXXXXX")
    if ! out=$("$SANDBOX_SCRIPT" start "$SANDBOX_DIR" --build "$BUILD_DIR" \
        --free-ports 2>&1); then
        echo "$out" >&2
        fail "sandbox start" "odmr-sandbox start failed"
        exit 1
    fi
    T_SANDBOX_STARTED=1
    eval "$("$SANDBOX_SCRIPT" env "$SANDBOX_DIR")"
    BIN=$BUILD_DIR/bin
}

sandbox_stop() {
    if [ "$T_SANDBOX_STARTED" = 1 ]; then
        "$SANDBOX_SCRIPT" stop "$SANDBOX_DIR" >/dev/null 2>&1 || true
        T_SANDBOX_STARTED=0
    fi
}

# done_testing: print the file's counts; exit status 1 when something failed.
done_testing() {
    echo "# $T_NAME: $T_PASSED passed, $T_FAILED failed, $T_SKIPPED skipped"
    [ "$T_FAILED" = 0 ] || exit 1
    exit 0
}

# Background helpers of a test (sinks, scripted providers, clients) and
# scratch directories outside the sandbox, ended and removed at exit.
T_BG_PIDS=
T_TMP_DIRS=

# bg_track PID / bg_untrack PID: a background process to end at exit (or
# one the test has already waited for).
bg_track() { T_BG_PIDS="$T_BG_PIDS $1"; }
bg_untrack() { T_BG_PIDS=${T_BG_PIDS/ $1/}; }

# test_workdir NAME: WORK=$SANDBOX_DIR/NAME (created), or a new temporary
# directory removed at exit when no sandbox runs.
test_workdir() {
    if [ -n "$SANDBOX_DIR" ]; then
        WORK=$SANDBOX_DIR/$1
        mkdir -p "$WORK"
    else
        WORK=$(mktemp -d "${TMPDIR:-/tmp}/odmr-$1.XXXXXX")
        T_TMP_DIRS="$T_TMP_DIRS $WORK"
    fi
}

# fetch_sink_start DIR ARGS...: fetch_sink.py (a customer's local MTA)
# recording into DIR, its log in DIR.log, ended at exit; returns once it
# listens (or records a failure and ends the test).
fetch_sink_start() {
    local dir=$1
    shift
    /usr/bin/python3 "$LIB_DIR/fetch_sink.py" --out "$dir" "$@" >"$dir.log" 2>&1 &
    bg_track $!
    wait_for 10 test -e "$dir/ready" || { fail "sink $dir starts" "$(cat "$dir.log")"; done_testing; }
}

_t_on_exit() {
    local rc=$? p
    trap - EXIT
    for p in $T_BG_PIDS; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    for p in $T_TMP_DIRS; do
        rm -rf "$p"
    done
    if [ "$rc" != 0 ] && [ "$T_FAILED" = 0 ]; then
        fail "$T_NAME" "aborted (exit status $rc)"
    fi
    if [ -n "$SANDBOX_DIR" ] && [ -d "$SANDBOX_DIR" ]; then
        if [ "$T_FAILED" != 0 ]; then
            echo "--- $T_NAME: last lines of $SANDBOX_DIR/maillog" >&2
            tail -n 30 "$SANDBOX_DIR/maillog" >&2 2>/dev/null || true
            echo "--- $T_NAME: last lines of $SANDBOX_DIR/odmr.log" >&2
            tail -n 30 "$SANDBOX_DIR/odmr.log" >&2 2>/dev/null || true
        fi
        sandbox_stop
        if [ "${KEEP_SANDBOX:-0}" = 1 ]; then
            echo "# $T_NAME: sandbox kept in $SANDBOX_DIR" >&2
        else
            rm -rf "$SANDBOX_DIR"
        fi
    fi
    if [ -n "$T_BUILD_COPY" ]; then
        rm -rf "$T_BUILD_COPY"
    fi
    if [ "$T_FAILED" != 0 ] && [ "$rc" = 0 ]; then
        rc=1
    fi
    exit "$rc"
}

trap _t_on_exit EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# py_checks PREFIX SCRIPT ARGS...: run a Python check script (Debian's
# /usr/bin/python3) that prints "ok NAME" / "fail NAME: REASON" lines, with
# the sandbox's variables exported, and record each line as a result.
py_checks() {
    local prefix=$1 script=$2 out line name rc=0 seen=0
    shift 2
    export SANDBOX_DIR SMTP_HOST SMTP_PORT ODMR_HOST ODMR_PORT QUEUE_DIR CONFIG_DIR \
        BUILD_DIR LOG_FILE ODMR_LOG_FILE 2>/dev/null || true
    out=$(/usr/bin/python3 "$LIB_DIR/$script" "$@" 2>&1) || rc=$?
    [ -n "$out" ] || { fail "$prefix" "$script printed nothing"; return; }
    while IFS= read -r line; do
        case $line in
            "ok "*) ok "$prefix: ${line#ok }"; seen=1 ;;
            "fail "*)
                name=${line#fail }
                fail "$prefix: ${name%%:*}" "${name#*: }"
                seen=1
                ;;
            *) echo "$line" ;;
        esac
    done <<<"$out"
    # A script that dies (a traceback) or checks nothing is a failure too.
    if [ "$rc" != 0 ] && [ "$rc" != 1 ]; then
        fail "$prefix" "$script exited $rc"
    elif grep -q '^Traceback (most recent call last)' <<<"$out"; then
        fail "$prefix" "$script died: $(tail -1 <<<"$out")"
    elif [ "$seen" = 0 ]; then
        fail "$prefix" "$script checked nothing (exit $rc)"
    fi
}

# odmr_log_count ERE: number of lines of the odmr programs' log_file that match.
odmr_log_count() {
    grep -Ec -- "$1" "$ODMR_LOG_FILE" 2>/dev/null || true
}
