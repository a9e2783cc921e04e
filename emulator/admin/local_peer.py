"""Who is on the other end of a loopback TCP connection: the uid that owns the client's socket.

Why: importing a checkpoint by local path makes the server read files on the caller's behalf.
That must grant nothing the caller could not already read, so the server only does it for a
client on this host whose socket belongs to the server's own user (or root). Linux lists every
TCP socket of the network namespace, with its owner's uid, in /proc/net/tcp and /proc/net/tcp6;
the client's socket is the one whose local end is the request's client address and whose remote
end is the server's address. Anywhere that cannot be proven (another OS, no /proc, an in-process
ASGI call with no socket, a non-loopback peer), the answer is None and the caller must stream.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

PROC_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
ESTABLISHED = "01"
MAX_TABLE_BYTES = 64 << 20  # a bound on what we read, far above any real socket table


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _decode(field: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """'0100007F:1F90' -> (127.0.0.1, 8080): each 32-bit word of the address is in host (little-endian) order."""
    hex_addr, hex_port = field.split(":")
    raw = bytes.fromhex(hex_addr)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    addr = ipaddress.ip_address(raw)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr, int(hex_port, 16)


def is_loopback(host: str | None) -> bool:
    addr = _ip(host or "")
    return addr is not None and addr.is_loopback


def peer_uid(client: tuple[str, int] | None, server: tuple[str, int] | None,
             tables: tuple[Path, ...] = PROC_TABLES) -> int | None:
    """The uid owning the client's end of this loopback connection, or None when it cannot be shown."""
    if not client or not server or not is_loopback(client[0]):
        return None
    want_local, want_remote = (_ip(client[0]), int(client[1])), (_ip(server[0]), int(server[1]))
    for table in tables:
        try:
            with open(table, encoding="ascii") as f:
                text = f.read(MAX_TABLE_BYTES)
        except OSError:
            continue
        for line in text.splitlines()[1:]:
            cols = line.split()
            if len(cols) < 8 or cols[3] != ESTABLISHED:
                continue
            try:
                local, remote = _decode(cols[1]), _decode(cols[2])
                uid = int(cols[7])
            except ValueError:
                continue
            if local == want_local and remote == want_remote:
                return uid
    return None
