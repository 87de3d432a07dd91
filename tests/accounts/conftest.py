"""Real directory servers for the sign-on tests, started here and stopped at the end.

OpenLDAP's slapd runs from a temporary folder on a free loopback port with the small directory
in tests/accounts/ldap/directory.ldif. The OpenID Connect provider is the npm package
oidc-provider (tests/accounts/oidc_provider, installed by `bin/setup --dev`) run by node.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import ldap
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from audit.hashing import parse_details
from audit.models import AuditRecord

HERE = Path(__file__).resolve().parent
LDIF = HERE / "ldap" / "directory.ldif"
PROVIDER_DIR = HERE / "oidc_provider"
SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
BASE_DN = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{BASE_DN}"
ADMIN_PASSWORD = "admin-secret"
READER_DN = f"cn=reader,{BASE_DN}"
READER_PASSWORD = "reader-secret"
START_TIMEOUT_S = 30.0

SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {folder}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix "{base}"
rootdn "{admin}"
rootpw {admin_password}
directory {folder}/data
TLSCertificateFile {folder}/tls.pem
TLSCertificateKeyFile {folder}/tls.key
# As in a real directory: only the reader account may search, and passwords are for binding.
access to attrs=userPassword
  by anonymous auth
  by * none
access to *
  by dn.exact="{reader}" read
  by self read
  by * none
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(command: list[str | Path], log: Path, **options: Any) -> subprocess.Popen[bytes]:
    """Start a server whose output goes to a file (a pipe nobody reads would fill and block it)."""
    with log.open("wb") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, **options)


def wait_until(
    ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log.read_text()}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {START_TIMEOUT_S} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# OpenLDAP


def write_self_signed_certificate(certificate_file: Path, key_file: Path) -> None:
    """A certificate for 127.0.0.1 that is its own certificate authority, for StartTLS."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@dataclass(frozen=True)
class Slapd:
    uri: str
    # The certificate slapd offers for StartTLS, which is also its own authority.
    ca_file: Path


@dataclass
class LdapDirectory:
    """The running slapd, with the changes a test makes undone after it."""

    uri: str
    ca_file: Path
    base_dn: str = BASE_DN
    reader_dn: str = READER_DN
    reader_password: str = READER_PASSWORD
    _undo: list[Callable[[ldap.ldapobject.LDAPObject], None]] = field(default_factory=list)

    def _admin(self) -> ldap.ldapobject.LDAPObject:
        connection = ldap.initialize(self.uri)
        connection.simple_bind_s(ADMIN_DN, ADMIN_PASSWORD)
        return connection

    def user_dn(self, uid: str) -> str:
        return f"uid={uid},ou=people,{self.base_dn}"

    def group_dn(self, name: str, unit: str = "groups") -> str:
        return f"cn={name},ou={unit},{self.base_dn}"

    def remove_member(self, group: str, uid: str) -> None:
        group_dn, member = self.group_dn(group), self.user_dn(uid).encode()
        self._admin().modify_s(group_dn, [(ldap.MOD_DELETE, "member", [member])])
        self._undo.append(
            lambda admin: admin.modify_s(group_dn, [(ldap.MOD_ADD, "member", [member])])
        )

    def add_member(self, group: str, uid: str) -> None:
        group_dn, member = self.group_dn(group), self.user_dn(uid).encode()
        self._admin().modify_s(group_dn, [(ldap.MOD_ADD, "member", [member])])
        self._undo.append(
            lambda admin: admin.modify_s(group_dn, [(ldap.MOD_DELETE, "member", [member])])
        )

    def delete_user(self, uid: str) -> None:
        admin, dn = self._admin(), self.user_dn(uid)
        [(_, attributes)] = admin.search_s(dn, ldap.SCOPE_BASE)
        admin.delete_s(dn)
        self._undo.append(lambda again: again.add_s(dn, list(attributes.items())))

    def undo_changes(self) -> None:
        admin = self._admin()
        while self._undo:
            self._undo.pop()(admin)


def _ldap_answers(uri: str) -> bool:
    try:
        connection = ldap.initialize(uri)
        connection.simple_bind_s(READER_DN, READER_PASSWORD)
    except ldap.LDAPError:
        return False
    return True


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A slapd of our own on loopback, loaded with the test directory."""
    if not SLAPD.exists():
        pytest.fail("OpenLDAP's slapd is not installed; run bin/setup --dev")
    folder = tmp_path_factory.mktemp("slapd")
    (folder / "data").mkdir()
    write_self_signed_certificate(folder / "tls.pem", folder / "tls.key")
    conf = folder / "slapd.conf"
    conf.write_text(
        SLAPD_CONF.format(
            folder=folder,
            base=BASE_DN,
            admin=ADMIN_DN,
            admin_password=ADMIN_PASSWORD,
            reader=READER_DN,
        )
    )
    subprocess.run([SLAPADD, "-f", conf, "-l", LDIF], check=True, capture_output=True)
    uri = f"ldap://127.0.0.1:{free_port()}"
    # -d keeps slapd in the foreground, where this process can stop it.
    log = folder / "slapd.log"
    process = start_server([SLAPD, "-f", conf, "-h", f"{uri}/", "-d", "0"], log)
    try:
        wait_until(lambda: _ldap_answers(uri), "slapd", process, log)
        yield Slapd(uri=uri, ca_file=folder / "tls.pem")
    finally:
        stop(process)


@pytest.fixture
def directory(slapd: Slapd) -> Iterator[LdapDirectory]:
    """The test directory; whatever a test changes in it is put back afterwards."""
    server = LdapDirectory(uri=slapd.uri, ca_file=slapd.ca_file)
    yield server
    server.undo_changes()


# OpenID Connect


@dataclass
class OidcProvider:
    """The running oidc-provider; its people are read from a file at every look-up."""

    issuer: str
    client_id: str
    client_secret: str
    accounts_file: Path
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def set_account(
        self,
        username: str,
        *,
        password: str,
        groups: list[str],
        disabled: bool = False,
        claims: dict[str, Any] | None = None,
    ) -> None:
        self.accounts[username] = {
            "password": password,
            "disabled": disabled,
            "claims": {
                "preferred_username": username,
                "email": f"{username}@example.org",
                "given_name": username.capitalize(),
                "family_name": "Tester",
                "groups": groups,
                **(claims or {}),
            },
        }
        self.accounts_file.write_text(json.dumps(self.accounts))


def _provider_answers(issuer: str) -> bool:
    try:
        return httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=2).is_success
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def site_port() -> int:
    """The loopback port the sign-on tests serve the site on; the provider knows its callback."""
    return free_port()


@pytest.fixture(scope="session")
def oidc_provider(
    tmp_path_factory: pytest.TempPathFactory, site_port: int
) -> Iterator[OidcProvider]:
    node = shutil.which("node")
    if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("node or the test OpenID Connect provider is missing; run bin/setup --dev")
    port = free_port()
    provider = OidcProvider(
        issuer=f"http://127.0.0.1:{port}",
        client_id="assistant",
        client_secret="assistant-client-secret",
        accounts_file=tmp_path_factory.mktemp("oidc") / "accounts.json",
    )
    provider.accounts_file.write_text("{}")
    log = provider.accounts_file.with_name("provider.log")
    process = start_server(
        [node, PROVIDER_DIR / "provider.mjs"],
        log,
        cwd=PROVIDER_DIR,
        env={
            "PATH": "/usr/bin:/bin",
            "PORT": str(port),
            "ISSUER": provider.issuer,
            "CLIENT_ID": provider.client_id,
            "CLIENT_SECRET": provider.client_secret,
            "REDIRECT_URI": f"http://127.0.0.1:{site_port}/oidc/callback/",
            "ACCOUNTS_FILE": str(provider.accounts_file),
        },
    )
    try:
        wait_until(
            lambda: _provider_answers(provider.issuer), "the OpenID Connect provider", process, log
        )
        yield provider
    finally:
        stop(process)


@pytest.fixture
def oidc_accounts(oidc_provider: OidcProvider) -> Iterator[OidcProvider]:
    """The provider with nobody in it; each test adds the people it needs."""
    oidc_provider.accounts.clear()
    oidc_provider.accounts_file.write_text("{}")
    yield oidc_provider
    oidc_provider.accounts.clear()
    oidc_provider.accounts_file.write_text("{}")


def records(event: str) -> list[dict[str, Any]]:
    """The details of every ledger record of `event`, oldest first."""
    return [
        parse_details(details)
        for details in AuditRecord.objects.filter(event=event)
        .order_by("sequence")
        .values_list("details", flat=True)
    ]
