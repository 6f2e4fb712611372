#!/bin/bash
# t_queue_storm.sh - 200 concurrent writers into the hold queue (LMTP
# sessions through the sandbox's spawn(8) door and odmr-enqueue runs,
# mixed) while random writers and odmrd sessions are killed with SIGKILL:
# no acknowledged message is lost or doubled, no writer that was not killed
# fails (a crashed process costs the others a pause, never an environment
# error), customer sessions end with 250, 451 or 453 in bounded time.
# The checks are in storm_check.py; STORM_WRITERS, STORM_MSGS,
# STORM_SESSIONS and STORM_KILL_EVERY change the load.
#
# Not part of make check (yet): run it with
#     tests/integration/run tests/stress/t_queue_storm.sh
# It passed 5 of 5 runs on a quiet machine, but on a loaded one (it failed
# once while make check ran beside it) a writer killed inside Berkeley DB's
# log flush can leave another process waiting on that mutex for ever: two
# writers ran over 60 s and 7 of 600 messages were never acknowledged
# (none lost). Issue 10 stays open for it (a watchdog, or another commit
# path); until then this test would make CI fail by chance.
set -eu
. "$(dirname "$0")/../integration/lib.sh"
require_root
require_cmd setpriv
require_bin odmr-store odmr-enqueue odmrd odmr-queue
sandbox_start
# The spawn(8) door takes up to default_process_limit (100) sessions at
# once; the rest wait in the socket's backlog, as lmtp(8) would.
export POSTFIX_QUEUE_DIR ODMR_PASSWORD_cust2
py_checks storm storm_check.py
done_testing
