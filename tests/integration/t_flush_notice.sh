#!/bin/bash
# t_flush_notice.sh - the customer's refusals become notices to the sender,
# sent by odmrd after the session: RCPT 550, MAIL 550 (one notice for all
# recipients), 552 after the final dot, a message over the customer's SIZE
# (5.3.4), NOTIFY=SUCCESS to a customer without the DSN extension (a
# "relayed" notice; none when the customer has DSN), 8-bit content to a
# customer without 8BITMIME (converted, or 5.6.3) and a message that needs
# SMTPUTF8 to a customer without it (5.6.7). Each notice, as the
# sender received it in the sandbox's sink Maildir, is parsed field by field
# (dsn_check.py).
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix
require_bin odmrd odmr-queue odmr-store

sandbox_start

CUSTOMER=$LIB_DIR/odmr_customer.py
N=0

customer() {
    N=$((N + 1))
    RECV=$SANDBOX_DIR/recv.$N
    out=$(/usr/bin/python3 "$CUSTOMER" --host "$ODMR_HOST" --port "$ODMR_PORT" --timeout 30 \
        --user cust1 --password "$ODMR_PASSWORD_cust1" --save-dir "$RECV" \
        --transcript "$SANDBOX_DIR/transcript.$N" "$@" 2>&1) || true
}

# send TO[,TO...] [MAIL-OPTS] [RCPT-OPTS] [SUBJECT] [BODY-BYTES]: from
# alice@sink.test over SMTP, with ESMTP DSN parameters.
send() {
    /usr/bin/python3 - "$SMTP_HOST" "$SMTP_PORT" "$@" <<'EOF'
import smtplib, sys
host, port, to = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
mopts = sys.argv[4].split() if len(sys.argv) > 4 else []
ropts = sys.argv[5].split() if len(sys.argv) > 5 else []
subject = sys.argv[6] if len(sys.argv) > 6 else "flush notice"
size = int(sys.argv[7]) if len(sys.argv) > 7 else 0
body = "The body line of %s.\r\n" % subject + ("x" * 70 + "\r\n") * (size // 72)
msg = "From: <alice@sink.test>\r\nTo: <%s>\r\nSubject: %s\r\n\r\n%s" % (to[0], subject, body)
s = smtplib.SMTP(host, port, timeout=30)
s.ehlo("client.test")
s.sendmail("alice@sink.test", to, msg.encode(), mail_options=mopts, rcpt_options=ropts)
s.quit()
EOF
}

held() {
    "$BIN/odmr-queue" -c "$CONFIG_DIR" list example.org 2>/dev/null | grep -q "$1"
}

sink_count() {
    find "$SINK_MAILDIR" -type f -path '*/new/*' 2>/dev/null | wc -l
}

# notice_for TEXT: the sink message (a notice) that contains TEXT.
notice_for() {
    local f
    for f in $(find "$SINK_MAILDIR" -type f -path '*/new/*' 2>/dev/null); do
        if grep -q -F -- "$1" "$f"; then
            echo "$f"
            return 0
        fi
    done
    return 1
}

# flush_case NAME TO-LIST SUBJECT [customer options]: send, wait until held,
# ATRN with the options, wait for the notice; sets DSN (its file or "").
flush_case() {
    local name=$1 to=$2 subject=$3
    shift 3
    DSN=
    if ! wait_for 30 held "$(echo "$to" | cut -d, -f1)"; then
        fail "$name: held" "not in the hold queue"
        return
    fi
    customer --domains example.org "$@"
    if wait_for 30 notice_for "Subject: $subject"; then
        DSN=$(notice_for "Subject: $subject")
        ok "$name: one notice reaches the sender"
    else
        fail "$name: one notice reaches the sender" "nothing in the sink; $out"
    fi
}

# ---- RCPT 550 ----------------------------------------------------------------
send bad@example.org,good@example.org "" "" rcpt-550
flush_case "RCPT 550" bad@example.org rcpt-550 --rcpt-reply 'bad@example.org=550 5.1.1 <bad@example.org>: no such user'
[ -n "$DSN" ] && py_checks "RCPT 550" dsn_check.py rcpt550 "$DSN" \
    'header:Subject=Undelivered Mail Returned to Sender' 'header:Auto-Submitted=auto-replied' \
    'rcpts=1' 'rcpt=bad@example.org:Action=failed' 'rcpt=bad@example.org:Status=5.1.1' \
    'rcpt=bad@example.org:Remote-MTA~dns;' \
    'rcpt=bad@example.org:Diagnostic-Code~smtp;' 'rcpt=bad@example.org:Diagnostic-Code~550 5.1.1 <bad@example.org>: no such user' \
    'rcpt=bad@example.org:Last-Attempt-Date?' 'part3=message/rfc822' 'returned~The body line of rcpt-550'
check "RCPT 550: the other recipient delivered" grep -q 'good@example.org' "$RECV/001.env"
check "RCPT 550: logged" odmr_log_grep 'to=<bad@example.org>, .*dsn=5\.1\.1, status=bounced'
check "RCPT 550: notification logged" odmr_log_grep '[0-9A-F]{18}: sender non-delivery notification: [0-9A-F]{18}'
if ! held bad@example.org && [ "$(ls "$QUEUE_DIR"/msg/*/ 2>/dev/null | grep -c .)" = 0 ]; then
    ok "RCPT 550: nothing left in the queue"
else
    fail "RCPT 550: nothing left in the queue" "$("$BIN/odmr-queue" -c "$CONFIG_DIR" list)"
fi

# ---- MAIL 550: one notice for all recipients ------------------------------------
send m1@example.org,m2@example.org "" "" mail-550
flush_case "MAIL 550" m1@example.org mail-550 --mail-reply '550 5.7.1 sender refused'
[ -n "$DSN" ] && py_checks "MAIL 550" dsn_check.py mail550 "$DSN" \
    'rcpts=2' 'rcpt=m1@example.org:Status=5.7.1' 'rcpt=m2@example.org:Status=5.7.1' \
    'rcpt=m2@example.org:Diagnostic-Code~550 5.7.1 sender refused'
sleep 2
if [ "$(grep -l -F 'Subject: mail-550' $(find "$SINK_MAILDIR" -type f -path '*/new/*') | wc -l)" = 1 ]; then
    ok "MAIL 550: exactly one notice"
else
    fail "MAIL 550: exactly one notice" "more than one"
fi

# ---- 552 after the final dot ------------------------------------------------------
send dot@example.org "" "" dot-552
flush_case "dot 552" dot@example.org dot-552 --dot-reply '1=552 5.2.2 mailbox full'
[ -n "$DSN" ] && py_checks "dot 552" dsn_check.py dot552 "$DSN" \
    'rcpt=dot@example.org:Status=5.2.2' 'rcpt=dot@example.org:Diagnostic-Code~552 5.2.2 mailbox full'

# ---- SIZE 8000, a 28 KB message ---------------------------------------------------
send big@example.org "" "" size-big 28000
flush_case "SIZE" big@example.org size-big --size 8000
[ -n "$DSN" ] && py_checks "SIZE" dsn_check.py size "$DSN" \
    'rcpt=big@example.org:Action=failed' 'rcpt=big@example.org:Status=5.3.4'
check "SIZE: the message was not sent" test ! -e "$RECV/001.env"

# ---- NOTIFY=SUCCESS to a customer without DSN: relayed ----------------------------
send ok@example.org "ENVID=relay-1" "NOTIFY=SUCCESS,FAILURE" relay-one
flush_case "relayed" ok@example.org relay-one --no-dsn
[ -n "$DSN" ] && py_checks "relayed" dsn_check.py relayed "$DSN" \
    'rcpt=ok@example.org:Action=relayed' 'rcpt=ok@example.org:Status~2.' \
    'msg:Original-Envelope-Id=relay-1' 'part3=text/rfc822-headers'
check "relayed: delivered" grep -q 'ok@example.org' "$RECV/001.env"
check "relayed: notification logged" odmr_log_grep '[0-9A-F]{18}: sender delivery status notification: [0-9A-F]{18}'

# ... and none when the customer announces DSN (it got NOTIFY itself).
n=$(sink_count)
send ok2@example.org "" "NOTIFY=SUCCESS" relay-two
wait_for 30 held ok2@example.org || true
customer --domains example.org
sleep 4
if grep -q 'NOTIFY=SUCCESS' "$RECV/001.env" && [ "$(sink_count)" = "$n" ]; then
    ok "customer with DSN: NOTIFY passed on, no notice from us"
else
    fail "customer with DSN: NOTIFY passed on, no notice from us" "$(cat "$RECV/001.env" 2>/dev/null)"
fi

# ---- no 8BITMIME: converted to quoted-printable, or 5.6.3 ------------------------
send8() {
    /usr/bin/python3 - "$SMTP_HOST" "$SMTP_PORT" "$1" "$2" <<'EOF'
import smtplib, sys
host, port, to, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
subj = "Subject: eight-%s\r\n" % kind
if kind == "header":
    subj = "Subject: eight-header \u00e4\u00f6\r\n"
msg = ("From: <alice@sink.test>\r\nTo: <%s>\r\n" % to + subj +
       "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
       "Content-Transfer-Encoding: 8bit\r\n\r\n"
       "Gr\u00fc\u00dfe aus K\u00f6ln, eight-%s.\r\n.leading dot\r\n" % kind).encode("utf-8")
s = smtplib.SMTP(host, port, timeout=30)
s.ehlo("client.test")
s.sendmail("alice@sink.test", [to], msg, mail_options=["BODY=8BITMIME"])
s.quit()
EOF
}
send8 eight@example.org body
wait_for 30 held eight@example.org || true
customer --domains example.org --no-8bitmime
if [ -f "$RECV/001.msg" ] && ! LC_ALL=C grep -q $'[\x80-\xff]' "$RECV/001.msg" &&
    /usr/bin/python3 -c '
import email, sys
m = email.message_from_binary_file(open(sys.argv[1], "rb"))
assert m["Content-Transfer-Encoding"].strip().lower() == "quoted-printable", m["Content-Transfer-Encoding"]
t = m.get_payload(decode=True).decode("utf-8")
assert "Gr\u00fc\u00dfe aus K\u00f6ln, eight-body." in t and ".leading dot" in t, t
' "$RECV/001.msg" && ! grep -q 'BODY=8BITMIME' "$RECV/001.env"; then
    ok "no 8BITMIME: the customer gets 7-bit quoted-printable that decodes to the original"
else
    fail "no 8BITMIME: the customer gets 7-bit quoted-printable that decodes to the original" "$(cat "$RECV/001.env" 2>/dev/null; head -c 600 "$RECV/001.msg" 2>/dev/null)"
fi
# 8-bit multipart: each 8-bit leaf becomes quoted-printable, the rest is
# kept, and every part decodes to what was sent.
/usr/bin/python3 - "$SMTP_HOST" "$SMTP_PORT" <<'EOF'
import smtplib, sys
from email.message import EmailMessage
from email import policy
m = EmailMessage(policy=policy.SMTP)
m["From"] = "alice@sink.test"
m["To"] = "multi@example.org"
m["Subject"] = "eight-multi"
m.set_content("Gr\u00fc\u00dfe, eight-multi plain.\n.dot line\n", charset="utf-8", cte="8bit")
m.add_alternative("<p>K\u00f6ln, eight-multi html</p>\n", subtype="html", charset="utf-8",
                  cte="8bit")
m.add_attachment(bytes(range(256)), maintype="application", subtype="octet-stream",
                 filename="bytes.bin")
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=30)
s.ehlo("client.test")
s.sendmail("alice@sink.test", ["multi@example.org"], m.as_bytes(), mail_options=["BODY=8BITMIME"])
s.quit()
EOF
wait_for 30 held multi@example.org || true
customer --domains example.org --no-8bitmime
if [ -f "$RECV/001.msg" ] && ! LC_ALL=C grep -q $'[\x80-\xff]' "$RECV/001.msg" &&
    /usr/bin/python3 -c '
import email, sys
m = email.message_from_binary_file(open(sys.argv[1], "rb"))
assert m["Subject"] == "eight-multi", m["Subject"]
leaves = [p for p in m.walk() if not p.is_multipart()]
assert [p.get_content_type() for p in leaves] == ["text/plain", "text/html",
                                                  "application/octet-stream"], leaves
for p in leaves[:2]:
    assert p["Content-Transfer-Encoding"].strip().lower() == "quoted-printable", p.items()
assert leaves[0].get_payload(decode=True).decode("utf-8") == \
    "Gr\u00fc\u00dfe, eight-multi plain.\n.dot line\n"
assert leaves[1].get_payload(decode=True).decode("utf-8") == \
    "<p>K\u00f6ln, eight-multi html</p>\n"
assert leaves[2].get_payload(decode=True) == bytes(range(256))
' "$RECV/001.msg"; then
    ok "no 8BITMIME: an 8-bit multipart arrives 7-bit, every part decoding to the original"
else
    fail "no 8BITMIME: an 8-bit multipart arrives 7-bit, every part decoding to the original" \
        "$(cat "$RECV/001.env" 2>/dev/null; head -c 1500 "$RECV/001.msg" 2>/dev/null)"
fi
send8 eighthdr@example.org header
wait_for 30 held eighthdr@example.org || true
customer --domains example.org --no-8bitmime
if wait_for 30 notice_for "eighthdr@example.org"; then
    DSN=$(notice_for "eighthdr@example.org")
    py_checks "8-bit header" dsn_check.py eighthdr "$DSN" \
        'rcpt=eighthdr@example.org:Action=failed' 'rcpt=eighthdr@example.org:Status=5.6.3'
else
    fail "8-bit header: 5.6.3 notice" "none; $out"
fi
check "8-bit header: not sent" test ! -e "$RECV/001.env"

# ---- SMTPUTF8 required, the customer does not offer it: 5.6.7 ------------------------
/usr/bin/python3 - "$SMTP_HOST" "$SMTP_PORT" <<'EOF'
import smtplib, sys
# Postfix asks for SMTPUTF8 downstream only when the envelope needs it.
msg = ("From: J\u00f6rg <j\u00f6rg@sink.test>\r\nTo: <utf8@example.org>\r\n"
       "Subject: utf8-required\r\n\r\nA message that needs SMTPUTF8.\r\n").encode("utf-8")
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=30)
s.ehlo("client.test")
s.sendmail("j\u00f6rg@sink.test", ["utf8@example.org"], msg,
           mail_options=["SMTPUTF8", "BODY=8BITMIME"])
s.quit()
EOF
flush_case "SMTPUTF8" utf8@example.org utf8-required
[ -n "$DSN" ] && py_checks "SMTPUTF8" dsn_check.py smtputf8 "$DSN" \
    'rcpt=utf8@example.org:Action=failed' 'rcpt=utf8@example.org:Status=5.6.7' \
    'rcpt=utf8@example.org:Diagnostic-Code~SMTPUTF8 is required' 'rcpts=1' \
    'part3=message/global' 'returned~A message that needs SMTPUTF8'
check "SMTPUTF8: not sent" test ! -e "$RECV/001.env"
check "SMTPUTF8: logged" odmr_log_grep 'to=<utf8@example.org>, .*dsn=5\.6\.7, status=bounced'
if ! held utf8@example.org; then
    ok "SMTPUTF8: nothing left in the queue"
else
    fail "SMTPUTF8: nothing left in the queue" "$("$BIN/odmr-queue" -c "$CONFIG_DIR" list)"
fi

done_testing
