"""Tally's shared runtime: configuration, logging, errors, gRPC server bootstrap, database."""

import os

# grpcio's C core installs fork handlers by default; in a child created by subprocess (fork,
# then exec) they restart its poller, which can crash the child before exec (seen here as
# pg_ctl "dying" with SIGSEGV and grpc's "Check failed: next_worker->state == KICKED" when a
# process holding channels started a subprocess; grpc/grpc#13873, #43055). Tally's processes
# only ever fork to exec, the case grpc's fork_support.md says to disable them for. Set before
# any channel or server exists, so grpc's core reads it at init; an explicit setting wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
