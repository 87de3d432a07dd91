"""Parse DeepSeek-R1's output into its reasoning and its answer.

vLLM delivers R1's chain of thought in one of three ways: a `reasoning` delta field
(current reasoning parser), a `reasoning_content` delta field (older releases), or
inline as `<think>...</think>` inside the content when no reasoning parser runs.
R1's chat template usually ends the prompt with `<think>`, so inline output often
lacks the opening tag and only `</think>` marks where the answer begins.

`ReasoningSplitter` splits a completion while it streams. `strip_think_blocks` cleans
text that is already meant to be an answer, such as an earlier answer that goes back
into a prompt.
"""

from __future__ import annotations

import enum
import re
from typing import Literal, NamedTuple

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

PieceKind = Literal["reasoning", "answer"]

_THINK_BLOCK = re.compile(f"{re.escape(OPEN_TAG)}.*?{re.escape(CLOSE_TAG)}", re.DOTALL)


class Piece(NamedTuple):
    kind: PieceKind
    text: str


class R1Output(NamedTuple):
    """The reasoning and the answer of one completion, as far as it has been read."""

    reasoning: str = ""
    answer: str = ""

    def extended(self, piece: Piece, *, reclassified: bool = False) -> R1Output:
        """This output once `piece` is read.

        A reclassified piece holds the whole answer: no think block was ever closed,
        so the text taken for reasoning was the answer all along and none is left.
        """
        if reclassified:
            return R1Output("", piece.text)
        if piece.kind == "reasoning":
            return R1Output(self.reasoning + piece.text, self.answer)
        return R1Output(self.reasoning, self.answer + piece.text)


def strip_think_blocks(text: str) -> str:
    """`text` without any think block, even one whose opening tag is missing.

    Unlike `ReasoningSplitter`, which expects reasoning only at the start, this removes
    a block wherever it sits: it is meant for text that should hold no reasoning at all.
    """
    without_blocks = _THINK_BLOCK.sub("", text)
    _, closing, after = without_blocks.rpartition(CLOSE_TAG)
    return (after if closing else without_blocks).strip()


class _State(enum.Enum):
    # Nothing but whitespace or the start of an opening tag has arrived yet.
    UNDECIDED = enum.auto()
    # An explicit opening tag was seen; reasoning runs until the closing tag.
    THINKING = enum.auto()
    # Content began without an opening tag: reasoning if a closing tag follows, else answer.
    THINKING_WITHOUT_OPEN_TAG = enum.auto()
    ANSWERING = enum.auto()


def _held_tag_prefix_length(text: str, tag: str) -> int:
    """Length of the longest end of `text` that could be the start of `tag`."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-length:]):
            return length
    return 0


class _WhitespaceTrimmer:
    """Drops whitespace at the start and end of one kind of text while streaming.

    Trailing whitespace is held until more text of the same kind arrives, so the
    three server styles (which place newlines around the tags differently) give
    identical text.
    """

    def __init__(self) -> None:
        self.started = False
        self.pending_whitespace = ""

    def push(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            if not text:
                return ""
            self.started = True
        stripped = text.rstrip()
        if not stripped:
            self.pending_whitespace += text
            return ""
        emitted = self.pending_whitespace + stripped
        self.pending_whitespace = text[len(stripped) :]
        return emitted


class ReasoningSplitter:
    """Turns content and reasoning deltas into ordered reasoning and answer pieces.

    Feed every delta with `feed()`, then call `finish()` once the stream ends. Text
    is released as soon as it can be classified; at most a tag's length of content
    is held back while a tag may still be arriving across deltas. `output` holds the
    split of everything released so far.

    Content that starts without `<think>` is streamed as reasoning on the assumption
    that the chat template opened the think block. If the stream then ends without
    any `</think>`, there never was a think block: `finish()` returns the whole text
    as one answer piece and `reclassified` becomes True, telling the consumer that
    the reasoning it was shown was in fact the answer.
    """

    def __init__(self) -> None:
        self._state = _State.UNDECIDED
        self._buffer = ""
        self._reasoning = _WhitespaceTrimmer()
        self._answer = _WhitespaceTrimmer()
        self._content_without_open_tag = ""
        self.reclassified = False
        self.output = R1Output()

    @property
    def reasoning(self) -> str:
        return self.output.reasoning

    @property
    def answer(self) -> str:
        return self.output.answer

    def feed(self, *, content: str | None = None, reasoning: str | None = None) -> list[Piece]:
        pieces: list[Piece] = []
        if reasoning:
            # A server that parses reasoning sends only the answer as content.
            if self._state is _State.UNDECIDED:
                self._state = _State.ANSWERING
            self._emit("reasoning", reasoning, pieces)
        if content:
            self._feed_content(content, pieces)
        return pieces

    def finish(self, *, complete: bool = True) -> list[Piece]:
        """Release held text. `complete=False` means the stream broke off early,
        so a missing closing tag proves nothing and no text is reclassified."""
        pieces: list[Piece] = []
        held, self._buffer = self._buffer, ""
        if self._state is _State.UNDECIDED:
            self._emit("answer", held, pieces)
        elif self._state is _State.THINKING:
            self._emit("reasoning", held, pieces)
        elif self._state is _State.THINKING_WITHOUT_OPEN_TAG:
            if complete:
                self.reclassified = True
                self._answer = _WhitespaceTrimmer()
                self._emit("answer", self._content_without_open_tag, pieces)
            else:
                self._emit("reasoning", held, pieces)
        self._state = _State.ANSWERING
        return pieces

    def _feed_content(self, content: str, pieces: list[Piece]) -> None:
        if self._state is _State.ANSWERING:
            self._emit("answer", content, pieces)
            return
        self._buffer += content
        if self._state is _State.UNDECIDED:
            start = self._buffer.lstrip()
            if start.startswith(OPEN_TAG):
                self._state = _State.THINKING
                self._buffer = start[len(OPEN_TAG) :]
            elif OPEN_TAG.startswith(start):
                return
            else:
                self._state = _State.THINKING_WITHOUT_OPEN_TAG
                self._content_without_open_tag = self._buffer
        elif self._state is _State.THINKING_WITHOUT_OPEN_TAG:
            self._content_without_open_tag += content
        self._release_reasoning(pieces)

    def _release_reasoning(self, pieces: list[Piece]) -> None:
        close_at = self._buffer.find(CLOSE_TAG)
        if close_at >= 0:
            reasoning, answer = self._buffer[:close_at], self._buffer[close_at + len(CLOSE_TAG) :]
            self._buffer = ""
            self._state = _State.ANSWERING
            self._emit("reasoning", reasoning, pieces)
            self._emit("answer", answer, pieces)
            return
        held = _held_tag_prefix_length(self._buffer, CLOSE_TAG)
        releasable = self._buffer[: len(self._buffer) - held]
        self._buffer = self._buffer[len(releasable) :]
        self._emit("reasoning", releasable, pieces)

    def _emit(self, kind: PieceKind, text: str, pieces: list[Piece]) -> None:
        trimmer = self._reasoning if kind == "reasoning" else self._answer
        emitted = trimmer.push(text)
        if emitted:
            piece = Piece(kind, emitted)
            pieces.append(piece)
            self.output = self.output.extended(piece, reclassified=self.reclassified)
