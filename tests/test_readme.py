"""Every ```python block of README.md runs as written: in a fresh process, in an empty folder, to exit status 0.

These are what users copy, so each block must build whatever it loads and define whatever it uses. (```sh blocks
are not run.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECONDS_PER_BLOCK = 180  # the slowest, the scikit-learn comparison, takes 10 to 20 s on a 2-core CPU


def python_blocks(text: str) -> list[tuple[str, str]]:
    """The ```python blocks of Markdown ``text``, each with the heading of the section it is in."""
    blocks, heading, fence, lines = [], "top", None, []
    for line in text.splitlines(keepends=True):
        if fence is None and line.startswith("```"):
            fence, lines = line[3:].strip(), []
        elif fence is not None and line.rstrip() == "```":
            if fence == "python":
                blocks.append((heading, "".join(lines)))
            fence = None
        elif fence is not None:
            lines.append(line)
        elif re.match(r"#{1,6} ", line):
            heading = line.lstrip("#").strip()
    assert fence is None, f"README.md ends inside a ```{fence} block"
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_the_python_blocks_we_expect():
    assert {heading for heading, _ in BLOCKS} >= {"Python", "scikit-learn"}, BLOCKS


@pytest.mark.parametrize(
    "code", [code for _, code in BLOCKS], ids=[f"{i}-{heading}" for i, (heading, _) in enumerate(BLOCKS)]
)
@pytest.mark.slow
def test_a_readme_python_block_runs_as_written(tmp_path, code):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SECONDS_PER_BLOCK
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
