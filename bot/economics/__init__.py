"""The owner's economics beyond top-ups: token pricing, redemption codes, membership plans, invitations."""
