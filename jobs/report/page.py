"""``_report.html``: one self-contained page of a night's figures: plots and thumbnails
inline as ``data:`` URIs, styles in the page, no scripts, fonts or links to fetch."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from fiqa_core import plots, storage
from jobs.score.progress import by_count

from .figures import Figures

THUMB = 128  # thumbnail long side, pixels

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;
max-width:1100px;color:#1d2330;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid
#dde1e8;padding-bottom:4px}.sub{color:#5a6272;margin-top:0}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid
#eceef2;text-align:left;vertical-align:top}th{background:#f5f6f8}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:10px}.face{width:140px;font-size:12px}
.face img{width:128px;height:128px;object-fit:contain;background:#f0f1f4;display:block}
.path{color:#5a6272;word-break:break-all}.warn{background:#fff4e0;border-left:4px solid
#e8a33d;padding:6px 10px}.ok{background:#eaf6ec;border-left:4px solid #3aa657;padding:6px 10px}
code{background:#f2f3f6;padding:0 3px}img.plot{max-width:100%;height:auto}
"""


class Raw(str):
    """A table cell that is HTML already."""


def _fmt(v, digits: int = 3) -> str:
    if isinstance(v, Raw):
        return v
    if v is None:
        return "-"
    if isinstance(v, float):
        if np.isnan(v):
            return "nan"
        return f"{0.0 if abs(v) < 0.5 * 10**-digits else v:.{digits}f}"  # never "-0.000"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td class="n">{_fmt(v)}</td>' if isinstance(v, (int, float)) and not isinstance(
            v, bool) else f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(data: bytes, mime: str, alt: str, cls: str = "") -> str:
    return (f'<img alt="{html.escape(alt)}"{f" class={cls!r}" if cls else ""} '
            f'src="data:{mime};base64,{base64.b64encode(data).decode()}">')


def thumbnail(path: str, box=None) -> bytes | None:
    """A JPEG thumbnail of the image at ``path`` (of its face at ``box``, x1 y1 x2 y2 in the
    upright photo's pixels, with a margin of a quarter of the box each side); None when it
    cannot be read or decoded."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(storage.read_bytes(path))) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            region = _around(box, im.size)
            if region is not None:  # a malformed box: the whole photo
                im = im.crop(region)
            im.thumbnail((THUMB, THUMB))
            out = io.BytesIO()
            im.save(out, format="JPEG", quality=85)
            return out.getvalue()
    except Exception:  # gone since, or unreadable: the gallery says so
        return None


def _around(box, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The crop of a face's box with a quarter of it each side, inside the photo; None for
    no box or one that is not 4 finite values, x1 < x2 and y1 < y2, overlapping the photo."""
    if box is None or np.size(box) != 4 or not np.isfinite(np.asarray(box, float)).all():
        return None
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = size
    if not (x1 < x2 and y1 < y2 and x2 > 0 and y2 > 0 and x1 < w and y1 < h):
        return None
    mx, my = (x2 - x1) / 4, (y2 - y1) / 4
    left, top = min(max(0, int(x1 - mx)), w - 1), min(max(0, int(y1 - my)), h - 1)
    return left, top, max(min(w, int(np.ceil(x2 + mx))), left + 1), max(
        min(h, int(np.ceil(y2 + my))), top + 1)


def _name(row: dict) -> str:
    """A row's path, with its face's index for a row of a photo's face."""
    return row["path"] + (f" (face {row['face']})" if "face" in row else "")


def _gallery(faces: list[dict]) -> str:
    cells = []
    for f in faces:
        data = thumbnail(f["path"], f.get("face_box"))
        pic = _img(data, "image/jpeg", _name(f)) if data else "<p>(cannot be read now)</p>"
        cells.append(f'<div class="face">{pic}<b>{f["score"]:.3f}</b> '
                     f'<span class="path">{html.escape(_name(f))}</span></div>')
    return f'<div class="grid">{"".join(cells)}</div>' if cells else "<p>No scored faces.</p>"


def _distribution_plot(fig: Figures) -> str:
    now = fig.scores.sample
    if not len(now):
        return ""
    f, (ax,) = plots.figure(1, width=7.5, height=3.2)
    before = fig.previous_scores.sample if fig.previous_scores is not None else np.empty(0)
    lo, hi = float(min(now.min(), before.min() if len(before) else now.min())), float(
        max(now.max(), before.max() if len(before) else now.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 41)
    if len(before):
        ax.hist(before, bins=bins, density=True, alpha=0.45, color="C7",
                label=f"previous night ({fig.previous_scores.count:,})")
    ax.hist(now, bins=bins, density=True, alpha=0.6, color="C0",
            label=f"this night ({fig.scores.count:,})")
    threshold = fig.data["settings"]["threshold"]
    if threshold is not None and lo <= threshold <= hi:  # outside: the table says it
        ax.axvline(threshold, color="C3", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return _img(plots.png(f), "image/png", "score distribution", "plot")


def _scatter_plot(fig: Figures) -> str:
    pairs = fig.pairs.rows[:5000]
    if not len(pairs):
        return ""
    f, (ax,) = plots.figure(1, width=4.6, height=4.2)
    ax.scatter(pairs[:, 0], pairs[:, 1], s=5, alpha=0.4)
    lo, hi = float(pairs.min()), float(pairs.max())
    ax.plot([lo, hi], [lo, hi], color="C3", linewidth=1)
    ax.set_xlabel("previous model's score")
    ax.set_ylabel("this night's score")
    return _img(plots.png(f), "image/png", "scores of the two models", "plot")


def render(fig: Figures, title: str) -> str:
    """The page, as a string."""
    d, c = fig.data, fig.data["counts"]
    can_plot = plots.available()
    against = d["previous"] or "no earlier night"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="sub">{html.escape(d["partition"])} &middot; model {_fmt(d["model"])}'
             f" &middot; compared with {_fmt(against)}</p>",
             "<h2>Counts</h2>", _table(
                 ["images", "rows", "scored", "reused", "failed", "non-image files skipped",
                  "seconds", "images/s", "Parquet files"],
                 [[c["images"], c["rows"], c["scored"], c["reused"], c["failed"],
                   c["skipped_non_image"], _one(c["seconds"]), _one(c["images_per_s"]),
                   c["files"]]])]
    if d["failures"]:
        rows = [[status, f["count"], Raw("<br>".join(
            f'{html.escape(e["path"])}: {html.escape(str(e["error"]))}' for e in f["examples"]))]
            for status, f in d["failures"].items()]
        parts += ["<h2>Failures</h2>", _table(["status", "rows", "examples"], rows)]
    if d.get("warnings"):
        parts += ["<h2>Warnings in the workers</h2>", _table(
            ["warning", "times"], [[t, n] for t, n in by_count(d["warnings"])])]
    parts += ["<h2>Scores</h2>", _score_table(d)]
    if can_plot:
        parts.append(_distribution_plot(fig))
    else:
        parts.append("<p>Plots need the report extra: <code>pip install 'fiqa[report]'</code>"
                     "</p>")
    parts += _drift(d)
    if d["model_change"] is not None:
        m = d["model_change"]
        parts += ["<h2>Model change</h2>",
                  f'<p class="warn">The pipeline changed since the previous night: '
                  f'{_fmt(", ".join(m["previous_models"]))} &rarr; '
                  f'{_fmt(", ".join(m["models"]))}. {m["pairs"]:,} images scored by both; '
                  f'SRCC between them {_fmt(m["srcc"], 4)}.</p>',
                  _scatter_plot(fig) if can_plot else "",
                  _table(["path", "previous", "current", "change"],
                         [[_name(r), r["previous"], r["current"], r["change"]]
                          for r in m["largest_movers"]])]
    parts += [f"<h2>Worst {len(d['worst'])} faces</h2>", _gallery(d["worst"]),
              f"<h2>Best {len(d['best'])} faces</h2>", _gallery(d["best"])]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
            f'{html.escape(title)}</title><style>{STYLE}</style></head><body>'
            + "\n".join(p for p in parts if p) + "</body></html>\n")


def _one(v) -> Raw:
    """A number with one decimal (seconds, rates)."""
    return Raw("-" if v is None else f"{v:,.1f}")


def _score_table(d: dict) -> str:
    header = ["night", "scores", "mean", "p5", "p25", "median", "p75", "p95", "below threshold"]
    rows = []
    for name, s in (("this night", d["scores"]), ("previous night", d.get("previous_scores"))):
        if not s or not s["count"]:
            continue
        q = s["quantiles"]
        rows.append([name, s["count"], s["mean"], q["p5"], q["p25"], q["p50"], q["p75"],
                     q["p95"], s["below_threshold"]])
    return _table(header, rows) if rows else "<p>No scores.</p>"


def _drift(d: dict) -> list[str]:
    if d["drift"] is None:
        return ["<h2>Drift</h2><p>No complete night before this one to compare with.</p>"]
    g = d["drift"]
    out = ["<h2>Drift against the previous night</h2>"]
    if g["comparable"]:
        q = g["quantile_shift"]
        out.append(_table(["mean shift", "p5", "p25", "median", "p75", "p95", "PSI"],
                          [[g["mean_shift"], q["p5"], q["p25"], q["p50"], q["p75"], q["p95"],
                            g["psi"]]]))
    u = d["unexpected_changes"]
    if u["count"]:
        out.append(f'<p class="warn">{u["count"]:,} image(s) changed score by more than '
                   f'{d["settings"]["tolerance"]:g} while their file and the pipeline stayed '
                   "the same: a bug or a changed engine. Examples: " + ", ".join(
                       html.escape(_name(e)) for e in u["examples"]) + "</p>")
    else:
        out.append('<p class="ok">No image changed score while its file and the pipeline '
                   "stayed the same.</p>")
    return out
