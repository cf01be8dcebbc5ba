#!/usr/bin/python3
"""An independent reader of TFRecord / TensorBoard event files, for tests only.

Written without tensorflow, tensorboard or google.protobuf (none is installed for
/usr/bin/python3), so it shares no code with pmol's writer:
  * TFRecord framing: [u64 LE length][u32 LE masked crc32c(length bytes)][data]
    [u32 LE masked crc32c(data)], masked = ((c >> 15) | (c << 17)) + 0xA282EAD8 mod 2^32,
    CRC-32C computed here from its reflected polynomial 0x82F63B78 by a table.
  * protobuf wire format decoded by hand (varint, 64-bit, length-delimited, 32-bit) for
    TensorFlow's Event {1: double wall_time, 2: int64 step, 3: string file_version,
    5: Summary summary}, Summary {1: repeated Value value},
    Value {1: string tag, 2: float simple_value}; other fields are skipped.

Usage:
  read_tfevents.py --records FILE   -> JSON list of {"length": n, "hex": "..."}
  read_tfevents.py FILE             -> JSON list of events: {"wall_time", "step",
                                       "file_version"} or {"wall_time", "step",
                                       "summary": [{"tag", "simple_value"}]}
Non-finite floats are printed as the strings "nan", "inf", "-inf" (JSON has none).
Any framing, CRC or decoding problem: a message on stderr naming the record, exit 1.
"""
import json
import math
import struct
import sys

_POLY = 0x82F63B78
_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# The reader checks its own CRC before trusting it (RFC 3720 B.4 / the classic vector).
assert crc32c(b"123456789") == 0xE3069283
assert crc32c(bytes(32)) == 0x8A9136AA


class ReadError(Exception):
    pass


def read_records(blob):
    records = []
    pos = 0
    while pos < len(blob):
        index = len(records)
        if len(blob) - pos < 12:
            raise ReadError("record %d at offset %d: truncated header" % (index, pos))
        length_bytes = blob[pos:pos + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack("<I", blob[pos + 8:pos + 12])
        if masked_crc32c(length_bytes) != length_crc:
            raise ReadError("record %d at offset %d: length CRC mismatch" % (index, pos))
        start = pos + 12
        if len(blob) - start < length + 4:
            raise ReadError("record %d at offset %d: truncated data" % (index, pos))
        data = blob[start:start + length]
        (data_crc,) = struct.unpack("<I", blob[start + length:start + length + 4])
        if masked_crc32c(data) != data_crc:
            raise ReadError("record %d at offset %d: data CRC mismatch" % (index, pos))
        records.append(data)
        pos = start + length + 4
    return records


def read_varint(buf, pos):
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ReadError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ReadError("varint too long")


def fields(buf):
    """Yields (field_number, wire_type, value): int for varint, bytes otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ReadError("field %d: unsupported wire type %d" % (number, wire))
        if pos > len(buf):
            raise ReadError("field %d: runs past the end of its message" % number)
        yield number, wire, value


def expect(number, wire, want):
    if wire != want:
        raise ReadError("field %d: wire type %d, expected %d" % (number, wire, want))


def json_float(x):
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def decode_value(buf):
    value = {}
    for number, wire, v in fields(buf):
        if number == 1:
            expect(number, wire, 2)
            value["tag"] = v.decode("utf-8")
        elif number == 2:
            expect(number, wire, 5)
            value["simple_value"] = json_float(struct.unpack("<f", v)[0])
    return value


def decode_event(buf):
    event = {}
    for number, wire, v in fields(buf):
        if number == 1:
            expect(number, wire, 1)
            event["wall_time"] = json_float(struct.unpack("<d", v)[0])
        elif number == 2:
            expect(number, wire, 0)
            event["step"] = v - (1 << 64) if v >= (1 << 63) else v
        elif number == 3:
            expect(number, wire, 2)
            event["file_version"] = v.decode("utf-8")
        elif number == 5:
            expect(number, wire, 2)
            summary = event.setdefault("summary", [])
            for n2, w2, v2 in fields(v):
                if n2 == 1:
                    expect(n2, w2, 2)
                    summary.append(decode_value(v2))
    return event


def main(argv):
    args = argv[1:]
    raw = False
    if args and args[0] == "--records":
        raw = True
        args = args[1:]
    if len(args) != 1:
        sys.stderr.write("usage: read_tfevents.py [--records] FILE\n")
        return 2
    path = args[0]
    with open(path, "rb") as f:
        blob = f.read()
    try:
        records = read_records(blob)
        if raw:
            out = [{"length": len(r), "hex": r.hex()} for r in records]
        else:
            out = []
            for i, r in enumerate(records):
                try:
                    out.append(decode_event(r))
                except ReadError as e:
                    raise ReadError("record %d: %s" % (i, e))
    except ReadError as e:
        sys.stderr.write("%s: %s\n" % (path, e))
        return 1
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
