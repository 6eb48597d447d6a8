"""A finding: one problem at one place in one file, and how it is printed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Finding:
    path: str  # relative to the repository root, with forward slashes
    line: int  # 1-based
    col: int  # 1-based
    message: str
    rule: str

    def text(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message} [{self.rule}]"

    def annotation(self) -> str:
        """The GitHub Actions workflow command that puts this finding on its line in the PR."""
        return (
            f"::error file={_escape_property(self.path)},line={self.line},col={self.col},"
            f"title={_escape_property(self.rule)}::{_escape_data(self.message)} [{self.rule}]"
        )


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")
