#!/bin/bash
# t_package.sh - the Debian package, built but not installed (safe beside
# other tests: everything happens in a temp copy of the tree):
# dpkg-buildpackage -us -uc -b (nocheck: the unit tests run elsewhere)
# builds postfix-odmr_*.deb; lintian reports no error; the .deb holds the
# programs, man pages, conffiles, docs and timers where README.postfix says;
# preinst's queue format is the one src/lib/queue.c writes. The full install
# on the system Postfix is tests/package/install-test (run by .ci/run).
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
require_cmd dpkg-buildpackage dh lintian

SANDBOX_DIR=$(mktemp -d "${TMPDIR:-/tmp}/odmr-package.XXXXXX")
W=$SANDBOX_DIR
mkdir "$W/src"
(cd "$REPO_DIR" && tar --exclude=./build --exclude=./build-asan --exclude=./build-clang \
    --exclude=./build-fuzz --exclude=./.git -cf - .) | tar -C "$W/src" -xf -
if (cd "$W/src" && DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -us -uc -b) >"$W/build.log" 2>&1 &&
    deb=$(ls "$W"/postfix-odmr_*_*.deb 2>/dev/null) && [ -n "$deb" ]; then
    ok "dpkg-buildpackage -us -uc -b builds postfix-odmr_*.deb"
else
    fail "dpkg-buildpackage -us -uc -b" "$(tail -15 "$W/build.log")"
    done_testing
fi

lint=$(lintian --pedantic "$W"/postfix-odmr_*.changes 2>&1 | grep -v '^running with root' || true)
if ! grep -q '^E: ' <<<"$lint"; then
    ok "lintian: no errors"
else
    fail "lintian: no errors" "$(grep '^E: ' <<<"$lint")"
fi
if ! grep -q '^W: ' <<<"$lint"; then
    ok "lintian: no warnings"
else
    fail "lintian: no warnings" "$(grep '^W: ' <<<"$lint")"
fi

contents=$(dpkg-deb -c "$deb" | awk '{ print $1, $6 }')
want=(
    "-rwxr-xr-x ./usr/lib/postfix-odmr/odmrd"
    "-rwxr-xr-x ./usr/lib/postfix-odmr/odmr-store"
    "-rwxr-xr-x ./usr/lib/postfix-odmr/odmr-enqueue"
    "-rwxr-xr-x ./usr/lib/postfix-odmr/odmr-expire"
    "-rwxr-xr-x ./usr/sbin/odmr-queue"
    "-rwxr-xr-x ./usr/sbin/odmr-passwd"
    "-rwxr-xr-x ./usr/sbin/postfix-odmr-setup"
    "-rw-r--r-- ./etc/postfix/odmr.cf"
    "-rw-r--r-- ./etc/cron.d/postfix-odmr"
    "-rw-r--r-- ./lib/systemd/system/postfix-odmr-expire.timer"
    "-rw-r--r-- ./lib/systemd/system/postfix-odmr-reindex.timer"
    "-rw-r--r-- ./lib/systemd/system/postfix-odmr-prometheus.timer"
    "-rw-r--r-- ./lib/systemd/system/postfix-odmr-prometheus.service"
    "-rwxr-xr-x ./usr/lib/nagios/plugins/check_odmr"
    "-rw-r--r-- ./usr/share/man/man8/check_odmr.8.gz"
    "-rw-r--r-- ./usr/share/doc/postfix-odmr/README.postfix.gz"
    "-rw-r--r-- ./usr/share/doc/postfix-odmr/README.Debian"
    "-rw-r--r-- ./usr/share/man/man5/odmr.cf.5.gz"
    "-rw-r--r-- ./usr/share/man/man8/odmrd.8.gz"
    "-rw-r--r-- ./usr/share/man/man8/postfix-odmr-setup.8.gz"
)
missing=()
for w in "${want[@]}"; do
    grep -qxF -- "$w" <<<"$contents" || missing+=("$w")
done
if [ ${#missing[@]} = 0 ]; then
    ok "the .deb holds programs, conffiles, timers, docs and man pages"
else
    fail "the .deb holds programs, conffiles, timers, docs and man pages" "missing: ${missing[*]}"
fi
if ! grep -q '/var/spool/postfix-odmr\|/etc/postfix/main.cf\|/etc/postfix/master.cf' <<<"$contents"; then
    ok "the .deb ships neither main.cf, master.cf nor the spool"
else
    fail "the .deb ships neither main.cf, master.cf nor the spool" "found"
fi
mkdir "$W/ctl"
dpkg-deb -e "$deb" "$W/ctl"
if grep -qx '/etc/postfix/odmr.cf' "$W/ctl/conffiles" && grep -qx '/etc/cron.d/postfix-odmr' "$W/ctl/conffiles"; then
    ok "odmr.cf and the cron file are conffiles"
else
    fail "odmr.cf and the cron file are conffiles" "$(cat "$W/ctl/conffiles" 2>&1)"
fi
code=$(sed -n 's/^#define QUEUE_FORMAT "\(.*\)"$/\1/p' "$REPO_DIR/src/lib/queue.c")
pre=$(sed -n 's/^FORMAT="\(.*\)"$/\1/p' "$W/ctl/preinst")
if [ -n "$code" ] && [ "$code" = "$pre" ]; then
    ok "preinst checks the queue format queue.c writes ($code)"
else
    fail "preinst checks the queue format queue.c writes" "queue.c '$code' preinst '$pre'"
fi
done_testing
