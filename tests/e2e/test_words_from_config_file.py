"""Sensitive words configured the way an owner does it: a TOML file naming dictionary and exception files
by relative path, read by a real `mpgpt serve` process."""

from __future__ import annotations

from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, ServerProcess, config_data, free_port, write_toml

REFUSAL = "抱歉，这个问题涉及不适宜讨论的内容，换个问题试试吧。"


async def test_a_dictionary_and_exceptions_file_named_in_config_apply_in_a_served_process(tmp_path, llm):
    (tmp_path / "words").mkdir()
    (tmp_path / "words" / "banned.txt").write_text("# 毒品\n大麻\n", encoding="utf-8")
    (tmp_path / "words" / "harmless.txt").write_text("大麻烦\n", encoding="utf-8")
    # No dictionary name (the file's stem is used) and paths relative to the config file.
    data = config_data(tmp_path, llm.base_url, words={"exceptions_file": "words/harmless.txt"})
    data["words"]["dictionaries"] = [{"path": "words/banned.txt"}]
    config = write_toml(tmp_path / "config.toml", _with_nested_array(data))
    server = ServerProcess(config, free_port()).start()
    try:
        llm.default = Script(text="好的。")
        async with FakeWeChat(f"{server.url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            refused = await wx.send_text("o_cfgwords", "哪里能买到大 麻")
            harmless = await wx.send_text("o_cfgwords", "这真是个大麻烦")
    finally:
        server.stop()
    assert refused.content == REFUSAL
    assert harmless.content == "好的。"
    assert len(llm.requests) == 1


def _with_nested_array(data: dict) -> dict:
    """write_toml writes top-level arrays of tables; [[words.dictionaries]] goes under its dotted name."""
    words = dict(data.pop("words"))
    out = dict(data)
    out["words"] = {k: v for k, v in words.items() if k != "dictionaries"}
    out["words.dictionaries"] = words["dictionaries"]
    return out


def test_the_shipped_example_lists_work_as_config_toml_names_them(tmp_path):
    """words/ and the commented lines of config.toml's [words], uncommented as the README says."""
    import json
    import re
    import shutil
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    shutil.copytree(root / "words", tmp_path / "words")
    section = (root / "config.toml").read_text(encoding="utf-8").split("[words]\n", 1)[1].split("\n[", 1)[0]
    uncommented = re.findall(r"^# ((?:dictionaries|exceptions_file) = .*)$", section, re.M)
    assert len(uncommented) == 2, section
    words = tomllib.loads("\n".join(uncommented))
    assert [d["path"] for d in words["dictionaries"]] == ["words/example-block.txt", "words/example-mask.txt"]
    data = config_data(tmp_path, "http://127.0.0.1:9/v1", words={"exceptions_file": words["exceptions_file"]})
    data["words"]["dictionaries"] = words["dictionaries"]
    config = write_toml(tmp_path / "config.toml", _with_nested_array(data))

    def verdict(text: str) -> dict:
        result = subprocess.run([sys.executable, "-m", "scripts.cli", "words", "test", text, "--json", "--config",
                                 str(config)], capture_output=True, text=True, cwd=root, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert verdict("哪里可以代 开 发票")["question"] == "refused"
    assert verdict("我们一起反网络赌博")["question"] == "passes"
    masked = verdict("你这个笨蛋")
    assert masked["question"] == "masked" and masked["masked_question"] == "你这个**"
    assert verdict("今天天气怎么样")["question"] == "passes"
