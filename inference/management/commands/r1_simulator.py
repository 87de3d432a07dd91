from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from django.core.management.base import BaseCommand

from inference.simulator import (
    SIMULATOR_MODEL,
    SIMULATOR_NOTICE,
    SimulatorOptions,
    build_simulator_app,
    hide_simulated_cut_tracebacks,
)


class Command(BaseCommand):
    help = (
        "Serve a local stand-in for DeepSeek-R1 on vLLM's OpenAI-compatible API, "
        "for development and benchmarks. It answers by quoting the prompt's sources."
    )
    # The simulator uses neither the database nor the URLconf.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument(
            "--reasoning-field",
            choices=["reasoning", "reasoning_content", "inline"],
            default="reasoning",
            help="Where reasoning goes: the current vLLM field, the older one, "
            "or <think> tags inside the content.",
        )
        parser.add_argument(
            "--no-open-tag",
            action="store_true",
            help="With --reasoning-field inline, leave out the opening <think> tag "
            "as R1's chat template does.",
        )
        parser.add_argument(
            "--tokens-per-s",
            type=float,
            default=30.0,
            help="Pacing of the stream; 0 sends everything at once.",
        )
        parser.add_argument("--ttft-ms", type=float, default=0.0)
        parser.add_argument(
            "--fail-rate",
            type=float,
            default=0.0,
            help="Fraction of requests answered with HTTP 500.",
        )
        parser.add_argument("--model", default=SIMULATOR_MODEL)
        parser.add_argument("--api-key", default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        simulator_options = SimulatorOptions(
            model=options["model"],
            reasoning_field=options["reasoning_field"],
            inline_no_open_tag=options["no_open_tag"],
            tokens_per_s=options["tokens_per_s"],
            ttft_ms=options["ttft_ms"],
            fail_rate=options["fail_rate"],
            api_key=options["api_key"],
        )
        host, port = options["host"], options["port"]
        self.stdout.write(f"R1 simulator serving {simulator_options.model} at http://{host}:{port}")
        self.stdout.write(SIMULATOR_NOTICE)
        hide_simulated_cut_tracebacks()
        uvicorn.run(
            build_simulator_app(simulator_options),
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
        )
