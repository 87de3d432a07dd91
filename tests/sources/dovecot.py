"""A Dovecot IMAP server for the mailbox tests, started from a temporary folder on a free
loopback port (as the sign-on tests start their own slapd) and stopped at the end."""

from __future__ import annotations

import imaplib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DOVECOT = Path("/usr/sbin/dovecot")
START_TIMEOUT_S = 30.0

CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{folder}/mail/%u
first_valid_uid = 100
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {folder}/users
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={folder}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


@dataclass(frozen=True)
class Mailbox:
    port: int
    user: str
    password: str

    @contextmanager
    def session(self) -> Iterator[imaplib.IMAP4]:
        client = imaplib.IMAP4("127.0.0.1", self.port)
        client.login(self.user, self.password)
        try:
            yield client
        finally:
            client.logout()

    def append(self, raw: bytes) -> None:
        with self.session() as client:
            client.append("INBOX", None, None, raw)

    def expunge(self, subject: str) -> None:
        with self.session() as client:
            client.select("INBOX")
            _, found = client.search(None, "SUBJECT", f'"{subject}"')
            for number in found[0].split():
                client.store(number, "+FLAGS", "\\Deleted")
            client.expunge()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def dovecot_running(user: str, password: str) -> Iterator[Mailbox]:
    folder = Path(tempfile.mkdtemp(prefix="dovecot-"))
    folder.chmod(0o755)  # the mail processes run as the dovecot user
    for name in ("run", "state", "mail"):
        (folder / name).mkdir()
    shutil.chown(folder / "mail", "dovecot", "dovecot")
    (folder / "users").write_text(f"{user}:{{PLAIN}}{password}\n")
    port = _free_port()
    config = folder / "dovecot.conf"
    config.write_text(CONFIG.format(folder=folder, port=port))
    log = folder / "output.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(DOVECOT), "-F", "-c", str(config)], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("dovecot did not start") from None
                time.sleep(0.1)
        yield Mailbox(port, user, password)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)
