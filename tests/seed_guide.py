"""What the seed guide says to do, read from the guide itself (issue 9, item 4).

The guide (Cisco's IPsec troubleshooting guide, French edition of TAC doc 5409) lives in
``shared/seed`` next to the repository (or ``TW_SEED_DIR``), not in it. :func:`extract` reads its sections and,
for each, the workarounds it gives as commands or terms:

- commands typed at a configuration prompt (``Router(config-if)#ip mtu MTU_size_in_bytes``);
- the lines of configuration blocks (a block whose every line reads as configuration:
  ``!``, or a lowercase keyword and its arguments, no ``:`` and no prompt);
- commands set in bold in the text (``**sysopt connection permit-ipsec**``), but not
  ``show``/``debug`` commands, which diagnose rather than fix;
- the technical terms of the numbered items under "Contournement(s)" (``MTU``, ``CEF``,
  ``AIM``, ``ESP-DES/3DES``), outside the quoted log messages (``*...*``).

A command is written as a pattern: numbers, addresses and placeholders
(``MTU_size_in_bytes``, ``[slot_#/]port_#``) match any word. The scraped guide repeats
blocks from one section in the next ones; a command belongs to the first section that gives
it. ``tests/data/seed_workarounds.json`` is what :func:`extract` gives on the guide
(``python tests/seed_guide.py`` writes it again); a test checks the two agree whenever the
guide is there, so the tests that use the file run without it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

# TW_SEED_DIR, else shared/seed beside the checkout's parent (/work/shared/seed here).
SEED_DIRS = tuple(
    Path(p)
    for p in (
        os.environ.get("TW_SEED_DIR", ""),
        Path(__file__).resolve().parents[3] / "shared" / "seed",
        "/work/shared/seed",
    )
    if str(p)
)
SNAPSHOT = Path(__file__).parent / "data" / "seed_workarounds.json"

_TOC = re.compile(r"^\[(.+)\]\(#\)$")
_FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.S)
_CONFIG_PROMPT = re.compile(r"^\s*[A-Za-z][\w.-]*\(config[\w-]*\)#\s*(\S.*?)\s*$")
_CONFIG_LINE = re.compile(r"^\s*(?:!|[a-z][\w-]*(?:\s+\S+)*)\s*$")
_BOLD = re.compile(r"\*\*([^*\n]+)\*\*")
_EMPHASIS = re.compile(r"\*[^*\n]+\*")
_ITEM = re.compile(r"^\d+\.\s+(.+)$")
_TERM = re.compile(r"^(?:[A-Z]{2,}[A-Za-z0-9/-]*|[A-Z][a-z]+[A-Z]+)$")
_DIAGNOSTIC = ("show", "debug")


def seed_text() -> str | None:
    """The guide's text, or None when ``shared/seed`` is not next to the repository."""
    for d in SEED_DIRS:
        if d.is_dir():
            files = sorted(d.glob("*.txt"))
            if files:
                return files[0].read_text(encoding="utf-8")
    return None


def norm_title(text: str) -> str:
    """A heading as the knowledge base's ``seed_sections`` and the table of contents both
    spell it (the contents escape parentheses and write ``initialize sas``)."""
    text = text.replace("\\", "").replace("_", " ")
    return re.sub(r"\s+", " ", text).strip().casefold()


def sections(text: str) -> list[tuple[str, str]]:
    """``(title, text)`` of every section of the body, in order."""
    lines = text.splitlines()
    titles: list[str] = []
    body_from = 0
    for i, line in enumerate(lines):
        m = _TOC.match(line.strip())
        if m is None:
            continue
        title = norm_title(m.group(1))
        if titles and title == titles[0]:  # the contents are over: the body starts again
            body_from = i
            break
        titles.append(title)
    known = set(titles)
    out: list[tuple[str, list[str]]] = []
    for line in lines[body_from:]:
        stripped = line.strip()
        m = _TOC.match(stripped)
        heading = norm_title(m.group(1) if m else stripped)
        if heading in known and len(stripped) < 200:
            out.append((heading, []))
        elif out:
            out[-1][1].append(line)
    return [(t, "\n".join(body)) for t, body in out]


def _pattern(command: str) -> str:
    words = []
    for tok in command.split():
        if re.search(r"[\d._\[#A-Z]", tok):
            words.append(r"\S+")
        else:
            words.append(re.escape(tok))
    return r"\s+".join(words)


def _commands(body: str) -> list[str]:
    found: list[str] = []
    blocks = _FENCE.findall(body)
    for block in blocks:
        lines = [ln for ln in block.splitlines() if ln.strip()]
        for ln in lines:
            m = _CONFIG_PROMPT.match(ln)
            if m and m.group(1).split()[0] not in _DIAGNOSTIC:
                found.append(m.group(1))
        if lines and all(
            ":" not in ln and "#" not in ln and _CONFIG_LINE.match(ln) for ln in lines
        ):
            found.extend(ln.strip() for ln in lines if ln.strip() != "!")
    prose = _FENCE.sub("", body)
    for m in _BOLD.finditer(prose):
        words = m.group(1).split()
        if (
            len(words) >= 2
            and words[0][:1].islower()
            and words[0] not in _DIAGNOSTIC
            and all(w.isascii() for w in words)
        ):
            found.append(" ".join(words))
    return [_pattern(c) for c in found]


def _terms(body: str) -> list[str]:
    terms: list[str] = []
    in_workarounds = False
    for line in _FENCE.sub("", body).splitlines():
        if line.strip().startswith("Contournement"):
            in_workarounds = True
            continue
        m = _ITEM.match(line.strip())
        if not in_workarounds or m is None:
            continue
        for word in re.split(r"[\s'’]+", _EMPHASIS.sub(" ", m.group(1))):
            word = word.strip(".,;:()")
            # "ESP-DES/3DES" is one term; "rapide/CEF" gives CEF.
            for tok in [word] if _TERM.match(word) else word.split("/"):
                if _TERM.match(tok) and tok not in terms:
                    terms.append(tok)
    return terms


def extract(text: str) -> dict[str, Any]:
    """Every section's title and the workarounds it is the first to give."""
    seen: set[str] = set()
    out: dict[str, Any] = {"sections": {}}
    for title, body in sections(text):
        commands = [c for c in dict.fromkeys(_commands(body)) if c not in seen]
        seen.update(commands)
        entry = out["sections"].setdefault(title, {"commands": [], "terms": []})
        entry["commands"].extend(c for c in commands if c not in entry["commands"])
        entry["terms"].extend(t for t in _terms(body) if t not in entry["terms"])
    return out


if __name__ == "__main__":
    seed = seed_text()
    if seed is None:
        sys.exit("shared/seed not found next to the repository")
    SNAPSHOT.write_text(json.dumps(extract(seed), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {SNAPSHOT}")
