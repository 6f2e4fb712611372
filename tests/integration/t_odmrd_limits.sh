#!/bin/bash
# t_odmrd_limits.sh - odmrd on the open internet (issue 9), with odmrd
# under valgrind as in t_odmrd_robust.sh (every log clean at the end):
#   slot exhaustion: more idle connections from one address than
#     odmrd_client_connection_count_limit get 421 4.7.0, a second address
#     is served, idle and trickling sessions end at odmrd_pre_auth_timeout;
#   guessing: failures over parallel sessions for one user from one address
#     give 454 4.7.0 without a password check, the right password from
#     another address works, unknown names fill the address's counter,
#     the counters decay after odmrd_auth_failure_window;
#   ATRN flood: odmrd_atrn_command_limit and error_limit end the session
#     (450 counts as an error), the log lines are bounded;
#   SCRAM: an unknown user's salt and iteration count are stable and shaped
#     like a real user's.
# The "figure:" lines are the numbers the issue asks for.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix valgrind postmap
require_bin odmrd odmr-passwd

sandbox_start
export ODMR_HOST ODMR_PORT ODMR_LOG_FILE
PW1=$ODMR_PASSWORD_cust1
PW2=$ODMR_PASSWORD_cust2

# odmr.cf is read by every new odmrd: the last setting of a name wins.
set_cf() {
    local kv
    for kv in "$@"; do echo "$kv" >>"$CONFIG_DIR/odmr.cf"; done
}

# --- odmrd under valgrind -------------------------------------------------------
VG_DIR=$SANDBOX_DIR/valgrind
mkdir -p "$VG_DIR"
chown odmr: "$VG_DIR"
WRAPPER=$SANDBOX_DIR/odmrd-valgrind
cat >"$WRAPPER" <<WRAP
#!/bin/sh
exec /usr/bin/valgrind -q --error-exitcode=99 --leak-check=full \\
    --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \\
    --track-fds=yes --log-file=$VG_DIR/odmrd.%p.log $BIN/odmrd "\$@"
WRAP
chmod 0755 "$WRAPPER"
sed -i "s|argv=$BIN/odmrd -c|argv=$WRAPPER -c|" "$CONFIG_DIR/master.cf"
if grep -q "argv=$WRAPPER -c" "$CONFIG_DIR/master.cf"; then
    postfix -c "$CONFIG_DIR" reload >/dev/null 2>&1
    sleep 1
    ok "master.cf runs odmrd under valgrind"
else
    fail "master.cf runs odmrd under valgrind" "no odmrd entry to rewrite"
fi

# --- slot exhaustion --------------------------------------------------------------
# The deadline leaves room for five odmrd start-ups under valgrind.
set_cf "odmrd_client_connection_count_limit = 3" "odmrd_pre_auth_timeout = 15s"
py_checks "slots" limits_check.py slots 3 15

# --- guessing ---------------------------------------------------------------------
set_cf "odmrd_pre_auth_timeout = 60s" "odmrd_client_user_auth_failure_limit = 4" \
    "odmrd_client_auth_failure_limit = 8" "odmrd_auth_failure_window = 60s"
py_checks "guessing" limits_check.py guess cust1 "$PW1" cust2 "$PW2" 4 8 3 60
if [ "$(stat -c '%a %U' "$QUEUE_DIR/odmrd.failures" 2>/dev/null)" = "600 odmr" ]; then
    ok "odmrd.failures: mode 0600, owner odmr"
else
    fail "odmrd.failures: mode 0600, owner odmr" "$(ls -l "$QUEUE_DIR" 2>&1 | head -5)"
fi
if grep -qa -e cust1 -e nosuchuser "$QUEUE_DIR/odmrd.failures"; then
    fail "no user name in odmrd.failures" "found one"
else
    ok "no user name in odmrd.failures"
fi

# --- ATRN flood -------------------------------------------------------------------
set_cf "odmrd_atrn_command_limit = 5"
py_checks "ATRN cap" limits_check.py atrn cust2 "$PW2" example.org 5 20 2000
set_cf "odmrd_atrn_command_limit = 100" "error_limit = 8"
py_checks "ATRN error_limit" limits_check.py atrn cust2 "$PW2" example.org 100 8 2000
if odmr_log_grep 'more than 5 ATRN warnings in this session'; then
    ok "ATRN warnings are cut after 5 per session"
else
    fail "ATRN warnings are cut after 5 per session" "no line"
fi

# --- SCRAM ------------------------------------------------------------------------
set_cf "error_limit = 20"
"$BIN/odmr-passwd" -s SCRAM-SHA-256 -u scram1 -p 'pencil pencil' >>"$CONFIG_DIR/odmr_passwd"
postmap -c "$CONFIG_DIR" "hash:$CONFIG_DIR/odmr_passwd"
chgrp odmr "$CONFIG_DIR/odmr_passwd.db"
chmod 0640 "$CONFIG_DIR/odmr_passwd.db"
py_checks "SCRAM" limits_check.py scram scram1 cust1
if [ "$(stat -c '%a %U %s' "$QUEUE_DIR/odmrd.secret" 2>/dev/null)" = "600 odmr 32" ]; then
    ok "odmrd.secret: 32 bytes, mode 0600, owner odmr"
else
    fail "odmrd.secret: 32 bytes, mode 0600, owner odmr" "$(ls -l "$QUEUE_DIR" 2>&1 | head -5)"
fi

# --- valgrind ---------------------------------------------------------------------
odmrd_count() {
    pgrep -f -- "^($BIN/odmrd|/usr/bin/valgrind[^ ]* .* $BIN/odmrd) -c $CONFIG_DIR\$" | wc -l
}
no_odmrd() { [ "$(odmrd_count)" = 0 ]; }
if ! wait_for 60 no_odmrd; then
    fail "valgrind sessions end" "$(odmrd_count) odmrd processes still running"
fi
runs=$(find "$VG_DIR" -name 'odmrd.*.log' | wc -l)
dirty=""
for f in "$VG_DIR"/odmrd.*.log; do
    [ -e "$f" ] || continue
    if grep -Eq 'definitely lost: [1-9]|indirectly lost: [1-9]|ERROR SUMMARY: [1-9]' "$f" ||
        grep -Eq '^==[0-9]+== (Invalid|Conditional|Use of uninit|Syscall param|Mismatched|Source and destination|[0-9,]+ bytes in [0-9,]+ blocks are)' "$f" ||
        grep -E '^==[0-9]+== Open ' "$f" |
        grep -Ev "Open file descriptor [0-9]+: ($VG_DIR/odmrd\.[0-9]+\.log|$ODMR_LOG_FILE)\$" | grep -q .; then
        dirty="$dirty $f"
    fi
done
if [ "$runs" -ge 20 ] && [ -z "$dirty" ]; then
    ok "valgrind: $runs odmrd sessions, no error, no leak, no fd left open"
else
    fail "valgrind" "$runs runs; dirty:$dirty $(for f in $dirty; do head -n 40 "$f"; done)"
fi
if log_grep 'spawn.*odmrd-valgrind.*(exit status|killed by signal)'; then
    fail "valgrind exit status 0" "$(grep -E 'spawn.*(exit status|killed by signal)' "$LOG_FILE" | head -3)"
else
    ok "valgrind exit status 0"
fi
if odmr_log_grep 'odmrd.*(fatal|panic):'; then
    fail "no fatal or panic" "$(grep -E 'odmrd.*(fatal|panic):' "$ODMR_LOG_FILE" | head -3)"
else
    ok "no fatal or panic"
fi

done_testing
