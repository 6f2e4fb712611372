#!/bin/bash
# t_fetch_config.sh - odmr-fetch's configuration file (-f, main.cf syntax),
# against the sandbox's odmrd, and a collection run the way the systemd
# timer runs it: an unprivileged user, everything from the file.
#
# Checked: a collection from the file alone (delivered, exit 0); the command
# line overrides the file (--deliver, and domains given as arguments replace
# the file's); errors name the file, the line and the parameter and exit 78
# (EX_CONFIG): a bad value, an unknown parameter, a password written into
# the file; a file others may write is refused before anything is sent; a
# missing -f file is an error; a run as an unprivileged user with its own
# file and password file (the timer's way) collects the mail.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix openssl ss swaks postmap setpriv
require_bin odmrd odmr-store odmr-queue odmr-fetch

sandbox_start

test_workdir config-test

SINK_PORT=$(free_port)
fetch_sink_start "$WORK/sink" --listen "127.0.0.1:$SINK_PORT"

(umask 077 && echo "$ODMR_PASSWORD_cust1" >"$WORK/cust1.pw")
CF=$WORK/odmr-fetch.cf
cat >"$CF" <<EOF
# odmr-fetch(1) settings: main.cf syntax
server = $ODMR_HOST:$ODMR_PORT
user = cust1
password_file = $WORK/cust1.pw
deliver = smtp:127.0.0.1:$SINK_PORT
tls_ca_file = $TLS_CA_FILE
domains = example.org,
    example.net
connect_timeout = 10s
timeout = 1m
EOF
chmod 0644 "$CF"

# fetch NAME ARGS...: output in $WORK/NAME.out, exit status in $FRC.
fetch() {
    local name=$1
    shift
    FOUT=$WORK/$name.out
    FRC=0
    timeout 120 "$BIN/odmr-fetch" "$@" >"$FOUT" 2>&1 || FRC=$?
}
out_has() { grep -Eq -- "$1" "$FOUT"; }
sink_count() { find "$WORK/sink" -name 't*.data' | wc -l; }

smtp_send s@sender.test "a@example.org,b@example.net" --header "X-Test-Id: cf-1" >/dev/null || true
wait_queue_empty 60 || true

# --- the file alone -------------------------------------------------------------
fetch file -f "$CF"
if [ "$FRC" = 0 ] && out_has 'atrn=example\.org,example\.net, tls=yes, sasl_method=SCRAM-SHA-256, messages=1, recipients=2, .*status=delivered'; then
    ok "-f FILE alone: delivered (exit 0), domains and TLS settings from the file"
else
    fail "-f FILE alone: delivered" "exit $FRC: $(tail -2 "$FOUT")"
fi

# --- the command line overrides the file ----------------------------------------------
DOWN_PORT=$(free_port)
while [ "$DOWN_PORT" = "$SINK_PORT" ]; do DOWN_PORT=$(free_port); done
smtp_send s@sender.test c@example.org --header "X-Test-Id: cf-2" >/dev/null || true
wait_queue_empty 60 || true
fetch override -f "$CF" --deliver "smtp:127.0.0.1:$DOWN_PORT"
if [ "$FRC" = 6 ] && out_has "status=local \\(local MTA: connect to .*:$DOWN_PORT"; then
    ok "--deliver on the command line overrides the file's deliver"
else
    fail "--deliver overrides the file" "exit $FRC: $(tail -2 "$FOUT")"
fi
fetch domains -f "$CF" example.com
if [ "$FRC" = 3 ] && out_has 'atrn=example\.com, .*status=refused'; then
    ok "domains as arguments replace the file's domains (example.com: 450, exit 3)"
else
    fail "domains as arguments replace the file's" "exit $FRC: $(tail -2 "$FOUT")"
fi

# --- errors: file, line, parameter; exit 78 ---------------------------------------------
cfg_error() { # NAME LINE-TEXT EXPECTED-ERE
    local bad=$WORK/$1.cf
    cp "$CF" "$bad"
    echo "$2" >>"$bad"
    fetch "$1" -f "$bad"
    if [ "$FRC" = 78 ] && out_has "$3"; then
        ok "config error ($1): exit 78, $(tail -1 "$FOUT" | sed 's/^odmr-fetch: fatal: //')"
    else
        fail "config error ($1): exit 78" "exit $FRC: $(tail -2 "$FOUT")"
    fi
}
cfg_error badtime "atrn_timeout = 10 minutes" "fatal: $WORK/badtime\\.cf, line 11: parameter atrn_timeout: bad time"
cfg_error unknown "atrn_timout = 10m" "fatal: $WORK/unknown\\.cf, line 11: unknown parameter \"atrn_timout\""
cfg_error badtls "tls = sometimes" "fatal: $WORK/badtls\\.cf, line 11: parameter tls: none, may, encrypt or verify"
cfg_error password "password = $ODMR_PASSWORD_cust1" "line 11: parameter password: not here"
cfg_error syntax "just words" "fatal: $WORK/syntax\\.cf, line 11: missing '='"
if grep -qF -- "$ODMR_PASSWORD_cust1" "$WORK/password.out"; then
    fail "a password in the file is not echoed" "$(cat "$WORK/password.out")"
else
    ok "a password in the file is not echoed"
fi
before=$(odmr_log_count 'connect from')
cp "$CF" "$WORK/open.cf"
chmod 0666 "$WORK/open.cf"
fetch open -f "$WORK/open.cf"
if [ "$FRC" = 78 ] && out_has 'refused: it must belong to you or root and not be writable' &&
    [ "$(odmr_log_count 'connect from')" = "$before" ]; then
    ok "a file others may write: refused (exit 78), nothing sent"
else
    fail "a file others may write: refused" "exit $FRC: $(tail -2 "$FOUT")"
fi
fetch missing -f "$WORK/nonexistent.cf"
if [ "$FRC" = 78 ] && out_has 'nonexistent\.cf: No such file'; then
    ok "-f with a missing file: exit 78"
else
    fail "-f with a missing file: exit 78" "exit $FRC: $(tail -2 "$FOUT")"
fi

# --- as a customer runs it from the timer: an unprivileged user, its own files ------------
RUNAS=nobody
UWORK=$WORK/user
mkdir -p "$UWORK"
chmod 0755 "$SANDBOX_DIR" "$WORK"
(umask 077 && echo "$ODMR_PASSWORD_cust1" >"$UWORK/password")
sed "s|^password_file = .*|password_file = $UWORK/password|" "$CF" >"$UWORK/odmr-fetch.cf"
chmod 0600 "$UWORK/odmr-fetch.cf"
chown -R "$RUNAS" "$UWORK"
chmod 0700 "$UWORK"
smtp_send s@sender.test "timer@example.org" --header "X-Test-Id: cf-3" >/dev/null || true
wait_queue_empty 60 || true
n0=$(sink_count)
FOUT=$WORK/timer.out
FRC=0
(cd / && timeout 120 setpriv --reuid "$RUNAS" --regid nogroup --clear-groups \
    "$BIN/odmr-fetch" -f "$UWORK/odmr-fetch.cf") >"$FOUT" 2>&1 || FRC=$?
echo "# the timer's run (user $RUNAS): $(cat "$FOUT")"
if [ "$FRC" = 0 ] && out_has 'status=delivered' && [ "$(sink_count)" -gt "$n0" ]; then
    ok "a run as the timer does it (user $RUNAS, settings from its file): delivered"
elif ! setpriv --reuid "$RUNAS" --regid nogroup --clear-groups test -r "$TLS_CA_FILE"; then
    skip "a run as the timer does it" "user $RUNAS cannot read the sandbox's CA file"
else
    fail "a run as the timer does it" "exit $FRC: $(cat "$FOUT")"
fi

done_testing
