"""The commands in README.md and docs/*.md parse with the real argument parser, so the docs
cannot drift from the CLI; and the project's files carry no development history."""

import re
import shlex

import pytest

from distgan.cli import build_parser

from .conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
STOP = {"|", "||", "&&", ";", ">", ">>", "<", "2>", "&"}


def command_lines(text: str) -> list[str]:
    """Shell lines from fenced code blocks (continuations joined), and inline code spans that
    run distgan with at least one flag (a bare `distgan eval` in prose names a command, it
    does not run one)."""
    lines = []
    fence = re.compile(r"```[a-z]*\n(.*?)```", flags=re.S)
    for block in fence.findall(text):
        lines += block.replace("\\\n", " ").splitlines()
    for span in re.findall(r"`([^`\n]+)`", fence.sub("", text)):
        if re.match(r"(python3? -m distgan|distgan )", span) and " -" in span:
            lines.append(span)
    return [x for x in lines if re.search(r"(^|\s)(distgan|python3? -m distgan(\.train)?)(\s|$)", x)]


def distgan_args(line: str) -> list[str] | None:
    """The arguments a line hands distgan's parser, or None if it does not run distgan."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    for i, w in enumerate(words):
        if w == "distgan" and (i == 0 or words[i - 1] in STOP | {"--", "time", "nice"}):
            rest = words[i + 1:]
        elif w == "-m" and i + 1 < len(words) and words[i + 1] in ("distgan", "distgan.train"):
            rest = (["train"] if words[i + 1] == "distgan.train" else []) + words[i + 2:]
        else:
            continue
        cut = next((j for j, x in enumerate(rest) if x in STOP), len(rest))
        return rest[:cut]
    return None


def parse_problems(text: str, where: str) -> list[str]:
    parser = build_parser()
    problems = []
    for line in command_lines(text):
        args = distgan_args(line)
        if args is None:
            continue
        try:
            parser.parse_args(args)
        except SystemExit as e:
            if e.code:
                problems.append(f"{where}: {line.strip()}")
    return problems


def test_every_documented_command_parses(capsys):
    found = sum(len([x for x in command_lines(p.read_text()) if distgan_args(x) is not None])
                for p in DOCS)
    problems = [x for p in DOCS for x in parse_problems(p.read_text(), p.name)]
    capsys.readouterr()  # argparse's own messages
    assert found >= 15, f"only {found} documented commands found"
    assert not problems, "commands that no longer parse:\n" + "\n".join(problems)


def test_a_renamed_flag_is_caught(capsys):
    text = "```sh\ndistgan denoise photo.jpg -o out/ --strenght 0.5\n```\n"
    assert parse_problems(text, "x.md") == ["x.md: distgan denoise photo.jpg -o out/ --strenght 0.5"]
    text = "Run `python -m distgan.train --local --resum`.\n"  # no abbreviations either
    assert len(parse_problems(text, "x.md")) == 1
    text = "```sh\nray job submit --working-dir . -- \\\n    python -m distgan.train --config c.yaml\n```"
    assert parse_problems(text, "x.md") == []
    capsys.readouterr()


# Words that narrate a project's history rather than describe it.
HISTORY = re.compile(r"\b(session \d+|sessions \d|until now|tried and dropped|"
                     r"what changed|previously|superseded)\b", re.I)


@pytest.mark.parametrize("folder", ["README.md", "docs", "distgan", "benchmarks", "configs"])
def test_no_development_history_in_project_files(folder):
    root = ROOT / folder
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and
                                           p.suffix in (".md", ".py", ".yaml", ".c")]
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()[:100]}" for p in files
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if HISTORY.search(line)]
    assert not hits, "\n".join(hits)


def test_readme_is_a_short_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text) <= 12_000
    head = "\n".join(text.splitlines()[:20])
    assert "make train" in head and "make test" in head
