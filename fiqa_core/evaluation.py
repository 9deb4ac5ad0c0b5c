"""Evaluating a checkpoint on held-out labels: predictions, metrics, and its compute cost."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .cost import MAX_GMACS, MAX_PARAMS_M, model_cost
from .metrics import evaluate
from .tables import read_labels


def predict_table(scorer, labels: pd.DataFrame, batch: int = 256, threads: int = 8):
    """One prediction row per labeled image (``path``, ``score`` columns), bad images kept."""
    from .lake import load_images

    parts = []
    for start in range(0, len(labels), batch):
        chunk = labels.iloc[start : start + batch]
        scores = scorer.score_decoded(load_images(list(chunk["path"]), scorer.prepare, threads))
        parts.append(
            pd.DataFrame(
                {
                    "path": chunk["path"].to_numpy(),
                    "label": chunk["score"].to_numpy(dtype=np.float64),
                    **{k: scores[k] for k in ("raw_score", "score", "status", "error")},
                    "model": scorer.model_id,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def summarise_predictions(pred: pd.DataFrame) -> dict:
    """Challenge metrics over the scorable rows; RMSE also with the model's own calibration."""
    ok = pred[pred["status"] == "ok"]
    metrics = evaluate(ok["raw_score"], ok["label"])
    metrics["rmse_calibrated"] = float(np.sqrt(np.mean((ok["score"] - ok["label"]) ** 2)))
    metrics["images"] = int(len(pred))
    metrics["unscorable"] = int(len(pred) - len(ok))
    return metrics


def evaluate_checkpoint(
    model: str, labels: str, images_root: str | None = None, device: str | None = None
) -> tuple[dict, pd.DataFrame]:
    """Metrics, cost and per-image predictions of checkpoint ``model`` on a labels table.

    Returns:
        ``(result, predictions)``: result holds ``model`` (id), ``preset``, ``metrics``
        (srcc, plcc, krcc, rmse after the logistic fit, challenge, rmse_calibrated, counts)
        and ``cost`` (params, gmacs at the model's input size, and the challenge limit check).
    """
    from .engines.torch_engine import Scorer

    table = read_labels(labels, images_root)
    scorer = Scorer.from_checkpoint(model, device=device)
    pred = predict_table(scorer, table)
    cost = model_cost(scorer.model.preset, scorer.preprocessing.size)
    result = {
        "model": scorer.model_id,
        "checkpoint": model,
        "preset": cost.preset,
        "precision": scorer.precision,
        "labels": labels,
        "metrics": summarise_predictions(pred),
        "cost": {
            "image_size": cost.image_size,
            "params": cost.params,
            "gmacs": round(cost.gmacs, 4),
            "limit": f"<= {MAX_GMACS} GMACs, <= {MAX_PARAMS_M:g} M params",
            "within_limit": cost.within_challenge_limit,
        },
    }
    return result, pred


def format_result(result: dict) -> str:
    """Human-readable lines for ``fiqa evaluate``."""
    m, c = result["metrics"], result["cost"]
    verdict = "meets" if c["within_limit"] else "exceeds"
    return "\n".join(
        [
            f"model {result['model']} ({result['checkpoint']}) on {result['labels']}: "
            f"{m['images']} images, {m['unscorable']} unscorable; scored in "
            f"{result.get('precision', 'fp32')}",
            f"  SRCC {m['srcc']:.4f}  PLCC {m['plcc']:.4f}  KRCC {m['krcc']:.4f}  "
            f"RMSE {m['rmse']:.4f} (after the logistic fit)  challenge {m['challenge']:.4f}",
            f"  RMSE with the model's own calibration: {m['rmse_calibrated']:.4f}",
            f"  cost at {c['image_size']} px: {c['params']:,} params, {c['gmacs']:.4f} GMACs; "
            f"{verdict} the challenge limit ({c['limit']})",
        ]
    )
