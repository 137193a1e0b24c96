-- ledger.admit_and_reserve: a question counted by the rate limit and, if counted, its credits
-- reserved, as one call: one round trip and one commit where a question made two of each. The
-- steps are the two functions of 0025, in the order the rules run them; each statement of a
-- function reads the newest committed rows, so the reserve sees what its account lock waited for.
-- Locks are taken in one order (the user's rate lock, then the account row), as by the two alone.
CREATE FUNCTION mpgpt_admit_and_reserve(p_openid TEXT, p_limit BIGINT, p_since DOUBLE PRECISION,
                                        p_at DOUBLE PRECISION, p_key TEXT, p_amount BIGINT,
                                        p_now DOUBLE PRECISION,
                                        OUT admitted BOOLEAN, OUT charged BOOLEAN, OUT holder TEXT)
LANGUAGE plpgsql AS $$
BEGIN
    charged := FALSE;
    admitted := mpgpt_admit_question(p_openid, p_limit, p_since, p_at);
    IF admitted THEN  -- refused by the rate limit: nothing reserved, nothing counted
        SELECT r.charged, r.holder INTO charged, holder FROM mpgpt_reserve(p_openid, p_key, p_amount, p_now) r;
    END IF;
END
$$;
