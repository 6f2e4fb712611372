#!/bin/bash
# odmr-store's LMTP conversation and what it leaves in the hold queue:
# envelope and content byte for byte, pipelining, bad input (long lines,
# NUL, bare LF, bad parameters, over-size messages, a drop mid-DATA).
# The checks themselves are in store_protocol.py.
set -eu
. "$(dirname "$0")/lib.sh"
require_root
require_cmd setpriv postmap
require_bin odmr-store
odmr_reachable_build

out=$(/usr/bin/python3 "$LIB_DIR/store_protocol.py" "$BUILD_DIR" 2>&1) || true
while IFS= read -r line; do
    case $line in
        "ok "*) ok "store: ${line#ok }" ;;
        "fail "*)
            name=${line#fail }
            fail "store: ${name%%:*}" "${name#*: }"
            ;;
        *) echo "$line" ;;
    esac
done <<<"$out"
[ -n "$out" ] || fail "store-protocol" "store_protocol.py printed nothing"
done_testing
