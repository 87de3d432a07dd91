from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from django.core.management.base import BaseCommand, CommandError, CommandParser

from bench.loopback_cluster import (
    FINAL_STATUSES,
    ClusterOptions,
    LoopbackCluster,
    StreamedAnswer,
    ask_streamed,
    versions_wait_final,
)
from bench.measures import machine_load, percentile

SHARED_SAMPLES = Path(__file__).resolve().parents[4] / "shared" / "data" / "samples"
COMMANDLINE = SHARED_SAMPLES / "docker-md" / "reference" / "commandline"
SEED_DOCUMENTS = 24
GROUP = "staff"
QUESTION_TIMEOUT_S = 180.0
SEED_TIMEOUT_S = 900.0
POLL_S = 1.0
WARM_UP_ROUNDS = 5
WARM_SEARCH_S = 2.0


@dataclass
class Upload:
    name: str
    started_at: float = 0.0
    version_id: int | None = None
    error: str = ""
    ready_s: float | None = None
    final_status: str = ""


@dataclass
class Tally:
    """Everything the simulated people saw during the run."""

    answers: list[StreamedAnswer] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    killed_at_s: float | None = None
    killed_at: float | None = None


class Command(BaseCommand):
    help = (
        "Load test on loopback: start a cluster (ASGI workers, Celery workers, R1 simulators, "
        "the Qdrant stand-in; PostgreSQL and Redis of this machine), let N users ask and "
        "stream while K admins upload documents for M minutes, optionally kill one Celery "
        "worker and one simulator halfway, then check: no errors, an audit record for every "
        "answer, an intact audit chain, no document left unfinished. Exits 1 if a check fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=100)
        parser.add_argument("--admins", type=int, default=20)
        parser.add_argument("--minutes", type=float, default=5.0)
        parser.add_argument("--kill-halfway", action="store_true")
        parser.add_argument("--think-s", type=float, default=10.0, help="users' mean pause")
        parser.add_argument("--admin-think-s", type=float, default=20.0)
        parser.add_argument("--drain-s", type=float, default=300.0, help="wait for ingestion")
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--celery-workers", type=int, default=2)
        parser.add_argument("--ttft-ms", type=float, default=200.0, help="simulators' first token")
        parser.add_argument("--tokens-per-s", type=float, default=25.0, help="per stream")
        parser.add_argument(
            "--postgres-url",
            default="postgres://postgres@127.0.0.1:5432/postgres",
            help="a server where a scratch database may be created and dropped",
        )
        parser.add_argument("--redis-db", type=int, default=13, help="flushed before and after")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--json", action="store_true", help="last line: one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["users"] < 1 or options["admins"] < 0 or options["minutes"] <= 0:
            raise CommandError("Give at least one user and a positive duration.")
        if options["kill_halfway"] and min(options["celery_workers"], 2) < 2:
            raise CommandError("--kill-halfway needs two Celery workers to leave one running.")
        if not COMMANDLINE.is_dir():
            raise CommandError(f"The sample documents are missing: {COMMANDLINE}")
        random.seed(options["seed"])
        load_before = machine_load()
        with (
            scratch_database(options["postgres_url"]) as database_url,
            flushed_redis(options["redis_db"]) as broker_url,
            tempfile.TemporaryDirectory(prefix="bench-load-") as folder,
        ):
            cluster = LoopbackCluster(
                ClusterOptions(
                    database_url=database_url,
                    broker_url=broker_url,
                    folder=Path(folder),
                    web_workers=options["web_workers"],
                    celery_workers=options["celery_workers"],
                    simulator_ttft_ms=options["ttft_ms"],
                    simulator_tokens_per_s=options["tokens_per_s"],
                )
            )
            self.stderr.write("Starting the cluster ...")
            cluster.start()
            try:
                result = self._run(cluster, options)
                if result["errors"]:
                    self.stderr.write(f"What the processes logged:\n{cluster.error_lines()}")
            except BaseException:
                self.stderr.write(cluster.log_tails())
                raise
            finally:
                cluster.stop()
        result["load"] = {**load_before, "load_average_1m_at_end": result.pop("load_at_end")}
        self._report(result, options)

    def _run(self, cluster: LoopbackCluster, options: dict[str, Any]) -> dict[str, Any]:
        users = [f"user{number:03d}" for number in range(options["users"])]
        admins = [f"admin{number:02d}" for number in range(max(options["admins"], 1))]
        keys = cluster.accounts(users=users, admins=admins, group=GROUP)
        seeds = sorted(COMMANDLINE.glob("*.md"))[:SEED_DOCUMENTS]
        self.stderr.write(f"Uploading {len(seeds)} documents to ask about ...")
        self._seed(cluster, keys[admins[0]], seeds)
        questions = [f"What does docker {path.stem.replace('_', ' ')} do?" for path in seeds]
        self._warm_up(cluster, [keys[user] for user in users], questions, options)
        pool = upload_pool(exclude=set(seeds))
        seconds = options["minutes"] * 60
        kills = ", killing a Celery worker and a simulator halfway"
        self.stderr.write(
            f"{options['users']} users and {options['admins']} admins for {seconds:.0f} s"
            f"{kills if options['kill_halfway'] else ''} ..."
        )
        tally = Tally()
        started = time.perf_counter()
        asyncio.run(
            self._load(
                cluster, keys, users, admins[: options["admins"]], questions, pool, tally, options
            )
        )
        wall_s = time.perf_counter() - started
        load_at_end = round(os.getloadavg()[0], 2)
        self.stderr.write("Draining: waiting for every upload to finish ...")
        stuck = drain(cluster, options["drain_s"])
        final = dict(
            cluster.query(
                "SELECT id, status FROM ingestion_documentversion WHERE id = ANY(%s)",
                [u.version_id for u in tally.uploads if u.version_id is not None],
            )
        )
        for upload in tally.uploads:
            upload.final_status = final.get(upload.version_id, "") if upload.version_id else ""
        audit = audit_check(cluster, tally.answers)
        return {
            **summarise(tally, wall_s, options),
            **audit,
            "stuck_versions": stuck,
            "load_at_end": load_at_end,
        }

    def _seed(self, cluster: LoopbackCluster, key: str, seeds: list[Path]) -> None:
        with httpx.Client(
            base_url=cluster.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as client:
            files = [("files", (path.name, path.read_bytes())) for path in seeds]
            uploaded = client.post("/api/documents/", files=files, data={"groups": GROUP})
            if uploaded.status_code != 201:
                raise CommandError(f"The first upload failed: {uploaded.text}")
            versions = {result["version_id"] for result in uploaded.json()["results"]}
            statuses = versions_wait_final(client, versions, timeout_s=SEED_TIMEOUT_S)
        if set(statuses.values()) != {"READY"} or statuses.keys() != versions:
            raise CommandError(f"The documents to ask about did not all become READY: {statuses}")

    def _warm_up(
        self,
        cluster: LoopbackCluster,
        keys: list[str],
        questions: list[str],
        options: dict[str, Any],
    ) -> None:
        """A few questions first, so that every web worker has loaded the embedding model."""
        self.stderr.write("Warming up the web workers ...")

        async def ask_once(key: str, question: str) -> StreamedAnswer:
            async with httpx.AsyncClient(
                base_url=cluster.url,
                headers={"Authorization": f"Bearer {key}"},
                timeout=QUESTION_TIMEOUT_S,
            ) as client:
                return await ask_streamed(client, question, timeout_s=QUESTION_TIMEOUT_S)

        async def ask_round() -> list[StreamedAnswer]:
            count = min(len(keys), 2 * options["web_workers"])
            return list(
                await asyncio.gather(*(ask_once(keys[n], questions[n]) for n in range(count)))
            )

        # Which worker takes a connection is up to the kernel: ask in rounds until no
        # question waited for a cold worker.
        for _ in range(WARM_UP_ROUNDS):
            answers = asyncio.run(ask_round())
            for answer in answers:
                if answer.error or answer.status != "answered":
                    raise CommandError(
                        f"A warm-up question failed: {answer.error or answer.status}"
                    )
            if max(answer.searched_s or 0.0 for answer in answers) < WARM_SEARCH_S:
                return

    async def _load(
        self,
        cluster: LoopbackCluster,
        keys: dict[str, str],
        users: list[str],
        admins: list[str],
        questions: list[str],
        pool: Iterator[tuple[str, bytes]],
        tally: Tally,
        options: dict[str, Any],
    ) -> None:
        start = time.monotonic()
        end = start + options["minutes"] * 60
        tasks = [
            user_session(cluster.url, keys[user], questions, end, options["think_s"], tally)
            for user in users
        ] + [
            admin_session(cluster.url, keys[admin], pool, end, options["admin_think_s"], tally)
            for admin in admins
        ]
        if options["kill_halfway"]:
            tasks.append(kill_halfway(cluster, start, end, tally))
        await asyncio.gather(*tasks)

    def _report(self, result: dict[str, Any], options: dict[str, Any]) -> None:
        missed = targets_missed(result)
        result["targets_missed"] = missed
        killed = f", a Celery worker and a simulator killed at {result['killed_at_s']} s"
        lines = [
            f"{options['users']} users, {options['admins']} admins, {result['wall_s']} s"
            f"{killed if options['kill_halfway'] else ''}",
            f"answers              {result['answers']} ({result['answers_per_s']}/s), "
            f"by status {result['answer_statuses']}",
            f"search done          p50 {result['search_done_p50_s']} s"
            f"  p95 {result['search_done_p95_s']} s",
            f"time to first token  p50 {result['ttft_p50_s']} s  p95 {result['ttft_p95_s']} s"
            f"  p99 {result['ttft_p99_s']} s",
            f"whole answer         p50 {result['answer_p50_s']} s  p95 {result['answer_p95_s']} s"
            f"  p99 {result['answer_p99_s']} s",
            f"uploads              {result['uploads']} ({result['uploads_per_min']}/min), "
            f"final {result['upload_statuses']}",
            f"upload -> READY      p50 {result['ready_p50_s']} s  p95 {result['ready_p95_s']} s"
            f"  max {result['ready_max_s']} s",
            f"errors               {result['errors']} {result['errors_by_kind']}",
            f"cut off mid-answer   {result['cut_off']}"
            f"{' (streams on the killed simulator)' if options['kill_halfway'] else ''}",
            f"audit                {result['audited_answers']}/{result['answers_with_id']} answers "
            f"recorded, chain {'intact' if result['chain_intact'] else 'BROKEN'}",
            f"unfinished documents {result['stuck_versions']} after the drain",
            f"machine              {result['load']['cpus']} CPUs, load average "
            f"{result['load']['load_average_1m']} before, "
            f"{result['load']['load_average_1m_at_end']} at the end",
            "targets              " + ("all met" if not missed else "MISSED: " + "; ".join(missed)),
        ]
        if options["kill_halfway"]:
            lines.insert(
                -4,
                f"after the kill       {result['answered_after_kill']} answered, "
                f"{result['ready_after_kill']} uploads READY",
            )
        self.stdout.write("\n".join(lines))
        if options["json"]:
            self.stdout.write(json.dumps(result))
        if missed:
            raise CommandError("Load test targets missed: " + "; ".join(missed))


async def user_session(
    url: str,
    key: str,
    questions: list[str],
    end: float,
    think_s: float,
    tally: Tally,
) -> None:
    """One employee: ask, read the streamed answer, pause, ask again, until the end."""
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=QUESTION_TIMEOUT_S
    ) as client:
        # People do not all start at the same second.
        await asyncio.sleep(random.uniform(0, think_s))
        while time.monotonic() < end:
            answer = await ask_streamed(
                client, random.choice(questions), timeout_s=QUESTION_TIMEOUT_S
            )
            tally.answers.append(answer)
            await asyncio.sleep(random.uniform(0.5, 1.5) * think_s)


async def admin_session(
    url: str,
    key: str,
    pool: Iterator[tuple[str, bytes]],
    end: float,
    think_s: float,
    tally: Tally,
) -> None:
    """One admin: upload a file, watch it until it is ready, pause, upload the next."""
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as client:
        await asyncio.sleep(random.uniform(0, think_s))
        while time.monotonic() < end:
            name, data = next(pool)
            upload = Upload(name=name, started_at=time.monotonic())
            tally.uploads.append(upload)
            started = time.perf_counter()
            try:
                response = await client.post(
                    "/api/documents/", files=[("files", (name, data))], data={"groups": GROUP}
                )
            except httpx.HTTPError as error:
                upload.error = f"{type(error).__name__}: {error}"
                continue
            if response.status_code not in (200, 201):
                upload.error = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            (result,) = response.json()["results"]
            upload.version_id = result["version_id"]
            if result["error"]:
                upload.error = f"refused: {result['error'][:200]}"
                continue
            while time.monotonic() < end:
                await asyncio.sleep(POLL_S)
                version = await client.get(f"/api/versions/{upload.version_id}/")
                if version.status_code == 200 and version.json()["status"] in FINAL_STATUSES:
                    if version.json()["status"] == "READY":
                        upload.ready_s = time.perf_counter() - started
                    break
            await asyncio.sleep(random.uniform(0.5, 1.5) * think_s)


async def kill_halfway(cluster: LoopbackCluster, start: float, end: float, tally: Tally) -> None:
    await asyncio.sleep((end - start) / 2)
    cluster.kill_celery_worker(0)
    cluster.kill_simulator(0)
    tally.killed_at = time.monotonic()
    tally.killed_at_s = round(tally.killed_at - start, 1)


def upload_pool(*, exclude: set[Path]) -> Iterator[tuple[str, bytes]]:
    """Real sample files (small Markdown and HTML), each once, between generated notes."""
    samples = [
        path
        for path in sorted(SHARED_SAMPLES.rglob("*"))
        if path.suffix in (".md", ".html") and path not in exclude and path.stat().st_size < 40_000
    ]
    random.shuffle(samples)
    real = iter(samples)
    for number in itertools.count():
        sample = next(real, None)
        if sample is not None and number % 2 == 0:
            # Names are unique so that each upload is a new document, not a new version.
            yield f"{number:04d}-{sample.name}", sample.read_bytes()
        else:
            yield f"notice-{number:04d}.md", generated_notice(number)


def generated_notice(number: int) -> bytes:
    code = uuid.uuid4().hex[:8].upper()
    room = random.choice(["north", "south", "east", "west"])
    return (
        f"# Facilities notice {number}\n\n"
        f"## Access\n\nThe {room} meeting room {number} opens with badge code {code}. "
        f"Visitors sign in at the {room} reception before ten.\n\n"
        f"## Equipment\n\nRoom {number} has a projector, a whiteboard and {number % 7 + 2} "
        "chairs; report faults to facilities within one working day.\n"
    ).encode()


def drain(cluster: LoopbackCluster, timeout_s: float) -> int:
    """Wait until no version is queued or being worked on; how many still are."""
    deadline = time.monotonic() + timeout_s
    while True:
        ((unfinished,),) = cluster.query(
            "SELECT count(*) FROM ingestion_documentversion WHERE status <> ALL(%s)",
            list(FINAL_STATUSES),
        )
        if unfinished == 0 or time.monotonic() >= deadline:
            return int(unfinished)
        time.sleep(2)


def audit_check(cluster: LoopbackCluster, answers: list[StreamedAnswer]) -> dict[str, Any]:
    answer_ids = [a.answer_id for a in answers if a.answer_id is not None]
    ((audited,),) = cluster.query(
        "SELECT count(DISTINCT answer_id) FROM assistant_auditrecord WHERE answer_id = ANY(%s)",
        answer_ids,
    )
    ((stored,),) = cluster.query("SELECT count(*) FROM assistant_answer")
    ((unaudited,),) = cluster.query(
        "SELECT count(*) FROM assistant_answer a WHERE NOT EXISTS "
        "(SELECT 1 FROM assistant_auditrecord r WHERE r.answer_id = a.id)"
    )
    verified = cluster.manage("audit_verify")
    return {
        "answers_with_id": len(answer_ids),
        "audited_answers": int(audited),
        "answers_stored": int(stored),
        "answers_without_audit_record": int(unaudited),
        "chain_intact": verified.returncode == 0,
        "audit_verify": verified.stdout.strip().splitlines()[-1:],
    }


def error_kind(answer: StreamedAnswer) -> str | None:
    """How an answer went wrong for the person asking, or None when it did not."""
    if answer.error:
        if answer.error.startswith("HTTP "):
            return answer.error.split(":")[0]
        return answer.error.split(":")[0][:60]
    if answer.status in ("failed", "cancelled"):
        return f"answer {answer.status}"
    return None


def summarise(tally: Tally, wall_s: float, options: dict[str, Any]) -> dict[str, Any]:
    answers = tally.answers
    kinds = Counter(kind for kind in map(error_kind, answers) if kind is not None)
    cut_off = sum(1 for a in answers if a.status == "cut_off" and not a.error)
    for upload in tally.uploads:
        if upload.error:
            kinds[f"upload {upload.error.split(':')[0]}"] += 1
        elif upload.final_status and upload.final_status != "READY":
            kinds[f"upload {upload.final_status}"] += 1
    if not options["kill_halfway"] and cut_off:
        # Nothing was killed: an answer cut off mid-stream is a plain failure.
        kinds["answer cut_off"] += cut_off
    first = [a.first_token_s for a in answers if a.first_token_s is not None and not a.error]
    searched = [a.searched_s for a in answers if a.searched_s is not None and not a.error]
    whole = [a.total_s for a in answers if a.status in ("answered", "abstained") and not a.error]
    ready = [u.ready_s for u in tally.uploads if u.ready_s is not None]
    seconds = options["minutes"] * 60
    after = tally.killed_at if tally.killed_at is not None else float("inf")

    def rounded(values: list[float], fraction: float) -> float:
        return round(percentile(values, fraction), 2)

    return {
        "users": options["users"],
        "admins": options["admins"],
        "minutes": options["minutes"],
        "kill_halfway": options["kill_halfway"],
        "killed_at_s": tally.killed_at_s,
        "wall_s": round(wall_s, 1),
        "answers": len(answers),
        "answers_per_s": round(len(answers) / seconds, 2),
        "answer_statuses": dict(Counter(a.status or "none" for a in answers)),
        "search_done_p50_s": rounded(searched, 0.5),
        "search_done_p95_s": rounded(searched, 0.95),
        "ttft_p50_s": rounded(first, 0.5),
        "ttft_p95_s": rounded(first, 0.95),
        "ttft_p99_s": rounded(first, 0.99),
        "answer_p50_s": rounded(whole, 0.5),
        "answer_p95_s": rounded(whole, 0.95),
        "answer_p99_s": rounded(whole, 0.99),
        "uploads": len(tally.uploads),
        "uploads_per_min": round(len(tally.uploads) / (seconds / 60), 1),
        "upload_statuses": dict(Counter(u.final_status or "none" for u in tally.uploads)),
        "ready_p50_s": rounded(ready, 0.5),
        "ready_p95_s": rounded(ready, 0.95),
        "ready_max_s": round(max(ready, default=0.0), 2),
        "errors": sum(kinds.values()),
        "errors_by_kind": dict(kinds),
        "cut_off": cut_off,
        "answered_after_kill": sum(
            1 for a in answers if a.started_at > after and a.status == "answered"
        ),
        "ready_after_kill": sum(
            1 for u in tally.uploads if u.started_at > after and u.final_status == "READY"
        ),
        "simulator_tokens_per_s": options["tokens_per_s"],
        "simulator_ttft_ms": options["ttft_ms"],
    }


def targets_missed(result: dict[str, Any]) -> list[str]:
    missed = []
    if result["errors"]:
        missed.append(f"{result['errors']} errors")
    if result["answers"] == 0:
        missed.append("no answers")
    if result["audited_answers"] != result["answers_with_id"]:
        missed.append("an answer has no audit record")
    if result["answers_without_audit_record"]:
        missed.append(f"{result['answers_without_audit_record']} stored answers not audited")
    if not result["chain_intact"]:
        missed.append("the audit chain does not verify")
    if result["stuck_versions"]:
        missed.append(f"{result['stuck_versions']} documents unfinished after the drain")
    return missed


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A database created for the run and dropped after it; its URL."""
    name = f"assistant_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def flushed_redis(db: int) -> Iterator[str]:
    """A Redis database emptied before and after the run; its broker URL."""
    redis.Redis(db=db).flushdb()
    try:
        yield f"redis://127.0.0.1:6379/{db}"
    finally:
        redis.Redis(db=db).flushdb()
