#!/bin/bash
# t_pflogsumm.sh - pflogsumm (Debian's package) on a mail log with held mail,
# a flush and a bounce counts what README.postfix says it counts.
#
# data/pflogsumm.log is the log of tests/package/install-test (the system
# Postfix's maillog and the odmr programs' log, merged by time; host names
# replaced): two messages received and held (lmtp status=sent into
# private/odmr-store, odmr-store status=held), one collected over ATRN
# (odmrd status=sent). Two odmrd lines in the same format (odmrd_flush.c)
# add a 5xx and a 4xx from the customer on the reversed session.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
require_cmd pflogsumm

LOG=$LIB_DIR/data/pflogsumm.log
report=$(pflogsumm "$LOG" 2>&1)

total() { # total LABEL: the number in front of LABEL in Grand Totals
    sed -n "/^Grand Totals/,/^Per-/s/^ *\([0-9][0-9]*\)   $1\b.*/\1/p" <<<"$report" | head -1
}

check_total() {
    local label=$1 want=$2 got
    got=$(total "$label")
    if [ "$got" = "$want" ]; then
        ok "pflogsumm: $label = $want"
    else
        fail "pflogsumm: $label = $want" "got '$got'"
    fi
}

# Received once each, whether held or collected.
check_total received 2
# Every status=sent: 2 into the hold queue + 1 collected over ATRN.
check_total delivered 3
# The 5xx on the reversed session; the 4xx (kept for the next ATRN).
check_total bounced 1
check_total deferred 1
# Postfix's HOLD action, not the hold queue.
check_total held 0

row=$(sed -n '/^Host\/Domain Summary: Message Delivery/,/^$/p' <<<"$report" |
    awk '$NF == "example.org" { print $1, $3 }')
if [ "$row" = "3 1" ]; then
    ok "pflogsumm: example.org 3 sent, 1 deferral"
else
    fail "pflogsumm: example.org 3 sent, 1 deferral" "row '$row'"
fi
if sed -n '/^message bounce detail/,/^$/p' <<<"$report" | grep -q 'User unknown'; then
    ok "pflogsumm: odmrd's bounce in the bounce detail"
else
    fail "pflogsumm: odmrd's bounce in the bounce detail" "missing"
fi
if [ "$(grep -c 'private/odmr-store.*status=sent' "$LOG")" = 2 ]; then
    ok "README's grep for mail handed to the hold queue counts 2"
else
    fail "README's grep for mail handed to the hold queue counts 2" "$(grep -c 'private/odmr-store.*status=sent' "$LOG")"
fi
done_testing
