#!/bin/bash
# t_fetch.sh - odmr-fetch, the customer's ODMR client, against the sandbox's
# odmrd, with fetch_sink.py as the customer's local MTA (SMTP on a loopback
# port, LMTP on a UNIX socket).
#
# Mail goes in through the sandbox's Postfix (8-bit, dot lines, ~250 KB, the
# null sender, a message shared with cust2, one for cust2 only). Checked:
# delivery byte for byte (the wire form the sink read equals odmr-queue
# show's held copy), over SMTP with a verified TLS session (test CA,
# SCRAM-SHA-256) and over LMTP (bare ATRN, CRAM-MD5, one recipient per
# transaction); the STARTTLS and CHUNKING that the local MTA offers never
# reach the provider and STARTTLS never reaches the local MTA; the exit
# code and the log line of each outcome: delivered (0), no mail (1),
# wrong password (2), domain refused (3), no STARTTLS / unverified
# certificate / wrong fingerprint (5), local MTA refusing or down (6: the
# provider keeps the mail, odmr-queue list shows it), unsafe password file
# (77); the password appears in no output and no log.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix openssl ss swaks postmap
require_bin odmrd odmr-store odmr-queue odmr-fetch

sandbox_start

test_workdir fetch-test

SMTP_SINK_PORT=$(free_port)
fetch_sink_start "$WORK/smtp" --listen "127.0.0.1:$SMTP_SINK_PORT" --starttls
fetch_sink_start "$WORK/lmtp" --unix "$WORK/lmtp.sock" --lmtp
REFUSE_PORT=$(free_port)
while [ "$REFUSE_PORT" = "$SMTP_SINK_PORT" ]; do REFUSE_PORT=$(free_port); done
fetch_sink_start "$WORK/refuse" --listen "127.0.0.1:$REFUSE_PORT" \
    --rcpt-reply 'tmp@=450 4.2.0 mailbox busy, try later' \
    --rcpt-reply 'bad@=550 5.1.1 no such user'

PWFILE=$WORK/cust1.pw
(umask 077 && echo "$ODMR_PASSWORD_cust1" >"$PWFILE")

# fetch NAME ARGS...: run odmr-fetch as cust1 against the sandbox; output in
# $WORK/NAME.out, exit status in $FRC.
fetch() {
    local name=$1
    shift
    FOUT=$WORK/$name.out
    FRC=0
    timeout 120 "$BIN/odmr-fetch" -s "$ODMR_HOST:$ODMR_PORT" -u cust1 -p "$PWFILE" \
        --tls-ca-file "$TLS_CA_FILE" --connect-timeout 10 --timeout 60 "$@" >"$FOUT" 2>&1 || FRC=$?
}
out_has() { grep -Eq -- "$1" "$FOUT"; }
# expect NAME CODE STATUS: exit code and the one log line of the outcome.
expect() {
    local n
    n=$(grep -c 'odmr-fetch: server=' "$FOUT" || true)
    if [ "$FRC" = "$2" ] && out_has "odmr-fetch: server=.* status=$3 " && [ "$n" -ge 1 ]; then
        ok "$1: exit $2, status=$3"
    else
        fail "$1: exit $2, status=$3" "exit $FRC: $(tail -3 "$FOUT")"
    fi
}
queue_list() { "$BIN/odmr-queue" -c "$CONFIG_DIR" list 2>&1; }
sessions() { odmr_log_count 'odmrd\[[0-9]+\]: disconnect from'; }
wait_sessions() { wait_for 10 test "$(sessions)" -ge "$1"; }

# --- mail in ------------------------------------------------------------------
py_checks inject fetch_check.py inject "$WORK" a
if wait_queue_empty 60; then ok "Postfix handed everything to odmr-store"; else fail "Postfix queue empty" "$(postqueue -c "$CONFIG_DIR" -p | tail -3)"; fi
py_checks held fetch_check.py held "$WORK"

# --- SMTP, TLS verified with the test CA, SCRAM-SHA-256 ---------------------------
fetch smtp -d "smtp:127.0.0.1:$SMTP_SINK_PORT" example.org example.net
expect "SMTP delivery" 0 delivered
if out_has 'TLS connection established to .*TLSv1\.[23]' && out_has 'tls=yes, sasl_method=SCRAM-SHA-256, messages=3, recipients=4, refused=0'; then
    ok "SMTP delivery: TLS, SCRAM-SHA-256, 3 messages, 4 recipients"
else
    fail "SMTP delivery: TLS, SCRAM-SHA-256, 3 messages, 4 recipients" "$(tail -2 "$FOUT")"
fi
py_checks "smtp" fetch_check.py received "$WORK" "$WORK/smtp" a
if grep -q 'ATRN example\.org,example\.net sasl_username=cust1.*: 250 ' "$ODMR_LOG_FILE"; then
    ok "odmrd: ATRN example.org,example.net 250"
else
    fail "odmrd: ATRN example.org,example.net 250" "$(grep ATRN "$ODMR_LOG_FILE" || true)"
fi
if grep -qi '^STARTTLS' "$WORK/smtp/commands.log"; then
    fail "the provider's STARTTLS never reaches the local MTA" "$(cat "$WORK/smtp/commands.log")"
else
    ok "the provider's STARTTLS never reaches the local MTA"
fi
summary=$("$BIN/odmr-queue" -c "$CONFIG_DIR" summary 2>&1 || true)
if grep -q '^example\.com ' <<<"$summary" && ! grep -Eq '^example\.(org|net) ' <<<"$summary"; then
    ok "only example.com (cust2) still holds mail"
else
    fail "only example.com (cust2) still holds mail" "$summary"
fi

# --- nothing left: 453 -----------------------------------------------------------
fetch nomail -d "smtp:127.0.0.1:$SMTP_SINK_PORT" example.org
expect "no mail" 1 nomail
if out_has 'status=nomail \(ATRN: 453 '; then ok "no mail: the 453 in the log line"; else fail "no mail: the 453 in the log line" "$(tail -1 "$FOUT")"; fi

# --- a domain that is not cust1's: 450 ------------------------------------------
fetch refused example.org example.com
expect "domain refused" 3 refused
if queue_list | grep -q 'henry@example.com (queued)'; then ok "refused: cust2's mail untouched"; else fail "refused: cust2's mail untouched" "$(queue_list)"; fi

# --- wrong password ---------------------------------------------------------------
BADPW=$WORK/bad.pw
(umask 077 && echo "wrong-$ODMR_PASSWORD_cust1" >"$BADPW")
fetch badpw -p "$BADPW" example.org
expect "wrong password" 2 authfailed
if out_has 'status=authfailed \(AUTH SCRAM-SHA-256: 535 '; then ok "wrong password: 535 in the log line"; else fail "wrong password: 535 in the log line" "$(tail -1 "$FOUT")"; fi

# --- unsafe password files ---------------------------------------------------------
before=$(sessions)
cp "$PWFILE" "$WORK/group.pw"
chmod 0640 "$WORK/group.pw"
fetch mode0640 -p "$WORK/group.pw" example.org
if [ "$FRC" = 77 ] && out_has 'refused: .*mode 0640'; then ok "password file mode 0640: refused, exit 77"; else fail "password file mode 0640: refused, exit 77" "exit $FRC: $(cat "$FOUT")"; fi
cp "$PWFILE" "$WORK/other.pw"
chown nobody "$WORK/other.pw"
fetch owner -p "$WORK/other.pw" example.org
if [ "$FRC" = 77 ] && out_has 'refused: .*it is uid [0-9]+'; then ok "password file of another user: refused, exit 77"; else fail "password file of another user: refused, exit 77" "exit $FRC: $(cat "$FOUT")"; fi
ln -s "$PWFILE" "$WORK/link.pw"
fetch symlink -p "$WORK/link.pw" example.org
if [ "$FRC" = 77 ]; then ok "password file as a symlink: refused, exit 77"; else fail "password file as a symlink: refused" "exit $FRC: $(cat "$FOUT")"; fi
sleep 1
if [ "$(sessions)" = "$before" ]; then ok "unsafe password file: no connection made"; else fail "unsafe password file: no connection made" "$before -> $(sessions) sessions"; fi

# --- LMTP on a UNIX socket, bare ATRN, CRAM-MD5 ------------------------------------
py_checks inject fetch_check.py inject "$WORK" b
wait_queue_empty 60 || true
py_checks held fetch_check.py held "$WORK"
fetch lmtp --sasl-mechanisms CRAM-MD5 -d "lmtp:unix:$WORK/lmtp.sock"
expect "LMTP delivery, bare ATRN" 0 delivered
if out_has 'atrn=\(all\), tls=yes, sasl_method=CRAM-MD5' && grep -q 'odmrd.*: ATRN (all domains) sasl_username=cust1 domains=example\.net,example\.org: 250 ' "$ODMR_LOG_FILE"; then
    ok "bare ATRN with CRAM-MD5 (odmrd logs an ATRN without domains)"
else
    fail "bare ATRN with CRAM-MD5" "$(grep 'ATRN' "$ODMR_LOG_FILE" | tail -2)"
fi
# m1 has two of cust1's recipients: one per LMTP transaction, the second
# put off with 452 and collected by a second session at once.
if out_has 'split=1, status=delivered' && [ "$(grep -c 'odmr-fetch: server=' "$FOUT")" = 2 ]; then
    ok "LMTP: one recipient per transaction, a second session for the one put off"
else
    fail "LMTP: one recipient per transaction" "$(grep 'server=' "$FOUT")"
fi
py_checks "lmtp" fetch_check.py received "$WORK" "$WORK/lmtp" b
if grep -q '^LHLO ' "$WORK/lmtp/commands.log" && ! grep -q '^EHLO ' "$WORK/lmtp/commands.log"; then
    ok "LMTP: the provider's EHLO goes out as LHLO"
else
    fail "LMTP: the provider's EHLO goes out as LHLO" "$(head -3 "$WORK/lmtp/commands.log")"
fi
if queue_list | grep -Eq '@example\.(org|net) \(queued\)'; then
    fail "LMTP: nothing of cust1's left queued" "$(queue_list)"
else
    ok "LMTP: nothing of cust1's left queued"
fi

# --- the local MTA refuses: 450 keeps, 550 fails ------------------------------------
smtp_send s@sender.test "tmp@example.org,bad@example.org,good@example.org" \
    --header "X-Test-Id: c-m1" >/dev/null || true
wait_queue_empty 60 || true
fetch refuse -d "smtp:127.0.0.1:$REFUSE_PORT" example.org
expect "local MTA refuses recipients" 6 local
if out_has 'messages=1, recipients=1, refused=2'; then ok "local refusals counted: messages=1 recipients=1 refused=2"; else fail "local refusals counted" "$(tail -1 "$FOUT")"; fi
ql=$(queue_list)
if grep -q 'tmp@example.org (queued)' <<<"$ql" && grep -q 'bad@example.org (failed' <<<"$ql" &&
    grep -q 'good@example.org (delivered)' <<<"$ql"; then
    ok "the provider keeps the 450 recipient, fails the 550 one, delivered the 250 one"
else
    fail "the provider keeps the 450 recipient" "$ql"
fi

# --- the local MTA is down ------------------------------------------------------------
DOWN_PORT=$(free_port)
fetch down -d "smtp:127.0.0.1:$DOWN_PORT" example.org
expect "local MTA down" 6 local
if out_has 'status=local \(local MTA: connect to'; then ok "local MTA down: the reason in the log line"; else fail "local MTA down: reason" "$(tail -1 "$FOUT")"; fi
if queue_list | grep -q 'tmp@example.org (queued)'; then ok "local MTA down: the mail stays held"; else fail "local MTA down: the mail stays held" "$(queue_list)"; fi

# --- TLS: system CAs do not know the test CA; fingerprints -----------------------------
FOUT=$WORK/sysca.out
FRC=0
timeout 60 "$BIN/odmr-fetch" -s "$ODMR_HOST:$ODMR_PORT" -u cust1 -p "$PWFILE" example.org >"$FOUT" 2>&1 || FRC=$?
expect "TLS against the system CAs (test CA unknown)" 5 network
if out_has 'certificate verify failed' && out_has 'sasl_method=none'; then ok "unverified certificate: no AUTH sent"; else fail "unverified certificate: no AUTH sent" "$(tail -1 "$FOUT")"; fi

FP=$(openssl x509 -in "$SANDBOX_DIR/tls/server.pem" -noout -fingerprint -sha256 | cut -d= -f2)
FOUT=$WORK/fp.out
FRC=0
timeout 60 "$BIN/odmr-fetch" -s "$ODMR_HOST:$ODMR_PORT" -u cust1 -p "$PWFILE" \
    --tls-fingerprint "$FP" -d "smtp:127.0.0.1:$SMTP_SINK_PORT" example.net >"$FOUT" 2>&1 || FRC=$?
expect "fingerprint pinned (right)" 1 nomail
WRONG=$(sed 's/^\(..\)/00/' <<<"$FP")
[ "$WRONG" != "$FP" ] || WRONG=$(sed 's/^\(..\)/11/' <<<"$FP")
FOUT=$WORK/fpwrong.out
FRC=0
timeout 60 "$BIN/odmr-fetch" -s "$ODMR_HOST:$ODMR_PORT" -u cust1 -p "$PWFILE" \
    --tls-fingerprint "$WRONG" example.net >"$FOUT" 2>&1 || FRC=$?
expect "fingerprint pinned (wrong)" 5 network
if out_has 'fingerprint does not match' && out_has 'sasl_method=none'; then ok "wrong fingerprint: no AUTH sent"; else fail "wrong fingerprint: no AUTH sent" "$(tail -1 "$FOUT")"; fi

# --- a server without STARTTLS --------------------------------------------------------
sed -i 's/^tls_security_level = .*/tls_security_level = none/' "$CONFIG_DIR/odmr.cf"
before=$(odmr_log_count 'sasl_username=cust1')
fetch nostarttls example.org
expect "no STARTTLS offered, TLS required (default)" 5 network
if out_has 'offers no STARTTLS' && [ "$(odmr_log_count 'sasl_username=cust1')" = "$before" ]; then
    ok "no STARTTLS: fails closed before AUTH"
else
    fail "no STARTTLS: fails closed before AUTH" "$(tail -1 "$FOUT")"
fi
fetch plainclear --tls=may --sasl-mechanisms PLAIN example.org
expect "PLAIN outside TLS" 2 authfailed
if out_has 'PLAIN and LOGIN need TLS'; then ok "PLAIN is not sent in clear"; else fail "PLAIN is not sent in clear" "$(tail -1 "$FOUT")"; fi
fetch may --tls=may -d "smtp:127.0.0.1:$SMTP_SINK_PORT" example.net
expect "--tls=may without STARTTLS" 1 nomail
sed -i 's/^tls_security_level = .*/tls_security_level = may/' "$CONFIG_DIR/odmr.cf"

# --- SASL EXTERNAL with a client certificate signed by the test CA -----------------
TLSD=$SANDBOX_DIR/tls
openssl req -newkey rsa:2048 -nodes -subj /CN=cust1 -keyout "$TLSD/c1.key" -out "$TLSD/c1.csr" 2>/dev/null
openssl x509 -req -in "$TLSD/c1.csr" -CA "$TLSD/ca.pem" -CAkey "$TLSD/ca.key" -CAcreateserial \
    -days 2 -out "$TLSD/c1.pem" 2>/dev/null
echo "$(openssl x509 -in "$TLSD/c1.pem" -noout -fingerprint -sha256 | cut -d= -f2) cust1" \
    >"$CONFIG_DIR/odmr_certs"
postmap -c "$CONFIG_DIR" "hash:$CONFIG_DIR/odmr_certs"
printf 'tls_CAfile = %s\ntls_cert_user_maps = hash:%s\n' "$TLSD/ca.pem" "$CONFIG_DIR/odmr_certs" \
    >>"$CONFIG_DIR/odmr.cf"
smtp_send s@sender.test ext@example.net --header "X-Test-Id: e-m1" >/dev/null || true
wait_queue_empty 60 || true
FOUT=$WORK/external.out
FRC=0
timeout 60 "$BIN/odmr-fetch" -s "$ODMR_HOST:$ODMR_PORT" --tls-ca-file "$TLS_CA_FILE" \
    --tls-cert "$TLSD/c1.pem" --tls-key "$TLSD/c1.key" \
    -d "smtp:127.0.0.1:$SMTP_SINK_PORT" example.net >"$FOUT" 2>&1 || FRC=$?
expect "SASL EXTERNAL with a client certificate (no password)" 0 delivered
if out_has 'sasl_method=EXTERNAL, messages=1' && odmr_log_grep 'sasl_method=EXTERNAL, sasl_username=cust1'; then
    ok "EXTERNAL: odmrd mapped the certificate to cust1"
else
    fail "EXTERNAL: odmrd mapped the certificate to cust1" "$(tail -1 "$FOUT")"
fi

# --- the password is never shown ---------------------------------------------------------
leak=$(grep -lF -- "$ODMR_PASSWORD_cust1" "$WORK"/*.out "$ODMR_LOG_FILE" "$LOG_FILE" 2>/dev/null || true)
if [ -z "$leak" ]; then ok "the password is in no output and no log"; else fail "the password is in no output and no log" "$leak"; fi
if odmr_log_grep '(fatal|panic):' && grep -E 'odmrd.*(fatal|panic):' "$ODMR_LOG_FILE" >/dev/null; then
    fail "odmrd: no fatal or panic" "$(grep -E 'odmrd.*(fatal|panic):' "$ODMR_LOG_FILE" | head -3)"
else
    ok "odmrd: no fatal or panic"
fi

done_testing
