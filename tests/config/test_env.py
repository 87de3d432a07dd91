"""The strict environment readers settings are read with."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from config.env import env_networks


def test_networks_are_addresses_or_cidr_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", " 172.31.250.2, 10.244.0.0/16 ,fd00::/8,")
    assert env_networks("TRUSTED_PROXIES") == [
        ip_network("172.31.250.2/32"),
        ip_network("10.244.0.0/16"),
        ip_network("fd00::/8"),
    ]


def test_no_networks_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRUSTED_PROXIES", raising=False)
    assert env_networks("TRUSTED_PROXIES") == []


@pytest.mark.parametrize("value", ["caddy", "10.0.0.1/8", "10.0.0.300", "*"])
def test_anything_else_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", value)
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        env_networks("TRUSTED_PROXIES")
