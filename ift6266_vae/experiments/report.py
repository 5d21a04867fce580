"""``make report``: one reproduction report across the blog weeks.

For each blog week of the 2015 project: what the author claimed, what this package
measured (numbers read from the files the ``make`` targets write, nothing else), and the
figures side by side. Inputs, all optional:

* ``runs/week9/metrics.json`` (+ ``evaluation.json``, ``figures/``): ``make week9``;
* ``runs/week10/table.json|md`` and its runs' figures: ``make week10``; the label-count
  table ``runs/week10-table/table.json|md``: ``make week10-table``;
* ``runs/week11/table.json|md``, ``curves.png``: ``make week11``;
* ``runs/conv/metrics.json``: ``make conv``; ``runs/profile/report.json``: ``make profile``;
* the latest step benchmark ``benchmarks/results/<date>.json`` (+ its ``.md``): ``make bench``;
* every ``metrics.json`` under ``runs/`` (but ``runs/notebooks/``), listed in one table.

A missing input is listed with the command that produces it, never an error. Outputs:
``runs/report/report.md`` (figures linked by relative path) and ``report.html`` (one
self-contained file: figures embedded as base64 PNG).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..io import write_text

log = logging.getLogger(__name__)

EVALUATE_CMD = ".venv/bin/ift6266-vae evaluate --checkpoint runs/week9/checkpoint.h5 --iwae-k 5000 --fid-samples 10000"
BN_LABELS = {
    "batch_statistics": "batch statistics of each test batch (the only option in 2015)",
    "running_average": "running averages kept during training",
    "recomputed": "recomputed over the training set after training",
}


# ---------------------------------------------------------------------------- structure
@dataclass
class Section:
    """One part of the report: markdown blocks, rows of figures, missing inputs."""

    title: str
    anchor: str
    blocks: list = field(default_factory=list)  # ("md", text) | ("figs", [(path, caption)])
    missing: list = field(default_factory=list)  # (what, command)

    def md(self, text: str) -> None:
        self.blocks.append(("md", text.strip("\n")))

    def figures(self, figs) -> None:
        figs = [(Path(p), c) for p, c in figs if Path(p).is_file()]
        if figs:
            self.blocks.append(("figs", figs))

    def need(self, what: str, command: str) -> None:
        self.missing.append((what, command))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        log.warning("cannot read %s: %s", path, e)
        return None


def _fmt(v, spec=".2f", none="-"):
    if v is None:
        return none
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def _pm(d: dict | None, key="elbo", se="elbo_se") -> str:
    if not d or d.get(key) is None:
        return "-"
    return f"{d[key]:.2f} ± {d.get(se, 0.0):.2f}" if d.get(se) is not None else f"{d[key]:.2f}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


# ---------------------------------------------------------------------------- sections
def _week9(runs: Path) -> Section:
    s = Section("Week 9 (4 April 2015): a feedforward VAE with batch normalization", "week-9")
    s.md("""
**2015 claim.** A VAE with MLP encoder and decoder and batch normalization (BN) after every
layer trains easily on *real-valued* MNIST with a Gaussian prior; before BN nobody (to the
author's knowledge) had trained one. Optimizer: SGD with Nesterov momentum. Figures: source
digits and random samples. Open problem: the "plumbing" for population BN statistics at
inference.
""")
    run = runs / "week9"
    m = _read_json(run / "metrics.json") if (run / "metrics.json").is_file() else None
    if m is None:
        s.md("**Measured here.** Not yet run.")
        s.need("week-9 feedforward BN-VAE (runs/week9/metrics.json)", "make week9")
        return s
    rows = [[BN_LABELS.get(k, k), _pm(v.get("test"))] for k, v in m.get("bn", {}).items()]
    s.md(f"""
**Measured here** (`runs/week9/metrics.json`): {m.get('epochs_trained')} epochs on `{m.get('dataset')}`
(stopped by: {m.get('stop_reason')}), {_duration(m.get('train_step_s'))} of update steps. Test ELBO
in {m.get('units', 'nats per example')}, ± one standard error, by the BN statistics used at
inference (the package's default: `{m.get('bn_used')}`):

{_table(['BN statistics at inference', 'test ELBO'], rows)}
""")
    ev = _read_json(run / "evaluation.json") if (run / "evaluation.json").is_file() else None
    if ev:
        parts = [f"test ELBO {_pm(ev.get('elbo'))}"]
        if ev.get("iwae"):
            parts.append(f"importance-weighted bound (k = {ev['iwae'].get('k')}) {_pm(ev['iwae'], 'iwae', 'iwae_se')} nats")
        if ev.get("samples"):
            sq = ev["samples"]
            parts.append(f"FID {_fmt(sq.get('fid'))} with {sq.get('n_samples')} samples (real training vs test "
                         f"digits: {_fmt(sq.get('fid_reference'))}), classifier confidence on samples "
                         f"{_fmt(sq.get('confidence_mean'), '.3f')}, class entropy {_fmt(sq.get('class_entropy'))} nats")
        s.md("Evaluation (`runs/week9/evaluation.json`): " + "; ".join(parts) + ".")
    else:
        s.need("week-9 IWAE bound and sample FID (runs/week9/evaluation.json)", EVALUATE_CMD)
    fig = run / "figures"
    s.figures([(fig / "sources.png", "source digits"), (fig / "samples.png", "samples from a fixed eps"),
               (fig / "reconstructions.png", "reconstructions"), (fig / "learning_curve.png", "learning curve")])
    return s


def _table_block(s: Section, directory: Path, label: str) -> bool:
    """The run's own ``table.md`` (written with ``table.json`` from the same numbers)."""
    if not (directory / "table.json").is_file():
        return False
    md = directory / "table.md"
    if md.is_file():
        s.md(f"**Measured here** (`{label}/table.md`):\n\n" + md.read_text())
    else:
        s.md(f"**Measured here**: `{label}/table.json` exists, its `table.md` does not; "
             "rerun the command below to write it.")
    return True


def _week10(runs: Path) -> Section:
    s = Section("Week 10 (12 April 2015): a semi-supervised VAE", "week-10")
    s.md("""
**2015 plan** (the post describes a model, not results). The label is concatenated to the
code after sampling, so the decoder mixes it in; clamp the label to generate a chosen class,
feed unlabeled digits to predict it. Cost `nll + KL + 1{labeled} * softmax_cross_entropy`; two
models sharing parameters (a classifier X -> Y' and a VAE X -> X' with a partly clamped code).
The author flagged possible flaws (another KL term may be needed; the softmax parameters).
The package builds it as blogged (`blog`) and as Kingma et al.'s M2 (`m2`), next to the
paper's numbers.
""")
    week10 = runs / "week10"
    runs10 = sorted(week10.glob("*/seed*")) if week10.is_dir() else []
    if not _table_block(s, week10, "runs/week10"):
        s.md("**Measured here.** The 100-label table is not yet written"
             + ("; figures of the runs finished so far:" if runs10 else "."))
        s.need("week-10 semi-supervised runs at 100 labels (runs/week10/table.json)", "make week10")
    figs = []
    for run in runs10:
        name = f"{run.parent.name}, {run.name}"
        figs += [(run / "figures" / "class_conditional.png", f"{name}: label clamped per row"),
                 (run / "figures" / "confusion.png", f"{name}: test confusion matrix")]
    s.figures(figs)
    if not _table_block(s, runs / "week10-table", "runs/week10-table"):
        s.need("week-10 label-count table, 100/600/1000/3000 labels x 3 seeds (runs/week10-table/table.json)",
               "make week10-table")
    return s


def _week11(runs: Path) -> Section:
    s = Section("Week 11 (14 April 2015): rescaling RMSProp with Nesterov momentum", "week-11")
    s.md("""
**2015 claim.** With "rescaling RMSProp with Nesterov momentum" instead of SGD with Nesterov,
the feedforward model reaches "good sample" quality in about 45 minutes (2015 GPU); the
convolutional one takes 3 days ("something might be wrong"). In the committed code the RMS
normaliser is computed but never used (`as_published`); `corrected` divides the step by it.
""")
    run = runs / "week11"
    if not _table_block(s, run, "runs/week11"):
        s.md("**Measured here.** Not yet run.")
        s.need("week-11 optimizer study (runs/week11/table.json)", "make week11")
        return s
    table = _read_json(run / "table.json") or {}
    figs = [(run / "curves.png", "validation ELBO and FID against training time")]
    figs += [(run / r["variant"] / "figures" / "samples.png", f"{r['variant']}: samples")
             for r in table.get("rows", []) if isinstance(r, dict) and "variant" in r]
    s.figures(figs)
    return s


def _conv(runs: Path) -> Section:
    s = Section("Summary (19 April 2015): the conv VAE and the ~100x", "conv-and-the-100x")
    s.md("""
**2015 claim.** Conv VAE + BN look very useful for fast VAE training on images, but
Theano-related issues with the BN implementation make the compiled conv graph ~100x slower
than the feedforward one: 2-3 days of training against ~40 minutes.
""")
    run = runs / "conv"
    m = _read_json(run / "metrics.json") if (run / "metrics.json").is_file() else None
    if m:
        s.md(f"""
**Conv VAE training** (`runs/conv/metrics.json`): {m.get('epochs_trained')} epochs on `{m.get('dataset')}`
(stopped by: {m.get('stop_reason')}), {_duration(m.get('train_step_s'))} of update steps; test ELBO
{_pm(m.get('test'))} {m.get('units', 'nats per example')}.
""")
        fig = run / "figures"
        s.figures([(fig / "samples.png", "conv VAE: samples"), (fig / "reconstructions.png", "conv VAE: reconstructions"),
                   (fig / "learning_curve.png", "conv VAE: learning curve")])
    else:
        s.need("conv VAE training run (runs/conv/metrics.json)", "make conv")
    prof_dir = runs / "profile"
    prof = _read_json(prof_dir / "report.json") if (prof_dir / "report.json").is_file() else None
    if prof and prof.get("analysis") and prof.get("rows"):
        _profile(s, prof, prof_dir)
    elif prof:
        s.need("profiling report of this version (runs/profile/report.json was written by an older one, "
               "without timing rounds or a finding)", "make profile")
    else:
        s.need("profiling ablation of the conv train step (runs/profile/report.json)", "make profile")
    if not m and not prof:
        s.md("**Measured here.** Not yet run.")
    return s


def _profile(s: Section, prof: dict, prof_dir: Path) -> None:
    """The profiling report's own finding and its tables (``conv_report``), quoted."""
    from . import conv_report

    a = prof["analysis"]
    s.md(f"""
**Profile** (`runs/profile/report.json`; the full report with the method and the op censuses:
`runs/profile/report.md`). The finding as the report wrote it from its own numbers:

{a["finding"]}

The conv graphs, timed in interleaved rounds on the C/VM linker:

{chr(10).join(conv_report.ablation_table(prof, a))}
""")
    if a.get("attribution"):
        s.md("Attribution of the gap between the all-2015 and the fast graph:\n\n"
             + "\n".join(conv_report.attribution_table(a)))
    if prof.get("linkers"):
        s.md("The two ends on every linker:\n\n" + "\n".join(conv_report.linkers_table(prof, a)))
    s.figures([(prof_dir / "ablation.png", "ablation: time per FLOP against the feedforward step"),
               (prof_dir / "attribution.png", "attribution: each construction on, off, and its share"),
               (prof_dir / "time_per_op.png", "time per op class")])


def latest_benchmark(bench_dir: Path) -> Path | None:
    """The newest step benchmark (a JSON with rows and goals), by its recorded date; the
    default ``make bench`` output (``<date>.json``) before variants such as ``<date>-cpu-1t.json``."""
    found = []
    for p in bench_dir.glob("*.json") if bench_dir.is_dir() else []:
        d = _read_json(p)
        if isinstance(d, dict) and "rows" in d and "goals" in d:
            default = bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.stem))
            found.append((default, str(d.get("date", "")), p.name, p))
    return max(found)[3] if found else None


def _bench(bench_dir: Path) -> Section:
    s = Section("Benchmarks: one training step per backend, next to PyTorch", "benchmarks")
    path = latest_benchmark(bench_dir)
    if path is None:
        s.md("Not yet run.")
        s.need("step benchmarks (benchmarks/results/<date>.json)", "make bench")
        return s
    md = path.with_suffix(".md")
    others = sorted(p.name for p in bench_dir.glob(f"{path.stem}-*.md"))
    if others:
        s.md("Other benchmark tables of that date: " + ", ".join(f"`benchmarks/results/{n}`" for n in others) + ".")
    if md.is_file():
        s.md(f"Latest (`benchmarks/results/{md.name}`):\n\n" + md.read_text())
    else:
        d = _read_json(path)
        rows = [[r.get("case"), r.get("backend"), _fmt(r.get("ms_median"), ".0f"), _fmt(r.get("ms_min"), ".0f"),
                 r.get("error", "")] for r in d["rows"]]
        s.md(f"Latest (`benchmarks/results/{path.name}`, {d.get('date')}):\n\n"
             + _table(["case", "backend", "ms/step median", "ms/step min", "error"], rows))
    return s


def _all_runs(runs: Path) -> Section:
    s = Section("Every run with a metrics.json", "all-runs")
    s.md("Every `metrics.json` under `runs/` (the notebooks' own runs under `runs/notebooks/` left out).")
    rows = []
    found = sorted(runs.rglob("metrics.json")) if runs.is_dir() else []
    for p in found:
        rel = p.parent.relative_to(runs)
        if rel.parts[0] in ("notebooks", "report"):  # the notebooks' own small runs
            continue
        m = _read_json(p)
        if not isinstance(m, dict):
            continue
        err = m.get("test_error")
        rows.append([f"`{rel.as_posix()}`", m.get("config_name", "-"), m.get("dataset", "-"), m.get("epochs_trained", "-"),
                     m.get("stop_reason", "-"), _duration(m.get("train_step_s")), _pm(m.get("test")),
                     "-" if err is None else f"{100 * err:.2f} %"])
    if rows:
        s.md(_table(["run", "config", "data", "epochs", "stopped by", "update steps", "test ELBO (nats)",
                     "test error"], rows))
    else:
        s.md("No `metrics.json` under `runs/` yet.")
    return s


def build_sections(runs_dir="runs", bench_dir="benchmarks/results") -> list[Section]:
    runs, bench = Path(runs_dir), Path(bench_dir)
    return [_week9(runs), _week10(runs), _week11(runs), _conv(runs), _bench(bench), _all_runs(runs)]


# ---------------------------------------------------------------------------- rendering
def _missing(sections: list[Section]) -> list[tuple[str, str]]:
    return [m for s in sections for m in s.missing]


def _missing_md(items) -> str:
    return "\n".join(f"- {what}: `{cmd}`" for what, cmd in items)


def render_markdown(sections: list[Section], out_dir: Path, generated: str) -> str:
    missing = _missing(sections)
    L = ["# ift6266_vae: reproduction report", "",
         f"Generated {generated} by `make report` from the files under `runs/` and `benchmarks/results/`. "
         "Every number below is read from those files; nothing is estimated or copied.", "",
         "## Contents", ""]
    L += [f"{i}. [{s.title}](#{s.anchor})" for i, s in enumerate(sections, 1)]
    L += [f"{len(sections) + 1}. [Missing runs](#missing-runs)", ""]
    for s in sections:
        L += [f'<a id="{s.anchor}"></a>', "", f"## {s.title}", ""]
        for kind, content in s.blocks:
            if kind == "md":
                L += [content, ""]
            else:
                rel = [os.path.relpath(p, out_dir) for p, _ in content]
                L += ["| " + " | ".join(c for _, c in content) + " |", "|" + "---|" * len(content),
                      "| " + " | ".join(f"![{c}]({r})" for r, (_, c) in zip(rel, content)) + " |", ""]
        if s.missing:
            L += ["Not yet run (see [Missing runs](#missing-runs)):", "", _missing_md(s.missing), ""]
    L += ['<a id="missing-runs"></a>', "", "## Missing runs", ""]
    L += [_missing_md(missing) if missing else "None: every input of the report exists.", ""]
    return "\n".join(L)


_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"), (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
           (re.compile(r"\[([^\]]+)\]\((#[^)]+)\)"), r'<a href="\2">\1</a>')]


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for rx, rep in _INLINE:
        out = rx.sub(rep, out)
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(text: str) -> str:
    """The markdown this module writes (and the tables it includes) as HTML: headings,
    pipe tables, lists, paragraphs, inline code / bold / anchors. Not a general converter."""
    out, para = [], []
    lines = text.splitlines()

    def flush():
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        st = line.strip()
        if not st:
            flush()
        elif st.startswith("<a id="):
            flush()
            out.append(st)
        elif m := re.match(r"(#{1,4}) (.*)", st):
            flush()
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
        elif st.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            body = [r for r in rows[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in rows[0]) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</tbody></table>")
            continue
        elif re.match(r"(- |\d+\. )", st):
            flush()
            ordered = bool(re.match(r"\d+\. ", st))
            items = []
            while i < len(lines) and re.match(r"\s*(- |\d+\. )", lines[i]):
                items.append(re.sub(r"^\s*(- |\d+\. )", "", lines[i]))
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + f"</{tag}>")
            continue
        else:
            para.append(st)
        i += 1
    flush()
    return "\n".join(out)


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f3f3f3}code{background:#f3f3f3;padding:0 .2em}.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
figure{margin:0;flex:1 1 0;min-width:220px;max-width:420px}figure img{width:100%;image-rendering:pixelated}
figcaption{font-size:.85em;color:#444}.missing{background:#fff6e0;padding:.3em 1em;border-left:4px solid #e0a000}"""


def render_html(sections: list[Section], generated: str) -> str:
    missing = _missing(sections)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ift6266_vae: reproduction report</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>ift6266_vae: reproduction report</h1>",
             f"<p>Generated {html.escape(generated)} by <code>make report</code> from the files under <code>runs/</code> "
             "and <code>benchmarks/results/</code>. Every number below is read from those files; nothing is "
             "estimated or copied.</p>", "<h2>Contents</h2><ol>"]
    parts += [f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections]
    parts += ['<li><a href="#missing-runs">Missing runs</a></li></ol>']
    for s in sections:
        parts.append(f'<h2 id="{s.anchor}">{html.escape(s.title)}</h2>')
        for kind, content in s.blocks:
            if kind == "md":
                parts.append(markdown_to_html(content))
            else:
                parts.append('<div class="figs">' + "".join(
                    f'<figure><img src="{_img(p)}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
                    for p, c in content) + "</div>")
        if s.missing:
            parts.append('<div class="missing"><p>Not yet run:</p>' + markdown_to_html(_missing_md(s.missing)) + "</div>")
    parts.append('<h2 id="missing-runs">Missing runs</h2>')
    parts.append(markdown_to_html(_missing_md(missing)) if missing else "<p>None: every input of the report exists.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(runs_dir="runs", bench_dir="benchmarks/results", out_dir=None) -> dict:
    """Write ``report.md`` and ``report.html`` (default under ``<runs_dir>/report``).

    Returns ``{"markdown": path, "html": path, "sections": [titles], "missing": [(what, command)]}``.
    """
    runs_dir = Path(runs_dir)
    out_dir = Path(out_dir) if out_dir is not None else runs_dir / "report"
    sections = build_sections(runs_dir, bench_dir)
    generated = dt.datetime.now().isoformat(timespec="seconds")
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_text(md_path, render_markdown(sections, out_dir, generated))
    write_text(html_path, render_html(sections, generated))
    missing = _missing(sections)
    for what, cmd in missing:
        log.info("not yet run: %s -> %s", what, cmd)
    return {"markdown": md_path, "html": html_path, "sections": [s.title for s in sections], "missing": missing}
