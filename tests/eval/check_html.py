"""Independent check of a `pmol report` HTML page, with Python's own parsers.

usage: check_html.py REPORT.html OUT.json
Fails (exit 1) unless the page is self-contained and well formed: every non-void HTML
tag closed in order (html.parser), every inline <svg> a well-formed XML document
(xml.etree), no <script>, no src= or href= attributes, no URL other than the SVG
namespace. Writes what it found for the C++ test to compare: the table cells, the text
of every SVG, and counts of svg / polyline / circle / rect elements.
"""
import html.parser
import json
import re
import sys
import xml.etree.ElementTree as ET

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
SVG_NS = "http://www.w3.org/2000/svg"


class Checker(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.cells, self.errors = [], [], []
        self.cell = None

    def handle_starttag(self, tag, attrs):
        for name, _ in attrs:
            if name in ("src", "href"):
                self.errors.append(f"<{tag}> has {name}=")
        if tag == "script":
            self.errors.append("a <script> element")
        if tag in ("td", "th"):
            self.cell = ""
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass  # <x/>: nothing left open

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th"):
            self.cells.append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    if not text.startswith("<!DOCTYPE html>"):
        sys.exit("no <!DOCTYPE html> first")
    checker = Checker()
    checker.feed(text)
    checker.close()
    if checker.stack:
        checker.errors.append(f"left open: {checker.stack}")
    for url in re.findall(r"https?://[^\s\"'<>]+", text):
        if url != SVG_NS:
            checker.errors.append(f"external URL {url}")
    counts = {"svg": 0, "polyline": 0, "circle": 0, "rect": 0}
    svg_texts = []
    for block in re.findall(r"<svg\b.*?</svg>", text, re.S):
        root = ET.fromstring(block)  # raises on malformed XML
        for element in root.iter():
            name = element.tag.split("}")[-1]
            if name in counts:
                counts[name] += 1
            if name == "text":
                svg_texts.append("".join(element.itertext()))
    if checker.errors:
        sys.exit("; ".join(checker.errors))
    json.dump({"cells": checker.cells, "svg_texts": svg_texts, "counts": counts},
              open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
