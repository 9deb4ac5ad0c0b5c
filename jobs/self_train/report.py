"""The round report: Markdown with PNG plots, written beside a round's outputs.

Models are named as the round names them (T0, T1, student): every mapping below is keyed by
those names. Plotting needs matplotlib (the ``report`` extra).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fiqa_core import plots, storage
from fiqa_core.metrics import srcc
from fiqa_core.tables import read_labels, read_parquet


def _save(fig, folder: str, name: str) -> str:
    storage.write_bytes(storage.join(folder, name), plots.png(fig))
    return name


def plot_predictions(preds: dict[str, pd.DataFrame], metrics: dict, folder: str) -> str:
    """Raw output vs label per model, with the model's calibration curve over it."""
    fig, axes = plots.figure(len(preds))
    for ax, (name, df) in zip(axes, preds.items(), strict=True):
        ok = df[df["status"] == "ok"].sort_values("raw_score")
        ax.scatter(ok["raw_score"], ok["label"], s=8, alpha=0.6, label="held-out image")
        ax.plot(ok["raw_score"], ok["score"], color="C3", label="calibration")
        m = metrics[name]["metrics"]
        ax.set_title(f"{name}: SRCC {m['srcc']:.3f}, PLCC {m['plcc']:.3f}")
        ax.set_xlabel("raw model output")
        ax.set_ylabel("label")
    axes[0].legend(loc="best", fontsize=8)
    return _save(fig, folder, "predictions.png")


def plot_pseudo_labels(pseudo: dict[str, pd.DataFrame], labels: pd.Series, folder: str) -> str:
    """Histograms of the pseudo-labels of each set against the labels' own distribution."""
    fig, axes = plots.figure(len(pseudo))
    bins = np.linspace(min(labels.min(), 0), max(labels.max(), 5), 30)
    for ax, (name, df) in zip(axes, pseudo.items(), strict=True):
        ok = df.loc[df["status"] == "ok", "score"]
        ax.hist(labels, bins=bins, density=True, alpha=0.5, label=f"labels ({len(labels)})")
        ax.hist(ok, bins=bins, density=True, alpha=0.5, label=f"set {name} ({len(ok)})")
        # the model id on a line of its own: side by side, one-line titles ran together
        ax.set_title(f"pseudo-labels of set {name}\n{df['model'].dropna().iloc[0]}", fontsize=9)
        ax.set_xlabel("score (label scale)")
        ax.legend(fontsize=8)
    return _save(fig, folder, "pseudo_labels.png")


def agreement(preds: dict[str, pd.DataFrame], a: str, b: str) -> tuple[pd.DataFrame, float]:
    both = preds[a].merge(preds[b], on="path", suffixes=("_a", "_b"))
    both = both[(both["status_a"] == "ok") & (both["status_b"] == "ok")]
    return both, srcc(both["raw_score_a"], both["raw_score_b"])


def plot_agreement(preds: dict[str, pd.DataFrame], pairs, folder: str) -> tuple[str, dict]:
    """Raw outputs of one model against another's on the held-out images."""
    fig, axes = plots.figure(len(pairs))
    values = {}
    for ax, (a, b) in zip(axes, pairs, strict=True):
        both, s = agreement(preds, a, b)
        values[f"{a} vs {b}"] = s
        ax.scatter(both["raw_score_a"], both["raw_score_b"], s=8, alpha=0.6)
        ax.set_title(f"{a} vs {b}: SRCC {s:.3f}")
        ax.set_xlabel(f"{a} raw output")
        ax.set_ylabel(f"{b} raw output")
    return _save(fig, folder, "agreement.png"), values


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return out


def write_report(
    folder: str,
    title: str,
    metrics: dict,
    predictions: dict[str, str],
    pseudo: dict[str, str],
    train_labels: str,
    stages: dict[str, dict | None],
    truth: str | None = None,
    pairs: list[tuple[str, str]] = (),
) -> dict:
    """Write ``report.md`` and its plots to ``folder``; returns counts for the stage record.

    ``metrics`` and ``predictions`` are keyed by model name; ``pairs`` are the models whose
    raw outputs are compared (teacher vs student).
    """
    preds = {name: read_parquet(uri) for name, uri in predictions.items()}
    sets = {name: read_parquet(uri) for name, uri in pseudo.items()}
    labels = read_labels(train_labels)["score"]
    lines = [f"# {title}", ""]

    lines += ["## Held-out metrics", ""]
    rows = []
    for name, r in metrics.items():
        m, c = r["metrics"], r["cost"]
        rows.append(
            [name, r["preset"], f"{m['srcc']:.4f}", f"{m['plcc']:.4f}",
             f"{m['krcc']:.4f}", f"{m['rmse']:.4f}", f"{m['challenge']:.4f}",
             f"{m['rmse_calibrated']:.4f}", m["images"], f"{c['params']:,}",
             f"{c['gmacs']:.4f} @ {c['image_size']} px",
             "meets" if c["within_limit"] else "exceeds"]
        )
    lines += _table(
        ["model", "preset", "SRCC", "PLCC", "KRCC", "RMSE (fit)", "challenge",
         "RMSE (own calibration)", "images", "params", "GMACs", "challenge limit"],
        rows,
    )
    lines += ["", f"![predictions]({plot_predictions(preds, metrics, folder)})", ""]

    lines += ["## Pseudo-labels", ""]
    truth_table = read_labels(truth) if truth else None
    rows = []
    for name, df in sets.items():
        by_status = df["status"].value_counts().to_dict()
        ok = df[df["status"] == "ok"]
        row = [name, len(df), by_status.get("ok", 0),
               ", ".join(f"{k}: {v}" for k, v in sorted(by_status.items()) if k != "ok") or "-",
               f"{ok['score'].mean():.3f}", f"{ok['score'].std():.3f}"]
        if truth_table is not None:
            known = ok.merge(truth_table, on="path", suffixes=("", "_true"))
            row += [len(known), f"{srcc(known['score'], known['score_true']):.4f}",
                    f"{np.sqrt(np.mean((known['score'] - known['score_true']) ** 2)):.4f}"]
        rows.append(row)
    header = ["set", "rows", "ok", "other statuses", "mean score", "std"]
    if truth_table is not None:
        header += ["with true label", "SRCC vs truth", "RMSE vs truth"]
    lines += _table(header, rows)
    lines += [
        "",
        f"Labels: {len(labels)} training images, mean {labels.mean():.3f}, std {labels.std():.3f}.",
        "",
        f"![pseudo-labels]({plot_pseudo_labels(sets, labels, folder)})",
        "",
    ]

    lines += ["## Teacher vs student (raw outputs on the held-out images)", ""]
    png, values = plot_agreement(preds, list(pairs), folder)
    lines += _table(["pair", "SRCC"], [[k, f"{v:.4f}"] for k, v in values.items()])
    lines += ["", f"![agreement]({png})", ""]

    lines += ["## Stages", ""]
    rows = [
        [name, (r or {}).get("status", "-"), (r or {}).get("seconds", "-"),
         (r or {}).get("finished", "-")]
        for name, r in stages.items()
    ]
    lines += _table(["stage", "status", "seconds", "finished"], rows)
    storage.write_bytes(storage.join(folder, "report.md"), ("\n".join(lines) + "\n").encode())
    pseudo_rows = int(sum(len(d) for d in sets.values()))
    return {"plots": 3, "models": len(metrics), "pseudo_rows": pseudo_rows}
