#!/bin/bash
# t_fetch_valgrind.sh - odmr-fetch under valgrind (memcheck) against the
# sandbox's odmrd: a delivery over TLS into an SMTP sink, one into an LMTP
# sink (a recipient put off and sent again), a wrong password, a local MTA
# that is down, and a server certificate that does not verify. No invalid
# access, no use of uninitialised memory, no definite leak, and the exit
# codes of the outcomes.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix valgrind ss
require_bin odmrd odmr-store odmr-enqueue odmr-fetch

sandbox_start

test_workdir fetch-valgrind

SINK_PORT=$(free_port)
fetch_sink_start "$WORK/smtp" --listen "127.0.0.1:$SINK_PORT" --starttls
fetch_sink_start "$WORK/lmtp" --unix "$WORK/lmtp.sock" --lmtp

PW=$WORK/pw
(umask 077 && echo "$ODMR_PASSWORD_cust1" >"$PW")
BADPW=$WORK/badpw
(umask 077 && echo "wrong" >"$BADPW")

enqueue() {
    printf 'Subject: %s\n\n.dot line\nbody\n' "$1" |
        "$BIN/odmr-enqueue" -c "$CONFIG_DIR" -f s@sender.test -- "${@:2}" >/dev/null
}

# vg NAME EXPECTED_EXIT ARGS...: one odmr-fetch run under valgrind.
vg() {
    local name=$1 want=$2 rc=0 log
    shift 2
    log=$WORK/vg.$name
    timeout 300 valgrind -q --leak-check=full --errors-for-leak-kinds=definite \
        --error-exitcode=99 --log-file="$log" \
        "$BIN/odmr-fetch" -s "$ODMR_HOST:$ODMR_PORT" -u cust1 --tls-ca-file "$TLS_CA_FILE" \
        --timeout 60 "$@" >"$WORK/$name.out" 2>&1 || rc=$?
    if [ "$rc" = "$want" ] && [ ! -s "$log" ]; then
        ok "valgrind $name: exit $want, no report"
    else
        fail "valgrind $name: exit $want, no report" "exit $rc: $(tail -2 "$WORK/$name.out"; head -30 "$log")"
    fi
}

enqueue v1 a@example.org b@example.net
vg smtp 0 -p "$PW" -d "smtp:127.0.0.1:$SINK_PORT" example.org example.net
if [ -s "$WORK/smtp/t001.data" ]; then ok "valgrind smtp: delivered"; else fail "valgrind smtp: delivered" "no transaction"; fi

enqueue v2 c@example.org d@example.org
vg lmtp 0 -p "$PW" -d "lmtp:unix:$WORK/lmtp.sock"
# odmr-fetch puts the second recipient off with 452 (one recipient per
# LMTP transaction); odmrd sends it in a second transaction of the same
# session (RFC 5321 4.5.3.1.10), so one session delivers both.
if grep -q 'recipients=2, .*status=delivered' "$WORK/lmtp.out"; then ok "valgrind lmtp: both recipients, one put off and sent again"; else fail "valgrind lmtp: both recipients, one put off and sent again" "$(cat "$WORK/lmtp.out")"; fi

vg badpw 2 -p "$BADPW" example.org

enqueue v3 e@example.org
DOWN=$(free_port)
vg down 6 -p "$PW" -d "smtp:127.0.0.1:$DOWN" example.org

FOUT=$WORK/vg.sysca
rc=0
timeout 300 valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
    --log-file="$FOUT" "$BIN/odmr-fetch" -s "$ODMR_HOST:$ODMR_PORT" -u cust1 -p "$PW" \
    example.org >"$WORK/sysca.out" 2>&1 || rc=$?
if [ "$rc" = 5 ] && [ ! -s "$FOUT" ]; then ok "valgrind unverified certificate: exit 5, no report"; else fail "valgrind unverified certificate" "exit $rc: $(head -30 "$FOUT")"; fi

done_testing
