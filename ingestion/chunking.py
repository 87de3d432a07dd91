"""Split parsed sections into passages that fit the embedding model's input.

Text is cut into units (sentences; lines of over-long sentences; words of over-long
lines) and whole units are packed into chunks of at most `max_tokens` word pieces. A chunk
never spans two pages. It spans several sections to take in a tiny section (under
`min_tokens`) whose heading is an ancestor of, or the same as, the next section's heading
on the same page (the heading line alone, or a short intro before the first subheading),
or to keep short sections under one top heading together while they fit. A chunk carries
the most specific heading path that holds all of it: the later, deeper one after an intro,
the shared one for sections side by side.

A Markdown table (as the parsers write tables) is cut only between rows, its header row and
separator are one unit, and a passage that starts inside a table begins with the table's
caption (the line above it) and header again, so every passage of a long table says what its
columns are. A table that fits in one passage is never cut: the passage before it ends where
the table (with its caption) begins.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ingestion.parsing import ParsedDocument, Section, encoded_text
from ingestion.parsing.tables import TABLE_BLOCK

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_LIST_ITEM_LINE = re.compile(r"\n(?=[ \t]*(?:[-*•▪◦‣\u2013]|\d{1,3}[.)])\s)")
_SENTENCE_END = re.compile(r"[.!?…]+[\"'\u201d\u2019»)\]]*(?=\s)")
_LINE = re.compile(r"[^\n]*\S[^\n]*")
_WORD = re.compile(r"\S+")
# A caption longer than this is a paragraph that happens to precede the table.
_CAPTION_MAX_CHARS = 200
# The characters a BERT tokenizer always treats as word separators: Unicode white space
# except the control characters among it, which its normalizer deletes instead.
_BERT_WHITESPACE = re.compile(r"[\t\n\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_MAX_REMEMBERED_WORDS = 500_000
_INITIALS = re.compile(r"(?:[^\W\d_]\.)+")
# Abbreviations that are followed by a capitalised word without ending the sentence.
_ABBREVIATIONS = frozenset(
    {
        "mr.", "mrs.", "ms.", "dr.", "prof.", "sr.", "jr.", "st.", "vs.", "cf.", "fig.",
        "figs.", "no.", "nos.", "vol.", "pp.", "ed.", "eds.", "eq.", "ref.", "refs.", "sec.",
        "ch.", "approx.", "al.", "dept.", "gen.", "gov.", "lt.", "col.", "rev.", "mt.",
    }
)  # fmt: skip


@dataclass(frozen=True)
class ChunkDraft:
    index: int
    text: str
    page: int | None
    heading_path: tuple[str, ...]
    token_count: int


class TokenCounter(Protocol):
    """Counts model tokens; counts must add up when texts are joined with whitespace."""

    def count(self, text: str) -> int: ...


@runtime_checkable
class BatchTokenCounter(TokenCounter, Protocol):
    def count_many(self, texts: Sequence[str]) -> list[int]: ...


class WordPieceCounter:
    """Counts the word pieces of a locally stored Hugging Face tokenizer, without [CLS]/[SEP]."""

    def __init__(self, tokenizer_path: str | Path, *, tokenizer_json_matches: bool = False) -> None:
        """`tokenizer_json_matches`: the folder's tokenizer.json alone is known to give the
        transformers tokenizer's pieces (the encoder checks it), so transformers, and the
        torch it imports (seconds), are not loaded."""
        from tokenizers import Tokenizer
        from tokenizers.normalizers import BertNormalizer
        from tokenizers.pre_tokenizers import BertPreTokenizer

        tokenizer_file = Path(tokenizer_path) / "tokenizer.json"
        if tokenizer_json_matches and tokenizer_file.is_file():
            self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path), local_files_only=True)
            if not tokenizer.is_fast:
                raise ValueError(f"The tokenizer in {tokenizer_path} has no fast (Rust) version.")
            self._tokenizer = tokenizer.backend_tokenizer
        # tokenizer.json may carry the model's truncation length; counting must see every piece.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        # A BERT tokenizer never joins pieces across whitespace, so a text's count is the sum
        # of its words' counts; remembering the counts of words seen before halves the work.
        self._word_counts: dict[str, int] | None = None
        if isinstance(self._tokenizer.normalizer, BertNormalizer) and isinstance(
            self._tokenizer.pre_tokenizer, BertPreTokenizer
        ):
            self._word_counts = {}

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        word_counts = self._word_counts
        if word_counts is None:
            return self._encoded_lengths(texts)
        words_of_texts = [_BERT_WHITESPACE.split(text) for text in texts]
        distinct = {word for words in words_of_texts for word in words}
        unseen = [word for word in distinct if word not in word_counts]
        if len(word_counts) + len(unseen) > _MAX_REMEMBERED_WORDS:
            # Replaced rather than cleared: another thread may be reading the old one.
            word_counts = self._word_counts = {}
        word_counts.update(zip(unseen, self._word_lengths(unseen), strict=True))
        return [sum(map(word_counts.__getitem__, words)) for words in words_of_texts]

    def _word_lengths(self, words: Sequence[str]) -> list[int]:
        """The pieces of each word (none holds whitespace), from one encoding of them all.

        The words are joined by spaces and each piece is counted for the word its offset falls
        in. A batch call instead ran the tokenizer's thread pool once per document, whose
        threads then competed with the encoder for the cores.
        """
        if not words:
            return []
        starts = list(itertools.accumulate((len(word) + 1 for word in words[:-1]), initial=0))
        encoding = self._tokenizer.encode(" ".join(words), add_special_tokens=False)
        counts = [0] * len(words)
        for piece_start, _ in encoding.offsets:
            counts[bisect.bisect_right(starts, piece_start) - 1] += 1
        return counts

    def _encoded_lengths(self, texts: Sequence[str]) -> list[int]:
        encodings = self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return [len(encoding) for encoding in encodings]


# A table's place: its section and where in the section's text it (with its caption) starts.
_TablePlace = tuple[int, int]


@dataclass(frozen=True)
class _Unit:
    """A span of one section's text that is never cut: a sentence, a line or a word.

    A row of a table has a `lead`: its table's caption and header, which a passage starting
    at this row begins with (`lead_tokens` long).
    """

    section: int
    start: int
    end: int
    tokens: int
    lead: str = ""
    lead_tokens: int = 0
    # The table the unit belongs to, its caption included.
    table: _TablePlace | None = None


@dataclass(frozen=True)
class _Table:
    """Where a table is in a section's text: its caption and header, and its body rows."""

    start: int
    rows_start: int
    end: int
    lead: str


def chunk_document(
    doc: ParsedDocument,
    counter: TokenCounter,
    *,
    max_tokens: int = 240,
    overlap_tokens: int = 40,
    min_tokens: int = 24,
) -> list[ChunkDraft]:
    """Cut `doc` into chunks of at most `max_tokens` tokens each, in reading order.

    Consecutive chunks of a section share about `overlap_tokens` of whole trailing units.
    A section end that would add fewer than `min_tokens` new tokens does not become a
    fragment: the last chunk instead reaches back as far as `max_tokens` allows.
    """
    # Units are cut down to single characters at worst, and any character fits in 8 tokens.
    if max_tokens < 8:
        raise ValueError("max_tokens must be at least 8.")
    units_by_section = _measure_units(doc.sections, counter, max_tokens)
    chunks: list[ChunkDraft] = []
    for group in _group_sections(doc.sections, units_by_section, min_tokens, max_tokens):
        units = [unit for section in group for unit in units_by_section[section]]
        tokens = [unit.tokens for unit in units]
        leads = [unit.lead_tokens for unit in units]
        tables = [unit.table for unit in units]
        for start, end in _pack(tokens, max_tokens, overlap_tokens, min_tokens, leads, tables):
            chunks.append(_draft(len(chunks), units[start:end], doc.sections))
    return chunks


def _count(counter: TokenCounter, texts: Sequence[str]) -> list[int]:
    """Word pieces of each text as the encoder will see it (`encoded_text`)."""
    if not texts:
        return []
    seen = [encoded_text(text) for text in texts]
    if isinstance(counter, BatchTokenCounter):
        return counter.count_many(seen)
    return [counter.count(text) for text in seen]


_Span = tuple[int, int, int]  # section index, start, end


def _measure_units(
    sections: Sequence[Section], counter: TokenCounter, max_tokens: int
) -> list[list[_Unit]]:
    spans = [
        (index, start, end)
        for index, section in enumerate(sections)
        for start, end in _sentence_spans(section.text)
    ]
    measured = list(
        zip(spans, _count(counter, [_span_text(sections, s) for s in spans]), strict=True)
    )
    # Each pass splits only what is still too long, and counts the new pieces in one batch.
    splitters: list[Callable[[str, int, int], list[tuple[int, int]]]] = [_line_spans, _word_spans]
    while any(tokens > max_tokens for _, tokens in measured):
        split = splitters.pop(0) if splitters else _halves
        measured, progressed = _split_oversized(measured, sections, counter, max_tokens, split)
        if not progressed and not splitters:
            break
    tables = [_tables(section.text) for section in sections]
    leads = {table.lead for section_tables in tables for table in section_tables}
    lead_tokens = dict(zip(leads, _count(counter, list(leads)), strict=True))
    units_by_section: list[list[_Unit]] = [[] for _ in sections]
    for (section, start, end), tokens in measured:
        table = next((t for t in tables[section] if t.start <= start < t.end), None)
        if table is None:
            units_by_section[section].append(_Unit(section, start, end, tokens))
            continue
        place = (section, table.start)
        # A header that leaves a row too little room is not repeated.
        if start >= table.rows_start and tokens + lead_tokens[table.lead] <= max_tokens:
            unit = _Unit(section, start, end, tokens, table.lead, lead_tokens[table.lead], place)
        else:
            unit = _Unit(section, start, end, tokens, table=place)
        units_by_section[section].append(unit)
    return units_by_section


def _tables(text: str) -> list[_Table]:
    if "|" not in text:
        return []
    tables = []
    for match in TABLE_BLOCK.finditer(text):
        header = match.group("header")
        line_start = text.rfind("\n", 0, max(0, match.start() - 1)) + 1
        above = text[line_start : match.start()].strip()
        caption = (
            above
            if above and len(above) <= _CAPTION_MAX_CHARS and match.start() - line_start > 0
            else ""
        )
        lead = f"{caption}\n{header}" if caption else header
        tables.append(
            _Table(
                start=line_start if caption else match.start(),
                rows_start=match.end("header"),
                end=match.end(),
                lead=lead,
            )
        )
    return tables


def _split_oversized(
    measured: list[tuple[_Span, int]],
    sections: Sequence[Section],
    counter: TokenCounter,
    max_tokens: int,
    split: Callable[[str, int, int], list[tuple[int, int]]],
) -> tuple[list[tuple[_Span, int]], bool]:
    pieces_of: dict[int, list[_Span]] = {}
    for position, ((section, start, end), tokens) in enumerate(measured):
        if tokens > max_tokens:
            pieces = split(sections[section].text, start, end)
            if len(pieces) > 1:
                pieces_of[position] = [(section, a, b) for a, b in pieces]
    new_spans = [span for pieces in pieces_of.values() for span in pieces]
    new_counts = iter(_count(counter, [_span_text(sections, span) for span in new_spans]))
    result: list[tuple[_Span, int]] = []
    for position, item in enumerate(measured):
        if position in pieces_of:
            result.extend((span, next(new_counts)) for span in pieces_of[position])
        else:
            result.append(item)
    return result, bool(pieces_of)


def _span_text(sections: Sequence[Section], span: _Span) -> str:
    section, start, end = span
    return sections[section].text[start:end]


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """Split at paragraph breaks, list items and sentence ends; spans exclude whitespace.

    A table is split at its rows only, its header and separator staying together.
    """
    cuts = {match.start() for match in _PARAGRAPH_BREAK.finditer(text)}
    cuts.update(match.start() for match in _LIST_ITEM_LINE.finditer(text))
    cuts.update(
        match.end() for match in _SENTENCE_END.finditer(text) if _ends_sentence(text, match)
    )
    if "|" in text:
        for match in TABLE_BLOCK.finditer(text):
            cuts = {cut for cut in cuts if not match.start() < cut < match.end()}
            cuts.update((match.start(), match.end(), match.end("header")))
            rows = match.group("rows")
            offset = match.start("rows")
            cuts.update(offset + index for index, char in enumerate(rows) if char == "\n")
    spans: list[tuple[int, int]] = []
    start = 0
    for cut in [*sorted(cuts), len(text)]:
        segment = text[start:cut]
        first = start + len(segment) - len(segment.lstrip())
        last = start + len(segment.rstrip())
        if first < last:
            spans.append((first, last))
        start = cut
    return spans


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    following = text[match.end() : match.end() + 40].lstrip()
    if following and following[0].islower():
        return False
    if match.group()[0] != ".":
        return True
    word_start = max(text.rfind(" ", 0, match.start()), text.rfind("\n", 0, match.start())) + 1
    word = text[word_start : match.start() + 1].lstrip("([{\"'\u201c\u2018").lower()
    return word not in _ABBREVIATIONS and not _INITIALS.fullmatch(word)


def _line_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return [(start + m.start(), start + m.end()) for m in _LINE.finditer(text[start:end])]


def _word_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return [(start + m.start(), start + m.end()) for m in _WORD.finditer(text[start:end])]


def _halves(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Cut a single word too long for one chunk (say, an endless URL) in the middle."""
    if end - start < 2:
        return [(start, end)]
    middle = (start + end) // 2
    return [(start, middle), (middle, end)]


def _group_sections(
    sections: Sequence[Section],
    units_by_section: list[list[_Unit]],
    min_tokens: int,
    max_tokens: int,
) -> list[list[int]]:
    """Sections that are cut into chunks together.

    A tiny section joins the next one it introduces on the same page; short sections under
    the same top heading on the same page are packed together while they fit one chunk, so
    that a page of small sections (a command's usage, description and examples) is one
    passage with its whole context, not four fragments.
    """
    groups: list[list[int]] = []
    group: list[int] = []
    group_tokens = 0
    for index, section in enumerate(sections):
        tokens = sum(unit.tokens for unit in units_by_section[index])
        if not tokens:
            continue
        if group and not _joins(
            [sections[i] for i in group], group_tokens, section, tokens, min_tokens, max_tokens
        ):
            groups.append(group)
            group, group_tokens = [], 0
        group.append(index)
        group_tokens += tokens
    if group:
        groups.append(group)
    return groups


def _joins(
    group: list[Section],
    group_tokens: int,
    section: Section,
    tokens: int,
    min_tokens: int,
    max_tokens: int,
) -> bool:
    last = group[-1]
    if last.page != section.page:
        return False
    if group_tokens < min_tokens and _introduces(last, section):
        return True
    same_top = group[0].heading_path[:1] == section.heading_path[:1]
    return same_top and group_tokens + tokens <= max_tokens


def _introduces(tiny: Section, following: Section) -> bool:
    depth = len(tiny.heading_path)
    return following.heading_path[:depth] == tiny.heading_path


def _pack(
    tokens: list[int],
    max_tokens: int,
    overlap_tokens: int,
    min_tokens: int,
    leads: list[int] | None = None,
    tables: Sequence[_TablePlace | None] | None = None,
) -> list[tuple[int, int]]:
    """Return [start, end) unit ranges; every unit fits `max_tokens` on its own.

    A chunk starting at unit i also carries `leads[i]` tokens (a table's repeated header),
    and every unit fits with its own lead. Units with the same `tables` key (not None) are
    one table: a chunk that would end inside a table that fits one chunk ends before it.
    """
    leads = leads or [0] * len(tokens)
    tables = tables or [None] * len(tokens)
    ranges: list[tuple[int, int]] = []
    remaining_after = list(itertools.accumulate(reversed(tokens), initial=0))[::-1]
    start = 0
    while True:
        end, total = start, leads[start]
        while end < len(tokens) and total + tokens[end] <= max_tokens:
            total += tokens[end]
            end += 1
        table_start = _whole_table_start(tokens, tables, start, end, max_tokens)
        if table_start is not None:
            # The table starts the next chunk whole; carrying text over could cut it again.
            # Text before it that the previous chunk already holds is not a chunk of its own.
            if not ranges or table_start > ranges[-1][1]:
                ranges.append((start, table_start))
            start = table_start
            continue
        ranges.append((start, end))
        if end == len(tokens):
            return ranges
        if remaining_after[end] < min_tokens:
            ranges.append((_widest_tail_start(tokens, max_tokens, leads), len(tokens)))
            return ranges
        start = _overlap_start(tokens, start, end, overlap_tokens, max_tokens, leads)


def _whole_table_start(
    tokens: list[int], tables: Sequence[_TablePlace | None], start: int, end: int, max_tokens: int
) -> int | None:
    """Where a chunk [start, end) should end instead, if it cuts a table that fits one chunk."""
    if end >= len(tokens) or tables[end] is None or tables[end - 1] != tables[end]:
        return None
    first, last = end, end
    while first > start and tables[first - 1] == tables[end]:
        first -= 1
    if first == start:
        return None
    while last + 1 < len(tokens) and tables[last + 1] == tables[end]:
        last += 1
    return first if sum(tokens[first : last + 1]) <= max_tokens else None


def _widest_tail_start(tokens: list[int], max_tokens: int, leads: list[int]) -> int:
    tail_start, total = len(tokens), 0
    while tail_start > 0 and total + tokens[tail_start - 1] + leads[tail_start - 1] <= max_tokens:
        tail_start -= 1
        total += tokens[tail_start]
    return tail_start


def _overlap_start(
    tokens: list[int],
    start: int,
    end: int,
    overlap_tokens: int,
    max_tokens: int,
    leads: list[int],
) -> int:
    """Where the chunk after [start, end) begins: some whole trailing units of it."""
    next_start, carried = end, 0
    while next_start - 1 > start and carried + tokens[next_start - 1] <= overlap_tokens:
        next_start -= 1
        carried += tokens[next_start]
    if next_start == end and end - 1 > start and tokens[end - 1] <= 2 * overlap_tokens:
        # A trailing sentence somewhat longer than the overlap still beats no overlap.
        next_start, carried = end - 1, tokens[end - 1]
    while next_start < end and carried + leads[next_start] + tokens[end] > max_tokens:
        carried -= tokens[next_start]
        next_start += 1
    return next_start


def _draft(index: int, units: list[_Unit], sections: Sequence[Section]) -> ChunkDraft:
    parts = []
    for section, run in itertools.groupby(units, key=lambda unit: unit.section):
        run_units = list(run)
        parts.append(sections[section].text[run_units[0].start : run_units[-1].end])
    paths = [sections[unit.section].heading_path for unit in units]
    # A chunk that starts among a table's rows begins with the table's caption and header.
    lead = units[0].lead
    return ChunkDraft(
        index=index,
        text=f"{lead}\n" + "\n\n".join(parts) if lead else "\n\n".join(parts),
        page=sections[units[-1].section].page,
        heading_path=_heading_of(paths),
        token_count=sum(unit.tokens for unit in units) + units[0].lead_tokens,
    )


def _heading_of(paths: list[tuple[str, ...]]) -> tuple[str, ...]:
    """The most specific heading that holds the whole chunk.

    The last section's own path when every earlier one introduces it (an ancestor or the
    same heading), else the headings all the chunk's sections share.
    """
    last = paths[-1]
    if all(last[: len(path)] == path for path in paths):
        return last
    shared: list[str] = []
    for level in zip(*paths, strict=False):
        if any(title != level[0] for title in level):
            break
        shared.append(level[0])
    return tuple(shared)
