"""The README quotes the committed tables, not memory: every interval 'x [low, high]' and every 'p = x' /
'Holm x' in a checked section must be found, at the precision the README prints, in the committed result
files that section draws on.

To check another section, add its heading and its result files to SECTIONS (e.g. the DMC and didactic
summaries once their runs are final).  A number the README quotes from elsewhere (git history, a paper)
must not be written as an interval there, or the section must name its source files here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]

# (document, section heading: the text of its '#' line, or None for the whole document) -> glob patterns,
# relative to the repository, of the committed files whose numbers it may quote
T2I_FILES = ["results/t2i/**/*.md", "results/t2i/**/*.csv"]
SECTIONS = {
    ("README.md", "## Results"): ["results/*/tables/cpu/*", "results/dmc/diagnostics/cpu/**/*.md",
                                  "results/dmc/diagnostics/cpu/**/*.csv", *T2I_FILES],
    ("README.md", "### T2I suite (RL fine-tuning of text-to-image diffusion models)"): T2I_FILES,
    ("results/t2i/diagnostics/cpu/README.md", None): T2I_FILES,
}
# CSV columns that hold an estimate and its interval bounds
TRIPLE_COLUMNS = [
    ("delta", "delta_ci_low", "delta_ci_high"),
    ("estimate", "ci_low", "ci_high"),
    ("mean", "ci_low", "ci_high"),
    ("point", "ci_low", "ci_high"),
    ("rho", "rho_low", "rho_high"),
    ("r", "r_low", "r_high"),
    ("delta_mean", "delta_ci_low", "delta_ci_high"),
]
NUMBER = r"[-+−]?\d+(?:\.\d+)?"
INTERVAL = re.compile(rf"({NUMBER})(?:\s*kB)?\s*\[({NUMBER}),\s*({NUMBER})\]")
PVALUE = re.compile(rf"\b(?:p = |Holm )({NUMBER})")


def _float(text: str) -> float:
    return float(text.replace("−", "-").replace("+", ""))


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _section(text: str, heading: str | None) -> str:
    if heading is None:
        return text
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    assert start is not None, f"README has no heading {heading!r}"
    level = len(heading) - len(heading.lstrip("#"))
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level
        ),
        len(lines),
    )
    return "\n".join(lines[start + 1 : end])


def _sources(patterns: list[str]) -> tuple[list[tuple[float, float, float]], list[float]]:
    """Every (estimate, low, high) and every p-value in the files: intervals written 'x [low, high]' in
    Markdown, interval columns and p / p_holm columns in CSVs."""
    triples, pvalues = [], []
    files = sorted({p for pattern in patterns for p in REPO.glob(pattern) if p.is_file()})
    assert files, f"no committed files match {patterns}"
    for path in files:
        if path.suffix == ".md":
            triples += [tuple(_float(g) for g in m.groups()) for m in INTERVAL.finditer(path.read_text())]
        elif path.suffix == ".csv":
            frame = pd.read_csv(path)
            for columns in TRIPLE_COLUMNS:
                if set(columns) <= set(frame.columns):
                    triples += [tuple(map(float, row)) for row in frame[list(columns)].dropna().to_numpy()]
            for column in ("p", "p_holm"):
                if column in frame.columns:
                    pvalues += [float(v) for v in frame[column].dropna()]
    return triples, pvalues


def _close(value: float, quoted: str) -> bool:
    return abs(value - _float(quoted)) <= 0.5 * 10 ** -_decimals(quoted) + 1e-12


@pytest.mark.parametrize("document, heading", list(SECTIONS))
def test_every_interval_and_p_value_the_readme_quotes_is_in_the_committed_files(document, heading):
    section = _section((REPO / document).read_text(), heading)
    triples, pvalues = _sources(SECTIONS[document, heading])
    quoted = [m.groups() for m in INTERVAL.finditer(section)]
    missing = [
        f"{p} [{lo}, {hi}]"
        for p, lo, hi in quoted
        if not any(_close(a, p) and _close(b, lo) and _close(c, hi) for a, b, c in triples)
    ]
    assert not missing, (
        f"{document} {heading}: intervals not found in {SECTIONS[document, heading]}: {missing}"
    )
    quoted_p = PVALUE.findall(section)
    missing_p = [p for p in quoted_p if not any(_close(v, p) for v in pvalues)]
    assert not missing_p, f"{document} {heading}: p-values not found in the tables' tests: {missing_p}"


def test_the_check_can_fail():
    """A made-up interval or p-value is caught, and a quoted one matches only at the printed precision."""
    triples = [(0.0012, -0.0037, 0.0060)]
    assert any(_close(a, "+0.0012") and _close(b, "−0.0037") and _close(c, "0.0060") for a, b, c in triples)
    assert not _close(-0.0037, "−0.0019")
    assert not _close(0.58, "0.5")
    assert _close(0.0504, "0.050") and not _close(0.0504, "0.0500")
    section = _section("# A\n## B\ntext 1 [2, 3]\n### C\nmore 4 [5, 6]\n## D\nno\n", "## B")
    assert [m.groups() for m in INTERVAL.finditer(section)] == [("1", "2", "3"), ("4", "5", "6")]
