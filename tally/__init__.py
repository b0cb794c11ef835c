"""Tally's shared runtime: configuration, logging, errors, gRPC server bootstrap, database."""
