#!/bin/bash
# t_odmrd_robust.sh - odmrd against bad input, through the sandbox's ODMR
# port: a 100 KiB line, NUL bytes, bare LF and CR, broken base64, pipelined
# commands, garbage instead of a TLS handshake, drops at every point, bad
# replies on the reversed side (tests/integration/odmrd_robust.py badinput).
# Every case expects a clear reply and a working next session.
#
# "No leak": those sessions run under valgrind (memcheck, --track-fds): the
# master.cf entry is pointed at a wrapper in the sandbox and Postfix
# reloaded; every valgrind log must be clean (no error, no definite or
# indirect leak, no descriptor open at exit beyond 0-2).
# Then 500 connections are opened quickly and dropped (some mid-line, mid-
# AUTH, mid-100-KiB line) against the real odmrd (maxproc 50, so they
# queue): every one gets its connect/disconnect lines, the odmrd processes
# go back to 0, nothing is left in the queue's incoming/ or lock state, and
# a full ATRN still delivers byte for byte. No panic/fatal in the log.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix valgrind ss cmp
require_bin odmrd odmr-enqueue odmr-store

sandbox_start

HELPER=$LIB_DIR/odmrd_robust.py
CUSTOMER=$LIB_DIR/odmr_customer.py
PW1=$ODMR_PASSWORD_cust1
export ODMR_HOST ODMR_PORT

# odmrd processes of this sandbox, plain or under valgrind (not the spawn(8)
# processes, whose command line also names odmrd).
odmrd_count() {
    local n
    n=$(pgrep -f -- "^($BIN/odmrd|/usr/bin/valgrind[^ ]* .* $BIN/odmrd) -c $CONFIG_DIR\$" | wc -l)
    echo "$n"
}
no_odmrd() { [ "$(odmrd_count)" = 0 ]; }

# A message that stays queued through the bad-input cases (the reversed
# cases never accept it).
orig=$SANDBOX_DIR/robust.txt
{
    printf 'Subject: robust\n\n'
    printf '.dot line\nline %s\n' $(seq 1 200)
} >"$orig"
"$BIN/odmr-enqueue" -c "$CONFIG_DIR" -f sender@sender.test -- robust@example.org <"$orig" >/dev/null

# --- bad input under valgrind -------------------------------------------------
VG_DIR=$SANDBOX_DIR/valgrind
mkdir -p "$VG_DIR"
chown odmr: "$VG_DIR"
WRAPPER=$SANDBOX_DIR/odmrd-valgrind
cat >"$WRAPPER" <<EOF
#!/bin/sh
# odmrd under valgrind for t_odmrd_robust.sh (spawn(8) runs this as odmr).
exec /usr/bin/valgrind -q --error-exitcode=99 --leak-check=full \\
    --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \\
    --track-fds=yes --log-file=$VG_DIR/odmrd.%p.log $BIN/odmrd "\$@"
EOF
chmod 0755 "$WRAPPER"
cp "$CONFIG_DIR/master.cf" "$SANDBOX_DIR/master.cf.plain"
sed -i "s|argv=$BIN/odmrd -c|argv=$WRAPPER -c|" "$CONFIG_DIR/master.cf"
if grep -q "argv=$WRAPPER -c" "$CONFIG_DIR/master.cf"; then
    postfix -c "$CONFIG_DIR" reload >/dev/null 2>&1
    sleep 1
    ok "master.cf runs odmrd under valgrind"
else
    fail "master.cf runs odmrd under valgrind" "no odmrd entry to rewrite"
fi

ROBUST_TIMEOUT=60 py_checks "bad input" odmrd_robust.py badinput "$PW1" cust1 example.org

if ! wait_for 60 no_odmrd; then
    fail "valgrind sessions end" "$(odmrd_count) odmrd processes still running"
fi
runs=$(find "$VG_DIR" -name 'odmrd.*.log' | wc -l)
# --track-fds lists the descriptors open at exit: only 0-2 (the socket,
# /dev/null), valgrind's own log and log_file (kept open by log.c for the
# process's life) may be there; anything else, or any error or leak, makes
# the log dirty.
dirty=""
for f in "$VG_DIR"/odmrd.*.log; do
    [ -e "$f" ] || continue
    if grep -Eq 'definitely lost: [1-9]|indirectly lost: [1-9]|ERROR SUMMARY: [1-9]' "$f" ||
        grep -Eq '^==[0-9]+== (Invalid|Conditional|Use of uninit|Syscall param|Mismatched|Source and destination|[0-9,]+ bytes in [0-9,]+ blocks are)' "$f" ||
        grep -E '^==[0-9]+== Open ' "$f" |
        grep -Ev "Open file descriptor [0-9]+: ($VG_DIR/odmrd\.[0-9]+\.log|$ODMR_LOG_FILE)\$" | grep -q .; then
        dirty="$dirty $f"
    fi
done
if [ "$runs" -ge 20 ] && [ -z "$dirty" ]; then
    ok "valgrind: $runs odmrd sessions, no error, no leak, no fd left open"
else
    fail "valgrind" "$runs runs; dirty:$dirty $(for f in $dirty; do head -n 40 "$f"; done)"
fi
if log_grep 'spawn.*odmrd-valgrind.*(exit status|killed by signal)'; then
    fail "valgrind exit status 0" "$(grep -E 'spawn.*(exit status|killed by signal)' "$LOG_FILE" | head -3)"
else
    ok "valgrind exit status 0 (no --error-exitcode=99)"
fi

cp "$SANDBOX_DIR/master.cf.plain" "$CONFIG_DIR/master.cf"
postfix -c "$CONFIG_DIR" reload >/dev/null 2>&1
sleep 1

# --- 500 connections opened and dropped ----------------------------------------
N=500
before_connect=$(grep -c 'odmrd\[[0-9]*\]: connect from' "$ODMR_LOG_FILE" || true)
before_disconnect=$(grep -c 'odmrd\[[0-9]*\]: disconnect from' "$ODMR_LOG_FILE" || true)
master_pid=$(tr -d ' ' <"$SANDBOX_DIR/spool/pid/master.pid" 2>/dev/null || true)
master_fds_before=$(find "/proc/$master_pid/fd" -mindepth 1 2>/dev/null | wc -l)
# Files of user odmr in the sandbox (hold queue, Postfix's queue directory
# where spawn(8) runs odmrd, ...), without the BDB environment and the logs.
odmr_files() {
    find "$SANDBOX_DIR" -path "$QUEUE_DIR/db" -prune -o -path "$VG_DIR" -prune -o \
        -user odmr -type f ! -name '*.log' -print | sort
}
odmr_files >"$SANDBOX_DIR/files.before"
start=$(date +%s)
out=$(/usr/bin/python3 "$HELPER" flood "$N" 2>&1 || true)
if grep -q "^opened $N\$" <<<"$out"; then ok "$N connections opened and dropped"; else fail "$N connections opened and dropped" "$(tail -3 <<<"$out")"; fi
all_done() {
    local d
    d=$(grep -c 'odmrd\[[0-9]*\]: disconnect from' "$ODMR_LOG_FILE" || true)
    [ "$((d - before_disconnect))" -ge "$N" ] && no_odmrd
}
if wait_for 150 all_done; then
    ok "every dropped session ended ($(($(date +%s) - start)) s), odmrd processes back to 0"
else
    fail "every dropped session ended" "$(odmrd_count) odmrd running, $(($(grep -c 'disconnect from' "$ODMR_LOG_FILE") - before_disconnect)) disconnects"
fi
nc=$(($(grep -c 'odmrd\[[0-9]*\]: connect from' "$ODMR_LOG_FILE" || true) - before_connect))
nd=$(($(grep -c 'odmrd\[[0-9]*\]: disconnect from' "$ODMR_LOG_FILE" || true) - before_disconnect))
if [ "$nc" = "$N" ] && [ "$nd" = "$N" ]; then
    ok "$N connect and $N disconnect lines"
else
    fail "$N connect and $N disconnect lines" "connect=$nc disconnect=$nd"
fi
odmr_files >"$SANDBOX_DIR/files.after"
if cmp -s "$SANDBOX_DIR/files.before" "$SANDBOX_DIR/files.after" && [ -z "$(ls -A "$QUEUE_DIR/incoming")" ]; then
    ok "no file left behind (same files of user odmr in the sandbox, incoming/ empty)"
else
    fail "no file left behind" "$(diff "$SANDBOX_DIR/files.before" "$SANDBOX_DIR/files.after" | head -5)"
fi
master_fds_after=$(find "/proc/$master_pid/fd" -mindepth 1 2>/dev/null | wc -l)
if [ -n "$master_pid" ] && [ "$master_fds_after" -le "$master_fds_before" ]; then
    ok "Postfix master holds no more descriptors ($master_fds_before -> $master_fds_after)"
else
    fail "Postfix master descriptors" "pid '$master_pid': $master_fds_before -> $master_fds_after"
fi
if ss -Htn state established "( sport = :$ODMR_PORT )" | grep -q .; then
    fail "no ODMR connection left open" "$(ss -Htn state established "( sport = :$ODMR_PORT )" | head -3)"
else
    ok "no ODMR connection left open"
fi

# --- afterwards: the queued message still arrives, byte for byte ----------------
RECV=$SANDBOX_DIR/recv
out=$(/usr/bin/python3 "$CUSTOMER" --host "$ODMR_HOST" --port "$ODMR_PORT" --timeout 30 \
    --user cust1 --password "$PW1" --domains example.org --save-dir "$RECV" 2>&1 || true)
/usr/bin/python3 -c '
import sys
d = open(sys.argv[1], "rb").read().replace(b"\r\n", b"\n")
sys.stdout.buffer.write(d.replace(b"\n", b"\r\n"))' "$orig" >"$SANDBOX_DIR/orig.crlf"
if grep -q '^messages: 1$' <<<"$out" && grep -q '^quit: yes$' <<<"$out" &&
    cmp -s "$SANDBOX_DIR/orig.crlf" "$RECV/001.msg"; then
    ok "afterwards ATRN delivers the queued message byte for byte"
else
    fail "afterwards ATRN delivers the queued message byte for byte" "$out"
fi

if odmr_log_grep 'odmrd.*(fatal|panic):'; then
    fail "no fatal or panic" "$(grep -E 'odmrd.*(fatal|panic):' "$ODMR_LOG_FILE" | head -3)"
else
    ok "no fatal or panic"
fi
if log_grep 'spawn.*(exit status|killed by signal|exit code)'; then
    fail "spawn saw no odmrd failure" "$(grep -E 'spawn.*(exit status|killed by signal)' "$LOG_FILE" | head -3)"
else
    ok "spawn saw no odmrd failure"
fi

done_testing
