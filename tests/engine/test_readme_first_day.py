"""A new user follows the README only (issue 16, points 2, 9 and 11): every `curate` line in its
code blocks names a real command and real options, the scorer section's commands included;
the training presets it lists are curate's own; the laptop rows need no GPU."""

from __future__ import annotations

import re
import shlex
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def readme_command_lines() -> list[str]:
    """Every `curate ...` command in the README's fenced code blocks (comments dropped, lines
    joined at `&&`)."""
    lines = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", README, flags=re.S):
        for raw in block.splitlines():
            code = raw.split(" #", 1)[0].strip()
            for part in code.split("&&"):
                part = part.strip()
                if part.startswith("curate "):
                    lines.append(part)
    return lines


def parses(argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of the real CLI parsing ``argv`` + ``--help``: click parses every
    argument first (an unknown command or option exits 2), then prints the help and exits 0
    without running anything (no dataset exists here)."""
    import contextlib
    import io

    from curate.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            main([*argv, "--help"])
        except SystemExit as e:
            return int(e.code or 0), err.getvalue()
    return 0, err.getvalue()


def test_readme_commands_parse_against_the_cli():
    lines = readme_command_lines()
    commands = {shlex.split(line)[1] for line in lines}
    # the first day as the README tells it: ingest to report, and the scorer section
    assert {"ingest", "stats", "download", "embed", "scorer", "filter", "run", "select", "reshard", "train", "eval",
            "report"} <= commands
    assert any(line.startswith("curate scorer train") for line in lines)
    assert any("--allow-network" in line for line in lines)  # point 9: the blocked-address case
    refused = [(line, err.strip().splitlines()[-1:]) for line in lines
               for code, err in [parses(shlex.split(line)[1:])] if code != 0]
    assert not refused


def test_bad_readme_line_would_be_caught():
    assert parses(["filter", "ds/", "--no-such-option", "1"])[0] == 2
    assert parses(["no-such-command", "ds/"])[0] == 2
    assert parses(["scorer", "train", "ds/", "--seed-set", "trusted/", "--name", "dfn"])[0] == 0


def test_readme_presets_are_curates_own():
    from curate.train import PRESETS

    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+)\| ([\d.,]+[MB]?) \|", README, flags=re.M)
    assert rows, "the README's preset table"
    scale = {"M": 1_000_000, "B": 1_000_000_000}
    seen = set()
    for cell, model, samples in rows:
        name, *flags = cell.split()
        p = PRESETS[name]
        seen.add(name)
        n = int(float(samples[:-1]) * scale[samples[-1]]) if samples[-1] in scale else int(samples.replace(",", ""))
        if flags:  # `tiny --samples-seen 65536`: the override is the budget
            assert flags == ["--samples-seen", str(n)], cell
        else:
            assert n == p.samples_seen, cell
            assert p.model in model or model.strip() == "same", cell
    assert {"tiny", "small"} <= seen
    # point 11: the quick start trains at a preset a laptop runs, never `small`
    assert "--preset tiny" in README and "--preset small" not in README.split("## Concepts")[0]
    assert PRESETS["tiny"].model == "curate-tiny" and PRESETS["tiny"].samples_seen <= 65_536
