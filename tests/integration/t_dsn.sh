#!/bin/bash
# DSNs (src/lib/dsn.c), read by Python's email package field by field:
# (a) every notice of the unit test's case table as dsn_write wrote it;
# (b) the same notices submitted with dsn_submit through the sandbox's
#     sendmail_path as user odmr: to a sender at sink.test they land in the
#     sink Maildir with the null envelope sender; to a sender at a held
#     customer domain (example.org) they are themselves held in the ODMR
#     queue for that customer;
# (c) a sendmail that exits 75 (the sandbox's own, pointed at a closed
#     port, and a script) and one that hangs: -1 with a clear error, in time.
# The notices come from build/tests/test_dsn's hidden modes (--emit,
# --submit): the library code itself, no copy of it.
set -eu
. "$(dirname "$0")/lib.sh"
require_root
TOOL=$BUILD_DIR/tests/test_dsn
[ -x "$TOOL" ] || skip_all "$TOOL not built"
sandbox_start

W=$SANDBOX_DIR/dsn
mkdir -p "$W/emit" "$W/sink" "$W/held"
# User odmr runs the submissions, as odmrd and odmr-queue will.
install -m 0755 "$TOOL" "$W/test_dsn"
chmod 0755 "$SANDBOX_DIR" "$W"
as_odmr() {
    setpriv --reuid odmr --regid odmr --clear-groups -- "$@"
}
SENDMAIL=$(sed -n 's/^sendmail_path *= *//p' "$CONFIG_DIR/odmr.cf" | tail -n 1)
[ -n "$SENDMAIL" ] || SENDMAIL=$SANDBOX_DIR/bin/sendmail

# submit SENDER FILE [TIMEOUT [SENDMAIL]]: dsn_submit as user odmr; prints
# the tool's line ("ok" or "error: ..."); its exit status.
submit() {
    as_odmr "$W/test_dsn" --submit "${4:-$SENDMAIL}" "$1" "$2" "${3:-60}"
}

# ---- (a) as written -------------------------------------------------------------
if "$TOOL" --emit "$W/emit" 2>"$W/emit.err"; then
    ok "written: $(ls "$W/emit"/*.eml | wc -l) notices"
else
    fail "written" "test_dsn --emit: $(cat "$W/emit.err")"
fi
py_checks "written" dsn_fields.py emit "$W/emit"

# ---- (b) through Postfix into the sink Maildir ------------------------------------
SINK_SENDER=dsn-sender@$SINK_DOMAIN
"$TOOL" --emit "$W/sink" "$SINK_SENDER"
chmod -R a+rX "$W/sink"
n=0
for f in "$W/sink"/*.eml; do
    out=$(submit "$SINK_SENDER" "$f" 2>&1) || true
    if [ "$out" = ok ]; then
        n=$((n + 1))
    else
        fail "sink: submit $(basename "$f")" "$out"
    fi
done
total=$(ls "$W/sink"/*.eml | wc -l)
[ "$n" = "$total" ] && ok "sink: $n notices submitted (exit 0)"
maildir_count() {
    [ "$(find "$SINK_MAILDIR/new" "$SINK_MAILDIR/cur" -type f 2>/dev/null | wc -l)" -ge "$total" ]
}
if wait_for 90 maildir_count; then
    ok "sink: $total notices delivered to the Maildir"
else
    fail "sink: delivered" "$(find "$SINK_MAILDIR" -type f 2>/dev/null | wc -l) of $total"
fi
check "sink: maillog shows from=<> for the notices" log_grep "from=<>, size="
py_checks "sink" dsn_fields.py maildir "$W/sink" "$SINK_MAILDIR"

# ---- (b) a notice to a held domain is held for its customer ------------------------
HELD_SENDER=dsn-sender@example.org
"$TOOL" --emit "$W/held" "$HELD_SENDER"
chmod -R a+rX "$W/held"
held_cases="failed-ret-absent 8bit-body-full delayed-ret-full"
for c in $held_cases; do
    out=$(submit "$HELD_SENDER" "$W/held/$c.eml" 2>&1) || true
    [ "$out" = ok ] && ok "held: submit $c" || fail "held: submit $c" "$out"
done
held_count() {
    [ "$(grep -l 'DSN@odmr.isp.test' -r "$QUEUE_DIR/msg" 2>/dev/null | wc -l)" -ge 3 ]
}
if wait_for 90 held_count; then
    ok "held: notices in the hold queue"
else
    fail "held: notices in the hold queue" "see maillog"
fi
check "held: listed for example.org by odmr-queue" \
    bash -c "'$BIN/odmr-queue' -c '$CONFIG_DIR' list example.org | grep -q '$HELD_SENDER'"
# shellcheck disable=SC2086
py_checks "held" dsn_fields.py held "$W/held" "$QUEUE_DIR" $held_cases

# ---- (c) failures: -1 with a clear error ------------------------------------------
NOTICE=$W/emit/failed-ret-absent.eml
chmod -R a+rX "$W/emit"

# The sandbox's own sendmail, pointed at a port where nobody listens: 75.
dead=$(free_port)
sed "s/^PORT = .*/PORT = $dead/" "$SENDMAIL" >"$W/sendmail-dead"
chgrp odmr "$W/sendmail-dead"
chmod 0750 "$W/sendmail-dead"
rc=0
out=$(submit "$SINK_SENDER" "$NOTICE" 60 "$W/sendmail-dead") || rc=$?
case $rc:$out in
    "1:error: $W/sendmail-dead exited 75 (EX_TEMPFAIL): sendmail: "*) ok "exit 75: reported ($out)" ;;
    *) fail "exit 75: reported" "exit $rc: $out" ;;
esac

printf '#!/bin/sh\ncat >/dev/null\necho "sendmail: fatal: queue file write error" >&2\nexit 75\n' \
    >"$W/sendmail-75"
chmod 0755 "$W/sendmail-75"
rc=0
out=$(submit "$SINK_SENDER" "$NOTICE" 60 "$W/sendmail-75 -C /nonexistent") || rc=$?
if [ "$rc" = 1 ] &&
    [ "$out" = "error: $W/sendmail-75 exited 75 (EX_TEMPFAIL): sendmail: fatal: queue file write error" ]; then
    ok "exit 75 (script): reported"
else
    fail "exit 75 (script): reported" "exit $rc: $out"
fi

printf '#!/bin/sh\ncat >/dev/null\nsleep 60\n' >"$W/sendmail-hang"
chmod 0755 "$W/sendmail-hang"
rc=0
start=$(date +%s)
out=$(submit "$SINK_SENDER" "$NOTICE" 2 "$W/sendmail-hang") || rc=$?
took=$(($(date +%s) - start))
if [ "$rc" = 1 ] && [ "$out" = "error: $W/sendmail-hang did not finish within 2 seconds (killed)" ] &&
    [ "$took" -le 6 ]; then
    ok "hang: killed at the deadline (${took}s)"
else
    fail "hang: killed at the deadline" "exit $rc after ${took}s: $out"
fi
if pgrep -f "^sleep 60$" -u odmr >/dev/null; then
    fail "hang: no process left" "$(pgrep -a -f '^sleep 60$' -u odmr)"
else
    ok "hang: no process left"
fi

done_testing
