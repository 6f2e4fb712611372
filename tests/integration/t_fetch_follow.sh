#!/bin/bash
# t_fetch_follow.sh - the waiting ATRN (odmrd_atrn_wait, odmrd_atrn_wait_maps)
# and odmr-fetch --follow, against the sandbox's odmrd.
#
# Checked: a user without a map entry gets the immediate 453 as before; a
# provider that takes its time to answer ATRN (RFC 2645 allows 10 minutes;
# here a short clock: the map gives cust1 6 s) answers 453 at the end of
# the wait and odmr-fetch waits for it; odmr-fetch giving up first
# (--atrn-timeout) ends the server's wait at once (it watches the
# connection), and so does a command the customer sends meanwhile (453,
# then the command's reply); with --follow, a message injected while the
# customer waits reaches the customer's MTA within a few seconds (the delay from
# injection to the local MTA is measured and printed), three times in a
# row, byte for byte, one session each, woken through the domains' wake-up
# files (queue_directory/wait/DOMAIN); SIGTERM stops --follow at once
# (exit 0) while it waits, and the provider's wait ends with it.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix openssl ss swaks postmap
require_bin odmrd odmr-store odmr-queue odmr-fetch

sandbox_start

test_workdir follow-test

ms() { echo $(($(date +%s%N) / 1000000)); }

SINK_PORT=$(free_port)
fetch_sink_start "$WORK/sink" --listen "127.0.0.1:$SINK_PORT"

for u in cust1 cust2; do
    eval "pw=\$ODMR_PASSWORD_$u"
    (umask 077 && echo "$pw" >"$WORK/$u.pw")
done

# The wait map: cust1 only. cust2 keeps the immediate answer.
set_wait() {
    echo "cust1 $1" >"$CONFIG_DIR/odmr_wait"
    postmap -c "$CONFIG_DIR" "hash:$CONFIG_DIR/odmr_wait"
    chmod 0644 "$CONFIG_DIR/odmr_wait" "$CONFIG_DIR/odmr_wait.db"
}
set_wait 6s
echo "odmrd_atrn_wait_maps = hash:$CONFIG_DIR/odmr_wait" >>"$CONFIG_DIR/odmr.cf"

# fetch NAME USER ARGS...: one odmr-fetch run; output in $WORK/NAME.out,
# exit status in $FRC, run time in $FMS (ms).
fetch() {
    local name=$1 user=$2 t0
    shift 2
    FOUT=$WORK/$name.out
    FRC=0
    t0=$(ms)
    timeout 120 "$BIN/odmr-fetch" -s "$ODMR_HOST:$ODMR_PORT" -u "$user" -p "$WORK/$user.pw" \
        --tls-ca-file "$TLS_CA_FILE" --connect-timeout 10 --timeout 60 \
        -d "smtp:127.0.0.1:$SINK_PORT" "$@" >"$FOUT" 2>&1 || FRC=$?
    FMS=$(($(ms) - t0))
}
out_has() { grep -Eq -- "$1" "$FOUT"; }
# more_than N CMD...: CMD's output (a count) is above N now (for wait_for,
# which must run the count again each time).
more_than() {
    local n=$1
    shift
    [ "$("$@")" -gt "$n" ]
}
auths() { grep -c 'sasl_method=SCRAM-SHA-256, sasl_username=cust1' "$ODMR_LOG_FILE" || true; }
sink_count() { find "$WORK/sink" -name 't*.data' | wc -l; }

# --- a user without a map entry: the immediate 453 ------------------------------
fetch nowait cust2 example.com
if [ "$FRC" = 1 ] && out_has 'status=nomail \(ATRN: 453 ' && [ "$FMS" -lt 3000 ]; then
    ok "no wait-map entry (cust2): 453 at once (${FMS} ms), exit 1"
else
    fail "no wait-map entry (cust2): 453 at once" "exit $FRC after ${FMS} ms: $(tail -1 "$FOUT")"
fi

# --- a provider that takes its time (6 s for the test's 9 minutes) ------------------
fetch slow cust1 --atrn-timeout 30 example.org example.net
if [ "$FRC" = 1 ] && out_has 'status=nomail \(ATRN: 453 ' && [ "$FMS" -ge 5500 ] && [ "$FMS" -lt 12000 ]; then
    ok "waiting ATRN without mail: 453 after the wait (${FMS} ms of 6 s), odmr-fetch waited"
else
    fail "waiting ATRN without mail: 453 after the wait" "exit $FRC after ${FMS} ms: $(tail -1 "$FOUT")"
fi

# The client gives up first: odmrd sees the hang-up and stops waiting.
set_wait 60s
before=$(odmr_log_count 'ATRN example\.org sasl_username=cust1 .*: 453 ')
fetch impatient cust1 --atrn-timeout 3 example.org
t0=$(ms)
if [ "$FRC" = 5 ] && out_has 'status=network \(timeout in state ATRN'; then
    ok "--atrn-timeout shorter than the provider's wait: exit 5 (timeout in state ATRN)"
else
    fail "--atrn-timeout shorter than the provider's wait: exit 5" "exit $FRC: $(tail -1 "$FOUT")"
fi
if wait_for 5 more_than "$before" odmr_log_count 'ATRN example\.org sasl_username=cust1 .*: 453 '; then
    ok "odmrd ends the wait when the customer hangs up ($(($(ms) - t0)) ms later, not 60 s)"
else
    fail "odmrd ends the wait when the customer hangs up" "$(grep ATRN "$ODMR_LOG_FILE" | tail -2)"
fi

# The customer sends a command while it waits: the wait ends, ATRN gets its
# 453 at once, and the command is answered after it.
spoke=$(/usr/bin/python3 - "$ODMR_HOST" "$ODMR_PORT" cust1 "$ODMR_PASSWORD_cust1" <<'PY' 2>&1 || true
import base64, hashlib, hmac, socket, sys, time
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((host, port), timeout=30)
f = s.makefile("rb")
def reply():
    while True:
        line = f.readline().decode()
        if len(line) < 4 or line[3] != "-":
            return line.strip()
def cmd(text):
    s.sendall(text.encode() + b"\r\n")
    return reply()
reply()
cmd("EHLO customer.test")
ch = cmd("AUTH CRAM-MD5")[4:]
digest = hmac.new(pw.encode(), base64.b64decode(ch), hashlib.md5).hexdigest()
print("auth", cmd(base64.b64encode(("%s %s" % (user, digest)).encode()).decode())[:3])
s.sendall(b"ATRN example.org\r\n")
time.sleep(1)
t0 = time.time()
s.sendall(b"NOOP\r\n")
atrn = reply()
print("atrn", atrn[:3], "after_ms=%d" % ((time.time() - t0) * 1000))
print("noop", reply()[:3])
print("quit", cmd("QUIT")[:3])
PY
)
after=$(sed -n 's/^atrn 453 after_ms=\([0-9]*\)$/\1/p' <<<"$spoke")
if grep -q '^auth 235' <<<"$spoke" && [ -n "$after" ] && [ "$after" -lt 2000 ] &&
    grep -q '^noop 250' <<<"$spoke" && grep -q '^quit 221' <<<"$spoke"; then
    ok "a command during the wait ends it: 453 ${after} ms after NOOP was sent, then NOOP's 250"
else
    fail "a command during the wait ends it" "$(tr '\n' ' ' <<<"$spoke")"
fi

# --- --follow: mail within seconds ----------------------------------------------------
FOLLOW_OUT=$WORK/follow.out
"$BIN/odmr-fetch" --follow -s "$ODMR_HOST:$ODMR_PORT" -u cust1 -p "$WORK/cust1.pw" \
    --tls-ca-file "$TLS_CA_FILE" --connect-timeout 10 --timeout 60 --atrn-timeout 120 \
    -d "smtp:127.0.0.1:$SINK_PORT" example.org example.net >"$FOLLOW_OUT" 2>&1 &
FOLLOW_PID=$!
bg_track "$FOLLOW_PID"

# waiting N: odmr-fetch's Nth session is authenticated (and so waits in ATRN).
waiting() {
    wait_for 15 more_than $(($1 - 1)) auths
}
auths0=$(auths)
delays=
all_fast=1
for i in 1 2 3; do
    if ! waiting $((auths0 + i)); then
        fail "--follow: session $i authenticated" "$(tail -3 "$FOLLOW_OUT")"
        all_fast=0
        break
    fi
    sleep 1 # well inside the ATRN wait
    n0=$(sink_count)
    t0=$(ms)
    smtp_send s@sender.test "f$i@example.org" --header "X-Test-Id: follow-$i" \
        --body "follow test message $i" >/dev/null || true
    if wait_for 20 more_than "$n0" sink_count; then
        d=$(($(ms) - t0))
        delays="$delays ${d}ms"
        [ "$d" -lt 3000 ] || all_fast=0
    else
        delays="$delays (none)"
        all_fast=0
    fi
done
echo "# delay injection (swaks) -> customer's MTA with --follow:$delays"
if [ "$all_fast" = 1 ]; then
    ok "--follow + waiting ATRN: each message at the customer's MTA within 3 s of injection ($delays )"
else
    fail "--follow + waiting ATRN: messages within 3 s" "delays:$delays; $(tail -3 "$FOLLOW_OUT")"
fi
# Woken by the domain's wake-up file (touched by odmr-store), not by
# polling or by any index change.
if [ -f "$QUEUE_DIR/wait/example.org" ] && [ -f "$QUEUE_DIR/wait/example.net" ] &&
    ! grep -Eq 'odmrd.*(inotify|wake-up file)' "$ODMR_LOG_FILE"; then
    ok "the waiters watch their domains' wake-up files (wait/example.org, wait/example.net)"
else
    fail "the waiters watch their domains' wake-up files" "$(ls "$QUEUE_DIR/wait" 2>&1; grep -E 'inotify|wake-up' "$ODMR_LOG_FILE" | head -3)"
fi
if [ "$(grep -c 'messages=1, recipients=1, refused=0, split=0, status=delivered' "$FOLLOW_OUT")" = 3 ]; then
    ok "--follow: three sessions, one message each, status=delivered"
else
    fail "--follow: three sessions delivered" "$(grep 'server=' "$FOLLOW_OUT")"
fi
# Byte for byte: the sink got what swaks sent (the body line, CRLF).
if grep -q 'follow test message 3' "$WORK"/sink/t*.data && ! grep -q $'[^\r]$' <(grep -h 'follow test' "$WORK"/sink/t*.data); then
    ok "--follow: content as sent"
else
    fail "--follow: content as sent" "$(ls "$WORK/sink")"
fi

# --- SIGTERM while waiting: stop at once ------------------------------------------------
waiting $((auths0 + 4)) || true
sleep 1
before=$(odmr_log_count 'ATRN example\.org,example\.net sasl_username=cust1 .*: 453 ')
t0=$(ms)
kill -TERM "$FOLLOW_PID"
rc=0
wait_for 5 sh -c "! kill -0 $FOLLOW_PID 2>/dev/null" || true
wait "$FOLLOW_PID" || rc=$?
bg_untrack "$FOLLOW_PID"
d=$(($(ms) - t0))
if [ "$rc" = 0 ] && [ "$d" -lt 3000 ] && grep -q 'stopped by a signal' "$FOLLOW_OUT"; then
    ok "--follow: SIGTERM while waiting in ATRN: exit 0 after ${d} ms"
else
    fail "--follow: SIGTERM while waiting: exit 0 at once" "exit $rc after ${d} ms: $(tail -2 "$FOLLOW_OUT")"
fi
if wait_for 5 more_than "$before" odmr_log_count 'ATRN example\.org,example\.net sasl_username=cust1 .*: 453 '; then
    ok "odmrd ends that wait too"
else
    fail "odmrd ends that wait too" "$(grep ATRN "$ODMR_LOG_FILE" | tail -2)"
fi
if grep -E 'odmrd.*(fatal|panic):' "$ODMR_LOG_FILE" >/dev/null; then
    fail "odmrd: no fatal or panic" "$(grep -E 'odmrd.*(fatal|panic):' "$ODMR_LOG_FILE" | head -3)"
else
    ok "odmrd: no fatal or panic"
fi

done_testing
