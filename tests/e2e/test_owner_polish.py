"""Owner commands that say what they did (issue 16): where `users show` cut the ledger and in which zone
its times are, errors that carry the command's usage, doctor naming its config file, top-ups being off
when a product is added, plurals, and backup progress when stderr is not a terminal."""

from __future__ import annotations

import os
import re

from tests.ownerkit import ask, assert_one_line_failure, mpgpt, ok, serving

ALICE = "o6_bmjrPTlm6_alice_x2501"


async def test_owner_commands_say_what_they_cut_where_they_read_and_how_they_are_used(tmp_path, llm):
    async with serving(tmp_path, llm, quota={"trial_credits": 10, "daily_free": 0,
                                             "timezone": "America/New_York"}) as (config, _, wechat):
        await ask(wechat, ALICE)
        for i in range(3):
            await ok(config, "credits", "grant", ALICE, "1", "--reason", f"r{i}")
        everything = (await ok(config, "users", "show", ALICE, "--all", "--json")).json()
        cut = (await ok(config, "users", "show", ALICE, "--ledger", "2", "--json")).json()
        cut_text = (await ok(config, "users", "show", ALICE, "--ledger", "2")).out
        all_text = (await ok(config, "users", "show", ALICE, "--all")).out

        no_command = await mpgpt(config, "users")
        no_reason = await mpgpt(config, "channels", "disable", "fake")
        disable_help = (await ok(config, "channels", "disable", "--help")).out
        doctor = (await mpgpt(config, "doctor", "--json", "--timeout", "2")).json()
        added = await ok(config, "products", "add", "p100", "--name", "100 点", "--credits", "100", "--price-fen", "600")
        added_json = (await ok(config, "products", "add", "p200", "--name", "200 积分", "--credits", "200",
                               "--price-fen", "1200", "--json")).json()
        granted = (await ok(config, "credits", "grant", ALICE, "1", "--reason", "one")).out
        pruned = (await ok(config, "prune", "--days", "1", "--dry-run")).out
        backup = await ok(config, "backup", "--out", str(tmp_path / "copy.db"))  # stderr is a pipe here

    assert len(everything["ledger"]) >= 5 and everything["ledger_cut"] is False
    assert len(cut["ledger"]) == 2 and cut["ledger_cut"] is True and cut["timezone"] == "America/New_York"
    assert "the newest 2 rows; older ones cut: --all shows every row" in cut_text
    assert "older ones cut" not in all_text and "ledger (newest first, every row)" in all_text
    # every time says its zone: New York is at -05:00, or -04:00 in summer
    assert "in America/New_York" in cut_text and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d -0[45]:00", cut_text)

    # errors carry the command's own usage, in their one line
    assert_one_line_failure(no_command, "usage: mpgpt users", "{list|show|freeze|unfreeze}", code=2)
    assert_one_line_failure(no_reason, "--reason", "usage: mpgpt channels disable", code=2)
    assert "--reason REASON is required" in " ".join(disable_help.split())

    assert doctor[0]["name"] == "config" and doctor[0]["detail"] == f"loaded {os.path.abspath(config)}"

    # no [pay]: the owner hears nobody can buy it yet; a name that calls the unit otherwise is noticed
    assert "note: top-ups are off" in added.out and "the name says '点' but" in added.out and "'积分'" in added.out
    assert len(added_json["notes"]) == 1 and "top-ups are off" in added_json["notes"][0]
    assert "granted 1 credit:" in granted and "older than 1 day," in pruned and "0 messages" in pruned

    progress = [ln for ln in backup.err.splitlines() if ln.startswith("backup [")]
    shares = [int(m.group(1)) for ln in progress if (m := re.search(r"(\d+)%", ln))]
    assert len(progress) >= 10 and shares[-1] == 100, backup.err
    assert all(b > a for a, b in zip(shares, shares[1:])), shares  # one line per step of the way, no repeats
