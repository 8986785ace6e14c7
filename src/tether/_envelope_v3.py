"""The v3 event envelope: v2's compact body, deflated with a fixed dictionary, and a
short chain link.

Stored bytes, one of two forms (the tag says which):

    0x03  link (8)  checksum (32)  CRC32 of what follows (4, big-endian)  deflated body
    0x04  link (8)  checksum (32)  body

The body is v2's canonical JSON body (`_envelope.v2_body`). Form 0x03 holds it as raw
deflate (window 4 KiB, the preset dictionary `DICTIONARY`); form 0x04 holds it as is and
is written when deflating does not make the row smaller. The checksum is SHA-256 over
`v3_salt(run_id, seq) + link + body`, the *uncompressed* body: the digest, the portable
export form and any recomputation from an event's fields never depend on zlib, so a zlib
that deflates differently writes other bytes for the same event, and every row it or an
older one wrote still verifies. The CRC covers the deflated bytes because inflate can
ignore some of them (the padding bits of the last byte): with it, a flip of any stored
bit is refused; without it, a flip there would decode to the same event.

The link is the first 8 bytes of the previous event's checksum (of `GENESIS_HASH` for the
first event), not all 32. It is hashed into this event's checksum, so a row still
verifies alone, and the chain check compares it with the previous event's checksum. What
the chain is for (detecting damage, lost, reordered or spliced rows) a 64-bit link still
does: accidental damage that leaves a row valid by its own checksum yet linked to the
wrong predecessor has a 2^-64 chance of matching. It buys nothing against a forger at any
length: the chain is unkeyed, so anyone who can write rows can recompute every checksum
after them. `runs.head_hash`, snapshots and leases keep the full digest.

`DICTIONARY` is part of the format: never change it for these tags (another dictionary
would be another tag). It is the vocabulary the runtime itself writes (the v2 body keys,
event types and payload keys), not any workload's data.
"""

from __future__ import annotations

import functools
import hashlib
import zlib

from ._envelope import V2_HEAD, V2_TAG

V3_DEFLATED = 3
V3_RAW = 4
V3_TAGS = (V3_DEFLATED, V3_RAW)
LINK_BYTES = 8
LINK_HEX = 2 * LINK_BYTES
V3_HEAD = 1 + LINK_BYTES + 32
"""Bytes before the CRC (0x03) or the body (0x04): the tag, the link and the checksum."""
_CRC = 4
_WBITS = -12  # raw deflate, a 4 KiB window: a small state to set up for every event
_MEM_LEVEL = 4
_LEVEL = 2  # level 1 deflates the loop's events 4% larger for the same work (level 3+: more work)

_PARTS = (
    b'{"p":{"agent":"","agent_version":"1","limits":{"context_threshold":0.8,"max_cost_usd":'
    b'null,"max_steps":null,"max_time_s":null,"max_tokens":null,"warn_at":0.2,"wrap_up_at":'
    b'0.1},"metadata":{},"model":"","parent_event":null,"task":"","tenant":null},"t":'
    b'"run.created","ts":17',
    b'"w":"visible"}',
    b'{"c":"/c1","k":1,"p":{"answer":"","partial":false,"reason":"answered"},"t":'
    b'"run.completed","ts":17',
    b'{"c":"/c1","k":1,"p":{"epoch":1,"released_reservations":[],"worker":""},"t":'
    b'"run.resumed","ts":17',
    b'{"a":"operator","c":"/c1","k":1,"p":{"action":"approve","arguments":"","comment":null,'
    b'"decision":"approved","request_id":""},"t":"approval.resolved","ts":17',
    b'{"c":"/c1","k":1,"p":{"arguments":"{}","call_id":"call_1_0","call_seq":1,"excerpt":"",'
    b'"expires_at":null,"kind":"tool","on_expiry":"reject","question":"","reason":"",'
    b'"request_id":"","tool":""},"t":"approval.requested","ts":17',
    b'{"c":"/c1","k":1,"p":{"error":"","kind":"","transient":true},"t":"model.failed","ts":17',
    b'{"c":"/c1","k":1,"p":{"call_id":"call_1_0","call_seq":1},"t":"tool.started","ts":17',
    b'{"k":1,"p":{"content":"","pinned":true},"t":"message.system","ts":17',
    b'"w":"always_hidden"}',
    b'{"a":"user","k":1,"p":{"content":"","pinned":true},"t":"message.user","ts":17',
    b'{"a":"tool:","c":"/c1","k":1,"p":{"attempts":1,"call_id":"call_1_0","error":null,'
    b'"level":"ok","max_chars":8000,"name":"","output":"","status":"[step 1 \xc2\xb7 tokens 1 '
    b'\xc2\xb7 $0.0001 \xc2\xb7 0s \xc2\xb7 context 0%]"},"t":"tool.failed","ts":17',
    b'{"c":"/c1","k":1,"p":{"cycle":1},"t":"cycle.started","ts":17',
    b'{"c":"/c1","k":1,"p":{"context_messages":1,"context_tokens":1,"max_tokens":2048,'
    b'"model":"","wrap_up":false},"t":"model.requested","ts":17',
    b'{"c":"/c1","k":1,"p":{"estimate_usd":0.001,"kind":"model","priced":true,'
    b'"reservation_id":"rsv_","scopes":["global","agent:"]},"t":"budget.reserved","ts":17',
    b'{"a":"model:","c":"/c1","k":1,"p":{"content":"","finish_reason":"tool_calls","model":"",'
    b'"tool_calls":[{"arguments":"{}","id":"call_1_0","name":""}]},"t":"model.completed",'
    b'"ts":17',
    b',"u":[1,1,0.0001]}',
    b'{"c":"/c1","k":1,"p":{"actual_usd":0.0001,"estimate_usd":0.001,"reservation_id":"rsv_"},'
    b'"t":"budget.settled","ts":17',
    b'{"c":"/c1","k":1,"p":{"arguments":"{}","call_id":"call_1_0","idempotency_key":"/c1/t0",'
    b'"idempotent":true,"name":"","valid":true},"t":"tool.requested","ts":17',
    b'{"a":"tool:","c":"/c1","k":1,"p":{"attempts":1,"call_id":"call_1_0","error":null,'
    b'"level":"ok","max_chars":8000,"name":"","output":"","status":"[step 1 \xc2\xb7 tokens 1 '
    b'\xc2\xb7 $0.0001 \xc2\xb7 0s \xc2\xb7 context 0%]"},"t":"tool.completed","ts":17',
)
DICTIONARY = b"".join(_PARTS)
"""The preset dictionary of tag 0x03 (deflate matches the most recent bytes most cheaply,
so the most frequent events come last)."""

_DEFLATER = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS, _MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY,
                             DICTIONARY)  # fmt: skip
"""Primed once: each event deflates with a copy, which skips loading the dictionary."""


def v3_salt(run_id: str, seq: int) -> bytes:
    """The hashed prefix that binds an event to its run and place (its own domain: a v2
    digest can never pass for a v3 one)."""
    return f"tether.v3\0{run_id}\0{seq}\0".encode()


def v3_digest(run_id: str, seq: int, link: bytes, body: bytes) -> bytes:
    return hashlib.sha256(v3_salt(run_id, seq) + link + body).digest()


def deflate(body: bytes) -> bytes:
    d = _DEFLATER.copy()
    return d.compress(body) + d.flush()


def pack_v3(link: bytes, digest: bytes, body: bytes) -> bytes:
    """The stored bytes of an event: deflated when that is smaller, else the body as is."""
    if len(link) != LINK_BYTES or len(digest) != 32:
        raise ValueError("a v3 link is 8 bytes and a checksum 32")
    packed = deflate(body)
    if len(packed) + _CRC < len(body):
        crc = zlib.crc32(packed).to_bytes(_CRC, "big")
        return bytes((V3_DEFLATED,)) + link + digest + crc + packed
    return bytes((V3_RAW,)) + link + digest + body


def unpack_v3(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """`(link, checksum, body)` of stored v3 bytes; ValueError saying what is wrong. Checks
    the CRC and that inflating uses every byte; the caller checks the checksum."""
    if len(raw) < V3_HEAD or raw[0] not in V3_TAGS:
        raise ValueError("truncated envelope")
    link, digest = raw[1 : 1 + LINK_BYTES], raw[1 + LINK_BYTES : V3_HEAD]
    if raw[0] == V3_RAW:
        return link, digest, raw[V3_HEAD:]
    crc, packed = raw[V3_HEAD : V3_HEAD + _CRC], raw[V3_HEAD + _CRC :]
    if len(crc) != _CRC or zlib.crc32(packed) != int.from_bytes(crc, "big"):
        raise ValueError("checksum mismatch: the compressed body fails its CRC")
    inflater = zlib.decompressobj(_WBITS, DICTIONARY)
    try:
        body = inflater.decompress(packed)
    except zlib.error:
        raise ValueError("the compressed body does not inflate") from None
    if not inflater.eof or inflater.unused_data:
        raise ValueError("the compressed body is truncated or has bytes after its end")
    return link, digest, body


@functools.lru_cache(maxsize=64)
def body_text(data: object) -> str:
    """The JSON text an event's stored value holds (what SQL reads its fields from): the
    body of a v2 or v3 envelope, a v1 event's whole bytes; '' when unreadable, which no
    JSON function accepts. Cached: a view reads a dozen fields from the same row."""
    if isinstance(data, str):
        return data
    if not isinstance(data, bytes):
        return "" if data is None else str(data)
    try:
        if data[:1] == V2_TAG:
            return data[V2_HEAD:].decode()
        if data[:1] in (b"\x03", b"\x04"):
            return unpack_v3(data)[2].decode()
        return data.decode()
    except ValueError:  # incl. UnicodeDecodeError
        return ""
