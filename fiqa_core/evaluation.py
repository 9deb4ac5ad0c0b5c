"""Evaluating a checkpoint on held-out labels: predictions, metrics, and its compute cost."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .cost import MAX_GMACS, MAX_PARAMS_M, model_cost
from .metrics import evaluate
from .tables import read_labels

FACE_MODES = ("auto", "none", "largest")


def predict_table(scorer, labels: pd.DataFrame, batch: int = 256, threads: int = 8,
                  faces: dict | None = None):
    """One prediction row per labeled image (``path``, ``score`` columns), bad images kept.
    With ``faces`` (template, threshold, min_face), each image is a photo: its largest face
    is aligned first (a photo without one: status ``no_face``, unscorable)."""
    from .lake import load_images

    prepare = scorer.prepare
    if faces is not None:
        def prepare(data: bytes):
            from .faces import aligned_face
            from .images import decode_image

            crop, row = aligned_face(decode_image(data, scorer.max_pixels), faces,
                                     scorer.preprocessing.size)
            return row if crop is None else scorer.prepare(crop)

    parts = []
    for start in range(0, len(labels), batch):
        chunk = labels.iloc[start : start + batch]
        scores = scorer.score_decoded(load_images(list(chunk["path"]), prepare, threads))
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


def face_settings(lineage: dict, faces: str = "auto") -> dict | None:
    """How held-out images are aligned (None: they are face crops): ``auto`` as the model
    was trained (its lineage's ``faces``), ``none``, or ``largest`` (the lineage's settings,
    else the defaults: the model's template, threshold 0.9, min_face 16)."""
    if faces not in FACE_MODES:
        from .errors import ConfigError

        raise ConfigError(f"faces={faces!r}: one of {', '.join(FACE_MODES)}")
    trained = lineage.get("faces")
    if faces == "none" or (faces == "auto" and not trained):
        return None
    if trained:
        return {k: trained[k] for k in ("template", "threshold", "min_face")}
    from .faces.detect import DetectSettings
    from .faces.templates import MODEL

    defaults = DetectSettings()
    return {"template": MODEL, "threshold": defaults.threshold, "min_face": defaults.min_face}


def evaluate_checkpoint(
    model: str, labels: str, images_root: str | None = None, device: str | None = None,
    faces: str = "auto",
) -> tuple[dict, pd.DataFrame]:
    """Metrics, cost and per-image predictions of checkpoint ``model`` on a labels table
    (``faces``: :func:`face_settings`; by default the images are treated as the model was
    trained: face crops, or photos whose largest face is aligned first).

    Returns:
        ``(result, predictions)``: result holds ``model`` (id), ``preset``, ``metrics``
        (srcc, plcc, krcc, rmse after the logistic fit, challenge, rmse_calibrated, counts)
        and ``cost`` (params, gmacs at the model's input size, and the challenge limit check).
    """
    from .checkpoint_config import read_checkpoint_config
    from .engines.torch_engine import Scorer

    table = read_labels(labels, images_root)
    scorer = Scorer.from_checkpoint(model, device=device)
    aligned = face_settings(read_checkpoint_config(model).lineage, faces)
    pred = predict_table(scorer, table, faces=aligned)
    cost = model_cost(scorer.model.preset, scorer.preprocessing.size)
    result = {
        "model": scorer.model_id,
        "checkpoint": model,
        "preset": cost.preset,
        "precision": scorer.precision,
        "labels": labels,
        "faces": aligned,  # None: the images were face crops
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
            f"{result.get('precision', 'fp32')}" + (
                f"; photos: the largest face aligned to {result['faces']['template']}"
                if result.get("faces") else ""),
            f"  SRCC {m['srcc']:.4f}  PLCC {m['plcc']:.4f}  KRCC {m['krcc']:.4f}  "
            f"RMSE {m['rmse']:.4f} (after the logistic fit)  challenge {m['challenge']:.4f}",
            f"  RMSE with the model's own calibration: {m['rmse_calibrated']:.4f}",
            f"  cost at {c['image_size']} px: {c['params']:,} params, {c['gmacs']:.4f} GMACs; "
            f"{verdict} the challenge limit ({c['limit']})",
        ]
    )
