"""Every exit code a workbench process ends with, in one table: the CLI, the app, the queue and
the launcher all read these, so a parent knows what a child's code means."""

OK = 0
FAILED = 1  # the run or the command failed: a bug, a NaN loss, an export that does not verify
BAD_INPUT = 2  # a setting, file or folder the user can fix; nothing was written
STOPPED = 130  # stopped on request (Ctrl-C, x in the app or watch, the run's control file): 128 + SIGINT
TERMINATED = 143  # stopped by SIGTERM: 128 + SIGTERM, what `timeout`, systemd and batch schedulers expect

STOPPED_CODES = (STOPPED, TERMINATED)
