"""Names of ONNX graph nodes by op type, read with the standard library only.

`export/trtexec_build.sh` uses it to pin LayerNormalization/Softmax layers to fp32 through
trtexec's --layerPrecisions on machines without the `onnx` package. It walks just enough of
the protobuf wire format: ModelProto.graph (field 7) -> GraphProto.node (1) ->
NodeProto.name (3) / op_type (4).
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, memoryview | int]]:
    """(field number, bytes of a length-delimited field or an int) for one message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated field")
            yield number, buf[pos:pos + size]
            pos += size
        elif wire in (_I64, _I32):
            pos += 8 if wire == _I64 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def node_names(path: str | Path, op_types: tuple[str, ...]) -> list[str]:
    """Names of the top-level graph's nodes whose op_type is in `op_types`, in graph order."""
    data = memoryview(Path(path).read_bytes())
    names: list[str] = []
    try:
        for number, graph in _fields(data):
            if number != 7 or isinstance(graph, int):
                continue
            for gnum, node in _fields(graph):
                if gnum != 1 or isinstance(node, int):
                    continue
                fields = {n: bytes(v).decode() for n, v in _fields(node) if n in (3, 4) and not isinstance(v, int)}
                if fields.get(4) in op_types and fields.get(3):
                    names.append(fields[3])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable ONNX file ({exc})") from exc
    return names


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print("usage: onnx_scan.py MODEL.onnx OP_TYPE [OP_TYPE...]", file=sys.stderr)
        sys.exit(2)
    try:
        print("\n".join(node_names(sys.argv[1], tuple(sys.argv[2:]))))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
