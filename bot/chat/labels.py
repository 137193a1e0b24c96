"""The AI-content label on answers, and the answer page's link, as replies and pushes carry them.

The label is ours, added around the model's text where it is shown, never part of that text: a
follower cannot prompt it away, and an answer that already says "AI" still gets it. In chat it is
given once per answer (answers.labelled), on the reply or push that carries the answer's first part
(position "start") or its last part in chat (position "end": the end of the answer, or the part
that hands the rest to the page).
"""

from __future__ import annotations

import secrets

from bot.config import Config
from storage.answers import Answer

# Generated text: what the model wrote (a failure or deadline note alone is ours, not labelled).
LABELLED_STATUSES = ("generating", "done", "cut")
SECONDS_PER_DAY = 86_400.0


class Labels:
    def __init__(self, cfg: Config) -> None:
        text = cfg.ai_label.text
        self.text: str | None = text if isinstance(text, str) else None
        self.at_start = cfg.ai_label.position == "start"

    def due(self, answer: Answer) -> str | None:
        """The label, if this answer's chat replies have not carried it yet."""
        if self.text is None or answer.labelled or answer.status not in LABELLED_STATUSES:
            return None
        return self.text

    def around(self, part: str, label: str | None, *, first: bool, last: bool) -> tuple[str, bool]:
        """`part` with the label where it belongs (if this part is the place); whether it was added."""
        if label is None or not part:
            return part, False
        if self.at_start and first:
            return f"{label}\n{part}", True
        if not self.at_start and last:
            return f"{part}\n{label}", True
        return part, False


class PageLinks:
    """The answer page's address, when server.public_url says where followers reach us."""

    def __init__(self, cfg: Config) -> None:
        self.base = cfg.server.public_url.rstrip("/")
        self.lifetime = cfg.storage.retention_days * SECONDS_PER_DAY

    @property
    def on(self) -> bool:
        return bool(self.base)

    def url(self, token: str) -> str:
        return f"{self.base}/a/{token}"

    @staticmethod
    def new_token() -> str:
        """192 random bits, URL-safe: knowing the token is what opens the page."""
        return secrets.token_urlsafe(24)

    def expires_at(self, now: float) -> float:
        return now + self.lifetime
