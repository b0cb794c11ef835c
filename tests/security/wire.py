"""Hand-built protobuf wire bytes, for requests no generated class would produce."""

from __future__ import annotations


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 are sent as ten-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    """A varint field (int32/int64/bool/enum); appended to a message it overrides the field."""
    return varint(number << 3) + varint(value)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string/bytes/sub-message), with ``payload`` taken as is."""
    return varint((number << 3) | 2) + varint(len(payload)) + payload


def timestamp(seconds: int, nanos: int = 0) -> bytes:
    """google.protobuf.Timestamp bytes, including values outside its valid range."""
    return field_varint(1, seconds) + (field_varint(2, nanos) if nanos else b"")


def nested_struct(depth: int) -> bytes:
    """A google.protobuf.Struct nested ``depth`` levels deep: {"a": {"a": ...}}."""
    value, struct = b"", b""
    for _ in range(depth):
        struct = field_bytes(1, field_bytes(1, b"a") + field_bytes(2, value))  # Struct.fields entry
        value = field_bytes(5, struct)  # Value.struct_value
    return struct
