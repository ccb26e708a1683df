"""Static checks of the Docker builds (no Docker engine here to run them): the builder stage
runs scripts/setup.sh before copying the sources, so every file setup.sh reads must be copied
before that step, and none of them may be dockerignored."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILES = ["docker/Dockerfile.cpu", "docker/Dockerfile.cuda"]


def _files_setup_reads():
    text = (ROOT / "scripts/setup.sh").read_text()
    names = sorted(set(re.findall(r"\brequirements-[a-z]+\.txt\b", text)))
    assert names, "setup.sh reads no requirements file? the pattern is out of date"
    return names


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_setup_inputs_are_copied_before_setup_runs(dockerfile):
    lines = (ROOT / dockerfile).read_text().splitlines()
    setup_at = next(i for i, line in enumerate(lines) if "scripts/setup.sh --no-build" in line)
    copied = " ".join(line for line in lines[:setup_at] if line.startswith("COPY "))
    for name in _files_setup_reads():
        assert name in copied, f"{dockerfile}: {name} is read by setup.sh but not copied first"
    assert "scripts/setup.sh" in copied


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_setup_inputs_are_not_dockerignored(dockerfile):
    ignored = (ROOT / f"{dockerfile}.dockerignore").read_text().split()
    for name in _files_setup_reads() + ["scripts"]:
        assert name not in ignored, f"{dockerfile}.dockerignore drops {name}"
