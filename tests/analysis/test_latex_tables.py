"""The report's tables as LaTeX (cem_lab.analysis.latex_tables), ``cem-report --latex`` and ``read_report``.

No LaTeX is installed here, so the tables are checked for structure (braces, environments, one row of as many
cells as the column spec says, the three rules, nothing unescaped) and against the DataFrames and the
markdown they must agree with."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from test_study_stats import ROIS, _write_run

from cem_lab.analysis.attribution_tables import faithfulness_summary
from cem_lab.analysis.latex_tables import (
    PREAMBLE,
    faithfulness_latex,
    latex_escape,
    runs_latex,
    study_latex,
)
from cem_lab.analysis.report import read_report, write_report
from cem_lab.analysis.study_tables import StudyResult, study_markdown
from cem_lab.cli.report import main
from cem_lab.errors import InputError

NASTY = "net_1 50% & #2 $x$ {a} ~b ^c \\d"  # every character LaTeX reads as markup
STAR = "\\textsuperscript{*}"

# ----------------------------------------------------------------------------- a small LaTeX reader
_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|[^\\]", re.S)


def _tokens(line: str) -> list[str]:
    return _TOKEN.findall(line)


def _unescape(text: str) -> str:
    words = {
        "\\textbackslash{}": "\\",
        "\\textasciitilde{}": "~",
        "\\textasciicircum{}": "^",
        "\\textless{}": "<",
        "\\textgreater{}": ">",
        "\\textbar{}": "|",
    }
    pattern = "|".join([*(re.escape(w) for w in words), r"\\[_%&#${}]"])
    return re.sub(pattern, lambda m: words.get(m.group(0), m.group(0)[1:]), text)


def _as_markdown(cell: str) -> str:
    """A LaTeX cell as the markdown writes it."""
    return _unescape(cell.replace(STAR, "*").replace(",\\,", ", ").replace("$-$", "-")).strip()


def _check(tex: str) -> list[dict]:
    """Check the structure of ``tex``; return its tables (column spec, header and body rows as cells)."""
    assert tex.startswith(PREAMBLE) and "booktabs" in PREAMBLE
    lines = [line for line in tex.splitlines() if not line.startswith("%")]
    depth, envs = 0, []
    for line in lines:
        toks = _tokens(line)
        for i, t in enumerate(toks):
            if t == "{":
                depth += 1
            elif t == "}":
                depth -= 1
                assert depth >= 0, line
            elif t in ("_", "%", "#", "^", "~"):
                raise AssertionError(f"unescaped {t!r} in {line!r}")
            elif t in ("\\begin", "\\end"):
                name = re.match(r"\{(\w+\*?)\}", "".join(toks[i + 1 :])).group(1)
                if t == "\\begin":
                    envs.append(name)
                else:
                    assert envs and envs.pop() == name, (name, envs)
        assert line.count("$") % 2 == line.count("\\$") % 2, f"unbalanced math in {line!r}"
    assert depth == 0 and envs == []
    tables = []
    for block in re.findall(r"\\begin\{table\}.*?\\end\{table\}", "\n".join(lines), re.S):
        for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\caption{", "\\label{", "\\begin{tabular}"):
            assert block.count(rule) == 1, (rule, block)
        spec = re.search(r"\\begin\{tabular\}\{([lrc ]+)\}", block).group(1).split()
        body = block.split("\\toprule")[1].split("\\bottomrule")[0]
        rows = []
        for line in body.strip().splitlines():
            if line == "\\midrule":
                continue
            assert line.endswith(" \\\\"), line
            cells = line[: -len(" \\\\")].split(" & ")
            assert len(cells) == len(spec) and _tokens(line).count("&") == len(spec) - 1, (spec, line)
            rows.append(cells)
        caption = re.search(r"\\caption\{(.*)\}\n", block).group(1)
        tables.append({"spec": spec, "header": rows[0], "rows": rows[1:], "caption": caption})
    assert tables
    return tables


def _number(cell_part: str) -> float:
    return float(cell_part.replace("$-$", "-"))


def _interval(cell: str) -> tuple[float, ...]:
    m = re.fullmatch(r"(\S+) \[(\S+),\\,(\S+)\](\\textsuperscript\{\*\})?", cell)
    return tuple(map(_number, m.groups()[:3]))


# ----------------------------------------------------------------------------- synthetic study tables
def _study(names=("fsrcnn_d2_w16_x4", NASTY)) -> StudyResult:
    """Two tasks, two conditions, every metric; means below and above 100, negatives, one interval n/a."""
    rng = np.random.default_rng(1)
    metrics = [
        ("share_positive", "positive share", ""),
        ("share_negative", "negative share", ""),
        ("reach_max_px", "effective distance", "px"),
        ("baseline_metric", "ROI metric", "dB"),
        ("total_negative_effect", "sum of negative CE", "dB"),
    ]
    summary, paired = [], []
    for task in ("sr_x4", "dn_s50"):
        for k, c in enumerate(names):
            for col, label, unit in metrics:
                mean = {"reach_max_px": 140.0 + rng.normal(), "total_negative_effect": -2.5}.get(col, rng.random())
                low = np.nan if (task, k, col) == ("dn_s50", 1, "share_positive") else mean - 0.1234
                summary.append(
                    dict(
                        task=task, condition=c, metric=col, label=label, unit=unit, mean=mean, low=low, high=mean + 0.2
                    )
                )
                summary[-1].update(n_images=3 + k, n_units=6 + k, missing_units=1 - k)
        for col, label, _ in metrics:
            d = -0.05 if col == "share_negative" else 0.3
            paired.append(
                dict(task=task, a=names[0], b=names[1], metric=col, label=label, mean=d, low=d - 0.1, high=d + 0.1)
            )
            paired[-1].update(n_images=3, n_units=6, excludes_zero=not (d - 0.1 <= 0 <= d + 0.1))
    return StudyResult(pd.DataFrame(summary), pd.DataFrame(paired), pd.DataFrame(), [], ("model",), 0.95, 7)


def test_escaping_round_trips_every_special_character():
    text = NASTY + " <|> fsrcnn_d2_w16_x4"
    escaped = latex_escape(text)
    assert _unescape(escaped) == text
    assert latex_escape("fsrcnn_d2_w16_x4") == "fsrcnn\\_d2\\_w16\\_x4"
    assert latex_escape("a\\b{c}") == "a\\textbackslash{}b\\{c\\}"  # the backslash's braces are not escaped again
    assert latex_escape("50%&#$~^") == "50\\%\\&\\#\\$\\textasciitilde{}\\textasciicircum{}"


def test_study_tables_are_well_formed_and_say_what_the_markdown_says():
    res = _study(names=("fsrcnn_d2_w16_x4", NASTY.replace("|", "")))
    tex = study_latex(res)
    tables = _check(tex)
    assert len(tables) == 4  # per task: conditions, paired differences
    md = study_markdown(res)
    md_rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in md.splitlines() if line.startswith("| ")]
    md_rows = [r for r in md_rows if r[0] not in ("condition", "b")]  # the headers
    tex_rows = [r for t in tables for r in t["rows"]]
    assert [[_as_markdown(c) for c in r] for r in tex_rows] == md_rows
    summary, paired = tables[0], tables[1]
    assert summary["spec"] == ["l", "r", "r"] + ["r"] * 5 and paired["spec"][:2] == ["l", "l"]
    assert summary["header"][:3] == ["condition", "images", "units"]
    assert "ROI metric (dB)" in summary["header"] and "effective distance (px)" in summary["header"]
    assert "positive share" in summary["header"] and "ROI metric (dB)" in paired["header"]
    assert summary["rows"][1][0] == latex_escape(NASTY) and _unescape(summary["rows"][1][0]) == NASTY
    assert "95\\,\\% nested-bootstrap interval over pictures" in summary["caption"]
    assert "7 unit(s)" in summary["caption"] and "sr\\_x4" in summary["caption"]  # 6 units + 1 lacking
    assert STAR in paired["caption"] and "excludes 0" in paired["caption"] and "b minus a" in paired["caption"]
    assert "of the 7 unit(s) of the task" in paired["caption"]
    assert "\\label{tab:study:sr-x4}" in tex and "\\label{tab:paired:dn-s50}" in tex
    # a starred cell is exactly one whose interval excludes 0
    col = paired["header"].index("negative share")
    assert paired["rows"][0][col] == "$-$0.050 [$-$0.150,\\,0.050]"
    assert all(c.endswith(STAR) for c in paired["rows"][0][4:] if c != paired["rows"][0][col])


def test_the_numbers_are_the_summarys_at_the_stated_digits():
    res = _study()
    tables = _check(study_latex(res))
    s = res.summary.set_index(["task", "condition", "metric"])
    for t, task in ((tables[0], "sr_x4"), (tables[2], "dn_s50")):
        for row in t["rows"]:
            condition = _unescape(row[0])
            assert int(row[1]) == s.loc[(task, condition, "share_positive"), "n_images"]
            for header, cell in zip(t["header"][3:], row[3:]):
                metric = {"positive share": "share_positive", "negative share": "share_negative"}.get(header) or {
                    "effective distance (px)": "reach_max_px",
                    "ROI metric (dB)": "baseline_metric",
                    "sum of negative CE (dB)": "total_negative_effect",
                }[header]
                want = s.loc[(task, condition, metric)]
                if cell.endswith("[n/a]"):
                    assert np.isnan(want["low"]) and _number(cell.split()[0]) == round(want["mean"], 3)
                    continue
                for got, value in zip(_interval(cell), want[["mean", "low", "high"]]):
                    digits = 3 if abs(value) < 100 else 1
                    assert got == round(value, digits), (cell, value)
    # a changed value changes that cell and no other
    changed = _study()
    changed.summary.loc[0, "mean"] += 0.01
    before, after = study_latex(res).splitlines(), study_latex(changed).splitlines()
    assert sum(a != b for a, b in zip(before, after)) == 1


def test_faithfulness_and_runs_tables_are_well_formed():
    rows = []
    for k, (cem, lam) in enumerate([(0.5, 0.3), (0.7, -0.4), (0.6, 0.8)]):
        for method, drop in (("cem", cem), ("lam_x", lam)):
            rows.append(
                dict(run=f"r{k}", roi="0 0 8", intervention="lv", method=method, deletion_drop=drop)
                | dict(insertion_gain=drop / 2, rank_correlation_with_cem=1.0 if method == "cem" else 0.5)
            )
    summary = faithfulness_summary(pd.DataFrame(rows))
    (t,) = _check(faithfulness_latex(summary, 3))
    assert t["spec"] == list("llrrrrrrr") and "3 cem-attribution run(s)" in t["caption"]
    cem, lam = t["rows"]
    assert lam[1] == "lam\\_x" and cem[6] == "--" and lam[5] == "33.3\\%"
    assert _interval(lam[3])[0] == round(summary.loc[1, "deletion_drop"], 4)
    runs = pd.DataFrame(
        {
            "run": ["sweep/model.id=fsrcnn_d2_w16_x4", "[b]&c"],
            "model": ["fsrcnn_d2_w16_x4", NASTY],
            "image": ["im0.png", "im#1"],
            "block": [8, 8],
            "baseline_metric": [25.123, 26.0],
            "share_positive": [0.125, 0.5],
            "total_negative_effect": [-1.234, 0.0],
            "val_psnr": [np.nan, np.nan],  # empty for every run: left out
            "unit": ["dB", "dB"],
        }
    )
    (t,) = _check(runs_latex(runs))
    assert t["header"] == ["run", "model", "image", "block", "ROI metric (dB)", "positive", "sum $-$"]
    assert t["spec"] == list("lllrrrr")
    assert t["rows"][0][1:] == ["fsrcnn\\_d2\\_w16\\_x4", "im0.png", "8", "25.12", "12.5\\%", "$-$1.23"]
    assert _unescape(t["rows"][1][1]) == NASTY
    assert t["rows"][1][0] == "{}[b]\\&c"  # not read as the line break's optional length


# ----------------------------------------------------------------------------- write_report, cem-report, read_report
TEX = {"runs_tex": "runs.tex", "study_tex": "study.tex", "faithfulness_tex": "faithfulness.tex"}


@pytest.fixture(scope="module")
def latex_report(tmp_path_factory):
    """Two models on 2 images x 2 ROIs (synthetic finished maps) and one cem-attribution run, and their report
    by ``cem-report --latex``: (runs folder, report folder, what it printed)."""
    root = tmp_path_factory.mktemp("latex_report")
    rng = np.random.default_rng(0)
    for i, image in enumerate(["im0.png", "im1.png"]):
        for j, roi in enumerate(ROIS):
            n = int(rng.integers(2, 10))
            _write_run(root / "runs" / "fsrcnn_d2_w16_x4" / f"{i}_{j}", "fsrcnn_d2_w16_x4", image, roi, n, 25.0)
            _write_run(root / "runs" / "net_b" / f"{i}_{j}", "net_b", image, roi, n + 3, 24.7)
    methods = {
        m: {"deletion_auc": 24.0 + k, "insertion_auc": 25.0, "insertion_start": 23.0}
        for k, m in enumerate(["cem", "lam"])
    }
    attribution = {"model": "net_b", "image": "im0.png", "roi": [16, 16, 16], "rank_correlation": {}}
    attribution["faithfulness"] = {"lv": {"baseline_metric": 25.0, "methods": methods}}
    (root / "runs" / "attribution").mkdir()
    (root / "runs" / "attribution" / "attribution.json").write_text(json.dumps(attribution))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([str(root / "runs"), "--out", str(root / "report"), "--latex"]) == 0
    return root / "runs", root / "report", printed.getvalue()


def _files_line(printed: str) -> str:
    return next(x for x in printed.splitlines() if x.startswith("report: "))


def test_cem_report_latex_writes_and_names_the_tex_files_and_a_rerun_without_removes_them(latex_report, tmp_path):
    runs, out, printed = latex_report
    listed = json.loads((out / "report.json").read_text())["files"]
    for key, name in TEX.items():
        assert listed[key] == str(out / name)
        _check((out / name).read_text())
        assert name in _files_line(printed)
    study = (out / "study.tex").read_text()
    assert "fsrcnn\\_d2\\_w16\\_x4" in study and "4 unit(s)" in study and STAR in study
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))

    # without latex: the .tex files of the earlier report go, and the console names none
    again = tmp_path / "report"
    shutil.copytree(out, again)
    w = write_report([runs], again)
    assert all(w[k] is None for k in TEX) and not list(again.glob("*.tex"))
    assert all(v is None for k, v in json.loads((again / "report.json").read_text())["files"].items() if k in TEX)


def test_read_report_gives_the_csvs_back_and_refuses_a_folder_that_is_not_a_report(latex_report, tmp_path):
    runs, out, _ = latex_report
    tables = read_report(out)
    expected = {
        "runs": "runs.csv",
        "study_summary": "study_summary.csv",
        "study_paired": "study_paired.csv",
        "study_profile": "study_profile.csv",
        "faithfulness": "faithfulness.csv",
        "faithfulness_summary": "faithfulness_summary.csv",
    }
    assert set(tables) == set(expected)
    for key, name in expected.items():
        pd.testing.assert_frame_equal(tables[key], pd.read_csv(out / name))
    assert len(tables["runs"]) == 8 and set(tables["study_summary"]["condition"]) == {"fsrcnn_d2_w16_x4", "net_b"}
    # the LaTeX of a finished report, from its CSVs, is the report's own
    res = StudyResult(tables["study_summary"], tables["study_paired"], pd.DataFrame())
    assert study_latex(res) == (out / "study.tex").read_text()
    with pytest.raises(InputError, match=r"is not a cem-report folder \(no report.json\)") as err:
        read_report(runs)
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_report(tmp_path / "nowhere")
