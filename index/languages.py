"""language_for(path): the contract's lowercase language name of a file, from its name or suffix."""

from __future__ import annotations

from pathlib import PurePosixPath

__all__ = ["language_for", "LANGUAGES"]

# Suffix (lowercase) → language; names follow INTERFACES.md §3 (python, markdown, javascript, ...).
_BY_SUFFIX = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown",
    ".rst": "rst", ".txt": "text", ".adoc": "asciidoc",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".go": "go", ".rs": "rust", ".java": "java", ".kt": "kotlin", ".kts": "kotlin", ".scala": "scala",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".cs": "csharp", ".swift": "swift", ".m": "objc", ".rb": "ruby", ".php": "php", ".lua": "lua",
    ".pl": "perl", ".r": "r", ".jl": "julia", ".dart": "dart", ".ex": "elixir", ".exs": "elixir",
    ".erl": "erlang", ".hs": "haskell", ".clj": "clojure", ".ml": "ocaml", ".zig": "zig",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".fish": "shell", ".ps1": "powershell",
    ".json": "json", ".jsonl": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
    ".ini": "ini", ".cfg": "ini", ".conf": "ini", ".xml": "xml", ".html": "html", ".htm": "html",
    ".css": "css", ".scss": "css", ".sql": "sql", ".proto": "protobuf", ".graphql": "graphql",
    ".tf": "terraform", ".cmake": "cmake", ".vue": "vue", ".svelte": "svelte",
}
# Whole file names (lowercase) that say more than their suffix.
_BY_NAME = {
    "dockerfile": "dockerfile", "containerfile": "dockerfile", "makefile": "make", "gnumakefile": "make",
    "cmakelists.txt": "cmake", "gemfile": "ruby", "rakefile": "ruby", "justfile": "make",
    ".bashrc": "shell", ".zshrc": "shell", ".profile": "shell",
}

LANGUAGES = frozenset(_BY_SUFFIX.values()) | frozenset(_BY_NAME.values()) | {"text"}


def language_for(path: str) -> str:
    """Lowercase language name for a repo-relative path; "text" when nothing is known."""
    name = PurePosixPath(path).name.lower()
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name.startswith("dockerfile.") or name.endswith(".dockerfile"):
        return "dockerfile"
    return _BY_SUFFIX.get(PurePosixPath(name).suffix, "text")
