#!/bin/bash
# t_notice.sh - notices to senders from the hold queue, through the sandbox:
# expiry after maximal_queue_lifetime, one delay warning after
# delay_warning_time, odmr-queue bounce, NOTIFY=NEVER, RET=HDRS, ENVID, the
# null sender, a notice to a held domain (held itself), a failing sendmail
# (kept, sent by the next run), and kill -9 between submission and
# bookkeeping (at most one duplicate). Each notice is parsed with Python's
# email package field by field (dsn_check.py). The clock is moved with
# "odmr-queue expire --now", never by waiting.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix swaks
require_bin odmr-queue odmr-store

sandbox_start

Q() {
    "$BIN/odmr-queue" -c "$CONFIG_DIR" "$@"
}

# send FROM TO [MAIL-OPTS] [RCPT-OPTS] [SUBJECT]: submit over SMTP with ESMTP
# DSN parameters (Python's smtplib; swaks has no per-recipient NOTIFY).
send() {
    /usr/bin/python3 - "$SMTP_HOST" "$SMTP_PORT" "$@" <<'EOF'
import smtplib, sys
host, port, frm, to = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
mopts = sys.argv[5].split() if len(sys.argv) > 5 else []
ropts = sys.argv[6].split() if len(sys.argv) > 6 else []
subject = sys.argv[7] if len(sys.argv) > 7 else "notice test"
body = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nThe body line of %s.\r\n"
        % (frm or "MAILER-DAEMON@sink.test", to, subject, subject))
s = smtplib.SMTP(host, port, timeout=30)
s.ehlo("client.test")
s.sendmail(frm, [to], body.encode(), mail_options=mopts, rcpt_options=ropts)
s.quit()
EOF
}

# held_id SUBJECT: the hold queue's ID of the message with that subject.
held_id() {
    local id
    for id in $(Q list 2>/dev/null | grep -oE '^[0-9A-F]{18}'); do
        if Q show "$id" 2>/dev/null | grep -q "^Subject: $1"; then
            echo "$id"
            return 0
        fi
    done
    return 1
}

# wait_held SUBJECT: wait until it is in the hold queue; sets ID.
wait_held() {
    ID=
    wait_for 30 held_id "$1" && ID=$(held_id "$1")
}

sink_count() {
    find "$SINK_MAILDIR" -type f -path '*/new/*' 2>/dev/null | wc -l
}

# wait_sink N: wait until the sink holds N messages; NEWEST = the newest.
wait_sink() {
    wait_for 30 test "$(sink_count)" -ge "$1" || true
    NEWEST=$(find "$SINK_MAILDIR" -type f -path '*/new/*' -printf '%T@ %p\n' 2>/dev/null |
        sort -n | tail -n 1 | cut -d' ' -f2-)
}

# sink_with TEXT: the sink message that contains TEXT.
sink_with() {
    grep -l -F -- "$1" $(find "$SINK_MAILDIR" -type f -path '*/new/*') 2>/dev/null | head -n 1
}

# ---- expiry ------------------------------------------------------------------
send alice@sink.test bob@example.org "ENVID=env-expire-1" "ORCPT=rfc822;bob@example.org" expire-one
if wait_held expire-one; then ok "expire: held"; else fail "expire: held" "not in the hold queue"; fi
EXP_ID=$ID
before=$(sink_count)
if Q expire -n --now +6d | grep -q "^$EXP_ID example.org: would expire"; then
    ok "expire -n lists it"
else
    fail "expire -n lists it" "$(Q expire -n --now +6d 2>&1)"
fi
if [ "$(sink_count)" = "$before" ] && Q list | grep -q "$EXP_ID"; then
    ok "expire -n changes nothing"
else
    fail "expire -n changes nothing" "queue or sink changed"
fi
if Q expire --now +4d >/dev/null 2>&1 && Q list | grep -q "$EXP_ID"; then
    ok "not expired before maximal_queue_lifetime"
else
    fail "not expired before maximal_queue_lifetime" "gone after 4 days"
fi
out=$(Q expire --now +6d 2>&1) || true
if grep -q '1 expired' <<<"$out"; then ok "expire: run"; else fail "expire: run" "$out"; fi
wait_sink $((before + 1))
DSN=$(sink_with "$EXP_ID")
if [ -n "$DSN" ]; then
    ok "expire: notice delivered"
    py_checks "expire notice" dsn_check.py expire "$DSN" \
        'type=multipart/report' 'report-type=delivery-status' \
        'header:From~MAILER-DAEMON@' 'header:To~alice@sink.test' \
        'header:Subject=Undelivered Mail Returned to Sender' \
        'header:Auto-Submitted=auto-replied' \
        'msg:Reporting-MTA~dns;' 'msg:Arrival-Date?' 'msg:Original-Envelope-Id=env-expire-1' \
        'rcpts=1' 'rcpt=bob@example.org:Action=failed' 'rcpt=bob@example.org:Status=4.4.7' \
        'rcpt=bob@example.org:Original-Recipient~bob@example.org' \
        'rcpt=bob@example.org:Diagnostic-Code~expired' \
        'rcpt=bob@example.org:Will-Retry-Until!' \
        'part3=message/rfc822' 'returned~The body line of expire-one'
else
    fail "expire: notice delivered" "no notice naming $EXP_ID in the sink"
fi
check "expire: log status=expired" odmr_log_grep "$EXP_ID: to=<bob@example.org>, relay=none, delay=[0-9.]+, delays=[0-9./]+, dsn=4\.4\.7, status=expired, returned to sender"
check "expire: log non-delivery notification" odmr_log_grep "$EXP_ID: sender non-delivery notification: [0-9A-F]{18}"
if ! Q list | grep -q "$EXP_ID" && [ "$(Q expire -n --now +6d | grep -c .)" = 0 ]; then
    ok "expire: message gone, nothing pending"
else
    fail "expire: message gone, nothing pending" "$(Q list; Q expire -n --now +6d)"
fi
n=$(sink_count)
Q expire --now +7d >/dev/null 2>&1 || true
sleep 1
if [ "$(sink_count)" = "$n" ]; then ok "expire: a second run sends nothing"; else fail "expire: a second run sends nothing" "new mail in the sink"; fi

# ---- delay warning -----------------------------------------------------------
send alice@sink.test carol@example.net "RET=FULL" "" warn-one
wait_held warn-one || true
W_ID=$ID
n=$(sink_count)
Q -o delay_warning_time=4h expire --now +2h >/dev/null 2>&1 || true
sleep 1
if [ "$(sink_count)" = "$n" ]; then ok "warning: none before delay_warning_time"; else fail "warning: none before delay_warning_time" "a notice came"; fi
Q -o delay_warning_time=4h expire --now +5h >/dev/null 2>&1 || true
wait_sink $((n + 1))
DSN=$(sink_with "$W_ID")
if [ -n "$DSN" ]; then
    ok "warning: delivered"
    py_checks "warning" dsn_check.py warning "$DSN" \
        'header:Subject=Delayed Mail (still being retried)' \
        'rcpt=carol@example.net:Action=delayed' 'rcpt=carol@example.net:Status~4.' \
        'rcpt=carol@example.net:Will-Retry-Until?' \
        'part3=text/rfc822-headers' 'returned~Subject: warn-one' 'returned!The body line'
else
    fail "warning: delivered" "no delay notice for $W_ID"
fi
check "warning: log" odmr_log_grep "$W_ID: sender delay notification: [0-9A-F]{18}"
if Q list | grep -q "$W_ID" && Q show "$W_ID" | grep -q '^delay warning: sent'; then
    ok "warning: message still held, marked warned"
else
    fail "warning: message still held, marked warned" "$(Q show "$W_ID" | head -20)"
fi
n=$(sink_count)
Q -o delay_warning_time=4h expire --now +6h >/dev/null 2>&1 || true
# A reindex forgets the watermarks; the status file still says "warned".
Q reindex >/dev/null 2>&1 || true
Q -o delay_warning_time=4h expire --now +7h >/dev/null 2>&1 || true
sleep 1
if [ "$(sink_count)" = "$n" ]; then ok "warning: once, also after reindex"; else fail "warning: once, also after reindex" "a second warning"; fi
Q delete "$W_ID" >/dev/null 2>&1 || true

# ---- NOTIFY=NEVER, RET=HDRS, null sender -------------------------------------
send alice@sink.test never@example.org "" "NOTIFY=NEVER" never-one
wait_held never-one || true
NEVER_ID=$ID
send alice@sink.test hdrs@example.org "RET=HDRS" "NOTIFY=FAILURE" hdrs-one
wait_held hdrs-one || true
HDRS_ID=$ID
send "" null@example.org "" "" null-one
wait_held null-one || true
NULL_ID=$ID
n=$(sink_count)
Q expire --now +6d >/dev/null 2>&1 || true
wait_sink $((n + 1))
sleep 2
if [ "$(sink_count)" = $((n + 1)) ]; then ok "one notice for three expiries (NEVER and <> get none)"; else fail "one notice for three expiries (NEVER and <> get none)" "$(($(sink_count) - n)) notices"; fi
if [ -z "$(sink_with "$NEVER_ID")" ] && [ -z "$(sink_with "$NULL_ID")" ]; then
    ok "NOTIFY=NEVER and null sender: no notice"
else
    fail "NOTIFY=NEVER and null sender: no notice" "a notice came"
fi
DSN=$(sink_with "$HDRS_ID")
if [ -n "$DSN" ]; then
    py_checks "RET=HDRS" dsn_check.py hdrs "$DSN" \
        'part3=text/rfc822-headers' 'returned~Subject: hdrs-one' 'returned!The body line'
else
    fail "RET=HDRS: notice" "none for $HDRS_ID"
fi
check "null sender: expired all the same" odmr_log_grep "$NULL_ID: to=<null@example.org>, .*status=expired"
if ! Q list | grep -qE "$NEVER_ID|$NULL_ID|$HDRS_ID"; then ok "all three gone"; else fail "all three gone" "$(Q list)"; fi

# ---- a notice to a held domain is held ---------------------------------------
send dave@example.com held-rcpt@example.org "" "" held-one
wait_held held-one || true
HELD_ID=$ID
Q expire --now +6d >/dev/null 2>&1 || true
held_notice() {
    Q list example.com 2>/dev/null | grep -qE '^[0-9A-F]{18} .* <>$' &&
        Q list example.com 2>/dev/null | grep -q 'dave@example.com'
}
if wait_for 30 held_notice; then
    ok "notice to a held domain is held for its customer"
else
    fail "notice to a held domain is held for its customer" "$(Q list)"
fi

# ---- administrator's bounce ---------------------------------------------------
send alice@sink.test b1@example.org "" "" bounce-one
wait_held bounce-one || true
B_ID=$ID
n=$(sink_count)
if Q bounce "$B_ID" >/dev/null 2>&1; then ok "bounce: runs"; else fail "bounce: runs" "exit status $?"; fi
wait_sink $((n + 1))
DSN=$(sink_with "$B_ID")
if [ -n "$DSN" ]; then
    py_checks "bounce" dsn_check.py bounce "$DSN" \
        'rcpt=b1@example.org:Action=failed' 'rcpt=b1@example.org:Status=5.0.0' \
        'rcpt=b1@example.org:Diagnostic-Code~administrator'
else
    fail "bounce: notice" "none for $B_ID"
fi
if Q bounce 0123456789ABCDEF01 >/dev/null 2>&1; then fail "bounce: unknown ID" "exit 0"; else
    rc=$?; if [ "$rc" = 66 ]; then ok "bounce: unknown ID exits 66"; else fail "bounce: unknown ID exits 66" "exit $rc"; fi
fi

# ---- sendmail fails: kept, sent by the next run --------------------------------
cat >"$SANDBOX_DIR/bin/sendmail-75" <<'EOF'
#!/bin/sh
cat >/dev/null
echo "sendmail-75: temporary failure" >&2
exit 75
EOF
chmod 0755 "$SANDBOX_DIR/bin/sendmail-75"
send alice@sink.test retry@example.org "" "" retry-one
wait_held retry-one || true
R_ID=$ID
n=$(sink_count)
rc=0
Q -o sendmail_path="$SANDBOX_DIR/bin/sendmail-75" expire --now +6d >/dev/null 2>&1 || rc=$?
if [ "$rc" = 75 ] && Q expire -n | grep -q "^$R_ID: notice to the sender pending"; then
    ok "sendmail exit 75: expire exits 75, notice pending"
else
    fail "sendmail exit 75: expire exits 75, notice pending" "rc=$rc; $(Q expire -n 2>&1)"
fi
check "sendmail exit 75: logged" odmr_log_grep "$R_ID: .*sendmail.*75"
Q -o sendmail_path=/nonexistent/sendmail expire >/dev/null 2>&1 || true
sleep 1
if [ "$(sink_count)" = "$n" ] && Q show "$R_ID" | grep -q 'failed, notice pending'; then
    ok "missing sendmail: still pending"
else
    fail "missing sendmail: still pending" "$(Q show "$R_ID" 2>&1 | head)"
fi
Q expire >/dev/null 2>&1 || true
wait_sink $((n + 1))
if [ -n "$(sink_with "$R_ID")" ] && [ "$(sink_count)" = $((n + 1)) ] && ! Q list | grep -q "$R_ID"; then
    ok "retry: the next run sends it once"
else
    fail "retry: the next run sends it once" "$(($(sink_count) - n)) notices"
fi

# ---- kill -9 between submission and bookkeeping --------------------------------
send alice@sink.test crash@example.org "" "" crash-one
wait_held crash-one || true
C_ID=$ID
n=$(sink_count)
rc=0
Q -o test_fault_point=after-notice expire --now +6d >/dev/null 2>&1 || rc=$?
if [ "$rc" = 137 ]; then ok "kill -9 after the submission"; else fail "kill -9 after the submission" "exit $rc"; fi
Q expire --now +6d >/dev/null 2>&1 || true
Q expire --now +6d >/dev/null 2>&1 || true
sleep 3
got=$(grep -l -F -- "$C_ID" $(find "$SINK_MAILDIR" -type f -path '*/new/*') 2>/dev/null | wc -l)
if [ "$got" -ge 1 ] && [ "$got" -le 2 ] && ! Q list | grep -q "$C_ID"; then
    ok "kill -9: notice sent, at most one duplicate ($got), message gone"
else
    fail "kill -9: notice sent, at most one duplicate" "$got notices; $(Q list)"
fi

done_testing
