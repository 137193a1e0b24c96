"""WeChat-sized plain-text parts: byte ceiling, reader-friendly cuts, streaming takes, markdown."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.chat.textparts import MAX_TEXT_BYTES, reserve, split_parts, take_part, to_plain, utf8_len

MARKER = "（未完，回复「继续」查看后续）"
SENTENCE_ENDS = ("。", "！", "？", "；", "。」", "！」", "？”")


def _content(s: str) -> str:
    return re.sub(r"\s+", "", s)


def _chinese_answer(chars: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    pool = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经"
    paragraphs: list[str] = []
    total = 0
    while total < chars:
        sentences = []
        for _ in range(rng.randint(2, 8)):
            body = "".join(rng.choice(pool) for _ in range(rng.randint(8, 60)))
            if rng.random() < 0.3:
                body += "，" + "".join(rng.choice(pool) for _ in range(rng.randint(4, 20)))
            sentences.append(body + rng.choice(SENTENCE_ENDS))
        paragraph = "".join(sentences)
        paragraphs.append(paragraph)
        total += len(paragraph)
    return "\n\n".join(paragraphs)[:chars].rstrip("，") + "。"


def _walk(text: str, max_bytes: int) -> list[str]:
    parts, pos = [], 0
    while True:
        part, new = take_part(text, pos, max_bytes, complete=True)
        assert new >= pos
        if not part:
            assert text[new:].strip() == ""
            return parts
        assert new > pos
        parts.append(part)
        pos = new


# --- sizes -------------------------------------------------------------------------------------


def test_utf8_len_counts_bytes_not_characters() -> None:
    assert utf8_len("") == 0
    assert utf8_len("abc") == 3
    assert utf8_len("é") == 2
    assert utf8_len("中文") == 6
    assert utf8_len("😀") == 4


def test_reserve_leaves_room_for_a_newline_and_the_marker() -> None:
    assert reserve(2000, MARKER) == 2000 - utf8_len(MARKER) - 1
    assert reserve(2000, "") == 1999


def test_reserve_refuses_a_marker_that_leaves_no_room() -> None:
    with pytest.raises(ValueError, match="no room"):
        reserve(10, MARKER)


def test_a_part_plus_its_marker_fits_the_wechat_ceiling() -> None:
    budget = reserve(MAX_TEXT_BYTES, MARKER)
    for part in split_parts(_chinese_answer(5000), budget):
        assert utf8_len(part + "\n" + MARKER) <= MAX_TEXT_BYTES


# --- split_parts ---------------------------------------------------------------------------------


def test_short_text_is_one_stripped_part() -> None:
    assert split_parts("  你好，世界。\n\n") == ["你好，世界。"]


def test_empty_or_blank_text_has_no_parts() -> None:
    assert split_parts("") == []
    assert split_parts(" \n\t \n") == []


def test_a_ten_thousand_char_chinese_answer_splits_at_sentence_ends_within_2000_bytes() -> None:
    text = _chinese_answer(10_000)
    parts = split_parts(text, 2000)
    assert len(parts) >= 15  # 30,000 bytes cannot fit in fewer
    assert all(utf8_len(p) <= 2000 for p in parts)
    assert all(p.endswith(SENTENCE_ENDS) for p in parts)
    assert _content("".join(parts)) == _content(text)
    # Parts are well filled, not fragments left by an early boundary.
    assert all(utf8_len(p) > 1000 for p in parts[:-1])


def test_paragraph_breaks_are_preferred_to_sentence_ends() -> None:
    first = "第一段第一句。" * 30
    text = first + "\n\n" + "第二段。" * 100
    parts = split_parts(text, 1000)
    assert parts[0] == first


def test_line_breaks_are_preferred_to_sentence_ends() -> None:
    lines = "\n".join(f"{i}. 这是第{i}项。补充说明。" for i in range(40))
    parts = split_parts(lines, 300)
    assert all(re.match(r"^\d+\. ", p) for p in parts)
    assert _content("".join(parts)) == _content(lines)


def test_english_sentences_end_at_a_period_followed_by_space_not_inside_numbers() -> None:
    text = "Version 3.14 is out. " * 50
    parts = split_parts(text, 200)
    assert all(p.endswith("out.") for p in parts)


def test_closing_quotes_stay_with_their_sentence() -> None:
    text = "他说：「今天下雨了。」" * 40 + 'He said "it rains." ' * 20
    for part in split_parts(text, 100):
        assert not part.startswith(("」", '"'))
        assert part.endswith(("。」", '."'))


def test_commas_are_used_when_a_sentence_is_longer_than_a_part() -> None:
    clause = "这是一个很长的从句"
    text = "，".join([clause] * 60) + "。"
    parts = split_parts(text, 100)
    assert all(utf8_len(p) <= 100 for p in parts)
    assert all(p.endswith("，") for p in parts[:-1])


def test_spaces_are_used_when_no_punctuation_is_left() -> None:
    text = " ".join(["word"] * 100)
    parts = split_parts(text, 50)
    assert all(utf8_len(p) <= 50 for p in parts)
    assert all(set(p.split(" ")) == {"word"} for p in parts)


def test_a_word_longer_than_a_part_is_hard_cut_at_a_character_boundary() -> None:
    word = "超" * 1000  # 3,000 bytes, no boundary at all
    parts = split_parts(word, 2000)
    assert parts == ["超" * 666, "超" * 334]
    ascii_word = "x" * 4500
    assert [len(p) for p in split_parts(ascii_word, 2000)] == [2000, 2000, 500]


def test_an_emoji_at_the_cut_point_is_never_broken() -> None:
    text = "a" * 1998 + "😀" + "b"
    assert split_parts(text, 2000) == ["a" * 1998, "😀b"]


def test_emoji_sequences_flags_and_combining_marks_stay_whole_when_they_can() -> None:
    family = "👨\u200d👩\u200d👧"  # 18 bytes
    assert split_parts(family * 3, 30) == [family] * 3
    assert split_parts("🇨🇳🇯🇵🇺🇸", 10) == ["🇨🇳", "🇯🇵", "🇺🇸"]
    accented = "e\u0301"  # 3 bytes
    assert split_parts(accented * 4, 7) == [accented * 2] * 2
    keycap = "1\ufe0f\u20e3"  # 7 bytes
    assert split_parts("x" * 5 + keycap, 10) == ["x" * 5, keycap]
    thumbs = "👍🏽"  # skin tone modifier, 8 bytes
    assert split_parts("yy" + thumbs, 9) == ["yy", thumbs]


def test_a_cluster_longer_than_a_part_is_cut_at_code_points_rather_than_looping() -> None:
    family = "👨\u200d👩\u200d👧"
    parts = split_parts(family, 8)
    assert "".join(parts) == family
    assert all(utf8_len(p) <= 8 for p in parts)


def test_a_part_size_below_one_code_point_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        split_parts("abc", 3)


ALPHABET = st.one_of(
    st.sampled_from(list("中文字符测试。！？；，、」“”\"' .!?;,\n\n\t　😀👍🏽🇨🇳\u200d\u0301\ufe0f")),
    st.characters(codec="utf-8"),
)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=ALPHABET, max_size=400), max_bytes=st.integers(4, 80))
def test_split_parts_fit_are_stripped_and_keep_all_content_in_order(text: str, max_bytes: int) -> None:
    parts = split_parts(text, max_bytes)
    assert all(p and p == p.strip() for p in parts)
    assert all(utf8_len(p) <= max_bytes for p in parts)
    assert _content("".join(parts)) == _content(text)


# --- take_part -----------------------------------------------------------------------------------


def test_take_part_skips_leading_whitespace_and_returns_the_offset_past_the_part() -> None:
    text = "  第一句。\n\n第二句。"
    part, pos = take_part(text, 0, 2000, complete=True)
    assert (part, pos) == ("第一句。\n\n第二句。", len(text))
    part, pos = take_part(text, 0, 15, complete=True)
    assert part == "第一句。"
    assert text[pos:].strip() == "第二句。"
    assert take_part(text, pos, 15, complete=True) == ("第二句。", len(text))
    assert take_part(text, len(text), 15, complete=True) == ("", len(text))


def test_a_partial_answer_yields_only_whole_sentences() -> None:
    assert take_part("第一句。第二句还没", 0, 2000, complete=False) == ("第一句。", 4)
    assert take_part("Hello world. This is", 0, 2000, complete=False) == ("Hello world.", 12)
    assert take_part("第一行\n第二", 0, 2000, complete=False) == ("第一行", 3)


def test_a_partial_answer_without_a_whole_sentence_yields_nothing_yet() -> None:
    assert take_part("还没有说完", 0, 2000, complete=False) == ("", 0)
    assert take_part("x 第一句。 还没", 9, 2000, complete=False) == ("", 9)
    # The last sentence end may still grow: a closing quote or more text may follow.
    assert take_part("他说：「好。", 0, 2000, complete=False) == ("", 0)
    assert take_part("Pi is 3.", 0, 2000, complete=False) == ("", 0)


def test_a_complete_answer_yields_its_tail_without_a_sentence_end() -> None:
    assert take_part("还没有说完", 0, 2000, complete=True) == ("还没有说完", 5)


def test_a_partial_answer_longer_than_a_part_is_cut_inside_the_first_part() -> None:
    text = "很长的一句话，" * 200  # no sentence end yet, far beyond one part
    part, pos = take_part(text, 0, 100, complete=False)
    assert part.endswith("，")
    assert 0 < utf8_len(part) <= 100
    assert text.startswith(part)
    assert pos == len(part)


def test_walking_with_take_part_matches_split_parts() -> None:
    text = _chinese_answer(6000, seed=3)
    assert _walk(text, 2000) == split_parts(text, 2000)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=ALPHABET, max_size=400), max_bytes=st.integers(4, 80))
def test_take_part_walks_the_whole_text_exactly_once(text: str, max_bytes: int) -> None:
    parts = _walk(text, max_bytes)
    assert all(utf8_len(p) <= max_bytes for p in parts)
    assert _content("".join(parts)) == _content(text)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=ALPHABET, max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=8),
    max_bytes=st.integers(4, 80),
)
def test_streaming_takes_then_a_final_take_deliver_every_character_once(
    text: str, cuts: list[int], max_bytes: int
) -> None:
    parts, pos = [], 0
    for end in sorted(c for c in cuts if c <= len(text)):
        grown = text[:end]
        while True:
            part, new = take_part(grown, pos, max_bytes, complete=False)
            if not part:
                assert new == pos
                break
            assert utf8_len(part) <= max_bytes
            parts.append(part)
            pos = new
    while True:
        part, pos = take_part(text, pos, max_bytes, complete=True)
        if not part:
            break
        parts.append(part)
    assert all(utf8_len(p) <= max_bytes for p in parts)
    assert _content("".join(parts)) == _content(text)


# --- to_plain ------------------------------------------------------------------------------------


def test_plain_text_passes_through_unchanged() -> None:
    text = "你好！今天天气不错。\n第二行, with ASCII: 1. 2. 3.\n\n  缩进的一行 a/b (x) 50% 100$"
    assert to_plain(text + "   \n") == text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab 中文。，,.?!:;'\"()/%$@0123456789\n")), max_size=200))
def test_text_without_markdown_symbols_changes_only_in_whitespace_at_line_ends(text: str) -> None:
    expected = re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in text.split("\n"))).strip("\n")
    assert to_plain(text) == expected


def test_headings_lose_their_hashes() -> None:
    assert to_plain("# 标题\n\n正文\n## Steps ##\nx") == "标题\n\n正文\nSteps\nx"
    assert to_plain("Title\n=====\nbody") == "Title\nbody"
    assert to_plain("#hashtag stays") == "#hashtag stays"


def test_bold_italic_and_strike_markers_are_removed() -> None:
    assert to_plain("这是**重点**内容，__也重要__，*斜体*与_强调_。") == "这是重点内容，也重要，斜体与_强调_。"
    assert to_plain("**bold** and *it* and _it_ and ***both*** and ~~gone~~") == "bold and it and it and both and gone"


def test_snake_case_and_multiplication_survive() -> None:
    text = "call snake_case_name with 2*3*4 or a * b, *args and **kwargs, 2**10"
    assert to_plain(text) == text


def test_inline_code_loses_its_backticks_but_not_its_content() -> None:
    assert to_plain("运行 `pip install **x**` 即可") == "运行 pip install **x** 即可"
    assert to_plain("``a ` b``") == "a ` b"


def test_fenced_code_keeps_content_and_indentation_without_fences() -> None:
    md = "示例：\n```python\ndef f(a_b):\n    return a_b * 2  # **x**\n```\n结束"
    assert to_plain(md) == "示例：\ndef f(a_b):\n    return a_b * 2  # **x**\n结束"


def test_an_unclosed_fence_keeps_the_rest_as_code() -> None:
    assert to_plain("~~~\n- not a bullet\n# not a heading") == "- not a bullet\n# not a heading"


def test_links_and_images_become_readable_text() -> None:
    assert to_plain("见[文档](https://a.com/d)。") == "见文档（https://a.com/d）。"
    assert to_plain("[https://x.y](https://x.y)") == "https://x.y"
    assert to_plain('图：![架构图](https://i/x.png "t")') == "图：架构图"
    assert to_plain("<https://x.y/z>") == "https://x.y/z"


def test_bullets_become_dots_and_numbers_stay() -> None:
    md = "- 一\n* 二\n+ 三\n  - 嵌套 **粗**\n1. 第一\n2) 第二"
    assert to_plain(md) == "• 一\n• 二\n• 三\n  • 嵌套 粗\n1. 第一\n2) 第二"


def test_blockquotes_and_rules_disappear() -> None:
    assert to_plain("> 引用\n> > 嵌套\n\n---\n\n***\n后文") == "引用\n嵌套\n\n后文"


def test_tables_become_rows_of_cells_without_the_separator() -> None:
    md = "| 名称 | 价格 |\n|:-----|-----:|\n| **基础** | `9|9` |\n| 高级 \\| Pro | 199 |\n\n后文"
    assert to_plain(md) == "名称 | 价格\n基础 | 9|9\n高级 | Pro | 199\n\n后文"


def test_a_pipe_in_prose_is_not_a_table() -> None:
    assert to_plain("a | b\n---\nc") == "a | b\n\nc"
    assert to_plain("x | y") == "x | y"


def test_html_breaks_become_newlines_and_known_tags_are_stripped() -> None:
    md = "一<br>二<br/>三 <b>粗</b> <span class='x'>s</span> Vec<u8> List<String> a < b > c &nbsp;&lt;&amp;"
    assert to_plain(md) == "一\n二\n三 粗 s Vec<u8> List<String> a < b > c  <&"


def test_runs_of_blank_lines_collapse_and_trailing_spaces_go() -> None:
    assert to_plain("a  \n\n\n\n\nb\t\n") == "a\n\nb"


def test_a_typical_model_answer_reads_cleanly() -> None:
    md = (
        "## 安装步骤\n\n1. 安装依赖：\n\n```bash\npip install mpgpt\n```\n\n"
        "2. **配置**`config.toml`，参见[说明](https://x.y/doc)。\n\n"
        "| 参数 | 默认 |\n|---|---|\n| max_bytes | 2000 |\n\n> 提示：*重启*后生效。\n"
    )
    plain = to_plain(md)
    assert plain == (
        "安装步骤\n\n1. 安装依赖：\n\npip install mpgpt\n\n"
        "2. 配置config.toml，参见说明（https://x.y/doc）。\n\n"
        "参数 | 默认\nmax_bytes | 2000\n\n提示：重启后生效。"
    )
    assert not re.search(r"[*#`]|\]\(", plain)
