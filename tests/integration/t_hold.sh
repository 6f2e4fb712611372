#!/bin/bash
# Mail through the sandbox's real Postfix into the hold queue: two held
# domains, multi-recipient and multi-domain messages, DSN parameters, 8-bit
# and SMTPUTF8 content, byte-for-byte content, smtp-source load, and what
# odmr-queue reports (checks in hold_check.py).
set -eu
. "$(dirname "$0")/lib.sh"
require_root
require_cmd swaks smtp-source postqueue
require_bin odmr-store odmr-queue
sandbox_start
py_checks hold hold_check.py
done_testing
