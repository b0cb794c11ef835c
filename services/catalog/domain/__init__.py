"""Pure catalog domain: entities, inputs and their validation. No grpc, protobuf or SQL."""
