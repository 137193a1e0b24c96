"""A message whose first delivery cannot decide it (the database refuses a write midway, after the
delivery was recorded): the follower reads a polite sentence, not an error page, and so does WeChat's
retry of the message, instead of waiting for a decision that never comes. No credits are held for
it; the server answers the next question once the database does."""

from __future__ import annotations

from bot.keys import CONFIG, DB
from storage.inbound import InboundRepo
from storage.ledger import Ledger
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, make_config, refuse_new_answers, running

USER = "o_undecided"
ANSWER = "你好，我是测试模型。"


async def _counted(db) -> int:  # noqa: ANN001
    """The sender's questions the rate limit has counted."""
    return int((await db.lookup("SELECT COUNT(*) AS n FROM rate_events WHERE openid = ?", (USER,)))["n"])


async def test_a_message_that_cannot_be_decided_gets_a_polite_reply_and_so_does_its_retry(tmp_path, llm):
    async with running(make_config(tmp_path, llm.base_url)) as (url, app):
        db, texts = app[DB], app[CONFIG].texts
        ledger = Ledger(db)
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            assert (await wx.send_text(USER, "你好")).content == ANSWER
            before, counted = await ledger.balance(USER), await _counted(db)
            assert counted == 1  # the first question
            await refuse_new_answers(db)

            message = wx.text_message(USER, "这个问题存不下", msg_id=424242)
            first = await wx.deliver(message)
            assert first.status == 200 and first.is_valid and first.content == texts.model_error
            again = await wx.deliver(message)  # WeChat's retry of the same MsgId
            assert again.status == 200 and again.content == texts.model_error
            # stored for the message: a retry on another process reads the same sentence
            assert (await InboundRepo(db).get("424242")).reply == texts.model_error
            assert len(llm.requests) == 1  # the model was never asked

            # its credits were never taken: the reservation is one transaction with the answer's
            # insert, so the insert's failure took the reservation (and the count) back with it
            assert await ledger.balance(USER) == before
            assert await db.lookup("SELECT 1 FROM reservations WHERE gen_key = '424242'") is None
            assert await _counted(db) == counted
            assert await ledger.sweep_stale(older_than=0) == 0
            assert await ledger.check_invariant() == []

            await db.write_one("DROP TRIGGER answers_refused" + (" ON answers" if db.engine == "postgresql" else ""))
            assert (await wx.send_text(USER, "现在呢")).content == ANSWER
