"""Kubernetes' protobuf request bodies, decoded to the JSON objects they stand for (pure).

client-go's typed clients (helm's release storage among them) send ``Secret``, ``ConfigMap`` and
``DeleteOptions`` as ``application/vnd.kubernetes.protobuf``, while accepting JSON answers. Only
those kinds are decoded here, from their field numbers in k8s.io/api (generated.proto); anything
else is :class:`UnsupportedProtobuf` (the server answers 415).
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

MAGIC = b"k8s\x00"


class UnsupportedProtobuf(ValueError):
    pass


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def fields(data: bytes) -> list[tuple[int, Any]]:
    """(field number, value) pairs: ints for varints, bytes for length-delimited and fixed fields."""
    out, at = [], 0
    while at < len(data):
        tag, at = _varint(data, at)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            size, at = _varint(data, at)
            value, at = data[at:at + size], at + size
        elif wire == 1:
            value, at = data[at:at + 8], at + 8
        elif wire == 5:
            value, at = data[at:at + 4], at + 4
        else:
            raise UnsupportedProtobuf(f"wire type {wire}")
        out.append((number, value))
    return out


def _map(entries: list[bytes], binary: bool = False) -> dict[str, Any]:
    result = {}
    for entry in entries:
        kv = dict(fields(entry))
        value = kv.get(2, b"")
        result[kv.get(1, b"").decode()] = base64.b64encode(value).decode() if binary else value.decode()
    return result


def _time(data: bytes) -> str:
    seconds = dict(fields(data)).get(1, 0)
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _object_meta(data: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    strings = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    labels, annotations, finalizers, owners = [], [], [], []
    for number, value in fields(data):
        if number in strings and value:
            meta[strings[number]] = value.decode()
        elif number == 7:
            meta["generation"] = value
        elif number == 8:
            meta["creationTimestamp"] = _time(value)
        elif number == 11:
            labels.append(value)
        elif number == 12:
            annotations.append(value)
        elif number == 13:
            owners.append(value)
        elif number == 14:
            finalizers.append(value.decode())
    if labels:
        meta["labels"] = _map(labels)
    if annotations:
        meta["annotations"] = _map(annotations)
    if finalizers:
        meta["finalizers"] = finalizers
    if owners:
        names = {1: "kind", 3: "name", 4: "uid", 5: "apiVersion"}
        meta["ownerReferences"] = [
            {names[n]: v.decode() for n, v in fields(o) if n in names} for o in owners
        ]
    return meta


def _decode_data_object(data: bytes, fields_by_number: dict[int, str], binary_maps: frozenset[str]) -> dict[str, Any]:
    """A Secret or ConfigMap: its metadata (field 1), its ``map<string, ...>`` fields (repeated
    entries, gathered), ``type`` and ``immutable``; field numbers as the kind's .proto gives them."""
    obj: dict[str, Any] = {}
    entries: dict[str, list[bytes]] = {}
    for number, value in fields(data):
        name = fields_by_number.get(number)
        if number == 1:
            obj["metadata"] = _object_meta(value)
        elif name == "type":
            obj["type"] = value.decode()
        elif name == "immutable":
            obj["immutable"] = bool(value)
        elif name is not None:
            entries.setdefault(name, []).append(value)
    for name, values in entries.items():
        obj[name] = _map(values, binary=name in binary_maps)
    return obj


def _secret(data: bytes) -> dict[str, Any]:
    return _decode_data_object(data, {2: "data", 3: "type", 4: "stringData", 5: "immutable"}, frozenset({"data"}))


def _config_map(data: bytes) -> dict[str, Any]:
    return _decode_data_object(data, {2: "data", 3: "binaryData", 4: "immutable"}, frozenset({"binaryData"}))


def _delete_options(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, value in fields(data):
        if number == 1:
            obj["gracePeriodSeconds"] = value
        elif number == 4:
            obj["propagationPolicy"] = value.decode()
    return obj


DECODERS = {"Secret": _secret, "ConfigMap": _config_map, "DeleteOptions": _delete_options}


def decode(body: bytes) -> dict[str, Any]:
    """A ``k8s\\0``-prefixed ``runtime.Unknown`` envelope → the object as JSON would carry it."""
    if not body.startswith(MAGIC):
        raise UnsupportedProtobuf("no k8s protobuf envelope")
    envelope = dict(fields(body[len(MAGIC):]))
    type_meta = dict(fields(envelope.get(1, b"")))
    api_version, kind = type_meta.get(1, b"").decode(), type_meta.get(2, b"").decode()
    if kind not in DECODERS:
        raise UnsupportedProtobuf(f"protobuf bodies of kind {kind!r} are not decoded; send JSON")
    obj = DECODERS[kind](envelope.get(2, b""))
    return {"apiVersion": api_version, "kind": kind, **obj} if kind != "DeleteOptions" else obj
