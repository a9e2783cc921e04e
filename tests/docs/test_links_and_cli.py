"""The docs a user has are all in the repo, and they say what the CLI does.

- every relative link in the project's Markdown resolves to a file in the repo, and no doc points
  outside it (no absolute local paths, no design notes), nor cites a design note by a bare name
  that is not a file here (INVARIANTS.md, WIRE.md, CHECKPOINTS.md, ARCHITECTURE.md);
- every code comment citing one of those docs cites the docs/ file that exists;
- the README's command table shows every option of every command;
- every `fwemu ...` line in a shell block of any doc parses with the real CLI parser.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from fwemu.emulator.cli import COMMANDS, build_parser
from tests.docs.markdown import REPO, blocks, links, project_markdown, shell_commands

DESIGN_NOTES = ("INVARIANTS.md", "WIRE.md", "CHECKPOINTS.md", "ARCHITECTURE.md")
OWN_DOCS = {"INVARIANTS.md": "docs/invariants.md", "WIRE.md": "docs/wire.md", "CHECKPOINTS.md": "docs/checkpoints.md"}
CONNECTION = {"--base-url", "--api-key", "--verbose", "-v"}


@pytest.mark.parametrize("path", project_markdown(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve_inside_the_repo(path):
    for target in links(path):
        parts = urlsplit(target)
        if parts.scheme in ("http", "https", "mailto"):
            continue
        assert not parts.scheme, f"{path}: link {target!r}"
        if not parts.path:            # an anchor in the same page
            continue
        resolved = (path.parent / parts.path).resolve()
        assert resolved.is_relative_to(REPO), f"{path.relative_to(REPO)}: {target!r} points outside the repo"
        assert resolved.exists(), f"{path.relative_to(REPO)}: {target!r} does not exist"


def repo_text_files():
    for p in sorted(REPO.rglob("*")):
        rel = p.relative_to(REPO)
        if p.is_file() and p.suffix in (".py", ".md", ".toml", ".sh") and not (
                {".git", "build", "dist", ".hypothesis"} & set(rel.parts)) and ".egg-info" not in str(rel):
            yield p


def test_no_file_cites_a_doc_that_is_not_in_the_repo():
    bad = []
    for p in repo_text_files():
        if p == REPO / "tests" / "docs" / "test_links_and_cli.py":
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            # ../shared/cookbook is the one outside path allowed: the compat tests read a cookbook
            # checkout there when CI provides one (and skip, saying so, when it does not)
            if "/work/" in line or "shared/design" in line or "shared/seeds" in line:
                bad.append(f"{p.relative_to(REPO)}:{n}: {line.strip()[:100]}")
            for note in DESIGN_NOTES:
                for m in re.finditer(rf"(?<![\w/.-]){re.escape(note)}", line):
                    bad.append(f"{p.relative_to(REPO)}:{n}: cites {note}; use {OWN_DOCS.get(note, 'docs/')}")
    assert not bad, "\n".join(bad)


def test_the_cited_docs_exist():
    for doc in OWN_DOCS.values():
        assert (REPO / doc).is_file(), doc


def readme_command_rows() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Commands"):]
    section = section[:section.index("\n## ", 4)]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        m = re.match(r"\| `fwemu (\w[\w-]*)", line)
        if m:
            rows[m.group(1)] = rows.get(m.group(1), "") + line
    return rows


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_readme_command_table_shows_every_option(name):
    row = readme_command_rows().get(name)
    assert row, f"README's command table has no row for fwemu {name}"
    parser = build_parser(name)
    sub = next(a for a in parser._actions if a.dest == "command").choices[name]
    missing = []
    for action in sub._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or longs[0] == "--help" or set(action.option_strings) & CONNECTION:
            continue
        if not any(re.search(rf"{re.escape(o)}(?![\w-])", row) for o in longs):
            missing.append(longs[0])
    assert not missing, f"README row for fwemu {name} lacks {missing}"


def test_the_connection_options_are_documented_once():
    text = (REPO / "README.md").read_text()
    assert "also take `--base-url`" in text and "`-v`" in text


def doc_shell_commands():
    for path in project_markdown():
        for b in blocks(path):
            if b.lang in ("bash", "sh", "console"):
                for cmd in shell_commands(b.text):
                    if cmd.argv[:1] == ["fwemu"]:
                        yield pytest.param(cmd.argv, id=f"{b.where(path)} {cmd.text[:40]}")


@pytest.mark.parametrize("argv", list(doc_shell_commands()))
def test_every_documented_fwemu_command_parses(argv):
    args = [a for a in argv[1:]]
    chosen = next((a for a in args if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    try:
        parser.parse_args([a if "$(" not in a else "x" for a in args])
    except SystemExit as exc:
        pytest.fail(f"`{' '.join(argv)}` does not parse (exit {exc.code})")
