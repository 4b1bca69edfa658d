"""Which TCP addresses a process tree listens on, read from /proc (no psutil, no ss)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

LISTEN = "0A"


def descendants(pid: int) -> set[int]:
    """`pid`'s children, their children, and so on (as /proc shows them now)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _listening_sockets() -> dict[str, str]:
    """Socket inode -> the address it listens on, for every TCP listener on the machine."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != LISTEN:
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            # the kernel prints each 32-bit word in host (little-endian) order
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            out[fields[9]] = str(ipaddress.ip_address(packed))
    return out


def listen_addresses(pids: set[int]) -> dict[int, set[str]]:
    """For each pid that listens on TCP, the addresses (IPv4-mapped IPv6 shown as IPv4)."""
    sockets = _listening_sockets()
    found: dict[int, set[str]] = {}
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:[") and link[8:-1] in sockets:
                address = ipaddress.ip_address(sockets[link[8:-1]])
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                    address = address.ipv4_mapped
                found.setdefault(pid, set()).add(str(address))
    return found
