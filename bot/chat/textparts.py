"""Turn a model's answer into WeChat-sized plain-text parts.

WeChat fails text replies above ~2047 UTF-8 bytes, so every text we send is at most `max_bytes`
(2000 by default) and is cut where a reader would pause: a blank line, a line break, a sentence
end, a comma or space, and only as a last resort at a character boundary that keeps emoji and
combining sequences whole. Users complain about raw markdown symbols in chat bubbles, so
`to_plain` reduces markdown to readable text first. Pure functions, standard library only.
"""

from __future__ import annotations

import re
import unicodedata

MAX_TEXT_BYTES = 2000
# A single code point may need 4 bytes; below that no part could ever make progress.
MIN_PART_BYTES = 4

# ---------------------------------------------------------------------------------------------
# Sizes


def utf8_len(s: str) -> int:
    """UTF-8 byte length; a stray surrogate counts as the 3 bytes it would take, instead of raising."""
    return len(s.encode("utf-8", "surrogatepass"))


def reserve(max_bytes: int, marker: str) -> int:
    """Bytes left for content when `"\\n" + marker` is appended to a part."""
    left = max_bytes - utf8_len("\n" + marker)
    if left < MIN_PART_BYTES:
        msg = f"marker of {utf8_len(marker)} bytes leaves no room in a {max_bytes}-byte text"
        raise ValueError(msg)
    return left


def _char_bytes(ch: str) -> int:
    cp = ord(ch)
    return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4


def _fit_end(text: str, i: int, max_bytes: int) -> int:
    """The largest end such that text[i:end] fits in max_bytes."""
    total, j, n = 0, i, len(text)
    while j < n:
        total += _char_bytes(text[j])
        if total > max_bytes:
            break
        j += 1
    return j


# ---------------------------------------------------------------------------------------------
# Cut points

_CLOSERS = "\"'”’」』）)】］]》〉"
_CJK_ENDS = "。！？；"
# A run of terminators plus any closing quotes/brackets right after it.
_SENTENCE_RUN = re.compile(rf"[{_CJK_ENDS}!?;.]+[{re.escape(_CLOSERS)}]*")
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n")
_SOFT = re.compile(r"(?<=[，、：,])|(?=\s)")


def _is_sentence_end(text: str, m: re.Match[str]) -> bool:
    """A terminator run ends a sentence only if something follows it (so it is known to be whole)."""
    end = m.end()
    if end >= len(text):
        return False
    nxt = text[end]
    run = m.group()
    if any(c in _CJK_ENDS for c in run):
        return True
    if nxt.isspace():
        return True
    # "3.14", "a.b", "x!=y", "?q=1" are not sentence ends; "Done!好的" is.
    return "." not in run and not nxt.isascii()


def _joins(text: str, p: int) -> bool:
    """True if a cut at p would split a grapheme (combining mark, ZWJ sequence, flag, keycap...)."""
    if p <= 0 or p >= len(text):
        return False
    cur, prev = ord(text[p]), ord(text[p - 1])
    if unicodedata.category(text[p]) in ("Mn", "Me", "Mc") or cur == 0x200D or prev == 0x200D:
        return True
    if 0xFE00 <= cur <= 0xFE0F or 0x1F3FB <= cur <= 0x1F3FF or 0xE0020 <= cur <= 0xE007F:
        return True
    if 0xE0100 <= cur <= 0xE01EF:
        return True
    if 0x1F1E6 <= cur <= 0x1F1FF and 0x1F1E6 <= prev <= 0x1F1FF:
        # Regional indicators pair up from the start of their run: split only between pairs.
        k = p
        while k > 0 and 0x1F1E6 <= ord(text[k - 1]) <= 0x1F1FF:
            k -= 1
        return (p - k) % 2 == 1
    return False


def _candidates(text: str, i: int, e: int) -> list[list[int]]:
    """Cut positions in (i, e], best class first: paragraph, line, sentence, soft."""
    n = len(text)
    # Runs that end by e stop before e + 1, so scanning to e + 1 sees them whole.
    para = [m.start() for m in _PARAGRAPH.finditer(text, i, min(n, e + 80))]
    line = [p for p in range(i + 1, min(e + 1, n)) if text[p] == "\n"]
    sent = [m.end() for m in _SENTENCE_RUN.finditer(text, i, min(n, e + 1)) if _is_sentence_end(text, m)]
    soft = [m.start() for m in _SOFT.finditer(text, i, min(n, e + 1))]
    return [[p for p in cls if i < p <= e and not _joins(text, p)] for cls in (para, line, sent, soft)]


def _best_cut(text: str, i: int, e: int) -> int:
    """Where to end a part that starts at i and must end by e (text goes on past e)."""
    classes = _candidates(text, i, e)
    # A boundary very early in the window would waste a message (the customer-service API allows
    # only 5 per user message): prefer one that fills at least a quarter, by class order.
    min_fill = utf8_len(text[i:e]) // 4
    for cls in classes:
        if cls and utf8_len(text[i : cls[-1]]) >= min_fill:
            return cls[-1]
    for cls in classes:
        if cls:
            return cls[-1]
    p = e
    while p > i + 1 and _joins(text, p):
        p -= 1
    # A cluster longer than the whole window cannot be kept whole: cut it at a code point.
    return p if not _joins(text, p) else e


def _last_complete(text: str, i: int) -> int | None:
    """End of the last complete line or sentence in text[i:], or None if there is none yet."""
    best = text.rfind("\n", i)
    best = best if best > i else None
    for m in _SENTENCE_RUN.finditer(text, i):
        if _is_sentence_end(text, m) and (best is None or m.end() > best):
            best = m.end()
    return best


# ---------------------------------------------------------------------------------------------
# Parts


def take_part(text: str, start: int, max_bytes: int = MAX_TEXT_BYTES, *, complete: bool) -> tuple[str, int]:
    """The next part of `text` from character offset `start`, and the offset just past it.

    Leading whitespace is skipped. With `complete=False` the text is still growing, so only whole
    sentences or lines are taken (("", start) if none is whole yet) unless the pending text is
    already longer than one part, in which case it is cut as usual inside the first max_bytes.
    An empty part means there is nothing to take (yet).
    """
    if max_bytes < MIN_PART_BYTES:
        msg = f"max_bytes must be at least {MIN_PART_BYTES}, got {max_bytes}"
        raise ValueError(msg)
    n = len(text)
    i = start
    while i < n and text[i].isspace():
        i += 1
    if i >= n:
        return "", (n if complete else start)
    e = _fit_end(text, i, max_bytes)
    if e >= n:
        if complete:
            return text[i:].rstrip(), n
        end = _last_complete(text, i)
        if end is None:
            return "", start
        return text[i:end].rstrip(), end
    p = _best_cut(text, i, e)
    return text[i:p].rstrip(), p


def split_parts(text: str, max_bytes: int = MAX_TEXT_BYTES) -> list[str]:
    """The whole text as non-empty stripped parts, each at most max_bytes UTF-8 bytes."""
    parts: list[str] = []
    pos = 0
    while True:
        part, pos = take_part(text, pos, max_bytes, complete=True)
        if not part:
            return parts
        parts.append(part)


# ---------------------------------------------------------------------------------------------
# Markdown to plain text

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})([^`]*)$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_])(?:\s*\1){2,}\s*$")
_SETEXT = re.compile(r"^\s{0,3}=+\s*$")
_QUOTE = re.compile(r"^\s{0,3}(?:>\s?)+")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(?=\S)")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$")

_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")
_ESCAPE = re.compile(r"\\([*_`#|\[\]~])")
# Bounded lengths keep a line full of unclosed "[a](" from costing quadratic time.
_IMAGE = re.compile(r"!\[([^\]]{0,500})\]\(\s*<?([^)\s>]{0,2000})>?(?:\s+\"[^\"]{0,200}\")?\s*\)")
_LINK = re.compile(r"\[([^\]]{1,500})\]\(\s*<?([^)\s>]{0,2000})>?(?:\s+\"[^\"]{0,200}\")?\s*\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^\s<>]+)>")
# Emphasis markers must not touch ASCII letters/digits on the outside, so 2*3*4, a**b and
# snake_case survive, while CJK text (这是**重点**内容) still loses its markers.
_STRONG_EM = re.compile(r"(?<![A-Za-z0-9*\\])\*\*\*(?=[^\s*])(.+?)(?<=[^\s*\\])\*\*\*(?![A-Za-z0-9*])")
_STRONG = re.compile(r"(?<![A-Za-z0-9*\\])(\*\*|__)(?=[^\s*_])(.+?)(?<=[^\s\\])\1(?![A-Za-z0-9*])")
_EM_STAR = re.compile(r"(?<![A-Za-z0-9*\\])\*(?=[^\s*])(.+?)(?<=[^\s*\\])\*(?![A-Za-z0-9*])")
_EM_UNDER = re.compile(r"(?<![\w\\])_(?=[^\s_])(.+?)(?<=[^\s_\\])_(?!\w)")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HTML_BREAK = re.compile(r"<br\s*/?>|</(?:p|div|li|tr|h[1-6])>|<hr\s*/?>", re.IGNORECASE)
# Only known HTML tags: prose like Vec<u8> or List<String> must keep its angle brackets.
_HTML_TAG = re.compile(
    r"<!--.*?-->|</?(?:a|b|i|u|s|p|em|strong|del|ins|mark|sub|sup|small|big|span|div|font|center|code|pre"
    r"|kbd|img|details|summary|blockquote|ul|ol|li|table|thead|tbody|tr|td|th|h[1-6])\b[^<>]*>",
    re.IGNORECASE,
)
_ENTITIES = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&amp;": "&"}
_ENTITY = re.compile("|".join(_ENTITIES))


def _link(m: re.Match[str]) -> str:
    label, url = m.group(1), m.group(2)
    # Full-width brackets: WeChat's link detection stops at them, it might swallow a ")".
    return label if not url or url == label else f"{label}（{url}）"


def _inline(line: str) -> str:
    """Inline markdown of one line (outside code blocks) to plain text."""
    held: list[str] = []
    # Code spans and escaped characters are set aside so no later rule touches them.
    mark = next(chr(c) for c in range(0xE000, 0xF8FF) if chr(c) not in line)

    def hold(s: str) -> str:
        held.append(s)
        return f"{mark}{len(held) - 1}{mark}"

    line = _CODE_SPAN.sub(lambda m: hold(m.group(2).strip() or m.group(2)), line)
    line = _ESCAPE.sub(lambda m: hold(m.group(1)), line)
    line = _AUTOLINK.sub(r"\1", line)
    line = _IMAGE.sub(r"\1", line)
    line = _LINK.sub(_link, line)
    line = _HTML_BREAK.sub("\n", line)
    line = _HTML_TAG.sub("", line)
    line = _ENTITY.sub(lambda m: _ENTITIES[m.group()], line)
    line = _STRONG_EM.sub(r"\1", line)
    for _ in range(2):  # ***x*** and nested emphasis need a second pass
        line = _STRONG.sub(r"\2", line)
        line = _EM_STAR.sub(r"\1", line)
        line = _EM_UNDER.sub(r"\1", line)
    line = _STRIKE.sub(r"\1", line)
    return re.sub(f"{mark}(\\d+){mark}", lambda m: held[int(m.group(1))], line)


def _table_row(line: str) -> str:
    row = line.strip().removeprefix("|")
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    # A cell runs to the next pipe that is neither escaped nor inside a code span.
    cells, cell, in_code, k = [], [], False, 0
    while k < len(row):
        ch = row[k]
        if ch == "\\" and k + 1 < len(row) and row[k + 1] == "|":
            cell.append("|" if not in_code else "\\|")
            k += 2
            continue
        if ch == "`" and (in_code or "`" in row[k + 1 :]):
            in_code = not in_code
        if ch == "|" and not in_code:
            cells.append("".join(cell))
            cell = []
        else:
            cell.append(ch)
        k += 1
    cells.append("".join(cell))
    return " | ".join(_inline(c.strip()) for c in cells)


def _block(line: str, out: list[str]) -> str | None:
    """One line outside code and tables; None drops it."""
    line = _QUOTE.sub("", line)
    if _RULE.match(line):
        return ""
    if _SETEXT.match(line) and out and out[-1].strip():
        return None
    if m := _HEADING.match(line):
        return _inline(m.group(1))
    if m := _BULLET.match(line):
        return m.group(1) + "• " + _inline(line[m.end() :])
    return _inline(line)


def to_plain(markdown: str) -> str:
    """Markdown reduced to text that reads well in a chat bubble; plain text passes through."""
    lines = markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    k = 0
    while k < len(lines):
        line = lines[k]
        if fence := _FENCE.match(line):
            indent, ticks = len(fence.group(1)), fence.group(2)
            closing = re.compile(rf"^\s*{re.escape(ticks[0])}{{{len(ticks)},}}\s*$")
            k += 1
            while k < len(lines) and not closing.match(lines[k]):
                code = lines[k]
                out.append(code[min(indent, len(code) - len(code.lstrip(" "))) :])
                k += 1
            k += 1
            continue
        if "|" in line and k + 1 < len(lines) and "|" in lines[k + 1] and _TABLE_SEP.match(lines[k + 1]):
            out.append(_table_row(line))
            k += 2
            while k < len(lines) and "|" in lines[k] and lines[k].strip():
                out.append(_table_row(lines[k]))
                k += 1
            continue
        plain = _block(line, out)
        if plain is not None:
            out.append(plain)
        k += 1
    text = "\n".join(s.rstrip() for s in "\n".join(out).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")
