"""Read the project's Markdown the way a user does: fenced code blocks, relative links, shell commands."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
EXITS = re.compile(r"#.*\bexits? (\d+)\b")


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int            # 1-based line of the opening fence

    def where(self, path: Path) -> str:
        return f"{path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    return [Block(m.group(1).lower(), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def project_markdown() -> list[Path]:
    """Every Markdown file a user of the repo reads (not third-party or build output)."""
    skip = {".git", "build", "dist", ".hypothesis", ".pytest_cache"}
    return sorted(p for p in REPO.rglob("*.md")
                  if not (set(p.relative_to(REPO).parts) & skip) and not any(".egg-info" in s for s in p.parts))


def links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)        # inline code is not a link
    return LINK.findall(text)


@dataclass(frozen=True)
class Command:
    argv: list[str]
    expect_rc: int
    text: str


def shell_commands(block: str) -> list[Command]:
    """One Command per `&&`-joined part of each line; `# exits N` in a line's comment sets its status."""
    out: list[Command] = []
    for raw in block.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = EXITS.search(line)
        rc = int(m.group(1)) if m else 0
        code = _strip_comment(line)
        parts = [p.strip().removesuffix("&").strip() for p in code.split(" && ")]   # `cmd &`: backgrounded
        for i, part in enumerate(parts):
            out.append(Command(shlex.split(part) if "$(" not in part else ["sh", "-c", part],
                               rc if i == len(parts) - 1 else 0, part))
    return out


def _strip_comment(line: str) -> str:
    """The line without a trailing `  # comment` (a `#` inside quotes stays)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] == " "):
            return line[:i].rstrip()
    return line
