from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from bench.loopback_cluster import FINAL_STATUSES
from bench.loopback_processes import Process, started
from bench.measures import machine_load, percentile, process_cpu_s, scifact_texts

INGEST_TIMEOUT_S = 300
WARM_UP_QUESTIONS = 2
SIMULATORS = 2


@dataclass
class Outcome:
    """One streamed question as the client saw it."""

    ok: bool
    first_token_ms: float | None = None
    total_ms: float = 0.0
    error: str = ""
    headers_ms: float | None = None
    searched_ms: float | None = None


async def stream_question(
    client: httpx.AsyncClient, api: str, question: str, timeout_s: float
) -> Outcome:
    started = time.perf_counter()

    def elapsed_ms() -> float:
        return (time.perf_counter() - started) * 1000

    outcome = Outcome(ok=False)
    finished = False
    if api == "ask":
        url, body = "/api/assistant/ask", {"question": question, "stream": True}
    else:
        url = "/v1/chat/completions"
        body = {"messages": [{"role": "user", "content": question}], "stream": True}
    try:
        async with asyncio.timeout(timeout_s), client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                outcome.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return outcome
            outcome.headers_ms = elapsed_ms()
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                    continue
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if event == "meta":
                    outcome.searched_ms = elapsed_ms()
                if outcome.first_token_ms is None and token_in(api, event, data):
                    outcome.first_token_ms = elapsed_ms()
                if (api == "ask" and event == "done") or data == "[DONE]":
                    finished = True
                if event == "error" or data.startswith('{"error"'):
                    outcome.error = data[:200]
                    return outcome
    except (TimeoutError, httpx.HTTPError) as error:
        outcome.error = f"{type(error).__name__}: {error}"
        return outcome
    outcome.total_ms = elapsed_ms()
    if not finished:
        outcome.error = "the stream ended before the answer was complete"
    elif outcome.first_token_ms is None:
        outcome.error = "no token arrived"
    else:
        outcome.ok = True
    return outcome


def token_in(api: str, event: str, data: str) -> bool:
    """Whether an event carries generated text: reasoning or answer."""
    if api == "ask":
        return event in ("reasoning", "answer", "reclassify") and json.loads(data)["text"] != ""
    if data == "[DONE]":
        return False
    choices = json.loads(data).get("choices") or [{}]
    delta = choices[0].get("delta") or {}
    return bool(delta.get("reasoning") or delta.get("content"))


class Command(BaseCommand):
    help = (
        "Start the ASGI server and two R1 simulators, stream many questions at once through "
        "HTTP on loopback, and report errors, the server's share of the time to first token, "
        "and throughput."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, default=64)
        parser.add_argument("--documents", type=int, default=40, help="SciFact abstracts")
        parser.add_argument("--ttft-ms", type=float, default=200.0, help="simulators' first token")
        parser.add_argument("--tokens-per-s", type=float, default=25.0, help="per stream")
        parser.add_argument("--timeout-s", type=float, default=180.0, help="per question")
        parser.add_argument(
            "--api", choices=["ask", "openai"], default="ask", help="the streaming endpoint"
        )
        parser.add_argument("--json", action="store_true", help="last line: one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["concurrency"] < 1 or options["documents"] < 1:
            raise CommandError("Concurrency and documents must be positive.")
        load = machine_load()
        corpus, queries = scifact_texts()
        questions = queries[: WARM_UP_QUESTIONS + options["concurrency"]]
        with tempfile.TemporaryDirectory(prefix="bench-portal-") as data_dir, ExitStack() as stack:
            folder = Path(data_dir)
            env = {
                key: value
                for key, value in os.environ.items()
                if key not in ("DATABASE_URL", "QDRANT_URL", "QDRANT_PATH", "ASSISTANT_MODE")
            }
            simulators = [
                stack.enter_context(
                    started(
                        f"simulator {number}",
                        [
                            "r1_simulator",
                            f"--ttft-ms={options['ttft_ms']}",
                            f"--tokens-per-s={options['tokens_per_s']}",
                        ],
                        env,
                        folder / f"simulator-{number}.log",
                    )
                )
                for number in range(SIMULATORS)
            ]
            password = secrets.token_urlsafe(16)
            server_env = {
                **env,
                "ASSISTANT_DATA_DIR": str(folder / "var"),
                "ASSISTANT_ADMIN_PASSWORD": password,
                "VLLM_URLS": ",".join(simulator.url for simulator in simulators),
                "HF_HUB_OFFLINE": "1",
                # The benchmark measures how much the portal serves, not the per-user limits.
                "RATE_LIMIT_ASK": "off",
                "RATE_LIMIT_ASK_TOKEN": "off",
                "RATE_LIMIT_UPLOAD": "off",
                "RATE_LIMIT_UPLOAD_TOKEN": "off",
                "STREAMS_PER_USER": "0",
            }
            server = stack.enter_context(
                started("server", ["serve"], server_env, folder / "server.log")
            )
            for simulator in simulators:
                simulator.wait_until_answering("/health")
            self.stderr.write("Starting the server ...")
            server.wait_until_answering("/accounts/login/")
            client = httpx.Client(base_url=server.url, timeout=60)
            token = subprocess.run(
                [
                    *(sys.executable, "manage.py", "apitoken", "create", "admin"),
                    *("--name", "bench", "--scopes", "read,ask,ingest"),
                ],
                cwd=settings.BASE_DIR,
                env=server_env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if token.returncode != 0:
                raise CommandError(f"No API token: {token.stderr}")
            key = token.stdout.strip()
            client.headers["Authorization"] = f"Bearer {key}"
            self.stderr.write(f"Ingesting {options['documents']} documents ...")
            self._ingest(client, corpus[: options["documents"]], server)
            for question in questions[:WARM_UP_QUESTIONS]:
                (warm_up,) = asyncio.run(self._run(server.url, key, options, [question]))
                if not warm_up.ok:
                    raise CommandError(f"A first question failed: {warm_up.error}")
            before = [len(self._simulator_records(simulator)) for simulator in simulators]
            self.stderr.write(f"Streaming {options['concurrency']} questions at once ...")
            cpu_before_s = process_cpu_s(server.popen.pid)
            started_at = time.perf_counter()
            outcomes = asyncio.run(
                self._run(server.url, key, options, questions[WARM_UP_QUESTIONS:])
            )
            wall_s = time.perf_counter() - started_at
            server_cpu_s = process_cpu_s(server.popen.pid) - cpu_before_s
            records = [
                record
                for simulator, skip in zip(simulators, before, strict=True)
                for record in self._simulator_records(simulator)[skip:]
            ]
            per_simulator = [
                len(self._simulator_records(simulator)) - skip
                for simulator, skip in zip(simulators, before, strict=True)
            ]
        self._report(
            outcomes,
            records,
            per_simulator,
            wall_s,
            {**options, **load, "server_cpu_s": server_cpu_s},
        )

    def _ingest(self, client: httpx.Client, texts: list[Any], server: Process) -> None:
        files = [
            ("files", (f"scifact-{number}.md", f"# {text.title}\n\n{text.text}\n".encode()))
            for number, text in enumerate(texts)
        ]
        uploaded = client.post("/api/documents/", files=files, data={"everyone": "true"})
        if uploaded.status_code not in (200, 201):
            raise CommandError(f"The upload failed: {uploaded.text}")
        pending = {result["version_id"] for result in uploaded.json()["results"]}
        deadline = time.monotonic() + INGEST_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            for version_id in sorted(pending):
                version = client.get(f"/api/versions/{version_id}/").json()
                if version["status"] in FINAL_STATUSES:
                    pending.discard(version_id)
            time.sleep(0.5)
        if pending:
            raise CommandError(f"Ingestion did not finish:\n{server.log_tail()}")

    async def _run(
        self, url: str, key: str, options: dict[str, Any], questions: list[str]
    ) -> list[Outcome]:
        limits = httpx.Limits(max_connections=len(questions) + 4, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            limits=limits,
            timeout=httpx.Timeout(options["timeout_s"], connect=10),
        ) as client:
            return list(
                await asyncio.gather(
                    *(
                        stream_question(client, options["api"], question, options["timeout_s"])
                        for question in questions
                    )
                )
            )

    def _simulator_records(self, simulator: Process) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = httpx.get(
            f"{simulator.url}/simulator/stats", timeout=30
        ).json()["requests"]
        return records

    def _report(
        self,
        outcomes: list[Outcome],
        records: list[dict[str, Any]],
        per_simulator: list[int],
        wall_s: float,
        options: dict[str, Any],
    ) -> None:
        completed = [outcome for outcome in outcomes if outcome.ok]
        errors = [outcome.error for outcome in outcomes if not outcome.ok]
        seen = [outcome.first_token_ms for outcome in completed if outcome.first_token_ms]
        headers = [outcome.headers_ms for outcome in completed if outcome.headers_ms]
        searched = [outcome.searched_ms for outcome in completed if outcome.searched_ms]
        # Like with like: the first text either side shows, not the think tag.
        own = [
            record["first_text_s"] * 1000
            for record in records
            if record.get("first_text_s") is not None
        ]
        tokens = sum(int(record["completion_tokens"]) for record in records)
        result = {
            "concurrent_requests": len(outcomes),
            "concurrent_completed": len(completed),
            "concurrent_errors": len(errors),
            "api": options["api"],
            "ttft_p50_ms": round(percentile(seen, 0.5), 1),
            "ttft_p95_ms": round(percentile(seen, 0.95), 1),
            "simulator_ttft_p50_ms": round(percentile(own, 0.5), 1),
            "simulator_ttft_p95_ms": round(percentile(own, 0.95), 1),
            "overhead_ttft_p50_ms": round(percentile(seen, 0.5) - percentile(own, 0.5), 1),
            "overhead_ttft_p95_ms": round(percentile(seen, 0.95) - percentile(own, 0.95), 1),
            "response_headers_p50_ms": round(percentile(headers, 0.5), 1),
            "response_headers_p95_ms": round(percentile(headers, 0.95), 1),
            "wall_s": round(wall_s, 2),
            "answers_per_s": round(len(completed) / wall_s, 2),
            "tokens_per_s": round(tokens / wall_s, 1),
            "requests_per_simulator": per_simulator,
            # The server's own CPU time per streamed answer: comparable on a busy machine.
            "server_cpu_ms_per_answer": round(
                1000 * options["server_cpu_s"] / max(1, len(outcomes)), 1
            ),
            "simulator_tokens_per_s": options["tokens_per_s"],
            "simulator_ttft_ms": options["ttft_ms"],
            "cpus": options["cpus"],
            "load_average_1m": options["load_average_1m"],
        }
        if searched:
            # Only the REST stream says when the search is done (its `meta` event).
            result["search_done_p50_ms"] = round(percentile(searched, 0.5), 1)
            result["search_done_p95_ms"] = round(percentile(searched, 0.95), 1)
        search_line = (
            f"search done          p50 {result['search_done_p50_ms']} ms"
            f"  p95 {result['search_done_p95_ms']} ms\n"
            if searched
            else ""
        )
        self.stdout.write(
            f"{len(outcomes)} concurrent streamed questions through {options['api']}\n"
            f"completed            {len(completed)}\n"
            f"errors               {len(errors)}\n"
            f"response headers     p50 {result['response_headers_p50_ms']} ms"
            f"  p95 {result['response_headers_p95_ms']} ms\n"
            f"{search_line}"
            f"time to first token  p50 {result['ttft_p50_ms']} ms  p95 {result['ttft_p95_ms']} ms\n"
            f"simulators' own      p50 {result['simulator_ttft_p50_ms']} ms"
            f"  p95 {result['simulator_ttft_p95_ms']} ms\n"
            f"server's share       p50 {result['overhead_ttft_p50_ms']} ms"
            f"  p95 {result['overhead_ttft_p95_ms']} ms\n"
            f"throughput           {result['answers_per_s']} answers/s, "
            f"{result['tokens_per_s']} tokens/s over {result['wall_s']} s\n"
            f"requests per simulator {per_simulator}\n"
            f"server CPU time      {result['server_cpu_ms_per_answer']} ms per answer\n"
            f"{result['cpus']} CPUs, load average {result['load_average_1m']} before it started"
        )
        for error in sorted(set(errors))[:5]:
            self.stdout.write(f"error: {error}")
        if options["json"]:
            self.stdout.write(json.dumps(result))
