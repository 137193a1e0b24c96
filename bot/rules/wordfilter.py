"""Sensitive words: one Aho-Corasick automaton over normalised text, rebuilt only when a dictionary changes.

Normalising defeats the usual evasions: NFKC (full-width ＡＢＣ and ① become ABC and 1), case-folding,
and dropping every space, punctuation mark, symbol and invisible character, so 大 麻, 大.麻 and 大\u200b麻
all read 大麻. Each character is normalised on its own (a cached table used by str.translate), which
keeps a map from every normalised character back to the original one: masking stars out the
original characters, separators included.

An exception is a harmless word containing a listed one (大麻烦 contains 大麻): a match lying inside
an exception's match is no match.

The automaton runs over the UTF-8 bytes of the normalised text (as a latin-1 string): pyahocorasick
finds a node's child by a linear search, and a 20,000-word Chinese dictionary would give the root
~20,000 children; in UTF-8 no node has more than 64. UTF-8 is self-synchronising, so a word's bytes
can only match at character boundaries.

The automaton is built once per change of the files, in a thread, and swapped in with one attribute
assignment, so a scan always sees one whole dictionary, old or new. Logs name dictionaries, never words
or text.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import time
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import ahocorasick
import structlog

log = structlog.get_logger(__name__)

_DROPPED = ("P", "S", "Z", "C")  # punctuation, symbols, separators (spaces), controls and invisibles


def fold_char(ch: str) -> str:
    """One character as the matcher sees it: possibly several characters, possibly none."""
    out = unicodedata.normalize("NFKC", ch).casefold()
    return "".join(c for c in out if unicodedata.category(c)[0] not in _DROPPED
                   and unicodedata.category(c) not in ("Mn", "Me"))


class _MarkTable(dict[int, str]):
    """str.translate table computed lazily per code point: the normalised character(s), or NUL for a
    character normalising to nothing. Marking instead of deleting keeps the usual text (no character
    expands) aligned with the original, so mapping a hit back costs a few str.count calls."""

    def __missing__(self, cp: int) -> str:
        folded = fold_char(chr(cp)) or _NUL
        self[cp] = folded
        return folded


_NUL = "\x00"  # a control character: it always normalises to nothing itself
_MARK = _MarkTable()
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


@functools.cache
def _bmp_table() -> list[int | str]:
    """_MARK for the whole Basic Multilingual Plane as a list: str.translate indexes a list about twice
    as fast as it looks up a dict, and questions are almost always BMP-only. Single characters are
    stored as code points (ints are smaller than one-character strings: ~2 MB for the plane)."""
    return [ord(m) if len(m := fold_char(chr(cp)) or _NUL) == 1 else m for cp in range(0x10000)]


def _mark(text: str) -> str:
    # A list table leaves characters beyond its end untouched, so texts with any (emoji, rare CJK)
    # take the lazily filled dict.
    return text.translate(_MARK if _ASTRAL.search(text) else _bmp_table())


def normalise(text: str) -> str:
    return _mark(text).replace(_NUL, "")


def _utf8(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


class _LengthTable(dict[int, str]):
    """str.translate table: each character becomes chr(how many normalised characters it yields)."""

    def __missing__(self, cp: int) -> str:
        mark = _MARK[cp]
        n = chr(0 if mark == _NUL else len(mark))
        self[cp] = n
        return n


_LENGTHS = _LengthTable()


class _Normalised:
    """A text as the matcher sees it, and the way back from its positions to the original's."""

    __slots__ = ("text", "marked", "aligned", "_produced")

    def __init__(self, text: str) -> None:
        self.text = text
        marked = _mark(text)
        # Equal lengths: every character became exactly one (itself, its fold, or NUL).
        self.aligned = len(marked) == len(text)
        self.marked = marked
        self._produced: list[int] | None = None

    @property
    def value(self) -> str:
        return self.marked.replace(_NUL, "") if _NUL in self.marked else self.marked

    def origin(self, k: int) -> int:
        """The index of the original character that normalised character `k` came from."""
        if self.aligned:
            # The original index i has exactly i - k NULs before it and is not one itself: the fixed
            # point of i = k + NULs in marked[:i + 1], approached from below.
            marked, i = self.marked, k
            while (j := k + marked.count(_NUL, 0, i + 1)) != i:
                i = j
            return i
        if self._produced is None:
            # produced[i]: normalised characters produced by text[:i + 1]
            self._produced = list(accumulate(self.text.translate(_LENGTHS).encode("latin-1")))
        return bisect_right(self._produced, k)


@dataclass(frozen=True, slots=True)
class WordList:
    name: str
    path: Path
    action: str  # "block" | "mask"


@dataclass(frozen=True, slots=True)
class Hit:
    """A listed word found in the original text at [start, end)."""

    start: int
    end: int
    action: str
    dictionaries: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Scan:
    hits: tuple[Hit, ...] = ()

    @property
    def blocked(self) -> bool:
        return any(h.action == "block" for h in self.hits)

    @property
    def dictionaries(self) -> tuple[str, ...]:
        return tuple(sorted({d for h in self.hits for d in h.dictionaries}))

    def mask(self, text: str, char: str = "*", actions: Sequence[str] = ("mask", "block")) -> str:
        """`text` with the hits of the given actions starred out, character for character."""
        chars = list(text)
        for h in self.hits:
            if h.action in actions:
                chars[h.start:h.end] = char * (h.end - h.start)
        return "".join(chars)


_CLEAN = Scan()


@dataclass(frozen=True, slots=True)
class _Entry:
    nbytes: int
    nchars: int
    action: str | None  # None: only an exception
    dictionaries: tuple[str, ...]
    exception: bool


@dataclass(frozen=True, slots=True)
class _Automaton:
    matcher: ahocorasick.Automaton | None
    longest: int
    signature: tuple[tuple[str, int, int, int], ...]
    words: int


class DictionaryError(Exception):
    """A dictionary file that cannot be read; the message is the dictionary's name, not its words."""


def _read_words(path: Path, name: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DictionaryError(name) from e
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


class WordFilter:
    def __init__(self, lists: Sequence[WordList], exceptions: Sequence[str] = (),
                 exceptions_path: Path | None = None, reload_interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lists = tuple(lists)
        self.exceptions = tuple(exceptions)
        self.exceptions_path = exceptions_path
        self.reload_interval = reload_interval
        self.clock = clock
        self._checked_at = clock()
        self._lock = asyncio.Lock()
        self._current = self._build(self._signature())

    @property
    def words(self) -> int:
        return self._current.words

    def _paths(self) -> list[Path]:
        return [wl.path for wl in self.lists] + ([self.exceptions_path] if self.exceptions_path else [])

    def _signature(self) -> tuple[tuple[str, int, int, int], ...]:
        sig = []
        for p in self._paths():
            try:
                st = os.stat(p)
                sig.append((str(p), st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                sig.append((str(p), -1, -1, -1))
        return tuple(sig)

    def _build(self, signature: tuple[tuple[str, int, int, int], ...]) -> _Automaton:
        """Read every file and build a new automaton; DictionaryError names a file that failed."""
        entries: dict[str, _Entry] = {}
        for wl in self.lists:
            for word in _read_words(wl.path, wl.name):
                key = normalise(word)
                if not key:
                    continue
                old = entries.get(key)
                names = old.dictionaries if old else ()
                if wl.name not in names:
                    names += (wl.name,)
                # A word in a block list and a mask list is blocked.
                action = "block" if wl.action == "block" or (old is not None and old.action == "block") else "mask"
                entries[key] = _Entry(len(key.encode()), len(key), action, names, False)
        if self.exceptions_path:
            exceptions = [*self.exceptions, *_read_words(self.exceptions_path, "exceptions")]
        else:
            exceptions = list(self.exceptions)
        for word in exceptions:
            key = normalise(word)
            if key:
                old = entries.get(key)
                entries[key] = _Entry(len(key.encode()), len(key), old.action if old else None,
                                      old.dictionaries if old else (), True)
        if not entries:
            return _Automaton(None, 0, signature, 0)
        _bmp_table()  # scans will need it: built here (~40 ms, once), not on the first question
        matcher = ahocorasick.Automaton()
        for key, entry in entries.items():
            matcher.add_word(_utf8(key), entry)
        matcher.make_automaton()
        return _Automaton(matcher, max(e.nchars for e in entries.values()), signature,
                          sum(1 for e in entries.values() if e.action))

    async def refresh(self) -> bool:
        """Rebuild if a file changed, checking at most every reload_interval seconds (0: never).
        Scans go on with the old automaton meanwhile. True if a new one was swapped in."""
        if self.reload_interval <= 0 or self.clock() - self._checked_at < self.reload_interval:
            return False
        if self._lock.locked():
            return False
        self._checked_at = self.clock()
        signature = self._signature()
        if signature == self._current.signature:
            return False
        return await self.reload(signature)

    async def reload(self, signature: tuple[tuple[str, int, int, int], ...] | None = None) -> bool:
        """Rebuild now (the owner's reload command, SIGHUP). A file that cannot be read keeps the
        dictionaries in use; returns False then."""
        async with self._lock:
            signature = signature or self._signature()
            try:
                built = await asyncio.to_thread(self._build, signature)
            except DictionaryError as e:
                log.warning("words.reload_failed", dictionary=str(e), error=type(e.__cause__).__name__)
                return False
            self._current = built
            log.info("words.reloaded", dictionaries=[wl.name for wl in self.lists], words=built.words)
            return True

    def scan(self, text: str) -> Scan:
        current = self._current
        if current.matcher is None:
            return _CLEAN
        norm = _Normalised(text)
        encoded = _utf8(norm.value)
        found = [(end + 1 - entry.nbytes, end + 1, entry) for end, entry in current.matcher.iter(encoded)]
        if not found:
            return _CLEAN
        spans = [(s, e) for s, e, entry in found if entry.exception]
        listed = [(s, e, entry) for s, e, entry in found
                  if entry.action and not any(xs <= s and e <= xe for xs, xe in spans)]
        if not listed:
            return _CLEAN

        def char_index(byte: int) -> int:  # byte offset in `encoded` -> normalised character index
            return len(encoded[:byte].encode("latin-1").decode("utf-8"))

        return Scan(tuple(Hit(norm.origin(char_index(s)), norm.origin(char_index(e) - 1) + 1, entry.action,
                              entry.dictionaries) for s, e, entry in listed))

    def safe_end(self, text: str) -> int:
        """How much of a still-growing `text` may be delivered: a listed word (or an exception) that the
        next characters complete can only start in the held-back tail."""
        hold = max(0, self._current.longest - 1)
        if hold == 0:
            return len(text)
        norm = _Normalised(text)
        produced = len(norm.value)
        if produced <= hold:
            return 0
        return norm.origin(produced - hold)
