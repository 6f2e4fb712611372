#!/bin/bash
# t_fetchmail_tls.sh - fetchmail (proto odmr, which never uses STARTTLS on
# the ODMR session) relays the reversed session line by line into the
# customer's own MTA, here a second private Postfix whose smtpd offers
# STARTTLS, as Debian's Postfix does by default. A TLS handshake cannot
# pass such a relay: odmrd must not start one (no reversed_tls_policy_maps
# entry for the customer), and the mail must be delivered on the first ATRN.
# Before issue 6 odmrd sent STARTTLS there and the session hung until
# smtp_helo_timeout (300 s), on every ATRN.
#
# shellcheck disable=SC2154,SC2317 # ODMR_PASSWORD_cust1 comes from sandbox_start; _mta_exit runs from the EXIT trap
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix postconf swaks fetchmail setpriv
require_bin odmrd odmr-store

sandbox_start

# --- the customer's MTA: a second private Postfix with smtpd TLS ----------------
MTA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/odmr-mta.XXXXXX")
MTA_STARTED=0
# lib.sh's exit handler reads $? first: hand it the file's exit status.
_mta_exit() {
    local rc=$?
    set +e
    if [ "$MTA_STARTED" = 1 ]; then
        "$SANDBOX_SCRIPT" stop "$MTA_DIR" >/dev/null 2>&1
    fi
    if [ "${KEEP_SANDBOX:-0}" = 1 ]; then
        echo "# $T_NAME: customer MTA kept in $MTA_DIR" >&2
    else
        rm -rf "$MTA_DIR"
    fi
    (exit "$rc")
    _t_on_exit
}
trap _mta_exit EXIT

if out=$(SANDBOX_SMTP_PORT='' SANDBOX_ODMR_PORT='' \
    "$SANDBOX_SCRIPT" start "$MTA_DIR" --build "$BUILD_DIR" --free-ports 2>&1); then
    MTA_STARTED=1
    MTA_PORT=$(sed -n 's/^SMTP_PORT=//p' "$MTA_DIR/sandbox.env")
else
    fail "customer MTA starts" "$out"
    done_testing
fi
postconf -c "$MTA_DIR/etc" -e "smtpd_tls_security_level = may" \
    "smtpd_tls_cert_file = $MTA_DIR/tls/server.pem" \
    "smtpd_tls_key_file = $MTA_DIR/tls/server.key" \
    "myhostname = mx.customer.test"
postfix -c "$MTA_DIR/etc" reload >/dev/null 2>&1
# The reload is asynchronous: wait until a new smtpd offers STARTTLS and
# completes a handshake.
mta_tls() {
    /usr/bin/python3 - "$MTA_PORT" >/dev/null 2>&1 <<'PY'
import smtplib, ssl, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10)
s.ehlo("probe.test")
if not s.has_extn("starttls"):
    sys.exit(1)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
s.quit()
PY
}
if wait_for 30 mta_tls; then
    ok "the customer's MTA (private Postfix) offers STARTTLS and completes a handshake"
else
    fail "the customer's MTA (private Postfix) offers STARTTLS and completes a handshake" \
        "$(tail -5 "$MTA_DIR/maillog")"
fi

# --- mail for cust1, held by the ISP ---------------------------------------------
for i in 1 2; do
    smtp_send "s$i@sender.test" "fmtls$i@example.org" --header "Subject: fetchmail tls $i" \
        >/dev/null || true
done
held() { [ "$(odmr_log_count 'odmr-store.*to=<fmtls[12]@example\.org>, status=held')" = 2 ]; }
if wait_for 120 held; then
    ok "two messages held for example.org"
else
    fail "two messages held for example.org" \
        "$(grep fmtls "$ODMR_LOG_FILE"; tail -5 "$LOG_FILE")"
fi

# --- fetchmail as cust1, relaying into the customer's MTA -------------------------
FM_USER=nobody
FM_GROUP=$(id -gn "$FM_USER")
FMHOME=$SANDBOX_DIR/fetchmail-home
mkdir -p "$FMHOME"
chown "$FM_USER:$FM_GROUP" "$FMHOME"
chmod 0700 "$FMHOME"
(
    umask 077
    printf '%s\n' "set no syslog" \
        "poll $ODMR_HOST port $ODMR_PORT proto odmr" \
        "    user \"cust1\" password \"$ODMR_PASSWORD_cust1\"" \
        "    fetchdomains example.org" \
        "    smtphost 127.0.0.1/$MTA_PORT" >"$FMHOME/fetchmailrc"
)
chown "$FM_USER:$FM_GROUP" "$FMHOME/fetchmailrc"
FMOUT=$SANDBOX_DIR/fetchmail.out
FMRC=0
t0=$(date +%s)
# 60 s: far below smtp_helo_timeout, far above a normal run.
setpriv --reuid "$FM_USER" --regid "$FM_GROUP" --clear-groups \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$FMHOME" FETCHMAILHOME="$FMHOME" \
    timeout 60 fetchmail -f "$FMHOME/fetchmailrc" --pidfile "$FMHOME/fetchmail.pid" \
    --nodetach --nosyslog -v >"$FMOUT" 2>&1 || FMRC=$?
t1=$(date +%s)
fm_has() { grep -Eq -- "$1" "$FMOUT"; }

if [ "$FMRC" = 0 ] && fm_has 'normal termination, status 0'; then
    ok "fetchmail exits 0 ($((t1 - t0)) s)"
else
    fail "fetchmail exits 0" "exit $FMRC after $((t1 - t0)) s: $(tail -8 "$FMOUT")"
fi
if fm_has '^fetchmail: ODMR> 250[- ]STARTTLS' && ! fm_has '^fetchmail: ODMR< STARTTLS'; then
    ok "the MTA offered STARTTLS through fetchmail; odmrd did not send it"
else
    fail "the MTA offered STARTTLS through fetchmail; odmrd did not send it" \
        "$(grep -E 'STARTTLS|EHLO' "$FMOUT" || true)"
fi
delivered() {
    [ "$(grep -Ec 'odmr-store.*to=<fmtls[12]@example\.org>, status=held' "$MTA_DIR/odmr.log" \
        2>/dev/null)" = 2 ]
}
if wait_for 30 delivered; then
    ok "both messages reached the customer's MTA on the first ATRN"
else
    fail "both messages reached the customer's MTA on the first ATRN" \
        "$(tail -5 "$MTA_DIR/maillog" 2>/dev/null)"
fi
if [ "$(odmr_log_count 'odmrd.*to=<fmtls[12]@example\.org>, .*status=sent')" = 2 ]; then
    ok "odmrd logged both status=sent"
else
    fail "odmrd logged both status=sent" "$(grep 'to=<fmtls' "$ODMR_LOG_FILE" || true)"
fi
if fm_has 'mx\.customer\.test' && grep -Eq 'postfix/smtpd.*connect from' "$MTA_DIR/maillog"; then
    ok "the session went through the customer's Postfix"
else
    fail "the session went through the customer's Postfix" "$(tail -5 "$MTA_DIR/maillog")"
fi
if [ "$(odmr_log_count 'fatal|panic')" = 0 ]; then
    ok "no fatal or panic"
else
    fail "no fatal or panic" "$(grep -E 'fatal|panic' "$ODMR_LOG_FILE")"
fi

done_testing
