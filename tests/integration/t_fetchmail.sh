#!/bin/bash
# t_fetchmail.sh - a real ODMR client: fetchmail (proto odmr) collects cust1's
# held mail from the sandbox's odmrd and relays it into smtp-sink, standing in
# for the customer's MTA.
#
# Messages go in through the sandbox's Postfix (python smtplib, swaks,
# smtp-source): 8-bit content with BODY=8BITMIME, one message for four
# recipients of which one is cust2's, lines starting with '.', a null sender,
# ~250 KB, and one message for cust2 only. Once Postfix's queue is empty
# they are all held; one fetchmail run as cust1 (CRAM-MD5, ATRN
# example.org,example.net) must deliver exactly cust1's recipients, each
# message identical to the held copy and to what was sent (below Postfix's
# Received header), and leave cust2's mail held. A second run finds nothing
# (453), a wrong password collects nothing.
#
# fetchmail runs as user nobody (as root it warns "Running as root is
# discouraged"), with its own rc file (0600), FETCHMAILHOME and pid file, so
# it neither reads nor writes root's ~/.fetchmailrc, ~/.fetchids or
# /var/run/fetchmail.pid.
#
# shellcheck disable=SC2154,SC2317 # ODMR_PASSWORD_cust1 comes from sandbox_start; functions called indirectly
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix swaks fetchmail smtp-sink smtp-source setpriv
require_bin odmrd odmr-store odmr-queue

sandbox_start

SINK_PID=
_fm_cleanup() {
    if [ -n "$SINK_PID" ]; then
        kill "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true
        SINK_PID=
    fi
}
# lib.sh's exit handler reads $? first: hand it the file's exit status.
# (set +e: a failing "(exit 1)" would end the trap under errexit.)
_fm_exit() {
    local rc=$?
    set +e
    _fm_cleanup
    (exit "$rc")
    _t_on_exit
}
trap _fm_exit EXIT

FM_USER=nobody
FM_GROUP=$(id -gn "$FM_USER")
WORK=$SANDBOX_DIR/fetchmail-test
FMHOME=$SANDBOX_DIR/fetchmail-home
SINK_DIR=$SANDBOX_DIR/sink
mkdir -p "$WORK" "$FMHOME" "$SINK_DIR"
chown "$FM_USER:$FM_GROUP" "$FMHOME"
chmod 0700 "$FMHOME"
# smtp-sink drops privileges to -u USER before it writes the dumps.
chown odmr: "$SINK_DIR"

# --- the customer's MTA ---------------------------------------------------------
SINK_PORT=$(free_port)
smtp-sink -u odmr -h mx.customer.test -d "$SINK_DIR/%Y%m%d%H%M%S." \
    "127.0.0.1:$SINK_PORT" 100 >"$SANDBOX_DIR/smtp-sink.out" 2>&1 &
SINK_PID=$!
sink_up() { [ -n "$(ss -Hltn "sport = :$SINK_PORT" 2>/dev/null)" ]; }
if wait_for 10 sink_up; then
    ok "smtp-sink listens on 127.0.0.1:$SINK_PORT"
else
    fail "smtp-sink listens on 127.0.0.1:$SINK_PORT" "$(cat "$SANDBOX_DIR/smtp-sink.out")"
    done_testing
fi

# --- mail in --------------------------------------------------------------------
py_checks inject fetchmail_check.py inject "$WORK"
if wait_queue_empty 60; then
    ok "Postfix's queue is empty (everything handed to odmr-store)"
else
    fail "Postfix's queue is empty (everything handed to odmr-store)" \
        "$(postqueue -c "$CONFIG_DIR" -p 2>&1 | tail -5)"
fi
py_checks held fetchmail_check.py held "$WORK"

# --- fetchmail ----------------------------------------------------------------------
# fetchmail_rc PASSWORD: write the rc file (fetchmail insists on 0600 and on
# the file belonging to the user that runs it).
fetchmail_rc() {
    local rc=$FMHOME/fetchmailrc
    (
        umask 077
        cat >"$rc" <<EOF
set no syslog
poll $ODMR_HOST port $ODMR_PORT proto odmr
    user "cust1" password "$1"
    fetchdomains example.org,example.net
    smtphost 127.0.0.1/$SINK_PORT
EOF
    )
    chown "$FM_USER:$FM_GROUP" "$rc"
}

# run_fetchmail NAME: one fetchmail run as $FM_USER; output in $FMOUT, exit
# status in $FMRC.
run_fetchmail() {
    FMOUT=$SANDBOX_DIR/fetchmail.$1.out
    FMRC=0
    setpriv --reuid "$FM_USER" --regid "$FM_GROUP" --clear-groups \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$FMHOME" FETCHMAILHOME="$FMHOME" \
        timeout 120 fetchmail -f "$FMHOME/fetchmailrc" --pidfile "$FMHOME/fetchmail.pid" \
        --nodetach --nosyslog -v >"$FMOUT" 2>&1 || FMRC=$?
}

fm_has() { grep -Eq -- "$1" "$FMOUT"; }

fetchmail_rc "$ODMR_PASSWORD_cust1"
run_fetchmail first
if [ "$FMRC" = 0 ] && fm_has 'normal termination, status 0'; then
    ok "fetchmail exits 0"
else
    fail "fetchmail exits 0" "exit $FMRC: $(tail -5 "$FMOUT")"
fi
if fm_has '^fetchmail: ODMR> AUTH CRAM-MD5$' && fm_has '^fetchmail: SMTP< 235 '; then
    ok "fetchmail authenticates with CRAM-MD5"
else
    fail "fetchmail authenticates with CRAM-MD5" "$(grep -E 'AUTH|235|535' "$FMOUT" || true)"
fi
if fm_has '^fetchmail: ODMR> ATRN example\.org,example\.net$' &&
    fm_has '^fetchmail: ODMR< 250 .*reversing'; then
    ok "ATRN example.org,example.net: 250, turned around"
else
    fail "ATRN example.org,example.net: 250, turned around" "$(grep -E 'ATRN|ODMR<' "$FMOUT" | head -5 || true)"
fi
# (fetchmail -v prints the relayed lines with their CR)
if fm_has '^fetchmail: ODMR> 221 ' && fm_has '^fetchmail: ODMR< QUIT'; then
    ok "reversed session ends with QUIT / 221"
else
    fail "reversed session ends with QUIT / 221" "$(tail -8 "$FMOUT")"
fi
if grep -q 'WARNING: Running as root' "$FMOUT"; then
    fail "fetchmail ran unprivileged" "it warned about root"
else
    ok "fetchmail ran unprivileged (as $FM_USER)"
fi

# The sink writes its dump files as the transactions end; the reversed
# session has ended (221) by now, but give it a moment.
expected_files=5 # m1, m2 (one transaction for example.org and example.net), m3, m4, m6
dumps() { [ "$(find "$SINK_DIR" -type f | wc -l)" -ge "$expected_files" ]; }
wait_for 10 dumps || true
n=$(find "$SINK_DIR" -type f | wc -l)
if [ "$n" = "$expected_files" ]; then
    ok "smtp-sink got $expected_files transactions"
else
    fail "smtp-sink got $expected_files transactions" "got $n"
fi
py_checks received fetchmail_check.py received "$WORK" "$SINK_DIR"
py_checks after fetchmail_check.py after "$WORK"

# --- the queue and the log ---------------------------------------------------------
summary=$("$BIN/odmr-queue" -c "$CONFIG_DIR" summary 2>&1 || true)
if grep -q '^example\.com ' <<<"$summary" && ! grep -Eq '^example\.(org|net) ' <<<"$summary"; then
    ok "odmr-queue summary: only example.com holds mail"
else
    fail "odmr-queue summary: only example.com holds mail" "$summary"
fi
if odmr_log_grep 'odmrd\[[0-9]+\]: .*sasl_method=CRAM-MD5, sasl_username=cust1$'; then
    ok "odmrd logs sasl_method=CRAM-MD5, sasl_username=cust1"
else
    fail "odmrd logs sasl_method=CRAM-MD5, sasl_username=cust1" "$(grep sasl "$ODMR_LOG_FILE" || true)"
fi
if odmr_log_grep 'odmrd\[[0-9]+\]: .*: ATRN example\.org,example\.net sasl_username=cust1 domains=example\.org,example\.net: 250 '; then
    ok "odmrd logs the ATRN and its 250"
else
    fail "odmrd logs the ATRN and its 250" "$(grep ATRN "$ODMR_LOG_FILE" || true)"
fi
missing=
for r in alice@example.org bob@example.org carol@example.org dave@example.net \
    frank@example.net 2frank@example.net grace@example.org ivan@example.org; do
    odmr_log_grep "odmrd\[[0-9]+\]: [0-9A-F]{18}: to=<$r>, relay=[^ ]*\[127\.0\.0\.1\]:[0-9]+, .*dsn=2\.0\.0, status=sent \(250 " ||
        missing="$missing $r"
done
if [ -z "$missing" ]; then
    ok "odmrd logs status=sent for each of the 8 cust1 recipients"
else
    fail "odmrd logs status=sent for each of the 8 cust1 recipients" "missing:$missing"
fi
if odmr_log_grep 'to=<(eve|henry)@example\.com>, relay='; then
    fail "nothing of cust2's was sent" "$(grep -E 'to=<(eve|henry)@' "$ODMR_LOG_FILE")"
else
    ok "nothing of cust2's was sent"
fi
# messages counts transactions, sent counts recipients.
if odmr_log_grep 'reversed session done: messages=5 sent=8 deferred=0 bounced=0'; then
    ok "odmrd: reversed session done: messages=5 sent=8"
else
    fail "odmrd: reversed session done: messages=5 sent=8" "$(grep 'session done' "$ODMR_LOG_FILE" || true)"
fi

# --- a second run finds nothing; a wrong password collects nothing -----------------
# fetchmail 6.4.37 in ODMR mode exits 0 after a 453 (not 1, "no mail") and
# 128 after a 535 (not 3, "authentication failed"): only the transcript tells.
run_fetchmail second
if fm_has '^fetchmail: ODMR< 453 ' && odmr_log_grep 'ATRN example\.org,example\.net .*: 453 '; then
    ok "second fetchmail run: 453 (no mail)"
else
    fail "second fetchmail run: 453 (no mail)" "exit $FMRC: $(grep -E 'ATRN|ODMR<' "$FMOUT" || true)"
fi
n2=$(find "$SINK_DIR" -type f | wc -l)
if [ "$n2" = "$n" ]; then ok "second run delivers nothing"; else fail "second run delivers nothing" "$n -> $n2 files"; fi

fetchmail_rc "wrong-$ODMR_PASSWORD_cust1"
run_fetchmail badpw
if [ "$FMRC" != 0 ] && fm_has '^fetchmail: SMTP< 535 ' && ! fm_has '> ATRN'; then
    ok "wrong password: 535, no ATRN, fetchmail exits $FMRC"
else
    fail "wrong password: 535, no ATRN" "exit $FMRC: $(tail -6 "$FMOUT")"
fi

if odmr_log_grep 'odmrd.*(fatal|panic):'; then
    fail "no fatal or panic" "$(grep -E 'odmrd.*(fatal|panic):' "$ODMR_LOG_FILE" | head -3)"
else
    ok "no fatal or panic"
fi

done_testing
