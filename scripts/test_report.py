#!/usr/bin/env python3
"""Sums up the JUnit reports of one scripts/test.sh run (CTest, pytest, the container image
test): every skipped test with its reason, and one closing line with the totals.

A skipped test counts as not run, never as passed. Only two skips are allowed, both for what
the machine lacks rather than what the code does: CUDA tests (this machine may have no GPU; they
have "Cuda" in their name), and the container image test when the disk has no room for the image
build (scripts/container-test.sh says so: "not enough disk: ..."). Any other skip (a missing
Python package, an unset variable, a test someone disabled) fails the run, so a suite cannot
shrink unnoticed.

    scripts/test_report.py REPORT.xml [REPORT.xml ...]

Exit status 1 when a test failed or a non-CUDA test was skipped, 0 otherwise.
"""
from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ElementTree


def _skip_reason(case: ElementTree.Element, skipped: ElementTree.Element) -> str:
    # CTest's JUnit gives only a generic message (SKIP_REGULAR_EXPRESSION_MATCHED); GoogleTest's
    # own reason is the line after "file:line: Skipped" in the test's output.
    output = case.findtext("system-out") or ""
    match = re.search(r": Skipped\s*\n\s*(\S[^\n]*)", output)
    if match:
        return match.group(1).strip()
    return (skipped.get("message") or skipped.text or "").strip() or "no reason given"


def _allowed_skip(name: str, reason: str) -> bool:
    if "Cuda" in name:
        return True
    return name.startswith("container_image::") and reason.startswith("not enough disk")


def main(paths: list[str]) -> int:
    passed = failed = 0
    skipped: list[tuple[str, str]] = []
    for path in paths:
        root = ElementTree.parse(path).getroot()
        for case in root.iter("testcase"):
            name = case.get("name", "?")
            classname = case.get("classname", "")
            full = f"{classname}::{name}" if classname and classname not in name else name
            skip = case.find("skipped")
            if skip is not None:
                skipped.append((full, _skip_reason(case, skip)))
            elif case.find("failure") is not None or case.find("error") is not None or \
                    case.get("status") in ("fail", "failed"):
                failed += 1
            else:
                passed += 1

    not_allowed = [(name, reason) for name, reason in skipped if not _allowed_skip(name, reason)]
    if skipped:
        print(f"[test] {len(skipped)} skipped (not run, not counted as passed):")
        for name, reason in skipped:
            mark = ""
            if "Cuda" in name:
                mark = " (CUDA only: allowed without a GPU)"
            elif _allowed_skip(name, reason):
                mark = " (allowed: the machine lacks the disk space)"
            print(f"[test]   {name}: {reason}{mark}")
    if not_allowed:
        print(f"[test] FAIL: {len(not_allowed)} test(s) skipped without an allowed reason; "
              "they must run here")
    print(f"total: {passed} passed, {failed + len(not_allowed)} failed, {len(skipped)} skipped")
    return 1 if failed or not_allowed else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
