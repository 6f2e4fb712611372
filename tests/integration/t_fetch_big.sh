#!/bin/bash
# t_fetch_big.sh - a 100 MiB message, byte for byte, through odmrd ->
# odmr-fetch -> the customer's MTA, and odmr-fetch's peak memory meanwhile.
#
# The message (big_message.py: every byte value but NUL/CR/LF, lines that
# start with dots, a line that is just ".", lines up to 998 bytes, about
# BIG_MIB MiB, default 100) goes in with odmr-enqueue; the customer's MTA
# (fetch_sink.py) must receive exactly its SMTP wire form (CRLF,
# dot-stuffed): same length, same SHA-256. odmr-fetch runs under
# /usr/bin/time; its maximum resident set size must stay at or below
# FETCH_RSS_MAX_KB (default 8192: 8 MiB) and is printed.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix openssl ss swaks postmap /usr/bin/time sha256sum
require_bin odmrd odmr-store odmr-queue odmr-fetch odmr-enqueue

BIG_MIB=${BIG_MIB:-100}
FETCH_RSS_MAX_KB=${FETCH_RSS_MAX_KB:-8192}

sandbox_start

test_workdir big-test

SINK_PORT=$(free_port)
fetch_sink_start "$WORK/sink" --listen "127.0.0.1:$SINK_PORT"
(umask 077 && echo "$ODMR_PASSWORD_cust1" >"$WORK/cust1.pw")

echo "message_size_limit = 0" >>"$CONFIG_DIR/odmr.cf"
read -r want_sum want_len < <(/usr/bin/python3 "$LIB_DIR/big_message.py" "$WORK/big.msg" $((BIG_MIB * 1048576)))
rc=0
"$BIN/odmr-enqueue" -c "$CONFIG_DIR" -f big@sender.test -- big@example.org <"$WORK/big.msg" \
    >"$WORK/enq.out" 2>&1 || rc=$?
if [ "$rc" = 0 ]; then
    ok "a ${BIG_MIB} MiB message enqueued ($want_len bytes in wire form)"
else
    fail "a ${BIG_MIB} MiB message enqueued" "exit $rc: $(cat "$WORK/enq.out")"
    done_testing
fi

FOUT=$WORK/fetch.out
FRC=0
t0=$(date +%s%N)
/usr/bin/time -f 'maxrss_kb=%M elapsed=%e' -o "$WORK/time.out" \
    "$BIN/odmr-fetch" -s "$ODMR_HOST:$ODMR_PORT" -u cust1 -p "$WORK/cust1.pw" \
    --tls-ca-file "$TLS_CA_FILE" -d "smtp:127.0.0.1:$SINK_PORT" example.org >"$FOUT" 2>&1 || FRC=$?
ms=$((($(date +%s%N) - t0) / 1000000))
if [ "$FRC" = 0 ] && grep -q 'messages=1, recipients=1, refused=0, split=0, status=delivered' "$FOUT"; then
    ok "odmr-fetch delivered the ${BIG_MIB} MiB message (${ms} ms, TLS)"
else
    fail "odmr-fetch delivered the ${BIG_MIB} MiB message" "exit $FRC: $(tail -2 "$FOUT")"
fi
data=$(find "$WORK/sink" -name 't*.data' | head -n 1)
if [ -n "$data" ]; then
    got_len=$(stat -c %s "$data")
    got_sum=$(sha256sum "$data" | cut -d' ' -f1)
else
    got_len=0
    got_sum=none
fi
if [ "$got_len" = "$want_len" ] && [ "$got_sum" = "$want_sum" ]; then
    ok "byte for byte: $got_len bytes, SHA-256 ${got_sum:0:16}... as sent (8-bit, dot-stuffing)"
else
    fail "byte for byte" "got $got_len bytes $got_sum, want $want_len bytes $want_sum"
fi
rss=$(sed -n 's/.*maxrss_kb=\([0-9]*\).*/\1/p' "$WORK/time.out")
echo "# odmr-fetch relaying ${BIG_MIB} MiB: $(cat "$WORK/time.out")"
if [ -n "$rss" ] && [ "$rss" -le "$FETCH_RSS_MAX_KB" ]; then
    ok "odmr-fetch peak RSS ${rss} KiB <= ${FETCH_RSS_MAX_KB} KiB"
else
    fail "odmr-fetch peak RSS <= ${FETCH_RSS_MAX_KB} KiB" "$(cat "$WORK/time.out")"
fi
if "$BIN/odmr-queue" -c "$CONFIG_DIR" list 2>&1 | grep -q 'big@example.org (queued)'; then
    fail "the provider removed the delivered message" "$("$BIN/odmr-queue" -c "$CONFIG_DIR" list 2>&1 | head -5)"
else
    ok "the provider removed the delivered message"
fi

# A kept sandbox (KEEP_SANDBOX=1) need not keep 200 MiB of test data.
rm -f "$WORK/big.msg" "$WORK"/sink/*.data
done_testing
