-- ledger.admit_and_reserve with a Draft: a question counted, its credits reserved and, if they are
-- held for it, its answer created, as one call: one round trip and one commit where a question made
-- two of each. The steps are 0027's function and 0026's mpgpt_create_answer; the answer is made
-- only when the question was counted and the reservation is this user's (made now, or by an earlier
-- call for the same key), which is exactly when the rules let the question on. A failing insert takes
-- the count and the reservation back with it: no credits are held for an answer that does not exist.
-- Locks in one order: the user's rate lock, the account row, then the conversation's lock.
CREATE FUNCTION mpgpt_admit_reserve_create(p_openid TEXT, p_limit BIGINT, p_since DOUBLE PRECISION,
                                           p_at DOUBLE PRECISION, p_key TEXT, p_amount BIGINT,
                                           p_now DOUBLE PRECISION,
                                           a_openid TEXT, a_msg_key TEXT, a_question TEXT, a_model TEXT,
                                           a_route TEXT, a_holder TEXT, a_lease_until DOUBLE PRECISION,
                                           a_now DOUBLE PRECISION, a_deadline_at DOUBLE PRECISION,
                                           a_asked_before DOUBLE PRECISION, a_idle DOUBLE PRECISION,
                                           a_turns BIGINT, a_heard TEXT, a_picture_id BIGINT,
                                           a_reply_from_new BOOLEAN, a_owed_note TEXT,
                                           OUT admitted BOOLEAN, OUT charged BOOLEAN, OUT holder TEXT,
                                           OUT answer JSON, OUT created BOOLEAN, OUT owed_id BIGINT,
                                           OUT turns JSON)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT r.admitted, r.charged, r.holder INTO admitted, charged, holder
      FROM mpgpt_admit_and_reserve(p_openid, p_limit, p_since, p_at, p_key, p_amount, p_now) r;
    IF admitted AND (charged OR holder = p_openid) THEN
        SELECT c.answer, c.created, c.owed_id, c.turns INTO answer, created, owed_id, turns
          FROM mpgpt_create_answer(a_openid, a_msg_key, a_question, a_model, a_route, a_holder, a_lease_until,
                                   a_now, a_deadline_at, a_asked_before, a_idle, a_turns, a_heard,
                                   a_picture_id, a_reply_from_new, a_owed_note) c;
    END IF;
END
$$;
