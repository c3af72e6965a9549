#!/usr/bin/env python3
"""Regenerate the source texts in data/: KJV Genesis (prose) and Go's package strings (code).

What
    ``--source kjv`` (default) extracts the full Book of Genesis (50 chapters, ~208 KB) from the Debian
    package ``bible-kjv-text`` (read through its ``bible`` program from package
    ``bible-kjv``) and writes it as plain prose: a title, ``CHAPTER n``
    headings, and one verse per line without verse numbers.

    ``--source go`` concatenates the non-test source files of Go 1.19's package ``strings``
    (Debian 12 package ``golang-1.19-src``, /usr/lib/go-1.19/src/strings, BSD-style "Go"
    licence, text in data/LICENSE.go) in file-name order, each preceded by a
    ``// ==== src/strings/<file> ====`` line: about 58 KB of real code, a second text whose
    statistics differ from prose (used by scripts/e2e/ppl_eval.py).

Why
    The KV dumps need a long, real, freely licensed English text, and the
    machines reach only Debian and PyPI.  The KJV (1611) is public domain
    (Debian's copyright file for bible-kjv-text: "The copyright for the King
    James Version text of the Bible is expired").  The result is committed as
    data/kjv_genesis.txt so dumps are reproducible without the package; this
    script documents and reproduces its provenance.

Usage::

    apt-get install -y bible-kjv bible-kjv-text
    python3 scripts/kv_dump/make_text.py --out data/kjv_genesis.txt
    apt-get install -y golang-1.19-src
    python3 scripts/kv_dump/make_text.py --source go --out data/go_strings.txt
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess

N_CHAPTERS = 50
VERSE_RE = re.compile(r"^Ge(\d+):(\d+) (.*)$")


def genesis_text() -> str:
    raw = subprocess.run(["bible", "-f", f"gen1:1-gen{N_CHAPTERS}:26"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         check=True).stdout
    out = ["THE FIRST BOOK OF MOSES, CALLED GENESIS", ""]
    chapter = 0
    for line in raw.splitlines():
        m = VERSE_RE.match(line)
        if not m:
            continue  # the program's banner / prompt lines
        ch = int(m.group(1))
        if ch != chapter:
            chapter = ch
            out += ["", f"CHAPTER {ch}", ""]
        out.append(m.group(3).strip())
    if chapter != N_CHAPTERS:
        raise SystemExit(f"expected {N_CHAPTERS} chapters, got {chapter}")
    return "\n".join(out).replace("\n\n\n", "\n\n") + "\n"


GO_SRC = "/usr/lib/go-1.19/src"
GO_PACKAGE = "strings"


def go_text(src: str = GO_SRC, package: str = GO_PACKAGE) -> str:
    files = sorted(f for f in glob.glob(os.path.join(src, package, "*.go"))
                   if not f.endswith("_test.go"))
    if not files:
        raise SystemExit(f"no Go files in {src}/{package}: apt-get install golang-1.19-src")
    parts = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            parts.append(f"// ==== src/{package}/{os.path.basename(f)} ====\n" + fh.read())
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", choices=["kjv", "go"], default="kjv")
    ap.add_argument("--out", default=None,
                    help="default data/kjv_genesis.txt or data/go_strings.txt")
    args = ap.parse_args()
    args.out = args.out or {"kjv": "data/kjv_genesis.txt", "go": "data/go_strings.txt"}[args.source]
    text = genesis_text() if args.source == "kjv" else go_text()
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.out}: {len(text)} chars")


if __name__ == "__main__":
    main()
