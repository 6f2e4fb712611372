#!/bin/bash
# t_odmrd_server.sh - odmrd's server side through the sandbox (spawn(8) on
# the ODMR port): greeting, EHLO, AUTH replies and limits, STARTTLS, ATRN
# replies (530, 501, 450, 453, 451), 502 for everything else, and the log.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix swaks
require_bin odmrd odmr-enqueue odmr-store

sandbox_start

CUSTOMER=$LIB_DIR/odmr_customer.py
PW1=$ODMR_PASSWORD_cust1

# customer ARGS...: the scripted customer as cust1 (override with --user).
customer() {
    /usr/bin/python3 "$CUSTOMER" --host "$ODMR_HOST" --port "$ODMR_PORT" --timeout 30 \
        --user cust1 --password "$PW1" "$@" 2>&1 || true
}

# raw LINE...: send lines (with \r\n added) one by one, print every reply.
raw() {
    /usr/bin/python3 - "$ODMR_HOST" "$ODMR_PORT" "$@" <<'EOF'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
f = s.makefile("rb")
def reply():
    while True:
        l = f.readline()
        if not l:
            print("<EOF>"); return False
        print(l.decode("latin-1").rstrip("\r\n"))
        if len(l) < 4 or l[3:4] != b"-":
            return True
try:
    reply()
    for line in sys.argv[3:]:
        s.sendall(line.encode("latin-1") + b"\r\n")
        if not reply():
            break
except OSError as e:
    print("<ERROR %s>" % e)
EOF
}

# enqueue RCPT...: a small message into the hold queue (odmr-enqueue).
enqueue() {
    printf 'Subject: server test\n\nhello\n' |
        "$BIN/odmr-enqueue" -c "$CONFIG_DIR" -f sender@sender.test -- "$@"
}

# --- greeting and EHLO -----------------------------------------------------
out=$(raw "EHLO client.test" "QUIT")
if grep -q '^220 odmr.test ' <<<"$out"; then ok "greeting 220"; else fail "greeting 220" "$out"; fi
if grep -q '^250-AUTH .*CRAM-MD5' <<<"$out" && grep -q '^250-ATRN$' <<<"$out" &&
    grep -q '^250.STARTTLS$' <<<"$out" && grep -q '^250 ENHANCEDSTATUSCODES$' <<<"$out"; then
    ok "EHLO lists AUTH CRAM-MD5, ATRN, STARTTLS, ENHANCEDSTATUSCODES"
else
    fail "EHLO lists AUTH CRAM-MD5, ATRN, STARTTLS, ENHANCEDSTATUSCODES" "$out"
fi
if grep -q '^250-AUTH .*\(PLAIN\|LOGIN\)' <<<"$out"; then
    fail "no PLAIN/LOGIN before TLS" "$out"
else
    ok "no PLAIN/LOGIN before TLS"
fi
if grep -q '^221 ' <<<"$out"; then ok "QUIT 221"; else fail "QUIT 221" "$out"; fi
out=$(raw "HELO client.test" "QUIT")
if grep -q '^250 odmr.test$' <<<"$out"; then ok "HELO 250"; else fail "HELO 250" "$out"; fi

# --- commands that are not ODMR's --------------------------------------------
out=$(raw "EHLO client.test" "MAIL FROM:<a@sender.test>" "RCPT TO:<b@example.org>" "DATA" \
    "VRFY x" "TURN" "ETRN example.org" "ATRN example.org" "NOOP" "RSET" "QUIT")
n502=$(grep -c '^502 5.5.1 ' <<<"$out" || true)
if [ "$n502" = 6 ]; then ok "MAIL/RCPT/DATA/VRFY/TURN/ETRN get 502"; else fail "MAIL/RCPT/DATA/VRFY/TURN/ETRN get 502" "$out"; fi
if grep -q '^530 5.7.0 ' <<<"$out"; then ok "ATRN before AUTH 530"; else fail "ATRN before AUTH 530" "$out"; fi
if [ "$(grep -c '^250 2.0.0 Ok' <<<"$out")" = 2 ]; then ok "NOOP and RSET 250"; else fail "NOOP and RSET 250" "$out"; fi

# --- AUTH ------------------------------------------------------------------
out=$(raw "AUTH CRAM-MD5" "QUIT")
if grep -q '^503 5.5.1 ' <<<"$out"; then ok "AUTH before EHLO 503"; else fail "AUTH before EHLO 503" "$out"; fi
out=$(raw "EHLO c" "AUTH FOO-BAR" "AUTH PLAIN AGN1c3QxAHg=" "AUTH CRAM-MD5" "*" "QUIT")
if grep -q '^504 5.5.4 ' <<<"$out"; then ok "unknown mechanism 504"; else fail "unknown mechanism 504" "$out"; fi
if grep -q '^538 5.7.11 ' <<<"$out"; then ok "PLAIN without TLS 538"; else fail "PLAIN without TLS 538" "$out"; fi
if grep -q '^334 ' <<<"$out" && grep -q '^501 5.7.0 ' <<<"$out"; then ok "AUTH cancelled with * 501"; else fail "AUTH cancelled with * 501" "$out"; fi

out=$(customer --password wrong-password --domains example.org)
if grep -q '^auth: 535 5.7.8 ' <<<"$out"; then ok "wrong password 535"; else fail "wrong password 535" "$out"; fi
if odmr_log_wait 5 'warning: .*SASL CRAM-MD5 authentication failed: .*sasl_username=cust1'; then
    ok "failed AUTH logged with the user"
else
    fail "failed AUTH logged with the user" "no warning line"
fi

# auth_failure_limit (3): the third failure ends the session with 421.
start=$(date +%s)
out=$(raw "EHLO c" "AUTH CRAM-MD5" "Zm9vIGJhcg==" "AUTH CRAM-MD5" "Zm9vIGJhcg==" \
    "AUTH CRAM-MD5" "Zm9vIGJhcg==" "NOOP")
took=$(($(date +%s) - start))
if grep -q '^421 4.7.0 .*too many failed authentications' <<<"$out" && ! grep -q '^250 2.0.0 Ok' <<<"$out"; then
    ok "third failed AUTH: 421 and close"
else
    fail "third failed AUTH: 421 and close" "$out"
fi
# auth_failure_delay = 1s after each failure
if [ "$took" -ge 2 ]; then ok "pause after failed AUTH"; else fail "pause after failed AUTH" "3 failures took ${took}s"; fi

out=$(customer --domains example.org --before-atrn "AUTH CRAM-MD5" --before-atrn "EHLO again" --domains example.net)
if grep -q '^auth: 235 2.7.0 ' <<<"$out"; then ok "CRAM-MD5 235"; else fail "CRAM-MD5 235" "$out"; fi
if [ "$(grep -c '^cmd: .* -> 503 ' <<<"$out")" = 2 ]; then ok "AUTH/EHLO after AUTH 503"; else fail "AUTH/EHLO after AUTH 503" "$out"; fi
if odmr_log_grep 'sasl_method=CRAM-MD5, sasl_username=cust1'; then ok "sasl_method/sasl_username logged"; else fail "sasl_method/sasl_username logged" "no line"; fi

# --- STARTTLS ----------------------------------------------------------------
out=$(customer --starttls --cafile "$TLS_CA_FILE" --mech PLAIN --domains example.net)
if grep -q '^tls: TLSv1\.[23]' <<<"$out" && grep -q '^auth: 235 ' <<<"$out"; then
    ok "STARTTLS then PLAIN 235"
else
    fail "STARTTLS then PLAIN 235" "$out"
fi
if grep -q '^ehlo: .*AUTH' <<<"$out" && ! grep -q '^ehlo: .*STARTTLS.*AUTH.*\n.*STARTTLS' <<<"$out"; then
    ok "EHLO after STARTTLS"
else
    fail "EHLO after STARTTLS" "$out"
fi
out=$(customer --starttls --mech LOGIN --domains example.net)
if grep -q '^auth: 235 ' <<<"$out"; then ok "LOGIN under TLS 235"; else fail "LOGIN under TLS 235" "$out"; fi
out=$(raw "EHLO c" "STARTTLS x" "QUIT")
if grep -q '^501 5.5.4 ' <<<"$out"; then ok "STARTTLS with argument 501"; else fail "STARTTLS with argument 501" "$out"; fi

# --- ATRN replies ------------------------------------------------------------
out=$(customer --domains 'example.org,,example.net')
if grep -q '^atrn: 501 5.5.4 ' <<<"$out"; then ok "malformed ATRN 501"; else fail "malformed ATRN 501" "$out"; fi
out=$(customer --domains 'example.org example.net')
if grep -q '^atrn: 501 ' <<<"$out"; then ok "ATRN with blanks 501"; else fail "ATRN with blanks 501" "$out"; fi

enqueue someone@example.com >/dev/null
out=$(customer --domains example.org,example.com)
if grep -q '^atrn: 450 4.7.1 ' <<<"$out" && ! grep -q '^reversed' <<<"$out"; then
    ok "ATRN with a domain of another user: 450, nothing sent"
else
    fail "ATRN with a domain of another user: 450, nothing sent" "$out"
fi
out=$(customer --domains unknown-domain.test)
if grep -q '^atrn: 450 ' <<<"$out"; then ok "ATRN for an unknown domain 450"; else fail "ATRN for an unknown domain 450" "$out"; fi
if odmr_log_grep 'ATRN example.org,example.com sasl_username=cust1.*: 450 4.7.1 ATRN request refused'; then
    ok "ATRN request and answer logged"
else
    fail "ATRN request and answer logged" "no log line"
fi

out=$(customer --domains EXAMPLE.NET)
if grep -q '^atrn: 453 ' <<<"$out"; then ok "ATRN without mail 453"; else fail "ATRN without mail 453" "$out"; fi
out=$(customer)
if grep -q '^atrn: 453 ' <<<"$out"; then ok "ATRN (all domains) without mail 453"; else fail "ATRN (all domains) without mail 453" "$out"; fi

# cust2's mail is there; cust2 gets it, case-insensitively.
out=$(customer --user cust2 --password "$ODMR_PASSWORD_cust2" --domains Example.COM)
if grep -q '^atrn: 250 ' <<<"$out" && grep -q '^messages: 1$' <<<"$out" && grep -q '^quit: yes' <<<"$out"; then
    ok "ATRN Example.COM as cust2: 250, one message, QUIT"
else
    fail "ATRN Example.COM as cust2: 250, one message, QUIT" "$out"
fi

# a_new_atrn_250 N: more than N lines of cust1's ATRN example.org with 250.
ATRN250='ATRN example.org sasl_username=cust1 domains=example.org: 250 '
a_new_atrn_250() { [ "$(odmr_log_count "$ATRN250")" -gt "$1" ]; }

# A domain being flushed by another session for longer than the lock wait
# (5 s): 451.
n250=$(odmr_log_count "$ATRN250")
enqueue busy@example.org >/dev/null
customer --domains example.org --greeting-delay 9 >"$SANDBOX_DIR/slow.out" &
slow=$!
if wait_for 10 a_new_atrn_250 "$n250"; then
    out=$(customer --domains example.org)
    if grep -q '^atrn: 451 4.3.0 ' <<<"$out"; then ok "domain busy 451"; else fail "domain busy 451" "$out"; fi
else
    fail "domain busy 451" "first session did not start"
fi
wait "$slow" || true
if grep -q '^messages: 1$' "$SANDBOX_DIR/slow.out"; then ok "first session delivered"; else fail "first session delivered" "$(cat "$SANDBOX_DIR/slow.out")"; fi

# A session that ends within the lock wait: the next ATRN waits for its
# lock instead of answering 451 (here: no mail left, 453).
n250=$(odmr_log_count "$ATRN250")
enqueue short@example.org >/dev/null
customer --domains example.org --greeting-delay 2 >"$SANDBOX_DIR/short.out" &
slow=$!
if wait_for 10 a_new_atrn_250 "$n250"; then
    out=$(customer --domains example.org)
    if grep -q '^atrn: 453 ' <<<"$out"; then
        ok "a lock held for 2 s: the next ATRN waits for it (453, not 451)"
    else
        fail "a lock held for 2 s: the next ATRN waits for it (453, not 451)" "$out"
    fi
else
    fail "a lock held for 2 s: the next ATRN waits for it" "first session did not start"
fi
wait "$slow" || true

# A map that cannot be read: 451, never "not found".
cp "$CONFIG_DIR/odmr.cf" "$SANDBOX_DIR/odmr.cf.save"
echo "domain_maps = hash:$SANDBOX_DIR/does-not-exist" >>"$CONFIG_DIR/odmr.cf"
out=$(customer --domains example.org)
cp "$SANDBOX_DIR/odmr.cf.save" "$CONFIG_DIR/odmr.cf"
if grep -q '^atrn: 451 ' <<<"$out"; then ok "domain_maps failure 451"; else fail "domain_maps failure 451" "$out"; fi

# --- limits -------------------------------------------------------------------
long=$(head -c 3000 /dev/zero | tr '\0' x)
out=$(raw "EHLO $long" "NOOP" "QUIT")
if grep -q '^500 5.5.2 ' <<<"$out" && grep -q '^250 2.0.0 Ok' <<<"$out"; then
    ok "over-long line 500, session goes on"
else
    fail "over-long line 500, session goes on" "$out"
fi
args=()
for _ in $(seq 1 25); do args+=("FOO"); done
out=$(raw "${args[@]}")
if grep -q '^421 4.7.0 .*too many errors' <<<"$out"; then ok "error_limit 421"; else fail "error_limit 421" "$(tail -3 <<<"$out")"; fi

# --- the log -----------------------------------------------------------------
if odmr_log_grep 'postfix/odmrd\[[0-9]+\]: connect from [^ ]*\[127\.0\.0\.1\]' &&
    odmr_log_grep 'postfix/odmrd\[[0-9]+\]: disconnect from [^ ]*\[127\.0\.0\.1\] ehlo=1 auth=1 atrn=1 .*commands=' ; then
    ok "connect/disconnect lines"
else
    fail "connect/disconnect lines" "missing"
fi
if grep -qF -- "$PW1" "$ODMR_LOG_FILE" || grep -qF -- "$ODMR_PASSWORD_cust2" "$ODMR_LOG_FILE" ||
    grep -qF -- "$PW1" "$LOG_FILE"; then
    fail "no password in the logs" "found one"
else
    ok "no password in the logs"
fi
if odmr_log_grep 'odmrd.*(fatal|panic):'; then
    fail "no fatal or panic" "$(grep -E 'odmrd.*(fatal|panic):' "$ODMR_LOG_FILE" | head -3)"
else
    ok "no fatal or panic"
fi

done_testing
