"""``host:port[,host:port...]`` lists, as Sentinel and Cluster URLs name their servers."""

from __future__ import annotations

from urllib.parse import unquote

__all__ = ["parse_addresses"]


def parse_addresses(
    hosts: str, display_url: str, *, default_port: int, kind: str
) -> list[tuple[str, int]]:
    """``[(host, port)...]`` from a URL's comma-separated host list (IPv6 in brackets).

    Raises `ValueError` naming the `kind` of server and showing
    `display_url` (already redacted) if an item is empty or its port is
    not a number.
    """
    addresses: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = port, ""
        host = host.strip("[]")
        if not host:
            raise ValueError(f"{display_url!r} has an empty {kind} address in {hosts!r}")
        if colon and not (port.isascii() and port.isdigit()):
            raise ValueError(f"the {kind} port in {display_url!r} must be a number, got {port!r}")
        addresses.append((unquote(host), int(port) if colon else default_port))
    return addresses
