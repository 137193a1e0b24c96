-- State changes of several dependent steps as one call: one round trip, no BEGIN/COMMIT (a
-- statement outside a transaction is one). The steps are the same as in storage/ledger.py's SQLite
-- path, statement by statement; each statement of a function reads the newest committed rows, so a
-- step after a lock sees what the lock waited for. (One statement with a data-modifying WITH cannot
-- do this: its UPDATE of a row locked earlier in the same statement writes on the older version.)

-- ledger.reserve: take `p_amount` credits for generation `p_key`, daily first, or refuse.
-- charged: this call charged the account; holder: whose reservation the key already is, if any.
CREATE FUNCTION mpgpt_reserve(p_openid TEXT, p_key TEXT, p_amount BIGINT, p_now DOUBLE PRECISION,
                              OUT charged BOOLEAN, OUT holder TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    v_daily BIGINT;
    v_balance BIGINT;
    v_status TEXT;
    v_from BIGINT;
BEGIN
    charged := FALSE;
    -- locked until COMMIT: from_daily is computed on what is charged, and a reserve of the same key
    -- on another host has committed (or not begun) when the key is read
    SELECT daily, balance, status INTO v_daily, v_balance, v_status FROM accounts WHERE openid = p_openid FOR UPDATE;
    SELECT openid INTO holder FROM reservations WHERE gen_key = p_key;
    IF holder IS NOT NULL OR v_status IS DISTINCT FROM 'active' OR v_balance + v_daily < p_amount THEN
        RETURN;
    END IF;
    v_from := LEAST(v_daily, p_amount);
    INSERT INTO reservations (gen_key, openid, amount, from_daily, created_at)
    VALUES (p_key, p_openid, p_amount, v_from, p_now) ON CONFLICT (gen_key) DO NOTHING;
    IF NOT FOUND THEN  -- another account's reserve took the key meanwhile: nothing is charged here
        SELECT openid INTO holder FROM reservations WHERE gen_key = p_key;
        RETURN;
    END IF;
    UPDATE accounts SET daily = daily - v_from, balance = balance - (p_amount - v_from) WHERE openid = p_openid;
    INSERT INTO ledger (openid, kind, amount, daily_amount, ref, created_at)
    VALUES (p_openid, 'reserve', v_from - p_amount, -v_from, p_key, p_now);
    charged := TRUE;
END
$$;

-- rate_events.admit: count one question unless the user has `p_limit` since `p_since`. The count is
-- taken after the user's advisory lock (the same key storage.dialect.serialize uses), so two hosts
-- never count the same rows; the user's expired events go in the same call.
CREATE FUNCTION mpgpt_admit_question(p_openid TEXT, p_limit BIGINT, p_since DOUBLE PRECISION,
                                     p_now DOUBLE PRECISION) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('rate:' || p_openid, 0));
    DELETE FROM rate_events WHERE openid = p_openid AND at <= p_since;
    INSERT INTO rate_events (openid, at) SELECT p_openid, p_now
     WHERE (SELECT COUNT(*) FROM rate_events WHERE openid = p_openid AND at > p_since) < p_limit;
    RETURN FOUND;
END
$$;

-- ledger.grant_daily: open `p_day` for the account (expire what is left of the last daily grant,
-- grant `p_amount`), once per day; FALSE when the day is open already or the account is missing.
CREATE FUNCTION mpgpt_open_day(p_openid TEXT, p_amount BIGINT, p_day TEXT, p_now DOUBLE PRECISION)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    v_daily BIGINT;
    v_milli BIGINT;
    v_day TEXT;
BEGIN
    -- locked: a reserve on another host cannot spend what the expire row takes away
    SELECT daily, daily_milli, daily_day INTO v_daily, v_milli, v_day FROM accounts WHERE openid = p_openid FOR UPDATE;
    IF NOT FOUND OR (v_day IS NOT NULL AND v_day COLLATE "C" >= p_day COLLATE "C") THEN
        RETURN FALSE;
    END IF;
    IF v_daily > 0 OR v_milli > 0 THEN
        INSERT INTO ledger (openid, kind, daily_amount, daily_milli, ref, created_at)
        VALUES (p_openid, 'expire', -v_daily, -v_milli, p_day, p_now);
    END IF;
    IF p_amount > 0 THEN
        INSERT INTO ledger (openid, kind, daily_amount, ref, created_at) VALUES (p_openid, 'daily', p_amount, p_day, p_now);
    END IF;
    UPDATE accounts SET daily = GREATEST(0, p_amount), daily_milli = 0, daily_day = p_day WHERE openid = p_openid;
    RETURN TRUE;
END
$$;
