#!/bin/bash
# t_odmrd_flush.sh - odmrd's reversed session through the sandbox: what the
# scripted customer receives (byte for byte), ESMTP parameters, per-recipient
# results (2xx removes, 4xx and drops keep, 5xx fails for good), HELO
# fallback, SIZE, PIPELINING or not, 421, early greeting, limits, deadlines,
# TLS kept after the turn-around, and the per-recipient log lines.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix swaks cmp
require_bin odmrd odmr-enqueue odmr-store

sandbox_start

CUSTOMER=$LIB_DIR/odmr_customer.py
PW1=$ODMR_PASSWORD_cust1
N=0

# customer ARGS...: scripted customer as cust1; saves into $RECV (fresh each
# call), its result lines go to $out.
customer() {
    N=$((N + 1))
    RECV=$SANDBOX_DIR/recv.$N
    out=$(/usr/bin/python3 "$CUSTOMER" --host "$ODMR_HOST" --port "$ODMR_PORT" --timeout 30 \
        --user cust1 --password "$PW1" --save-dir "$RECV" \
        --transcript "$SANDBOX_DIR/transcript.$N" "$@" 2>&1) || true
}

# enqueue [odmr-enqueue options] -- RCPT... < message
enqueue() {
    "$BIN/odmr-enqueue" -c "$CONFIG_DIR" "$@"
}

small() {
    printf 'Subject: %s\n\nbody of %s\n' "$1" "$1"
}

# rcpt_status ADDR: the status byte of ADDR's recipient line in the queue
# files ("" when no file holds it any more).
# Failed and delivered read F and D whether or not the notice they owe was
# sent already ('B', 'S': odmrd sends notices after the session).
rcpt_status() {
    cat "$QUEUE_DIR"/msg/*/* 2>/dev/null | sed -n "s/^rcpt \([QDFXBS]\) .* $1\$/\1/p" |
        head -1 | tr BS FD
}

has() { grep -q -- "$2" <<<"$1"; }

# --- content byte for byte, ESMTP parameters ---------------------------------
orig=$SANDBOX_DIR/orig.txt
{
    printf 'Subject: bytes\nX-Test: yes\n\n'
    printf '.leading dot\n..two dots\n.\n'
    printf 'eight bit: \303\244\303\266\303\274\n'
    printf 'crlf line\r\n'
    head -c 1500 /dev/zero | tr '\0' 'L'
    printf '\nlast line without newline'
} >"$orig"
enqueue -f sender@sender.test -B 8BITMIME -V 'ENV+2Bid' -R HDRS -N SUCCESS,FAILURE \
    -- bytes@example.org <"$orig" >/dev/null
customer --domains example.org --size 1000000
if has "$out" '^atrn: 250 ' && has "$out" '^messages: 1$' && has "$out" '^quit: yes$'; then
    ok "ATRN 250, one message, QUIT"
else
    fail "ATRN 250, one message, QUIT" "$out"
fi
# What an MTA stores: the original with CRLF line ends (and the last line
# ended), dot-stuffing removed.
/usr/bin/python3 -c '
import sys
d = open(sys.argv[1], "rb").read().replace(b"\r\n", b"\n")
if not d.endswith(b"\n"): d += b"\n"
sys.stdout.buffer.write(d.replace(b"\n", b"\r\n"))' "$orig" >"$SANDBOX_DIR/orig.crlf"
if cmp -s "$SANDBOX_DIR/orig.crlf" "$RECV/001.msg"; then
    ok "content arrives byte for byte"
else
    fail "content arrives byte for byte" "$(cmp "$SANDBOX_DIR/orig.crlf" "$RECV/001.msg" 2>&1)"
fi
if grep -q '^\.\.leading dot' "$RECV/001.raw" && grep -q '^\.\.\.two dots' "$RECV/001.raw" &&
    grep -qx $'\.\.\r' "$RECV/001.raw"; then
    ok "dot-stuffing on the wire"
else
    fail "dot-stuffing on the wire" "$(head -c 300 "$RECV/001.raw")"
fi
env1=$(cat "$RECV/001.env" 2>/dev/null || true)
if has "$env1" '^MAIL FROM:<sender@sender.test> SIZE=[0-9]* BODY=8BITMIME RET=HDRS ENVID=ENV+2Bid$'; then
    ok "MAIL FROM with SIZE, BODY, RET, ENVID"
else
    fail "MAIL FROM with SIZE, BODY, RET, ENVID" "$env1"
fi
if has "$env1" '^RCPT TO:<bytes@example.org> NOTIFY=SUCCESS,FAILURE -> 250$'; then
    ok "RCPT TO with NOTIFY"
else
    fail "RCPT TO with NOTIFY" "$env1"
fi
if odmr_log_wait 5 '[0-9A-F]{18}: to=<bytes@example.org>, relay=[^ ]*\[127\.0\.0\.1\]:[0-9]+, delay=[0-9.]+, delays=[0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+, dsn=2\.0\.0, status=sent \(250 2\.0\.0 Ok: queued as M1\)'; then
    ok "per-recipient log line (sent)"
else
    fail "per-recipient log line (sent)" "$(grep 'to=<bytes@' "$ODMR_LOG_FILE" || true)"
fi
if [ -z "$(rcpt_status bytes@example.org)" ]; then ok "delivered message leaves the queue"; else fail "delivered message leaves the queue" "still there"; fi

# Without DSN, 8BITMIME: no parameters the customer did not offer.
small plain | enqueue -f s@sender.test -B 8BITMIME -V E1 -R FULL -N NEVER -- plain@example.org >/dev/null
customer --domains example.org --no-dsn --no-8bitmime
env1=$(cat "$RECV/001.env" 2>/dev/null || true)
if has "$env1" '^MAIL FROM:<s@sender.test>$' && has "$env1" '^RCPT TO:<plain@example.org> -> 250$'; then
    ok "no BODY/RET/ENVID/NOTIFY when not offered"
else
    fail "no BODY/RET/ENVID/NOTIFY when not offered" "$env1"
fi

# Through Postfix's lmtp: ORCPT arrives and is passed on.
swaks --server "$SMTP_HOST:$SMTP_PORT" --from a@sender.test --to orcpt@example.org \
    --timeout 30 >/dev/null 2>&1 || true
odmr_log_wait 30 'odmr-store.*to=<orcpt@example.org>, status=held' || true
customer --domains example.org
env1=$(cat "$RECV/001.env" 2>/dev/null || true)
if has "$env1" '^RCPT TO:<orcpt@example.org> ORCPT=rfc822;orcpt@example.org -> 250$'; then
    ok "ORCPT from lmtp passed on"
else
    fail "ORCPT from lmtp passed on" "$env1 / $out"
fi

# --- only the requested domains ------------------------------------------------
small split | enqueue -f s@sender.test -- s1@example.org s2@example.net s3@example.org >/dev/null
customer --domains example.org
env1=$(cat "$RECV/001.env" 2>/dev/null || true)
if has "$env1" 's1@example.org' && has "$env1" 's3@example.org' && ! has "$env1" 's2@example.net'; then
    ok "only recipients of the requested domain"
else
    fail "only recipients of the requested domain" "$env1"
fi
if [ "$(rcpt_status s2@example.net)" = Q ]; then ok "other domain's recipient stays queued"; else fail "other domain's recipient stays queued" "$(rcpt_status s2@example.net)"; fi
customer
env1=$(cat "$RECV/001.env" 2>/dev/null || true)
if has "$out" '^messages: 1$' && has "$env1" '^RCPT TO:<s2@example.net>' && ! has "$env1" 's1@'; then
    ok "ATRN without domains collects the rest"
else
    fail "ATRN without domains collects the rest" "$out / $env1"
fi
if [ -z "$(rcpt_status s2@example.net)" ]; then ok "file removed when all are final"; else fail "file removed when all are final" "still there"; fi

# One message for two requested domains: one transaction with both
# recipients (as smtp(8) sends one per destination), then gone.
small both | enqueue -f s@sender.test -- b1@example.org b2@example.net >/dev/null
customer --domains example.org,example.net --size 100000
env1=$(cat "$RECV/001.env" 2>/dev/null || true)
if has "$out" '^messages: 1$' && has "$out" '^quit: yes$' && has "$env1" 'b1@example.org' &&
    has "$env1" 'b2@example.net' && [ -z "$(rcpt_status b1@example.org)$(rcpt_status b2@example.net)" ] &&
    ! "$BIN/odmr-queue" -c "$CONFIG_DIR" summary | grep -q 'example\.net'; then
    ok "message for two requested domains: one transaction"
else
    fail "message for two requested domains: one transaction" "$out / $env1"
fi

# The same with one domain's recipient deferred: the other is done, the
# deferred one is not retried within the session and stays indexed.
small both2 | enqueue -f s@sender.test -- c1@example.org c2@example.net >/dev/null
customer --domains example.org,example.net --rcpt-reply 'c2@example.net=450 4.2.0 later'
if has "$out" '^messages: 1$' && [ "$(rcpt_status c1@example.org)$(rcpt_status c2@example.net)" = DQ ] &&
    [ "$(odmr_log_count 'to=<c2@example\.net>, relay=')" = 1 ] &&
    "$BIN/odmr-queue" -c "$CONFIG_DIR" list example.net | grep -q 'c2@example.net' &&
    ! "$BIN/odmr-queue" -c "$CONFIG_DIR" list example.org | grep -q 'c1@example.org'; then
    ok "two domains, one deferred: tried once, stays indexed for its domain only"
else
    fail "two domains, one deferred" "$out / $(grep 'to=<c[12]@' "$ODMR_LOG_FILE" || true)"
fi
customer --domains example.net
if has "$out" '^messages: 1$' && [ -z "$(rcpt_status c2@example.net)" ]; then
    ok "the deferred recipient goes with the next ATRN"
else
    fail "the deferred recipient goes with the next ATRN" "$out"
fi

# --- per-recipient results -------------------------------------------------------
small results | enqueue -f s@sender.test -- r1@example.org r2@example.org r3@example.org >/dev/null
customer --domains example.org --rcpt-reply 'r2@example.org=450 4.2.1 busy' \
    --rcpt-reply 'r3@example.org=550 5.1.1 no such user'
if odmr_log_grep 'to=<r1@example.org>, .*dsn=2\.0\.0, status=sent \(250 ' &&
    odmr_log_grep 'to=<r2@example.org>, .*dsn=4\.2\.1, status=deferred \(host [^ ]* said: 450 4\.2\.1 busy \(in reply to RCPT TO command\)\)' &&
    odmr_log_grep 'to=<r3@example.org>, .*dsn=5\.1\.1, status=bounced \(host [^ ]* said: 550 5\.1\.1 no such user \(in reply to RCPT TO command\)\)'; then
    ok "RCPT 250/450/550 logged sent/deferred/bounced"
else
    fail "RCPT 250/450/550 logged sent/deferred/bounced" "$(grep 'to=<r[123]@' "$ODMR_LOG_FILE" || true)"
fi
st="$(rcpt_status r1@example.org)$(rcpt_status r2@example.org)$(rcpt_status r3@example.org)"
if [ "$st" = DQF ]; then ok "queue marks D, Q, F"; else fail "queue marks D, Q, F" "got '$st'"; fi
customer --domains example.org
env1=$(cat "$RECV/001.env" 2>/dev/null || true)
if has "$out" '^messages: 1$' && has "$env1" 'r2@example.org' && ! has "$env1" 'r1@' && ! has "$env1" 'r3@'; then
    ok "next ATRN sends only the deferred recipient"
else
    fail "next ATRN sends only the deferred recipient" "$env1"
fi

# Replies to the final dot: 451 keeps, 554 fails.
small dot1 | enqueue -f s@sender.test -- dot1@example.org >/dev/null
small dot2 | enqueue -f s@sender.test -- dot2@example.org >/dev/null
customer --domains example.org --dot-reply '1=451 4.3.0 later' --dot-reply '2=554 5.6.0 rejected'
if odmr_log_grep 'to=<dot1@example.org>, .*status=deferred .*451 4\.3\.0 later \(in reply to end of DATA command\)' &&
    odmr_log_grep 'to=<dot2@example.org>, .*status=bounced .*554 5\.6\.0 rejected \(in reply to end of DATA command\)'; then
    ok "dot 451 deferred, dot 554 bounced"
else
    fail "dot 451 deferred, dot 554 bounced" "$(grep 'to=<dot[12]@' "$ODMR_LOG_FILE" || true)"
fi
customer --domains example.org
if has "$out" '^messages: 1$' && grep -q 'dot1@' "$RECV/001.env"; then ok "deferred message sent again, failed one not"; else fail "deferred message sent again, failed one not" "$out"; fi

# MAIL refused: 4xx keeps everything.
small mailref | enqueue -f s@sender.test -- m1@example.org >/dev/null
customer --domains example.org --mail-reply '452 4.3.1 full'
if [ "$(rcpt_status m1@example.org)" = Q ] && odmr_log_grep 'to=<m1@example.org>.*status=deferred.*in reply to MAIL FROM command'; then
    ok "MAIL 452 keeps the message"
else
    fail "MAIL 452 keeps the message" "$(rcpt_status m1@example.org)"
fi
customer --domains example.org --data-reply '554 5.7.1 no thanks'
# Failed recipients keep their file (unindexed) until their notice is sent
# (after the session); then the file goes.
m1=$(rcpt_status m1@example.org)
if { [ "$m1" = F ] || [ -z "$m1" ]; } && odmr_log_grep 'to=<m1@example.org>.*status=bounced.*in reply to DATA command'; then
    ok "DATA 554 fails the message"
else
    fail "DATA 554 fails the message" "$(rcpt_status m1@example.org)"
fi

# --- connection problems -------------------------------------------------------
for i in 1 2; do small drop$i | enqueue -f s@sender.test -- drop$i@example.org >/dev/null; done
customer --domains example.org --drop-mid-data 1
sleep 1
if [ "$(rcpt_status drop1@example.org)$(rcpt_status drop2@example.org)" = QQ ] &&
    odmr_log_grep 'to=<drop1@example.org>, .*dsn=4\.4\.2, status=deferred \(lost connection with'; then
    ok "drop in DATA: everything stays queued, logged deferred"
else
    fail "drop in DATA: everything stays queued, logged deferred" "$(grep 'drop1@' "$ODMR_LOG_FILE" || true)"
fi
customer --domains example.org --ehlo-reply '421 4.3.2 closing'
if has "$out" '^messages: 0$' && [ "$(rcpt_status drop1@example.org)" = Q ]; then
    ok "421 to EHLO: nothing sent, nothing lost"
else
    fail "421 to EHLO: nothing sent, nothing lost" "$out"
fi
customer --domains example.org --dot-reply '1=421 4.3.2 going down'
if has "$out" '^messages: 1$' && [ "$(rcpt_status drop1@example.org)$(rcpt_status drop2@example.org)" = QQ ]; then
    ok "421 after the dot: stop, keep the rest"
else
    fail "421 after the dot: stop, keep the rest" "$out"
fi

# HELO fallback, no PIPELINING, greeting in the same packet as ATRN.
customer --domains example.org --ehlo-reply 500 --early-220
if has "$out" '^messages: 2$' && grep -q '^< HELO odmr.test' "$SANDBOX_DIR/transcript.$N" &&
    grep -qx 'MAIL FROM:<s@sender.test>' "$RECV/001.env"; then
    ok "EHLO 500: HELO and plain MAIL; early 220 kept"
else
    fail "EHLO 500: HELO and plain MAIL; early 220 kept" "$out"
fi

small lock1 | enqueue -f s@sender.test -- l1@example.org l2@example.org >/dev/null
customer --domains example.org --no-pipelining --rcpt-reply 'l1@example.org=550 5.1.1 no'
if has "$out" '^messages: 1$' && grep -q 'l2@example.org> -> 250' "$RECV/001.env"; then
    ok "without PIPELINING (lock-step)"
else
    fail "without PIPELINING (lock-step)" "$out"
fi

# SIZE: too big for the customer is bounced (552 5.3.4), not sent.
head -c 5000 /dev/zero | tr '\0' 'x' | enqueue -f s@sender.test -- big@example.org >/dev/null
customer --domains example.org --size 1000
if has "$out" '^messages: 0$' &&
    odmr_log_grep 'to=<big@example.org>, .*dsn=5\.3\.4, status=bounced \(message size [0-9]+ exceeds size limit 1000'; then
    ok "SIZE refusal: bounced 5.3.4, not sent"
else
    fail "SIZE refusal: bounced 5.3.4, not sent" "$out"
fi

# Oldest first; flush_message_limit.
for i in 1 2 3; do small order$i | enqueue -f s@sender.test -- order$i@example.org >/dev/null; done
echo "flush_message_limit = 2" >>"$CONFIG_DIR/odmr.cf"
customer --domains example.org
sed -i '/^flush_message_limit/d' "$CONFIG_DIR/odmr.cf"
if has "$out" '^messages: 2$' && grep -q order1@ "$RECV/001.env" && grep -q order2@ "$RECV/002.env" &&
    [ "$(rcpt_status order3@example.org)" = Q ]; then
    ok "oldest first, flush_message_limit"
else
    fail "oldest first, flush_message_limit" "$out"
fi

# TLS negotiated before AUTH stays on after the turn-around.
customer --domains example.org --starttls --cafile "$TLS_CA_FILE"
if has "$out" '^tls: TLSv1' && has "$out" '^messages: 1$' && has "$out" '^quit: yes$'; then
    ok "reversed session over TLS"
else
    fail "reversed session over TLS" "$out"
fi

# Deadlines: a customer that never answers is dropped after smtp_helo_timeout.
small silent | enqueue -f s@sender.test -- silent@example.org >/dev/null
echo "smtp_helo_timeout = 2s" >>"$CONFIG_DIR/odmr.cf"
start=$(date +%s)
customer --domains example.org --silent
took=$(($(date +%s) - start))
sed -i '/^smtp_helo_timeout/d' "$CONFIG_DIR/odmr.cf"
if [ "$took" -le 8 ] && odmr_log_grep 'timed out while performing the EHLO handshake' &&
    [ "$(rcpt_status silent@example.org)" = Q ]; then
    ok "smtp_helo_timeout on the reversed side"
else
    fail "smtp_helo_timeout on the reversed side" "took ${took}s"
fi
echo "command_timeout = 2s" >>"$CONFIG_DIR/odmr.cf"
start=$(date +%s)
out=$(/usr/bin/python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
d = b""
while True:
    x = s.recv(4096)
    if not x: break
    d += x
print(d.decode().strip())' "$ODMR_PORT" 2>&1 || true)
took=$(($(date +%s) - start))
sed -i '/^command_timeout/d' "$CONFIG_DIR/odmr.cf"
if [ "$took" -le 8 ] && odmr_log_grep 'timeout after CONNECT from'; then
    ok "command_timeout on the server side"
else
    fail "command_timeout on the server side" "took ${took}s: $out"
fi

if odmr_log_grep 'odmrd.*(fatal|panic):'; then
    fail "no fatal or panic" "$(grep -E 'odmrd.*(fatal|panic):' "$ODMR_LOG_FILE" | head -3)"
else
    ok "no fatal or panic"
fi

done_testing
