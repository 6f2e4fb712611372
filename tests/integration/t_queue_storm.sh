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
# A writer killed inside Berkeley DB while holding one of its mutexes (the
# log flush's) used to leave the processes waiting for that mutex hung for
# ever; the queue library's watchdog (WATCHDOG in src/lib/queue.h) now
# frees them after 10 s and the environment is recovered. This file was in
# tests/stress until that was fixed. It takes 30 to 90 s.
set -eu
. "$(dirname "$0")/lib.sh"
require_root
require_cmd setpriv
require_bin odmr-store odmr-enqueue odmrd odmr-queue
sandbox_start
# The spawn(8) door takes up to default_process_limit (100) sessions at
# once; the rest wait in the socket's backlog (100 more). A connect beyond
# that gets EAGAIN, which lmtp(8) takes as a deferral: the writers then try
# again after a pause, and the count is printed.
export POSTFIX_QUEUE_DIR ODMR_PASSWORD_cust2
py_checks storm storm_check.py
done_testing
