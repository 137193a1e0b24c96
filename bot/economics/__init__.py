"""The owner's economics beyond top-ups: redemption codes (more to come: plans, invitations)."""
