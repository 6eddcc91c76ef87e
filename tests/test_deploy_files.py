"""The container files agree with each other: compose.yaml, deploy/Caddyfile, the Containerfile.

The image itself is built and run by bench/image.py (it needs root, podman and minutes); these checks catch
the drift a quick edit causes, such as a new subnet without a new trusted proxy.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from deadpixel.config import SECRET_SETTINGS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_deadpixel_trusts_exactly_caddy_at_its_pinned_address(compose: dict[str, Any]) -> None:
    services = compose["services"]
    caddy = ipaddress.ip_address(services["caddy"]["networks"]["edge"]["ipv4_address"])
    subnet = ipaddress.ip_network(compose["networks"]["edge"]["ipam"]["config"][0]["subnet"])
    trusted = services["deadpixel"]["environment"]["DEADPIXEL_TRUSTED_PROXIES"]
    assert [ipaddress.ip_network(trusted)] == [ipaddress.ip_network(f"{caddy}/32")]
    assert caddy in subnet
    assert ipaddress.ip_address(services["deadpixel"]["networks"]["edge"]["ipv4_address"]) in subnet


def test_only_caddy_publishes_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "ports" not in services["deadpixel"] and "ports" not in services["postgres"]
    assert sorted(services["caddy"]["ports"]) == ["443:443", "443:443/udp", "80:80"]


def test_postgres_is_a_profile_on_an_internal_network(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["profiles"] == ["postgres"]
    assert postgres["networks"] == ["store"]
    assert compose["networks"]["store"]["internal"] is True
    assert compose["services"]["deadpixel"]["depends_on"]["postgres"]["required"] is False


def test_secrets_reach_deadpixel_as_files_it_reads(compose: dict[str, Any]) -> None:
    deadpixel = compose["services"]["deadpixel"]
    declared = set(compose["secrets"])
    assert set(deadpixel["secrets"]) <= declared
    for name, value in deadpixel["environment"].items():
        if name.endswith("_FILE"):
            assert name.removeprefix("DEADPIXEL_").removesuffix("_FILE").lower() in SECRET_SETTINGS
            if value.startswith("/run/secrets/"):
                assert value.removeprefix("/run/secrets/") in deadpixel["secrets"]
    assert not any(
        name.removeprefix("DEADPIXEL_").lower() in SECRET_SETTINGS for name in deadpixel["environment"]
    )


def test_caddy_serves_the_domain_of_the_base_url_and_proxies_to_the_image_port(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["deadpixel"]["environment"]["DEADPIXEL_BASE_URL"].startswith("https://${DEADPIXEL_DOMAIN")
    assert services["caddy"]["environment"]["DEADPIXEL_DOMAIN"] == "${DEADPIXEL_DOMAIN}"
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert re.search(r"^\{\$DEADPIXEL_DOMAIN\} \{$", caddyfile, re.MULTILINE)
    port = re.search(r"DEADPIXEL_PORT=(\d+)", (ROOT / "Containerfile").read_text())
    assert port is not None
    assert f"reverse_proxy deadpixel:{port.group(1)}" in caddyfile


def test_the_image_runs_deadpixel_itself_as_pid_1() -> None:
    containerfile = (ROOT / "Containerfile").read_text()
    assert 'ENTRYPOINT ["deadpixel"]' in containerfile
    assert 'CMD ["serve"]' in containerfile


def test_docker_and_podman_leave_out_the_same_files() -> None:
    assert (ROOT / ".containerignore").read_text() == (ROOT / ".dockerignore").read_text()
