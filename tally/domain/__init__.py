"""Pure domain code shared by several services (no grpc, no protobuf, no SQL)."""
