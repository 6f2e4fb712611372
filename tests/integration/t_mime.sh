#!/bin/bash
# The 8-bit to 7-bit MIME downgrade (src/lib/mime.c) checked by Python's
# email package: 8-bit text, multipart, nested message/rfc822, long lines,
# digest, and messages that cannot be converted. No sandbox: the library
# is driven through the hidden "convert" mode of build/tests/test_mime.
# The checks themselves are in mime_check.py.
set -eu
. "$(dirname "$0")/lib.sh"
[ -x "$BUILD_DIR/tests/test_mime" ] || skip_all "$BUILD_DIR/tests/test_mime not built"

out=$(/usr/bin/python3 "$LIB_DIR/mime_check.py" "$BUILD_DIR" 2>&1) || true
while IFS= read -r line; do
    case $line in
        "ok "*) ok "mime: ${line#ok }" ;;
        "fail "*)
            name=${line#fail }
            fail "mime: ${name%%:*}" "${name#*: }"
            ;;
        *) echo "$line" ;;
    esac
done <<<"$out"
[ -n "$out" ] || fail "mime" "mime_check.py printed nothing"
done_testing
