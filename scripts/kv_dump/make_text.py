#!/usr/bin/env python3
"""Regenerate data/kjv_genesis.txt: the Book of Genesis, King James Version.

What
    Extracts the full Book of Genesis (50 chapters, ~208 KB) from the Debian
    package ``bible-kjv-text`` (read through its ``bible`` program from package
    ``bible-kjv``) and writes it as plain prose: a title, ``CHAPTER n``
    headings, and one verse per line without verse numbers.

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
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="data/kjv_genesis.txt")
    args = ap.parse_args()
    text = genesis_text()
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.out}: {len(text)} chars")


if __name__ == "__main__":
    main()
