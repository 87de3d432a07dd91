"""Strict readers for settings that come from the environment."""

from __future__ import annotations

import os
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path


def env_str(name: str, default: str) -> str:
    """A string setting; `NAME_FILE` may point to a file holding the value (for secrets)."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        return Path(file_path).read_text().strip()
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value in ("True", "true", "1"):
        return True
    if value in ("False", "false", "0"):
        return False
    raise ValueError(f"{name} must be True or False, not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_networks(name: str, default: str = "") -> list[IPv4Network | IPv6Network]:
    """Comma-separated addresses or CIDR networks; anything else is refused at start-up.

    A network written with host bits set (10.0.0.1/8) is refused too: it is more likely a
    mistyped address than a wish to trust the whole block.
    """
    networks: list[IPv4Network | IPv6Network] = []
    for item in env_list(name, default):
        try:
            networks.append(ip_network(item))
        except ValueError as error:
            raise ValueError(f"{name}: {item!r} is not an address or network ({error})") from error
    return networks
