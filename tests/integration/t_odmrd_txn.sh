#!/bin/bash
# t_odmrd_txn.sh - transactions of the reversed session that today's
# customers get wrong or that used to lose or stall mail (issue 6):
#   - a reply other than 354 to DATA that is not 4xx/5xx (250 here): every
#     recipient stays queued, logged deferred; the session ends (RSET,
#     QUIT); the next ATRN delivers the mail;
#   - "452 4.5.3 too many recipients" after some recipients: the rest go in
#     further transactions of the same session (with and without
#     PIPELINING; the next message is not mixed up with them);
#   - STARTTLS on the reversed side while the outer session is in clear:
#     only when reversed_tls_policy_maps says so for the customer (user
#     name, then domain); a handshake that never comes is given up after
#     smtp_starttls_timeout and the mail stays queued; outer TLS: no
#     STARTTLS inside it.
# shellcheck disable=SC2154 # ODMR_PASSWORD_cust1 comes from sandbox_start
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix postmap
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
rcpt_status() {
    cat "$QUEUE_DIR"/msg/*/* 2>/dev/null | sed -n "s/^rcpt \([QDFX]\) .* $1\$/\1/p" | head -1
}

has() { grep -q -- "$2" <<<"$1"; }

# accepted ADDR: how many times the customer answered 250 to RCPT TO:<ADDR>
# in the messages it stored in $RECV.
accepted() {
    cat "$RECV"/*.env 2>/dev/null | grep -c "^RCPT TO:<$1>.* -> 250\$" || true
}

# next_atrn_delivers LABEL ADDR...: a plain ATRN then delivers the message
# of each ADDR (one each) once, and none of them stays queued.
next_atrn_delivers() {
    local label=$1 a bad=''
    shift
    customer --domains example.org
    has "$out" "^messages: $#\$" || bad="$bad messages"
    for a in "$@"; do
        [ "$(accepted "$a")" = 1 ] || bad="$bad $a:accepted=$(accepted "$a")"
        [ -z "$(rcpt_status "$a")" ] || bad="$bad $a:queued"
    done
    if [ -z "$bad" ]; then
        ok "$label: the next ATRN delivers both"
    else
        fail "$label: the next ATRN delivers both" "$bad; $out"
    fi
}

# --- DATA answered with 250 --------------------------------------------------
small d250a | enqueue -f s@sender.test -- d250a@example.org >/dev/null
small d250b | enqueue -f s@sender.test -- d250b@example.org >/dev/null
customer --domains example.org --data-reply "250 2.0.0 Ok"
if has "$out" '^atrn: 250 ' && has "$out" '^messages: 0$'; then
    ok "DATA 250: the customer got no content"
else
    fail "DATA 250: the customer got no content" "$out"
fi
if [ "$(rcpt_status d250a@example.org)" = Q ] && [ "$(rcpt_status d250b@example.org)" = Q ]; then
    ok "DATA 250: both messages stay queued"
else
    fail "DATA 250: both messages stay queued" \
        "d250a=$(rcpt_status d250a@example.org) d250b=$(rcpt_status d250b@example.org)"
fi
if odmr_log_wait 5 'to=<d250a@example\.org>, .*dsn=4\.5\.0, status=deferred \(host [^ ]* said: 250 2\.0\.0 Ok \(in reply to DATA command\)\)'; then
    ok "DATA 250: logged deferred with the customer's reply"
else
    fail "DATA 250: logged deferred with the customer's reply" \
        "$(grep 'to=<d250' "$ODMR_LOG_FILE" || true)"
fi
if [ "$(odmr_log_count 'to=<d250[ab]@example\.org>.*status=sent')" = 0 ]; then
    ok "DATA 250: nothing logged status=sent"
else
    fail "DATA 250: nothing logged status=sent" "$(grep 'to=<d250' "$ODMR_LOG_FILE" || true)"
fi
if grep -q '^< RSET' "$SANDBOX_DIR/transcript.$N" && grep -q '^< QUIT' "$SANDBOX_DIR/transcript.$N" &&
    [ "$(grep -c '^< MAIL' "$SANDBOX_DIR/transcript.$N")" = 1 ]; then
    ok "DATA 250: RSET, QUIT, no further transaction in that session"
else
    fail "DATA 250: RSET, QUIT, no further transaction in that session" \
        "$(grep '^< ' "$SANDBOX_DIR/transcript.$N" | tail -8)"
fi
next_atrn_delivers "DATA 250" d250a@example.org d250b@example.org

# --- 452 4.5.3 too many recipients --------------------------------------------
# check_452 LABEL PREFIX [customer options]: one message for 8 recipients,
# then one for 1; the customer takes 3 recipients per transaction.
check_452() {
    local label=$1 p=$2 i missing=0 dup=0
    shift 2
    small "$p" | enqueue -f s@sender.test -- "$p"1@example.org "$p"2@example.org \
        "$p"3@example.org "$p"4@example.org "$p"5@example.org "$p"6@example.org \
        "$p"7@example.org "$p"8@example.org >/dev/null
    small "$p-next" | enqueue -f s@sender.test -- "$p"next@example.org >/dev/null
    customer --domains example.org --rcpt-limit 3 "$@"
    if has "$out" '^atrn: 250 ' && has "$out" '^messages: 4$' &&
        has "$out" '^transactions: 4$' && has "$out" '^quit: yes$'; then
        ok "452 $label: 8 recipients in 3 transactions, then the next message, one ATRN"
    else
        fail "452 $label: 8 recipients in 3 transactions, then the next message, one ATRN" "$out"
    fi
    for i in 1 2 3 4 5 6 7 8 next; do
        case $(accepted "$p$i@example.org") in
            1) ;;
            0) missing=$((missing + 1)) ;;
            *) dup=$((dup + 1)) ;;
        esac
        [ -z "$(rcpt_status "$p$i@example.org")" ] || missing=$((missing + 1))
    done
    if [ "$missing" = 0 ] && [ "$dup" = 0 ]; then
        ok "452 $label: each recipient delivered once, none left in the queue"
    else
        fail "452 $label: each recipient delivered once, none left in the queue" \
            "missing=$missing duplicates=$dup; $(cat "$RECV"/*.env 2>/dev/null)"
    fi
    if [ "$(odmr_log_count "to=<${p}[0-9a-z]*@example\.org>.*status=sent")" = 9 ] &&
        [ "$(odmr_log_count "to=<${p}[0-9a-z]*@example\.org>.*status=deferred")" = 0 ]; then
        ok "452 $label: 9 recipients logged sent, none deferred"
    else
        fail "452 $label: 9 recipients logged sent, none deferred" \
            "$(grep "to=<$p" "$ODMR_LOG_FILE" || true)"
    fi
    # The next message's content went after all three transactions.
    if grep -q "^RCPT TO:<${p}next@example.org>" "$RECV/004.env" 2>/dev/null; then
        ok "452 $label: the next message comes after the retries"
    else
        fail "452 $label: the next message comes after the retries" "$(cat "$RECV"/*.env 2>/dev/null)"
    fi
}
check_452 pipelining tmr
check_452 "no pipelining" tnp --no-pipelining

# A customer that takes nobody in a further transaction: deferred as before.
small t452x | enqueue -f s@sender.test -- xa@example.org xb@example.org >/dev/null
customer --domains example.org --rcpt-limit 1 --rcpt-reply "xb@example.org=452 4.5.3 still too many"
if has "$out" '^messages: 1$' && has "$out" '^transactions: 2$' &&
    [ "$(rcpt_status xb@example.org)" = Q ] && [ "$(rcpt_status xa@example.org)" != Q ] &&
    odmr_log_wait 5 'to=<xb@example\.org>, .*dsn=4\.5\.3, status=deferred \(host [^ ]* said: 452 4\.5\.3 '; then
    ok "452: a transaction that takes nobody ends the retries (deferred)"
else
    fail "452: a transaction that takes nobody ends the retries (deferred)" \
        "$out $(grep 'to=<x[ab]@' "$ODMR_LOG_FILE" || true)"
fi
customer --domains example.org
if has "$out" '^messages: 1$' && [ -z "$(rcpt_status xb@example.org)" ]; then
    ok "452: the leftover goes with the next ATRN"
else
    fail "452: the leftover goes with the next ATRN" "$out"
fi

# --- a customer out of step ----------------------------------------------------
# An extra reply shifts every later one onto the wrong command. Before the
# check, a stray 250 sent with the 354 was read as the answer to the dot:
# a message the customer refused (451) logged status=sent and removed.
# check_stray LABEL PREFIX CONTENT [customer options]: two messages; the
# first gets the stray; both must stay queued (4.5.0), nothing logged
# sent; CONTENT: how many messages the customer may have received whole
# (0: the session ends before content goes to a customer out of step);
# the next ATRN delivers both once.
check_stray() {
    local label=$1 p=$2 content=$3 got
    shift 3
    small "${p}a" | enqueue -f s@sender.test -- "${p}a@example.org" >/dev/null
    small "${p}b" | enqueue -f s@sender.test -- "${p}b@example.org" >/dev/null
    customer --domains example.org "$@"
    got=$(find "$RECV" -name '*.raw' 2>/dev/null | wc -l)
    if [ "$got" = "$content" ]; then
        ok "$label: $content message(s) reached the customer whole"
    else
        fail "$label: $content message(s) reached the customer whole" "$got did; $out"
    fi
    if [ "$(rcpt_status "${p}a@example.org")" = Q ] && [ "$(rcpt_status "${p}b@example.org")" = Q ]; then
        ok "$label: both messages stay queued"
    else
        fail "$label: both messages stay queued" "$out $(grep "to=<$p" "$ODMR_LOG_FILE" || true)"
    fi
    if odmr_log_wait 5 "to=<${p}a@example\.org>, .*dsn=4\.5\.0, status=deferred \(host [^ ]* sent input that answers no command" &&
        [ "$(odmr_log_count "to=<${p}[ab]@example\.org>.*status=(sent|bounced)")" = 0 ]; then
        ok "$label: logged deferred (out of step), nothing logged sent or bounced"
    else
        fail "$label: logged deferred (out of step), nothing logged sent or bounced" \
            "$(grep "to=<$p\|out of step\|answers no command" "$ODMR_LOG_FILE" || true)"
    fi
    next_atrn_delivers "$label" "${p}a@example.org" "${p}b@example.org"
}
check_stray "stray 250 after 354, pipelining" s354p 0 --stray-after-354 1 \
    --dot-reply "1=451 4.3.0 not stored"
check_stray "stray 250 after 354, no pipelining" s354n 0 --stray-after-354 1 \
    --dot-reply "1=451 4.3.0 not stored" --no-pipelining
# A stray 550 with the dot's 250 (without PIPELINING nothing else is owed
# then): once taken as the answer to the next MAIL (the next message
# bounced); now neither reply is trusted (the first message goes again).
check_stray "stray 550 after the dot's reply" sdot 1 --stray-after-dot 1 --no-pipelining

# --- an EHLO reply longer than odmrd keeps -------------------------------------
# 4,080 bytes of extensions before SIZE: the kept text (4,095 bytes) once
# ended inside "SIZE 10485760", read as a limit of 10 bytes or so, and
# every message bounced 5.3.4.
small ehlopad | enqueue -f s@sender.test -- ehlopad@example.org >/dev/null
customer --domains example.org --ehlo-pad 4080 --size 10485760 --no-pipelining
if has "$out" '^messages: 1$' && [ -z "$(rcpt_status ehlopad@example.org)" ] &&
    odmr_log_wait 5 'to=<ehlopad@example\.org>, .*status=sent' &&
    grep -q '^MAIL FROM:<s@sender.test> SIZE=' "$RECV/001.env"; then
    ok "EHLO reply past 4 KB: keywords after the cut kept (SIZE honoured, message sent)"
else
    fail "EHLO reply past 4 KB: keywords after the cut kept (SIZE honoured, message sent)" \
        "$out $(grep 'ehlopad' "$ODMR_LOG_FILE" || true)"
fi

# --- a refused RSET ----------------------------------------------------------------
# DATA 451 leaves the transaction open; the customer refuses RSET, so it
# would answer the next MAIL "503 nested MAIL command": once read as a
# refusal of the next message, which bounced. Now the session ends (QUIT)
# and the next message waits.
small rsa | enqueue -f s@sender.test -- rseta@example.org >/dev/null
small rsb | enqueue -f s@sender.test -- rsetb@example.org >/dev/null
customer --domains example.org --no-pipelining --data-reply "451 4.3.0 DATA later" \
    --rset-reply "500 5.5.2 RSET not understood"
if [ "$(rcpt_status rseta@example.org)" = Q ] && [ "$(rcpt_status rsetb@example.org)" = Q ] &&
    has "$out" '^transactions: 1$' && has "$out" '^quit: yes$' &&
    odmr_log_wait 5 'said: 500 5\.5\.2 RSET not understood \(in reply to RSET command\); ending the session' &&
    [ "$(odmr_log_count 'to=<rset[ab]@example\.org>.*status=(sent|bounced)')" = 0 ]; then
    ok "RSET refused: session ends with QUIT, nothing bounced, both kept"
else
    fail "RSET refused: session ends with QUIT, nothing bounced, both kept" \
        "$out $(grep 'rset\|RSET' "$ODMR_LOG_FILE" || true)"
fi
next_atrn_delivers "RSET refused" rseta@example.org rsetb@example.org

# --- STARTTLS on the reversed side --------------------------------------------
TLS_CERT=$SANDBOX_DIR/tls/server.pem
TLS_KEY=$SANDBOX_DIR/tls/server.key
cp "$CONFIG_DIR/odmr.cf" "$SANDBOX_DIR/odmr.cf.save"

small tls1 | enqueue -f s@sender.test -- tls1@example.org >/dev/null
customer --domains example.org --offer-starttls
if has "$out" '^reversed_starttls: no$' && has "$out" '^messages: 1$' &&
    [ -z "$(rcpt_status tls1@example.org)" ]; then
    ok "outer session in clear, no policy entry: no STARTTLS, mail delivered"
else
    fail "outer session in clear, no policy entry: no STARTTLS, mail delivered" "$out"
fi

printf 'cust1 may\n' >"$CONFIG_DIR/reversed_tls"
postmap -c "$CONFIG_DIR" "hash:$CONFIG_DIR/reversed_tls"
echo "reversed_tls_policy_maps = hash:$CONFIG_DIR/reversed_tls" >>"$CONFIG_DIR/odmr.cf"
small tls2 | enqueue -f s@sender.test -- tls2@example.org >/dev/null
customer --domains example.org --offer-starttls --tls-cert "$TLS_CERT" --tls-key "$TLS_KEY"
if has "$out" '^reversed_starttls: yes$' && has "$out" '^reversed_tls: TLSv1\.[23]$' &&
    has "$out" '^messages: 1$' && [ -z "$(rcpt_status tls2@example.org)" ] &&
    odmr_log_wait 5 'reversed session TLS established'; then
    ok "policy 'cust1 may': STARTTLS on the reversed side, mail delivered over TLS"
else
    fail "policy 'cust1 may': STARTTLS on the reversed side, mail delivered over TLS" "$out"
fi

# Keyed by domain; a relay that answers 220 and then passes no handshake.
printf 'example.org may\n' >"$CONFIG_DIR/reversed_tls"
postmap -c "$CONFIG_DIR" "hash:$CONFIG_DIR/reversed_tls"
echo "smtp_starttls_timeout = 3s" >>"$CONFIG_DIR/odmr.cf"
small tls3 | enqueue -f s@sender.test -- tls3@example.org >/dev/null
t0=$(date +%s)
customer --domains example.org --offer-starttls
t1=$(date +%s)
if has "$out" '^reversed_starttls: yes$' && [ $((t1 - t0)) -lt 15 ] &&
    [ "$(rcpt_status tls3@example.org)" = Q ]; then
    ok "policy 'example.org may', handshake never comes: given up in $((t1 - t0)) s, mail kept"
else
    fail "policy 'example.org may', handshake never comes: given up quickly, mail kept" \
        "$((t1 - t0)) s; $out"
fi
if odmr_log_wait 5 'STARTTLS handshake .*timed out after 3s.*reversed_tls_policy_maps'; then
    ok "the stalled handshake is logged with its deadline and the parameter to change"
else
    fail "the stalled handshake is logged with its deadline and the parameter to change" \
        "$(tail -5 "$ODMR_LOG_FILE")"
fi

# The outer session is TLS: no STARTTLS inside it, whatever the map says.
customer --domains example.org --offer-starttls --starttls --cafile "$TLS_CA_FILE" \
    --tls-servername sandbox.odmr.test
if has "$out" '^tls: TLSv1' && has "$out" '^reversed_starttls: no$' && has "$out" '^messages: 1$' &&
    [ -z "$(rcpt_status tls3@example.org)" ]; then
    ok "outer session TLS: no STARTTLS on the reversed side, mail delivered"
else
    fail "outer session TLS: no STARTTLS on the reversed side, mail delivered" "$out"
fi

# A map that cannot be read is a temporary error, not "no entry".
echo "reversed_tls_policy_maps = hash:$SANDBOX_DIR/no-such-map" >>"$CONFIG_DIR/odmr.cf"
small tls4 | enqueue -f s@sender.test -- tls4@example.org >/dev/null
customer --domains example.org --offer-starttls
if ! has "$out" '^messages: 1$' && [ "$(rcpt_status tls4@example.org)" = Q ] &&
    odmr_log_wait 5 'reversed_tls_policy_maps lookup of cust1: .*no mail this session'; then
    ok "unreadable reversed_tls_policy_maps: nothing sent, mail kept"
else
    fail "unreadable reversed_tls_policy_maps: nothing sent, mail kept" "$out"
fi
cp "$SANDBOX_DIR/odmr.cf.save" "$CONFIG_DIR/odmr.cf"

if [ "$(odmr_log_count 'fatal|panic')" = 0 ]; then
    ok "no fatal or panic"
else
    fail "no fatal or panic" "$(grep -E 'fatal|panic' "$ODMR_LOG_FILE")"
fi

done_testing
