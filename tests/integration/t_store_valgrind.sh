#!/bin/bash
# The store protocol tests again with every odmr-store under valgrind
# (memcheck): no invalid access, no use of uninitialised memory, no definite
# leak, on good and bad input alike.
set -eu
. "$(dirname "$0")/lib.sh"
require_root
require_cmd setpriv postmap valgrind
require_bin odmr-store
odmr_reachable_build

VALGRIND_LOG_DIR=$(mktemp -d /tmp/odmr-valgrind.XXXXXX)
chmod 0777 "$VALGRIND_LOG_DIR"
export VALGRIND_LOG_DIR
py_checks "store under valgrind" store_protocol.py "$BUILD_DIR"
runs=$(find "$VALGRIND_LOG_DIR" -name 'vg.*' | wc -l)
dirty=$(find "$VALGRIND_LOG_DIR" -name 'vg.*' -size +0 | wc -l)
if [ "$runs" -gt 0 ] && [ "$dirty" = 0 ]; then
    ok "valgrind: $runs odmr-store runs, no report"
else
    fail "valgrind" "$runs runs, $dirty with reports: $(find "$VALGRIND_LOG_DIR" -name 'vg.*' -size +0 -exec head -n 20 {} \;)"
fi
rm -rf "$VALGRIND_LOG_DIR"
done_testing
