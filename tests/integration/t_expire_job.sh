#!/bin/bash
# t_expire_job.sh - scripts/odmr-expire, what the expire timer and cron run:
# with an odmr-queue without an expire command it logs one "skipped" line and
# exits 0; with an odmr-queue whose usage lists expire it runs
# "odmr-queue expire ARGS" and returns its status. The timers and the cron
# file call it, and reindex, by their installed paths.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
require_bin odmr-queue

JOB=$REPO_DIR/scripts/odmr-expire
SANDBOX_DIR=$(mktemp -d "${TMPDIR:-/tmp}/odmr-expire.XXXXXX")
T=$SANDBOX_DIR
printf '#!/bin/sh\necho "logger $*" >>"%s/log"\n' "$T" >"$T/logger"
chmod +x "$T/logger"

# An older odmr-queue: usage without expire, exit 64.
cat >"$T/odmr-queue-old" <<'EOF1'
#!/bin/sh
echo "usage: odmr-queue command" >&2
echo "  list | summary | reindex" >&2
exit 64
EOF1
chmod +x "$T/odmr-queue-old"
rc=0
ODMR_QUEUE=$T/odmr-queue-old ODMR_LOGGER=$T/logger "$JOB" >"$T/out" 2>&1 || rc=$?
if [ "$rc" = 0 ] && [ ! -s "$T/out" ] &&
    grep -q '^logger -p mail.info -t postfix/odmr-expire -- skipped: .* has no expire command' "$T/log"; then
    ok "no expire command: one log line, no output, exit 0"
else
    fail "no expire command: one log line, no output, exit 0" "rc=$rc out=$(cat "$T/out") log=$(cat "$T/log" 2>/dev/null)"
fi

# An odmr-queue that knows expire.
cat >"$T/odmr-queue" <<EOF2
#!/bin/sh
if [ \$# = 0 ]; then
    echo "usage: odmr-queue command" >&2
    echo "  list | summary | expire [-n] | reindex" >&2
    exit 64
fi
echo "ran: \$*" >>"$T/ran"
exit 75
EOF2
chmod +x "$T/odmr-queue"
rc=0
: >"$T/log"
ODMR_QUEUE=$T/odmr-queue ODMR_LOGGER=$T/logger "$JOB" -n >/dev/null 2>&1 || rc=$?
if [ "$rc" = 75 ] && [ "$(cat "$T/ran")" = "ran: expire -n" ] && [ ! -s "$T/log" ]; then
    ok "with expire: runs odmr-queue expire, passes its status"
else
    fail "with expire: runs odmr-queue expire, passes its status" "rc=$rc ran=$(cat "$T/ran" 2>/dev/null)"
fi

# This odmr-queue's usage lists expire, so the job runs it.
if "$BIN/odmr-queue" 2>&1 | grep -qw expire; then
    ok "odmr-queue's usage lists expire"
else
    fail "odmr-queue's usage lists expire" "$("$BIN/odmr-queue" 2>&1)"
fi

# The units and the cron file name the installed paths.
SD=$REPO_DIR/systemd
if grep -qx 'ExecStart=/usr/lib/postfix-odmr/odmr-expire' "$SD/postfix-odmr-expire.service" &&
    grep -qx 'ExecStart=/usr/sbin/odmr-queue reindex' "$SD/postfix-odmr-reindex.service" &&
    grep -qx 'User=odmr' "$SD/postfix-odmr-expire.service" &&
    grep -q '^\*/5 \* \* \* \*  *odmr .*/usr/lib/postfix-odmr/odmr-expire$' "$SD/postfix-odmr.cron" &&
    grep -q '^17 4 \* \* \*  *odmr .*/usr/sbin/odmr-queue reindex' "$SD/postfix-odmr.cron"; then
    ok "timers and cron run the installed odmr-expire and reindex as odmr"
else
    fail "timers and cron run the installed odmr-expire and reindex as odmr" "see systemd/"
fi
if command -v systemd-analyze >/dev/null 2>&1; then
    if out=$(systemd-analyze verify "$SD"/postfix-odmr-*.timer "$SD"/postfix-odmr-*.service 2>&1 |
        grep -v "Command 'man \|Cannot add dependency job\|No such file or directory\|Failed to\|/usr/lib/postfix-odmr\|/usr/sbin/odmr-queue"); [ -z "$out" ]; then
        ok "systemd-analyze verify"
    else
        fail "systemd-analyze verify" "$out"
    fi
fi
done_testing
