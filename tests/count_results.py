#!/usr/bin/env python3
"""Counts test cases from a `bazel test` run: reads the summary lines of its output
(stdin) and each listed target's test.xml under bazel-testlogs (a sharded test's, one per
shard). A target that failed
to build, timed out or has no XML counts as one failed case. Prints
"<passed> <failed> <skipped>".
"""
import glob
import os
import re
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for line in sys.stdin:
    # "(cached)", or "(3/4 cached)" for a sharded test whose other shards ran.
    m = re.match(r"^(//\S+)\s+(?:\((?:\d+/\d+ )?cached\)\s+)?"
                 r"(PASSED|FAILED TO BUILD|FAILED|TIMEOUT|NO STATUS|FLAKY)", line)
    if not m:
        continue
    target, status = m.groups()
    target_dir = os.path.join("bazel-testlogs", target[2:].replace(":", "/"))
    xml_paths = [os.path.join(target_dir, "test.xml")]
    if not os.path.exists(xml_paths[0]):  # a sharded test: one XML per shard
        xml_paths = sorted(glob.glob(os.path.join(target_dir, "shard_*_of_*", "test.xml")))
    cases = []
    if status in ("PASSED", "FAILED", "FLAKY"):
        for xml_path in xml_paths:
            if not os.path.exists(xml_path):
                continue
            try:
                cases += list(ET.parse(xml_path).getroot().iter("testcase"))
            except ET.ParseError:
                pass
    if not cases:
        if status == "PASSED":
            passed += 1
        else:
            failed += 1
            print(f"count_results: {target} {status}", file=sys.stderr)
        continue
    for case in cases:
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
            print(f"count_results: {target} {case.get('classname')}.{case.get('name')} failed", file=sys.stderr)
        elif case.get("result") == "skipped" or case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    if status != "PASSED" and status != "FLAKY" and all(
            c.find("failure") is None and c.find("error") is None for c in cases):
        failed += 1  # the binary failed outside any test case (crash, exit code)
        print(f"count_results: {target} {status} outside its test cases", file=sys.stderr)
print(passed, failed, skipped)
