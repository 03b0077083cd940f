"""The README's commands run from a fresh clone, or say which file the user supplies.

``../shared/data`` (the paper's reference files) lies beside the development checkout only; a user's
clone does not have it. The rule, kept simple: README.md is cut into paragraphs (runs of lines between
blank lines and code fences, so a command with the comment lines right above it is one paragraph), and
a paragraph that names ``../shared`` must say ``user-supplied`` (in a code block: a comment line such as
``# user-supplied: NAME, from URL``). The README's own convention goes further: it names no
``../shared`` path at all, and gives each file the user supplies a ``user-supplied`` line with where
it is published.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def paragraphs(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of every paragraph: lines between blank lines and ``` fences."""
    out: list[tuple[int, str]] = []
    start, lines = 0, []
    for n, line in enumerate(text.splitlines() + [""], 1):
        if not line.strip() or line.lstrip().startswith("```"):
            if lines:
                out.append((start, "\n".join(lines)))
            lines = []
            continue
        if not lines:
            start = n
        lines.append(line)
    return out


def unsupplied_shared_paths(text: str) -> list[str]:
    """The paragraphs that name ``../shared`` without saying ``user-supplied``."""
    return [
        f"README.md:{n}: {p.splitlines()[0][:100]}"
        for n, p in paragraphs(text)
        if "../shared" in p and "user-supplied" not in p.lower()
    ]


def test_the_rule_catches_a_reference_path_and_accepts_a_supplied_one():
    old = "```bash\n# the paper's demo\ncem-lab model.checkpoint=../shared/data/dncnn.pth \\\n    task=dn\n```\n"
    assert unsupplied_shared_paths(old) == ["README.md:2: # the paper's demo"]
    supplied = old.replace("# the paper's demo", "# user-supplied: dncnn.pth, from https://example.org/dncnn.pth")
    assert unsupplied_shared_paths(supplied) == []
    # a comment of another paragraph (after a blank line) does not cover the command
    apart = "```bash\n# user-supplied: x.pth\n\ncem-lab model.checkpoint=../shared/x.pth\n```\n"
    assert unsupplied_shared_paths(apart) == ["README.md:4: cem-lab model.checkpoint=../shared/x.pth"]


def test_no_readme_command_needs_the_reference_data_of_the_development_checkout():
    assert unsupplied_shared_paths((ROOT / "README.md").read_text()) == []
