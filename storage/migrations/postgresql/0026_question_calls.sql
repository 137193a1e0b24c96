-- The answers a follower is still owed (generating, or not wholly delivered) are found through an
-- index instead of a scan of every answer: a question looks for one, and so does 继续 and the push
-- job. `owed` is that condition as a stored generated column, so that the partial index names only
-- `owed`: a saved progress changes `text` but not `owed`, and stays a HOT update (an index predicate
-- on `text` itself would make every save write new index entries).
ALTER TABLE answers ADD COLUMN owed BIGINT
    GENERATED ALWAYS AS (CASE WHEN status = 'generating' OR delivered_upto < length(text) THEN 1 ELSE 0 END) STORED;
CREATE INDEX answers_still_owed ON answers (openid, id) WHERE owed = 1;

-- The three write transactions a question made on PostgreSQL, as one call each (one round trip on
-- the event loop's connections instead of BEGIN, three to six statements and COMMIT on a thread).
-- The steps are storage/ledger.py's and storage/answers.py's SQLite path, statement by statement;
-- each statement of a function reads the newest committed rows, so a step after a lock sees what the
-- lock waited for. Rows come back as JSON (row_to_json), read by column name like any other row.

-- ledger.ensure_account: the account, created on first contact with its trial grant (once).
CREATE FUNCTION mpgpt_open_account(p_openid TEXT, p_trial BIGINT, p_now DOUBLE PRECISION,
                                   OUT account JSON, OUT opened BOOLEAN)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO accounts (openid, created_at) VALUES (p_openid, p_now) ON CONFLICT (openid) DO NOTHING;
    INSERT INTO ledger (openid, kind, amount, ref, created_at) VALUES (p_openid, 'trial', p_trial, 'trial', p_now)
    ON CONFLICT (openid, kind, ref) DO NOTHING;
    opened := FOUND;
    IF opened AND p_trial <> 0 THEN
        UPDATE accounts SET balance = balance + p_trial WHERE openid = p_openid;
    END IF;
    SELECT row_to_json(a) INTO account FROM (
        SELECT openid, status, tier, balance, daily, daily_day, created_at, balance_milli, daily_milli
          FROM accounts WHERE openid = p_openid) a;
END
$$;

-- answers.create: the answer for a question, with what its first delivery needs: the older answer
-- still owed to the user (if any), the conversation (reused, or a new one after `p_idle` seconds;
-- one host at a time per user: the advisory key storage.dialect.serialize uses), its last turns, and
-- the message pointed at the answer its reply comes from.
CREATE FUNCTION mpgpt_create_answer(p_openid TEXT, p_msg_key TEXT, p_question TEXT, p_model TEXT, p_route TEXT,
                                    p_holder TEXT, p_lease_until DOUBLE PRECISION, p_now DOUBLE PRECISION,
                                    p_deadline_at DOUBLE PRECISION, p_asked_before DOUBLE PRECISION,
                                    p_idle DOUBLE PRECISION, p_turns BIGINT, p_heard TEXT, p_picture_id BIGINT,
                                    p_reply_from_new BOOLEAN, p_owed_note TEXT, OUT answer JSON, OUT created BOOLEAN, OUT owed_id BIGINT, OUT turns JSON)
LANGUAGE plpgsql AS $$
DECLARE
    v_conversation BIGINT;
    v_last DOUBLE PRECISION;
    v_row answers;
BEGIN
    SELECT id INTO owed_id FROM answers WHERE openid = p_openid AND owed = 1
       AND (awaiting_fetch = 1 OR (route = 'reply' AND created_at < p_asked_before))
     ORDER BY id LIMIT 1;
    PERFORM pg_advisory_xact_lock(hashtextextended('conversation:' || p_openid, 0));
    SELECT id, last_at INTO v_conversation, v_last FROM conversations
     WHERE openid = p_openid AND closed = 0 ORDER BY id DESC LIMIT 1;
    IF v_conversation IS NULL OR p_now - v_last > p_idle THEN
        IF v_conversation IS NOT NULL THEN
            UPDATE conversations SET closed = 1 WHERE id = v_conversation;
        END IF;
        INSERT INTO conversations (openid, started_at, last_at) VALUES (p_openid, p_now, p_now)
        RETURNING id INTO v_conversation;
    END IF;
    INSERT INTO answers (openid, msg_key, conversation_id, question, model, route, lease_owner, lease_until,
                         created_at, deadline_at, awaiting_fetch, heard, picture_id)
    VALUES (p_openid, p_msg_key, v_conversation, p_question, p_model, p_route, p_holder, p_lease_until, p_now,
            p_deadline_at, CASE WHEN owed_id IS NOT NULL AND p_route = 'reply' THEN 1 ELSE 0 END, p_heard,
            p_picture_id)
    ON CONFLICT (msg_key) DO NOTHING RETURNING * INTO v_row;
    created := FOUND;
    IF created THEN
        SELECT COALESCE(json_agg(json_build_array(t.role, t.content) ORDER BY t.id), '[]') INTO turns
          FROM (SELECT id, role, content FROM turns WHERE conversation_id = v_conversation
                 ORDER BY id DESC LIMIT p_turns) t;
    ELSE
        SELECT * INTO v_row FROM answers WHERE msg_key = p_msg_key;
        turns := '[]';
    END IF;
    -- the message's reply comes from the older owed answer (with the note), or from this one
    UPDATE inbound SET answer_id = COALESCE(owed_id, v_row.id),
                       note = CASE WHEN owed_id IS NOT NULL THEN p_owed_note END
     WHERE msg_key = p_msg_key AND (owed_id IS NOT NULL OR p_reply_from_new);
    answer := row_to_json(v_row);
END
$$;

-- answers.take_reply, second half: store the reply planned from what was read, if nothing changed
-- since. The answer row is locked first (deliveries of one answer on several hosts decide one after
-- another); then a reply already stored for the message stands (`reply`, not `planned`); an answer updated since
-- the read (its xmin moved) or a page token other than the one read makes the call change nothing
-- (`reply` NULL: read and plan again; nothing was written). Otherwise the planned writes, as the
-- SQLite path makes them.
CREATE FUNCTION mpgpt_store_reply(p_answer_id BIGINT, p_msg_key TEXT, p_seen_version TEXT, p_seen_token TEXT,
                                  p_live_text TEXT, p_link_token TEXT, p_link_expires DOUBLE PRECISION,
                                  p_upto BIGINT, p_owed BIGINT, p_labelled BIGINT, p_reply TEXT,
                                  p_now DOUBLE PRECISION, OUT reply TEXT, OUT planned BOOLEAN)
LANGUAGE plpgsql AS $$
DECLARE
    v_version TEXT;
BEGIN
    planned := FALSE;
    SELECT xmin::text INTO v_version FROM answers WHERE id = p_answer_id FOR UPDATE;
    SELECT i.reply INTO reply FROM inbound i WHERE i.msg_key = p_msg_key;
    IF reply IS NOT NULL THEN
        RETURN;
    END IF;
    IF v_version IS DISTINCT FROM p_seen_version
       OR (SELECT token FROM answer_pages WHERE answer_id = p_answer_id) IS DISTINCT FROM p_seen_token THEN
        RETURN;
    END IF;
    IF p_link_token IS NOT NULL THEN
        INSERT INTO answer_pages (answer_id, token, created_at, expires_at)
        VALUES (p_answer_id, p_link_token, p_now, p_link_expires) ON CONFLICT (answer_id) DO NOTHING;
        IF NOT FOUND THEN  -- a page made meanwhile without the answer's lock (answer_pages.ensure)
            RETURN;
        END IF;
    END IF;
    UPDATE answers SET text = COALESCE(p_live_text, text), delivered_upto = GREATEST(p_upto, delivered_upto),
                       awaiting_fetch = p_owed, labelled = GREATEST(p_labelled, labelled)
     WHERE id = p_answer_id;
    UPDATE inbound SET reply = p_reply, replied_at = p_now WHERE msg_key = p_msg_key;
    reply := p_reply;
    planned := TRUE;
END
$$;
