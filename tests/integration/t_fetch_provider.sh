#!/bin/bash
# t_fetch_provider.sh - odmr-fetch against a scripted provider
# (fetch_provider.py), for what the project's odmrd never does: a server
# without STARTTLS (refused by default, allowed with --tls=may), a garbage
# reply to ATRN (exit 7), an ATRN reply slower than --atrn-timeout (exit 5)
# and within it (exit 1), and a provider that sends STARTTLS inside the
# reversed session (odmr-fetch answers 502 itself, never announces it,
# and the local MTA, which offers STARTTLS, never sees it). No Postfix
# needed.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_cmd ss
require_bin odmr-fetch

test_workdir fetch-provider

# provider MODE [ARGS]: start a scripted provider; its port in $PPORT.
NPROV=0
provider() {
    local pf=$WORK/$1.$((NPROV += 1)).port
    /usr/bin/python3 "$LIB_DIR/fetch_provider.py" --port-file "$pf" --mode "$@" \
        >"$WORK/$1.log" 2>&1 &
    bg_track $!
    wait_for 10 test -s "$pf" || { fail "provider $1 starts" "$(cat "$WORK/$1.log")"; done_testing; }
    PPORT=$(cat "$pf")
}

SINK_PORT=$(free_port)
fetch_sink_start "$WORK/sink" --listen "127.0.0.1:$SINK_PORT" --starttls

PW=$WORK/pw
(umask 077 && echo "not-checked-by-the-script" >"$PW")

# fetch NAME PORT ARGS...
fetch() {
    local name=$1 port=$2
    shift 2
    FOUT=$WORK/$name.out
    FRC=0
    timeout 60 "$BIN/odmr-fetch" -s "127.0.0.1:$port" -u cust1 -p "$PW" --timeout 10 \
        -d "smtp:127.0.0.1:$SINK_PORT" "$@" example.org >"$FOUT" 2>&1 || FRC=$?
}
expect() {
    if [ "$FRC" = "$2" ] && grep -Eq -- "odmr-fetch: server=.* status=$3 \\($4" "$FOUT"; then
        ok "$1: exit $2, status=$3"
    else
        fail "$1: exit $2, status=$3 ($4)" "exit $FRC: $(tail -2 "$FOUT")"
    fi
}

provider nostarttls
fetch nostarttls "$PPORT"
expect "no STARTTLS offered (default --tls=verify)" 5 network "the server offers no STARTTLS"
if grep -q 'sasl_method=none' "$FOUT"; then ok "no STARTTLS: no AUTH in clear"; else fail "no STARTTLS: no AUTH in clear" "$(tail -1 "$FOUT")"; fi
fetch encrypt "$PPORT" --tls=encrypt
expect "no STARTTLS offered (--tls=encrypt)" 5 network "the server offers no STARTTLS"
fetch may "$PPORT" --tls=may
expect "no STARTTLS offered, --tls=may" 1 nomail "ATRN: 453"

provider garbage
fetch garbage "$PPORT" --tls=may
expect "garbage reply to ATRN" 7 protocol "malformed reply in state ATRN"

provider slow --delay 3
fetch slowshort "$PPORT" --tls=may --atrn-timeout 1
expect "ATRN reply later than --atrn-timeout 1s" 5 network "timeout in state ATRN"
# (a fresh provider: the first one still sleeps in the session above)
provider slow --delay 3
start=$(date +%s)
fetch slowlong "$PPORT" --tls=may --atrn-timeout 20 --timeout 1
took=$(($(date +%s) - start))
expect "ATRN reply within --atrn-timeout (not bound by --timeout)" 1 nomail "ATRN: 453"
if [ "$took" -ge 3 ]; then ok "waited for the slow ATRN reply (${took}s)"; else fail "waited for the slow ATRN reply" "${took}s"; fi

provider reverse
fetch reverse "$PPORT" --tls=may
expect "reversed session with a STARTTLS from the provider" 0 delivered "session completed"
T=$(ls "$WORK"/reverse.*.port.transcript 2>/dev/null | head -1)
T=${T:-$WORK/none}
if grep -q '^EHLO provider.test -> 250-mx.customer.test' "$T" && ! grep -q 'EHLO.*STARTTLS' "$T" &&
    ! grep -q 'EHLO.*CHUNKING' "$T"; then
    ok "the EHLO reply relayed to the provider lacks STARTTLS and CHUNKING"
else
    fail "the EHLO reply relayed to the provider lacks STARTTLS and CHUNKING" "$(cat "$T")"
fi
if grep -q '^STARTTLS -> 502 5.5.1 ' "$T"; then ok "the provider's STARTTLS: 502 from odmr-fetch"; else fail "the provider's STARTTLS: 502" "$(cat "$T")"; fi
if grep -q '^STARTTLS' "$WORK/sink/commands.log"; then
    fail "STARTTLS never reaches the local MTA" "$(cat "$WORK/sink/commands.log")"
else
    ok "STARTTLS never reaches the local MTA"
fi
if grep -q '^dot -> 250 2.0.0 Ok: queued' "$T" &&
    [ "$(cat "$WORK"/sink/t*.data)" = "$(printf 'Subject: reversed\r\n\r\n..dot\r\nbody\r')" ]; then
    ok "the message after the refused STARTTLS is delivered, dot-stuffing intact"
else
    fail "the message after the refused STARTTLS is delivered" "$(cat "$T")"
fi

done_testing
