#!/bin/bash
# t_stats.sh - what an ISP watches, through the sandbox: the per-domain
# figures kept in the index against a recount of the queue files under
# churn (stores, flushes through the real odmrd, delete, expire, bounce,
# stores killed at the fault points; stats_check.py), reindex; the
# collection records of a flush (per domain and SASL user), not touched by
# a refused ATRN (450); stats --stale; stats --prometheus -o FILE checked
# by promtool (Debian's prometheus package); check_odmr's 0, 1, 2 (with
# --now, not by waiting) and 3 on a missing queue.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix
require_bin odmrd odmr-enqueue odmr-queue check_odmr

sandbox_start

Q() {
    "$BIN/odmr-queue" -c "$CONFIG_DIR" "$@"
}
enqueue() {
    printf 'Subject: stats\n\nbody\n' | "$BIN/odmr-enqueue" -c "$CONFIG_DIR" -f s@sender.test -- "$@" >/dev/null
}
CUSTOMER=$LIB_DIR/odmr_customer.py
customer() {
    local user=$1
    shift
    local pw_var=ODMR_PASSWORD_$user
    out=$(/usr/bin/python3 "$CUSTOMER" --host "$ODMR_HOST" --port "$ODMR_PORT" --timeout 30 \
        --user "$user" --password "${!pw_var}" "$@" 2>&1) || true
}
has() { grep -q -- "$2" <<<"$1"; }
json() { /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

# ---- figures of a fresh queue --------------------------------------------------
enqueue a@example.org b@example.org c@example.net
enqueue d@example.org
enqueue e@example.com
j=$(Q stats -d example.org --json)
if [ "$(json 'j["messages"], j["recipients_queued"]' <<<"$j")" = "(2, 3)" ]; then
    ok "stats -d: messages and recipients"
else
    fail "stats -d: messages and recipients" "$j"
fi
j=$(Q stats --json)
if [ "$(json 'j["messages"], j["recipients_queued"], j["domains"]' <<<"$j")" = "(4, 5, 3)" ]; then
    ok "stats: totals over domains"
else
    fail "stats: totals over domains" "$j"
fi

# ---- collections ---------------------------------------------------------------
customer cust1 --domains example.org --rcpt-reply "b@example.org=451 4.3.0 mailbox busy"
if has "$out" '^atrn: 250 '; then ok "collection: ATRN 250"; else fail "collection: ATRN 250" "$out"; fi
sleep 1
j=$(Q stats -d example.org --json)
if [ "$(json 'j["last_collect"] is not None, j["last_session"]' <<<"$j")" = "(True, {'delivered': 1, 'deferred': 1, 'bounced': 0})" ] &&
    has "$(json 'j["last_failure"]' <<<"$j")" "customer's MTA answered 451 4.3.0 mailbox busy"; then
    ok "collection: domain record (time, outcome, failure)"
else
    fail "collection: domain record (time, outcome, failure)" "$j"
fi
LAST=$(json 'j["last_collect"]' <<<"$j")
j=$(Q stats -u cust1 --json)
if [ "$(json 'j["last_collect"], j["last_session"]["delivered"]' <<<"$j")" = "($LAST, 1)" ]; then
    ok "collection: user record"
else
    fail "collection: user record" "$j"
fi
if [ "$(json 'j["messages"], j["recipients_queued"]' <<<"$(Q stats -d example.org --json)")" = "(1, 1)" ]; then
    ok "figures follow a partial delivery"
else
    fail "figures follow a partial delivery" "$(Q stats -d example.org --json)"
fi
sleep 1
customer cust2 --domains example.org
if has "$out" '^atrn: 450 '; then ok "refused ATRN: 450"; else fail "refused ATRN: 450" "$out"; fi
j=$(Q stats -d example.org --json)
if [ "$(json 'j["last_collect"]' <<<"$j")" = "$LAST" ] &&
    [ "$(json 'j["last_collect"]' <<<"$(Q stats -u cust2 --json)")" = None ]; then
    ok "refused ATRN: no collection recorded"
else
    fail "refused ATRN: no collection recorded" "$j $(Q stats -u cust2 --json)"
fi
out=$(Q stats)
if has "$out" '^last collection: .*example.org'; then ok "stats shows the last collection"; else fail "stats shows the last collection" "$out"; fi
# A customer's MTA that refuses the reversed session (EHLO 454): its reply
# is the session's failure.
customer cust1 --domains example.org --ehlo-reply "454 4.7.0 not now"
sleep 1
j=$(Q stats -d example.org --json)
if has "$(json 'j["last_failure"]' <<<"$j")" "customer's MTA answered 454 4.7.0 not now (in reply to EHLO command)"; then
    ok "collection: a refused EHLO is the failure recorded"
else
    fail "collection: a refused EHLO is the failure recorded" "$j $out"
fi
LAST=$(json 'j["last_collect"]' <<<"$j")

# ---- stale ------------------------------------------------------------------------
out=$(Q stats --stale 1)
if has "$out" '^example.net .* never$' && has "$out" '^example.com .* never$' && ! has "$out" '^example.org '; then
    ok "stats --stale 1: never-collected domains with mail"
else
    fail "stats --stale 1: never-collected domains with mail" "$out"
fi
out=$(Q stats --stale 1 --now +2d)
if has "$out" '^example.org .* ago)$'; then ok "stats --stale 1 two days later: example.org too"; else fail "stats --stale 1 two days later" "$out"; fi

# ---- Prometheus ----------------------------------------------------------------------
TEXTFILE=$SANDBOX_DIR/textfile
mkdir -p "$TEXTFILE"
if Q stats --prometheus -o "$TEXTFILE/odmr.prom" && [ -s "$TEXTFILE/odmr.prom" ] &&
    [ "$(stat -c %a "$TEXTFILE/odmr.prom")" = 644 ] && [ -z "$(find "$TEXTFILE" -name '*.tmp')" ]; then
    ok "prometheus: -o writes the file (0644, no temporary left)"
else
    fail "prometheus: -o writes the file" "$(ls -l "$TEXTFILE")"
fi
if command -v promtool >/dev/null 2>&1; then
    if out=$(promtool check metrics <"$TEXTFILE/odmr.prom" 2>&1); then
        ok "promtool check metrics accepts the exposition"
    else
        fail "promtool check metrics accepts the exposition" "$out"
    fi
else
    skip "promtool check metrics" "promtool not installed (Debian package prometheus)"
fi
P=$(cat "$TEXTFILE/odmr.prom")
for line in 'odmr_queue_messages{domain="example.org"} 1' 'odmr_queue_messages 3' \
    'odmr_queue_recipients{domain="example.net"} 1' 'odmr_delivered_messages_total{domain="example.org"} 1' \
    'odmr_deferred_messages_total{domain="example.org"} 1' 'odmr_bounced_messages_total{domain="example.org"} 0' \
    "odmr_last_collect_timestamp_seconds{domain=\"example.org\"} $LAST" 'odmr_queue_damaged_files 0' \
    '# TYPE odmr_delivered_messages_total counter' '# TYPE odmr_queue_oldest_message_age_seconds gauge'; do
    if grep -qxF -- "$line" <<<"$P"; then ok "prometheus: $line"; else fail "prometheus: $line" "$P"; fi
done
if grep -qE '^odmr_queue_oldest_message_age_seconds\{domain="example.com"\} [0-9]+$' <<<"$P" &&
    grep -qE '^odmr_queue_bytes [0-9]+$' <<<"$P"; then
    ok "prometheus: oldest age and bytes"
else
    fail "prometheus: oldest age and bytes" "$P"
fi
out=$(Q stats --prometheus --min-messages 2)
if ! grep -q '{domain=' <<<"$out" && grep -q '^odmr_queue_messages 3$' <<<"$out"; then
    ok "prometheus: --min-messages bounds the per-domain lines"
else
    fail "prometheus: --min-messages bounds the per-domain lines" "$out"
fi

# ---- check_odmr -------------------------------------------------------------------
# Run as the administrator would (root; it reads the queue as its owner). The
# clock is moved with --now, never by waiting.
plugin() {
    rc=0
    out=$("$BIN/check_odmr" --config-dir "$CONFIG_DIR" "$@" 2>&1) || rc=$?
}
plugin_is() { # NAME WANT_RC ERE ARGS...
    local name=$1 want=$2 ere=$3
    shift 3
    plugin "$@"
    if [ "$rc" = "$want" ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -Eq -- "$ere" <<<"$out"; then
        ok "check_odmr: $name"
    else
        fail "check_odmr: $name" "exit $rc: $out"
    fi
}
PERF='\| age=[0-9]+s;3600;86400;0 messages=[0-9]+;;;0 bytes=[0-9]+B;;;0 domains=3;;;0$'
plugin_is "0 while the oldest message is young" 0 "^ODMR OK - oldest message .*$PERF" -w 3600 -c 86400
plugin_is "1 two hours later" 1 "^ODMR WARNING - oldest message 2h.*$PERF" -w 3600 -c 86400 --now +2h
plugin_is "2 two days later" 2 "^ODMR CRITICAL - oldest message 2d.*$PERF" -w 3600 -c 86400 --now +2d
plugin_is "-m messages -d" 1 '^ODMR WARNING - .*\| age=.* messages=1;0;;0 ' -m messages -d example.org -w 0
plugin_is "-m bytes with an inside range" 2 '^ODMR CRITICAL - .* bytes=[0-9]+B;;@1:1000000;0 ' -m bytes -c @1:1000000
plugin_is "-m stale" 2 '^ODMR CRITICAL - 2 domains with mail not collected for 1 day; .* stale_domains=2;;1;0$' -m stale -s 1 -c 1
plugin_is "-m stale, all collected recently enough" 0 '^ODMR OK - 2 domains' -m stale -s 1 -c 2
mkdir -p "$SANDBOX_DIR/noqueue"
printf 'queue_directory = %s/missing-queue\n' "$SANDBOX_DIR" >"$SANDBOX_DIR/noqueue/odmr.cf"
rc=0
out=$("$BIN/check_odmr" --config-dir "$SANDBOX_DIR/noqueue" -w 1 -c 2 2>&1) || rc=$?
if [ "$rc" = 3 ] && [ "$out" = "ODMR UNKNOWN - no queue: $SANDBOX_DIR/missing-queue: No such file or directory" ]; then
    ok "check_odmr: 3 with a clear line on a missing queue"
else
    fail "check_odmr: 3 with a clear line on a missing queue" "exit $rc: $out"
fi
if [ ! -e "$SANDBOX_DIR/missing-queue" ]; then ok "check_odmr: creates nothing"; else fail "check_odmr: creates nothing" "made $SANDBOX_DIR/missing-queue"; fi
plugin_is "3 on a bad range" 3 '^ODMR UNKNOWN - bad warning range' -w 5:3
rc=0
out=$(MAIL_CONFIG=$CONFIG_DIR "$BIN/check_odmr" 2>&1) || rc=$?
if [ "$rc" = 0 ] && grep -q '^ODMR OK - ' <<<"$out"; then ok "check_odmr: \$MAIL_CONFIG"; else fail "check_odmr: \$MAIL_CONFIG" "exit $rc: $out"; fi

# ---- churn ---------------------------------------------------------------------------
export ODMR_PASSWORD_cust1 ODMR_PASSWORD_cust2
py_checks churn stats_check.py churn "${STATS_CHURN_STEPS:-40}" "${STATS_CHURN_SEED:-12}"
# Collections survive the reindex the churn ended with.
if [ "$(json 'j["last_collect"] is not None' <<<"$(Q stats -u cust1 --json)")" = True ]; then
    ok "collections survive reindex"
else
    fail "collections survive reindex" "$(Q stats -u cust1 --json)"
fi

done_testing
