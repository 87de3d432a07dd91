"""Cluster mode on one machine's loopback, for the cluster-mode test and the load test.

Every part is a separate process, as in a deployment: the ASGI server with several worker
processes (`manage.py serve --workers N` in cluster mode), Celery worker processes, R1
simulators as the vLLM pool, and the Qdrant stand-in (`manage.py qdrant_standin`: Qdrant's
REST API over qdrant-client's local mode, because no Qdrant server can run here).
PostgreSQL and Redis are the machine's own; the caller names the database and Redis db.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings

from bench.loopback_processes import Process, free_port

# A log line that says something failed: a traceback's last line or a logged error.
_ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|^\w+(\.\w+)*(Error|Exception)\b")

CELERY_STOP_TIMEOUT_S = 60
# The version statuses the REST API reports once ingestion is over (as ingestion.models says).
FINAL_STATUSES = ("READY", "FAILED", "CANCELLED")


def celery_worker_command(name: str) -> list[str]:
    """One Celery worker process running one task at a time, as deploy/ runs them."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--pool=solo",
        "-n",
        f"{name}@%h",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
    ]


@dataclass
class StreamedAnswer:
    """One question asked through the REST API's event stream, as the client saw it."""

    status: str = ""
    answer_id: int | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    # time.monotonic() when asked; then seconds until the search was done (the `meta`
    # event), until the first generated text, and until the end.
    started_at: float = 0.0
    searched_s: float | None = None
    first_token_s: float | None = None
    total_s: float = 0.0
    # What went wrong on the way (HTTP status, an `error` event, a broken connection).
    error: str = ""
    answer: str = ""


async def ask_streamed(
    client: httpx.AsyncClient, question: str, *, timeout_s: float = 180.0
) -> StreamedAnswer:
    """Ask on POST /api/assistant/ask with `stream`, reading every event to `done`."""
    started = time.perf_counter()
    result = StreamedAnswer(started_at=time.monotonic())
    body = {"question": question, "stream": True}
    try:
        async with (
            asyncio.timeout(timeout_s),
            client.stream("POST", "/api/assistant/ask", json=body) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                result.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return result
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    _take_event(result, event, json.loads(line.removeprefix("data: ")), started)
    except (TimeoutError, httpx.HTTPError) as error:
        result.error = f"{type(error).__name__}: {error}"
    result.total_s = time.perf_counter() - started
    if not result.error and not result.status:
        result.error = "the stream ended without its final event"
    return result


def _take_event(result: StreamedAnswer, event: str, data: dict[str, Any], started: float) -> None:
    if event in ("reasoning", "answer") and data.get("text") and result.first_token_s is None:
        result.first_token_s = time.perf_counter() - started
    elif event == "meta" and result.searched_s is None:
        result.searched_s = time.perf_counter() - started
    elif event == "done":
        result.status = data["status"]
        result.answer_id = data["answer_id"]
        result.citations = data["citations"]
        result.answer = data["answer"]
    elif event == "error":
        result.error = f"error event: {data.get('detail', '')}"


def versions_wait_final(
    client: httpx.Client, version_ids: set[int], *, timeout_s: float
) -> dict[int, str]:
    """Poll the versions until each is READY, FAILED or CANCELLED; their statuses."""
    statuses: dict[int, str] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for version_id in sorted(version_ids - statuses.keys()):
            status = client.get(f"/api/versions/{version_id}/").json()["status"]
            if status in FINAL_STATUSES:
                statuses[version_id] = status
        if statuses.keys() == version_ids:
            break
        time.sleep(0.5)
    return statuses


@dataclass(frozen=True)
class ClusterOptions:
    database_url: str
    broker_url: str
    folder: Path
    web_workers: int = 2
    celery_workers: int = 2
    simulators: int = 2
    simulator_ttft_ms: float = 200.0
    simulator_tokens_per_s: float = 25.0
    # A dead worker's unacknowledged task goes to another worker after this many seconds.
    visibility_timeout_s: int = 10
    extra_env: dict[str, str] = field(default_factory=dict)


class LoopbackCluster:
    """Starts, reaches and stops the processes of one cluster; `stop` ends them all."""

    def __init__(self, options: ClusterOptions) -> None:
        self.options = options
        self.folder = options.folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.admin_password = secrets.token_urlsafe(16)
        self.standin: Process | None = None
        self.simulators: list[Process] = []
        self.server: Process | None = None
        self.celery: list[subprocess.Popen[bytes]] = []
        self.env = self._environment()

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("The cluster's web server is not running.")
        return self.server.url

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.standin = self._http_process(
            "qdrant stand-in", ["qdrant_standin", "--path", str(self.folder / "qdrant")]
        )
        self.simulators = [
            self._http_process(
                f"simulator {number}",
                [
                    "r1_simulator",
                    f"--ttft-ms={self.options.simulator_ttft_ms}",
                    f"--tokens-per-s={self.options.simulator_tokens_per_s}",
                ],
            )
            for number in range(self.options.simulators)
        ]
        self.standin.wait_until_answering("/healthz")
        for simulator in self.simulators:
            simulator.wait_until_answering("/health")
        self.env["QDRANT_URL"] = self.standin.url
        self.env["VLLM_URLS"] = ",".join(simulator.url for simulator in self.simulators)
        migrated = self.manage("migrate", "--noinput")
        if migrated.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{migrated.stderr}")
        for number in range(self.options.celery_workers):
            self.start_celery_worker(f"worker{number}")
        self.server = self._http_process(
            "web server", ["serve", "--workers", str(self.options.web_workers)]
        )
        self.server.wait_until_answering("/healthz")

    def start_celery_worker(self, name: str) -> subprocess.Popen[bytes]:
        with (self.folder / f"celery-{name}.log").open("ab") as log:
            worker = subprocess.Popen(
                celery_worker_command(name),
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.celery.append(worker)
        return worker

    def kill_celery_worker(self, index: int) -> None:
        """End a worker abruptly, as a crashed host would: no warm shutdown, no ack."""
        worker = self.celery[index]
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    def kill_simulator(self, index: int) -> None:
        simulator = self.simulators[index].popen
        simulator.send_signal(signal.SIGKILL)
        simulator.wait()

    def manage(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=settings.BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def accounts(self, *, users: list[str], admins: list[str], group: str) -> dict[str, str]:
        """Create readers (in `group`) and superusers; their API keys by username.

        The one place where the load and cluster tests get API credentials.
        """
        script = (
            "import json, sys\n"
            "from django.contrib.auth.models import Group, User\n"
            "from accounts.tokens import token_create\n"
            "spec = json.loads(sys.argv[1])\n"
            "group, _ = Group.objects.get_or_create(name=spec['group'])\n"
            "keys = {}\n"
            "for name in spec['users'] + spec['admins']:\n"
            "    admin = name in spec['admins']\n"
            "    user, _ = User.objects.get_or_create(\n"
            "        username=name, defaults={'is_staff': admin, 'is_superuser': admin})\n"
            "    user.groups.add(group)\n"
            "    scopes = ['read', 'ask', 'ingest'] if admin else ['read', 'ask']\n"
            "    keys[name] = token_create(user=user, name='cluster', scopes=scopes).secret\n"
            "print(json.dumps(keys))\n"
        )
        spec = json.dumps({"users": users, "admins": admins, "group": group})
        done = subprocess.run(
            [sys.executable, "-c", f"import django; django.setup()\n{script}", spec],
            cwd=settings.BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"Could not create the accounts:\n{done.stderr}")
        keys: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
        return keys

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """Read the cluster's database directly, as an operator's psql would."""
        import psycopg

        with psycopg.connect(self.options.database_url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type,unused-ignore]

    def standin_stats(self) -> dict[str, Any]:
        if self.standin is None:
            raise RuntimeError("The stand-in is not running.")
        stats: dict[str, Any] = httpx.get(f"{self.standin.url}/standin/stats", timeout=30).json()
        return stats

    def stop(self) -> None:
        for worker in self.celery:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.celery:
            try:
                worker.wait(timeout=CELERY_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        for process in [self.server, *self.simulators, self.standin]:
            if process is not None:
                process.stop()

    def log_tails(self) -> str:
        """The end of every process's log, for a failure message."""
        return "\n".join(f"--- {name}\n" + "\n".join(lines[-15:]) for name, lines in self._logs())

    def error_lines(self, limit: int = 40) -> str:
        """The lines of every process's log that name an error, for a run that had errors."""
        parts = []
        for name, lines in self._logs():
            errors = [line for line in lines if _ERROR_LINE.search(line)]
            if errors:
                parts.append(f"--- {name}\n" + "\n".join(errors[-limit:]))
        return "\n".join(parts)

    def _logs(self) -> list[tuple[str, list[str]]]:
        return [
            (log.name, log.read_text(errors="replace").splitlines())
            for log in sorted(self.folder.glob("*.log"))
        ]

    def _http_process(self, name: str, arguments: list[str]) -> Process:
        port = free_port()
        log = self.folder / f"{name.replace(' ', '-')}.log"
        with log.open("wb") as output:
            popen = subprocess.Popen(
                [sys.executable, "manage.py", *arguments, "--port", str(port)],
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        return Process(name, f"http://127.0.0.1:{port}", popen, log)

    def _environment(self) -> dict[str, str]:
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("QDRANT_", "VLLM_", "VECTOR_", "CELERY_", "ASSISTANT_"))
            and key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY")
        }
        return {
            **inherited,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "ASSISTANT_MODE": "cluster",
            "ASSISTANT_DATA_DIR": str(self.folder / "var"),
            "ASSISTANT_ADMIN_PASSWORD": self.admin_password,
            # Every process signs sessions with the same key, as replicas behind a balancer.
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": self.options.database_url,
            "CELERY_BROKER_URL": self.options.broker_url,
            "CELERY_VISIBILITY_TIMEOUT": str(self.options.visibility_timeout_s),
            # A killed worker's task comes back within seconds of its visibility timeout.
            "CELERY_RESTORE_INTERVAL_S": "1",
            "CELERY_RESTORE_THROTTLE": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "LOG_FORMAT": "plain",
            **self.options.extra_env,
        }
