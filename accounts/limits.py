"""Rate limits on asking and uploading, and a cap on answers in progress per user.

Two backends behind one small protocol: in-process (standalone: one server process) and
Redis (cluster: every app server shares the counts). Written here rather than taken from
a library because the stream cap needs the same two backends and none of the rate-limit
libraries has it; the whole limiter is two short Lua scripts and their in-process twins.

The rate limit is an exact sliding window (a log of hit times per key, at most N entries):
"30/minute" means at most 30 in any 60 seconds, and the time to wait is exact. A request
is checked against every bucket it belongs to (the user's and the token's) at once, and
counted in all of them or in none.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Protocol, TypeVar

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse
from rest_framework import status
from rest_framework.exceptions import APIException

from accounts.authentication import request_token

if TYPE_CHECKING:
    from rest_framework.request import Request

    from accounts.models import ApiToken

logger = logging.getLogger(__name__)

UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
UNIT_NAMES = {1: "a second", 60: "a minute", 3600: "an hour", 86400: "a day"}
# How soon to try again when all of a user's answer slots are busy: answers end at any time.
STREAM_RETRY_AFTER_S = 5
KEY_PREFIX = "limits:"

Item = TypeVar("Item")


@dataclass(frozen=True)
class Rate:
    count: int
    period_s: int

    def __str__(self) -> str:
        return f"{self.count} {UNIT_NAMES.get(self.period_s, f'per {self.period_s} seconds')}"


def rate_parse(text: str) -> Rate | None:
    """`30/minute`, `200/hour`, `5/second`, `1000/day`; empty or `off` means no limit."""
    cleaned = text.strip().lower()
    if cleaned in ("", "off", "none"):
        return None
    count_text, _, unit = cleaned.partition("/")
    unit = unit.strip().removesuffix("s")
    if not count_text.strip().isdigit() or unit not in UNIT_SECONDS:
        raise ValueError(
            f"A rate looks like 30/minute (units: {', '.join(UNIT_SECONDS)}), not {text!r}."
        )
    count = int(count_text)
    if count < 1:
        raise ValueError(f"A rate allows at least 1, not {text!r}; use 'off' for no limit.")
    return Rate(count=count, period_s=UNIT_SECONDS[unit])


class Limited(Exception):
    """Refused by a limit: HTTP 429 with Retry-After."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(f"{message} Try again in {seconds_text(self.retry_after_s)}.")
        self.message = str(self)


def seconds_text(seconds: int) -> str:
    return "1 second" if seconds == 1 else f"{seconds} seconds"


@dataclass(frozen=True)
class Bucket:
    key: str
    rate: Rate
    refusal: str


class LimiterBackend(Protocol):
    def hit(self, buckets: Sequence[Bucket], cost: int) -> tuple[float, int]:
        """Count `cost` in every bucket and return (0, -1); or count nothing and return the
        seconds until all buckets would allow it and the index of the bucket that waits most."""

    def slot_acquire(self, key: str, cap: int, slot_id: str, lease_s: int) -> bool:
        """Take one of `cap` slots for `lease_s` seconds at most."""

    def slot_release(self, key: str, slot_id: str) -> None: ...


# ---- In-process ---------------------------------------------------------------------------------


class MemoryBackend:
    """For one process: the standalone server, where the web requests and tasks share memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logs: dict[str, deque[float]] = {}
        self._slots: dict[str, dict[str, float]] = {}

    def hit(self, buckets: Sequence[Bucket], cost: int) -> tuple[float, int]:
        now = time.monotonic()
        with self._lock:
            wait, binding = 0.0, -1
            for index, bucket in enumerate(buckets):
                log = self._logs.setdefault(bucket.key, deque())
                while log and log[0] <= now - bucket.rate.period_s:
                    log.popleft()
                excess = len(log) + cost - bucket.rate.count
                if excess > 0:
                    bucket_wait = log[excess - 1] + bucket.rate.period_s - now
                    if bucket_wait > wait:
                        wait, binding = bucket_wait, index
            if binding >= 0:
                return wait, binding
            for bucket in buckets:
                self._logs[bucket.key].extend([now] * cost)
            return 0.0, -1

    def slot_acquire(self, key: str, cap: int, slot_id: str, lease_s: int) -> bool:
        now = time.monotonic()
        with self._lock:
            slots = self._slots.setdefault(key, {})
            for expired in [slot for slot, until in slots.items() if until <= now]:
                del slots[expired]
            if len(slots) >= cap:
                return False
            slots[slot_id] = now + lease_s
            return True

    def slot_release(self, key: str, slot_id: str) -> None:
        with self._lock:
            self._slots.get(key, {}).pop(slot_id, None)


# ---- Redis --------------------------------------------------------------------------------------

# Times come from the Redis server so that app servers with drifting clocks agree.
_HIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost = tonumber(ARGV[1])
local wait, binding = 0, -1
for i, key in ipairs(KEYS) do
  local count = tonumber(ARGV[2 * i])
  local period = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
  local excess = redis.call('ZCARD', key) + cost - count
  if excess > 0 then
    local oldest = redis.call('ZRANGE', key, excess - 1, excess - 1, 'WITHSCORES')
    local bucket_wait = tonumber(oldest[2]) + period - now
    if bucket_wait > wait then wait, binding = bucket_wait, i - 1 end
  end
end
if binding >= 0 then return {tostring(wait), binding} end
local id = ARGV[2 * #KEYS + 2]
for i, key in ipairs(KEYS) do
  for n = 1, cost do redis.call('ZADD', key, now, id .. ':' .. n) end
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[2 * i + 1])) + 1)
end
return {'0', -1}
"""

# Each slot carries its own expiry: a worker killed mid-answer frees its slot after the
# lease, while the user's other slots keep theirs.
_SLOT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= cap then return 0 end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
redis.call('EXPIRE', KEYS[1], lease + 1)
return 1
"""


class RedisBackend:
    """For the cluster: counts shared by every app server, each change one atomic script."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._hit = self.client.register_script(_HIT_SCRIPT)
        self._slot = self.client.register_script(_SLOT_SCRIPT)

    def hit(self, buckets: Sequence[Bucket], cost: int) -> tuple[float, int]:
        arguments: list[str | int] = [cost]
        for bucket in buckets:
            arguments += [bucket.rate.count, bucket.rate.period_s]
        arguments.append(uuid.uuid4().hex)
        wait, binding = self._hit(keys=[bucket.key for bucket in buckets], args=arguments)
        return float(wait), int(binding)

    def slot_acquire(self, key: str, cap: int, slot_id: str, lease_s: int) -> bool:
        return bool(self._slot(keys=[key], args=[cap, lease_s, slot_id]))

    def slot_release(self, key: str, slot_id: str) -> None:
        self.client.zrem(key, slot_id)


@cache
def _backend(kind: str, url: str) -> LimiterBackend:
    if kind == "memory":
        return MemoryBackend()
    if kind == "redis":
        return RedisBackend(url)
    raise ValueError(f"RATE_LIMIT_BACKEND must be 'memory' or 'redis', not {kind!r}.")


def limiter_backend() -> LimiterBackend:
    return _backend(settings.RATE_LIMIT_BACKEND, settings.RATE_LIMIT_REDIS_URL)


def limiter_reset() -> None:
    """Forget every in-process count (a fresh process); Redis counts are left alone."""
    _backend.cache_clear()


# ---- The limits the app applies ---------------------------------------------------------------


def _buckets(
    action: str,
    noun: str,
    user_id: int | None,
    token: ApiToken | None,
    user_rate: str,
    token_rate: str,
) -> list[Bucket]:
    if user_id is None:
        raise ValueError("Limits count the requests of signed-in users only.")
    buckets: list[Bucket] = []
    rate = rate_parse(user_rate)
    if rate is not None:
        refusal = f"Too many {noun}: at most {rate}."
        buckets.append(Bucket(f"{KEY_PREFIX}{action}:user:{user_id}", rate, refusal))
    rate = rate_parse(token_rate)
    if token is not None and rate is not None:
        buckets.append(
            Bucket(
                f"{KEY_PREFIX}{action}:token:{token.id}",
                rate,
                f"Too many {noun} with this API token: at most {rate}.",
            )
        )
    return buckets


def _check(buckets: list[Bucket], cost: int) -> None:
    if not buckets:
        return
    for bucket in buckets:
        if cost > bucket.rate.count:
            raise Limited(f"{bucket.refusal} Send fewer at once.", bucket.rate.period_s)
    try:
        wait, binding = limiter_backend().hit(buckets, cost)
    except redis.RedisError:
        # A limiter outage must not stop people from working; the log says it happened.
        logger.exception("The rate limiter is unavailable; the request goes through unlimited")
        return
    if binding >= 0:
        raise Limited(buckets[binding].refusal, wait)


def ask_limit_check(*, user_id: int | None, token: ApiToken | None) -> None:
    """Count one question for the user (and the token), or raise Limited."""
    buckets = _buckets(
        "ask", "questions", user_id, token, settings.RATE_LIMIT_ASK, settings.RATE_LIMIT_ASK_TOKEN
    )
    _check(buckets, 1)


def upload_limit_check(*, user_id: int | None, token: ApiToken | None, files: int) -> None:
    """Count the files of one upload request for the user (and the token), or raise Limited."""
    buckets = _buckets(
        "upload",
        "uploaded files",
        user_id,
        token,
        settings.RATE_LIMIT_UPLOAD,
        settings.RATE_LIMIT_UPLOAD_TOKEN,
    )
    _check(buckets, max(files, 1))


class StreamSlot:
    """One of the user's answers in progress; `release` is safe to call more than once."""

    def __init__(self, key: str, slot_id: str) -> None:
        self.key = key
        self.slot_id = slot_id
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            limiter_backend().slot_release(self.key, self.slot_id)
        except redis.RedisError:
            logger.exception("Could not free an answer slot; its lease frees it later")


def stream_slot_acquire(*, user_id: int) -> StreamSlot | None:
    """A slot for one answer in progress, or Limited when the user has all of theirs busy.

    None when no cap is configured (or the limiter is unavailable).
    """
    cap = settings.STREAMS_PER_USER
    if cap <= 0:
        return None
    slot = StreamSlot(f"{KEY_PREFIX}streams:user:{user_id}", uuid.uuid4().hex)
    try:
        taken = limiter_backend().slot_acquire(slot.key, cap, slot.slot_id, settings.STREAM_LEASE_S)
    except redis.RedisError:
        logger.exception("The stream cap is unavailable; the answer goes through uncapped")
        return None
    if not taken:
        answers = "answer" if cap == 1 else "answers"
        raise Limited(
            f"You already have {cap} {answers} in progress. Wait for one to finish or stop one.",
            STREAM_RETRY_AFTER_S,
        )
    return slot


async def holding_slot(
    items: AsyncIterator[Item], slot: StreamSlot | None
) -> AsyncGenerator[Item, None]:
    """`items` as they come; the slot is freed when they end, fail or the client goes away."""
    try:
        async for item in items:
            yield item
    finally:
        # Freed right here, not awaited: a cancelled task may not get to run another await.
        if slot is not None:
            slot.release()
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


def ask_admit(*, user_id: int | None, token: ApiToken | None) -> StreamSlot | None:
    """Admit one question: an answer slot, then the question counted; or raise Limited.

    The slot comes first so that a question refused for want of a slot is not counted.
    """
    if user_id is None:
        raise ValueError("Limits count the requests of signed-in users only.")
    slot = stream_slot_acquire(user_id=user_id)
    try:
        ask_limit_check(user_id=user_id, token=token)
    except Limited:
        if slot is not None:
            slot.release()
        raise
    return slot


async def aask_admit(*, user_id: int | None, token: ApiToken | None) -> StreamSlot | None:
    """`ask_admit` for async views; Redis calls run off the event loop."""
    return await sync_to_async(ask_admit, thread_sensitive=False)(user_id=user_id, token=token)


# ---- Refusals as responses ---------------------------------------------------------------------


def limited_response(limited: Limited) -> JsonResponse:
    """429 for the portal's scripts: they show `detail`; Retry-After says when."""
    response = JsonResponse({"detail": limited.message}, status=429)
    response["Retry-After"] = str(limited.retry_after_s)
    return response


class RateLimited(APIException):
    """The REST API's 429; DRF sets Retry-After from `wait`."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = "Too many requests."
    default_code = "throttled"

    def __init__(self, limited: Limited) -> None:
        super().__init__(limited.message)
        self.wait = limited.retry_after_s


def api_ask_admit(request: Request) -> StreamSlot | None:
    """For a REST ask: count the question and take an answer slot, or raise RateLimited (429)."""
    try:
        return ask_admit(user_id=request.user.pk, token=request_token(request))
    except Limited as limited:
        raise RateLimited(limited) from limited


def api_upload_admit(request: Request, *, files: int) -> None:
    """For a REST upload: count its files, or raise RateLimited (429)."""
    try:
        upload_limit_check(user_id=request.user.pk, token=request_token(request), files=files)
    except Limited as limited:
        raise RateLimited(limited) from limited
