"""[words]: the sensitive-word dictionaries, their exceptions and what an answer's match does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from bot.config.base import AsTuple, Section, Strs, base_dir, readable_text_problem, resolve
from bot.config.errors import problem


class WordListConfig(Section):
    """One sensitive-word dictionary: a UTF-8 file, one word a line, # comments."""

    path: str
    # block: refuse the question (and treat the answer per words.answer_action); mask: star it out.
    action: Literal["block", "mask"] = "block"
    # The name logs use (never the words themselves); the file's stem when empty.
    name: str = ""

    @model_validator(mode="after")
    def _readable(self, info: ValidationInfo) -> WordListConfig:
        if err := readable_text_problem(resolve(base_dir(info), self.path)):
            raise problem("path", err)
        return self


class WordsConfig(Section):
    dictionaries: Annotated[tuple[WordListConfig, ...], AsTuple] = ()
    # Harmless words that contain a listed one (大麻烦 contains 大麻): a match inside them is no match.
    exceptions: Strs = ()
    exceptions_file: str = ""
    # A block-list word in an answer: "mask" it or "withhold" the whole answer.
    answer_action: Literal["mask", "withhold"] = "mask"
    mask_char: str = "*"
    # Dictionary files are checked for changes at most this often (seconds); 0: only on reload().
    reload_interval: float = Field(10.0, ge=0)

    @field_validator("mask_char")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("must be one character")
        return value

    @model_validator(mode="after")
    def _files(self, info: ValidationInfo) -> WordsConfig:
        names: set[str] = set()
        for i, d in enumerate(self.dictionaries):
            name = d.name or Path(d.path).stem
            if name in names:
                raise problem(f"dictionaries[{i}].name", f"two dictionaries are called {name!r}; give one a name")
            names.add(name)
        if self.exceptions_file:
            if err := readable_text_problem(resolve(base_dir(info), self.exceptions_file)):
                raise problem("exceptions_file", err)
        return self
