"""Who is on the other end of a loopback TCP connection: the uid that owns the client's socket.

Why: importing a checkpoint by local path makes the server read files on the caller's behalf.
That must grant nothing the caller could not already read, so the server only does it for a
client on this host whose socket belongs to the server's own user (or root). The client's socket
is the one whose local end is the request's client address and whose remote end is the server's
address; Linux reports its owner's uid through netlink sock_diag (one exact lookup, ~0.02 ms), and
lists it in /proc/net/tcp{,6} (a scan of every socket: 5-12 ms with a thousand TIME_WAIT sockets),
which is the fallback. Anywhere that cannot be proven (another OS, no /proc, an in-process ASGI
call with no socket, a non-loopback peer), the answer is None and the caller must stream.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
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
             tables: tuple[Path, ...] = PROC_TABLES, *, netlink: bool = True) -> int | None:
    """The uid owning the client's end of this loopback connection, or None when it cannot be shown."""
    if not client or not server or not is_loopback(client[0]):
        return None
    local, remote = (_ip(client[0]), int(client[1])), (_ip(server[0]), int(server[1]))
    if local[0] is None or remote[0] is None:
        return None
    if netlink:
        found = sock_diag_uid(local, remote)
        if found is not _UNAVAILABLE:
            return found
    return proc_table_uid(local, remote, tables)


# -------------------------------------------------------------- netlink sock_diag (linux/inet_diag.h)
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
TCP_ESTABLISHED = 1
NLMSG_HEADER = struct.Struct("=LHHLL")        # len, type, flags, seq, pid
DIAG_REQ = struct.Struct("=BBBBI")            # family, protocol, ext, pad, states; then inet_diag_sockid
UID_OFFSET = 4 + 48 + 12                      # inet_diag_msg: 4 bytes, sockid (48), expires/rqueue/wqueue, uid
_UNAVAILABLE = object()                       # netlink itself failed: try /proc


def _sockid(local, remote) -> bytes:
    def packed(addr) -> bytes:
        return addr.packed.ljust(16, b"\0")
    return (struct.pack("!HH", local[1], remote[1]) + packed(local[0]) + packed(remote[0])
            + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF))   # any interface; INET_DIAG_NOCOOKIE


def sock_diag_uid(local, remote):
    """Ask the kernel for the one TCP socket local->remote; its uid, None if there is none, else _UNAVAILABLE."""
    v4 = isinstance(local[0], ipaddress.IPv4Address) and isinstance(remote[0], ipaddress.IPv4Address)
    attempts = [(socket.AF_INET, local, remote)] if v4 else []
    mapped = [(ipaddress.IPv6Address(f"::ffff:{a}") if isinstance(a, ipaddress.IPv4Address) else a, port)
              for a, port in (local, remote)]
    attempts.append((socket.AF_INET6, *mapped))   # a v6 client socket, or a v4 one seen through a v6 server
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            for seq, (family, src, dst) in enumerate(attempts, 1):
                body = DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + _sockid(src, dst)
                nl.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0)
                        + body)
                reply = nl.recv(8192)
                _length, kind, _flags, _seq, _pid = NLMSG_HEADER.unpack_from(reply)
                if kind == NLMSG_ERROR:
                    if -struct.unpack_from("=i", reply, NLMSG_HEADER.size)[0] == errno.ENOENT:
                        continue                  # no such socket in this family
                    return _UNAVAILABLE           # e.g. EPERM in a sandbox
                at = NLMSG_HEADER.size
                if len(reply) < at + UID_OFFSET + 4:
                    return _UNAVAILABLE
                state = reply[at + 1]
                sport, dport = struct.unpack_from("!HH", reply, at + 4)
                # the kernel's exact lookup may fall back to a listener on the same port: only a live
                # connection between exactly these two ends counts
                if state != TCP_ESTABLISHED or (sport, dport) != (src[1], dst[1]):
                    return None
                return struct.unpack_from("=I", reply, at + UID_OFFSET)[0]
    except (OSError, AttributeError, struct.error):    # no AF_NETLINK (not Linux), refused by a sandbox
        return _UNAVAILABLE
    return None


# -------------------------------------------------------------- /proc/net/tcp{,6} scan (fallback)
def proc_table_uid(want_local, want_remote, tables: tuple[Path, ...] = PROC_TABLES) -> int | None:
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
