#!/bin/bash
# t_setup.sh - scripts/postfix-odmr-setup against a private Postfix
# configuration directory (postconf -c; nothing is started and /etc/postfix
# is not touched): --dry-run changes nothing; add wires the three services,
# relay_domains, transport_maps and the maps and seeds a customer whose
# password works; a second add changes nothing; remove restores main.cf and
# master.cf byte for byte; after the administrator edits main.cf, remove
# undoes only add's own changes.
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix postconf postmap sha256sum
require_bin odmrd odmr-store odmr-passwd
odmr_reachable_build

SETUP=$REPO_DIR/scripts/postfix-odmr-setup
SANDBOX_DIR=$(mktemp -d "${TMPDIR:-/tmp}/odmr-setup.XXXXXX")
ETC=$SANDBOX_DIR/etc
mkdir -p "$ETC" "$SANDBOX_DIR/spool"
cp /usr/share/postfix/main.cf.dist "$ETC/main.cf"
cp /usr/share/postfix/master.cf.dist "$ETC/master.cf"
# main.cf.dist's empty settings override Postfix's defaults: drop them.
empty=$(postconf -c "$ETC" -n | sed -n 's/^\([a-z0-9_]*\) =$/\1/p')
# shellcheck disable=SC2086
[ -z "$empty" ] || postconf -c "$ETC" -X $empty
# An existing transport map that add must keep.
echo "other.example smtp:[192.0.2.1]" >"$ETC/transport"
postmap -c "$ETC" "hash:$ETC/transport"
postconf -c "$ETC" -e "queue_directory = $SANDBOX_DIR/spool" \
    "data_directory = $SANDBOX_DIR/data" "transport_maps = hash:$ETC/transport"
cp -p "$ETC/main.cf" "$SANDBOX_DIR/main.cf.orig"
cp -p "$ETC/master.cf" "$SANDBOX_DIR/master.cf.orig"

setup() {
    ODMR_LIBEXEC=$BIN ODMR_PASSWD=$BIN/odmr-passwd "$SETUP" -c "$ETC" "$@"
}

same_as_orig() {
    cmp -s "$ETC/main.cf" "$SANDBOX_DIR/main.cf.orig" &&
        cmp -s "$ETC/master.cf" "$SANDBOX_DIR/master.cf.orig"
}

# --dry-run: prints postconf commands, changes nothing.
if out=$(setup --dry-run add --domains example.org --user cust1 2>&1) &&
    grep -q "postconf -c $ETC -M odmr/unix=" <<<"$out" && same_as_orig &&
    [ ! -e "$ETC/postfix-odmr-setup" ] && [ ! -e "$ETC/odmr_domains" ]; then
    ok "dry run changes nothing"
else
    fail "dry run changes nothing" "$out"
fi

# add with a first customer.
if out=$(setup add --domains example.org,example.net --user cust1 2>&1); then
    ok "add succeeds"
else
    fail "add succeeds" "$out"
fi
svc=$(postconf -c "$ETC" -M odmr/unix odmr-store/unix 366/inet | tr -s ' ')
if grep -q '^odmr unix - - n - - lmtp' <<<"$svc" &&
    grep -q "^odmr-store unix - n n - - spawn user=odmr argv=$BIN/odmr-store\$" <<<"$svc" &&
    grep -q "^366 inet n n n - 50 spawn user=odmr argv=$BIN/odmrd\$" <<<"$svc" &&
    [ "$(postconf -c "$ETC" -P odmr/unix/lmtp_send_xforward_command)" = \
        "odmr/unix/lmtp_send_xforward_command = yes" ]; then
    ok "master.cf has the three services"
else
    fail "master.cf has the three services" "$svc"
fi
# shellcheck disable=SC2016 # literal $config_directory
if [ "$(postconf -c "$ETC" -h relay_domains)" = 'hash:$config_directory/odmr_domains' ] &&
    [ "$(postconf -c "$ETC" -h transport_maps)" = \
        "hash:$ETC/transport, hash:\$config_directory/odmr_transport" ]; then
    ok "main.cf: relay_domains and transport_maps extended"
else
    fail "main.cf: relay_domains and transport_maps extended" \
        "$(postconf -c "$ETC" relay_domains transport_maps)"
fi
if [ "$(postmap -c "$ETC" -q example.net "hash:$ETC/odmr_domains")" = cust1 ] &&
    [ "$(postmap -c "$ETC" -q example.org "hash:$ETC/odmr_transport")" = \
        "odmr:unix:private/odmr-store" ] &&
    [ "$(postconf -c "$ETC" -x -h transport_maps | tr -d ' ')" = \
        "hash:$ETC/transport,hash:$ETC/odmr_transport" ] &&
    [ "$(postmap -c "$ETC" -q other.example "hash:$ETC/transport")" = "smtp:[192.0.2.1]" ]; then
    ok "maps route and own the customer's domains"
else
    fail "maps route and own the customer's domains" "postmap -q results differ"
fi
pw=$(sed -n 's/.*password of cust1 (shown once.*): //p' <<<"$out")
entry=$(postmap -c "$ETC" -q cust1 "hash:$ETC/odmr_passwd" || true)
if [ -n "$pw" ] && [ "${entry#\{CRAM-MD5\}}" != "$entry" ] &&
    "$BIN/odmr-passwd" -t "$entry" -p "$pw" &&
    [ "$(stat -c '%U:%G %a' "$ETC/odmr_passwd" "$ETC/odmr_passwd.db" | sort -u)" = "root:odmr 640" ]; then
    ok "printed password matches the {CRAM-MD5} entry; odmr_passwd root:odmr 0640"
else
    fail "printed password matches the {CRAM-MD5} entry" "pw='$pw' entry='$entry'"
fi
if grep -q 'postfix check: OK' <<<"$out" && grep -q 'postfix reload' <<<"$out"; then
    ok "add runs postfix check and says what comes next"
else
    fail "add runs postfix check and says what comes next" "$out"
fi

# A second add changes nothing.
sum=$(cat "$ETC/main.cf" "$ETC/master.cf" "$ETC/odmr_domains" "$ETC/odmr_passwd" | sha256sum)
if out=$(setup add --domains example.org --user cust1 2>&1) &&
    grep -q 'nothing to change' <<<"$out" &&
    [ "$(cat "$ETC/main.cf" "$ETC/master.cf" "$ETC/odmr_domains" "$ETC/odmr_passwd" | sha256sum)" = "$sum" ]; then
    ok "add again changes nothing"
else
    fail "add again changes nothing" "$out"
fi

# remove: byte for byte; the maps stay.
if out=$(setup remove 2>&1) && same_as_orig && [ ! -e "$ETC/postfix-odmr-setup" ] &&
    [ -s "$ETC/odmr_domains" ]; then
    ok "remove restores main.cf and master.cf byte for byte, keeps the maps"
else
    fail "remove restores main.cf and master.cf byte for byte" "$out"
fi

# add, then the administrator changes main.cf; remove undoes only add's part.
setup add >/dev/null 2>&1 || true
postconf -c "$ETC" -e "smtpd_banner = \$myhostname ESMTP edited"
if out=$(setup remove 2>&1) && grep -q 'changed since add' <<<"$out" &&
    [ -z "$(postconf -c "$ETC" -M odmr/unix odmr-store/unix 366/inet 2>/dev/null)" ] &&
    [ "$(postconf -c "$ETC" -n transport_maps)" = "transport_maps = hash:$ETC/transport" ] &&
    [ -z "$(postconf -c "$ETC" -n relay_domains)" ] &&
    cmp -s "$ETC/master.cf" "$SANDBOX_DIR/master.cf.orig" &&
    [ "$(postconf -c "$ETC" -h smtpd_banner)" = "\$myhostname ESMTP edited" ]; then
    ok "remove after an edit undoes only add's changes"
else
    fail "remove after an edit undoes only add's changes" "$out"
fi

# Usage errors.
if ! setup add --domains example.org >/dev/null 2>&1; then
    ok "--domains without --user refused"
else
    fail "--domains without --user refused" "accepted"
fi

done_testing
