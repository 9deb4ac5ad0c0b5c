"""Plots as PNG bytes, shared by the round's report and a night's report (matplotlib: the
``report`` extra; headless, the Agg backend)."""

from __future__ import annotations

import io


def available() -> bool:
    """Whether matplotlib is installed."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def figure(n: int, width: float = 4.2, height: float = 3.8):
    """A row of ``n`` axes: ``(fig, axes)``; a missing extra is a one-line error."""
    from fiqa_core.extras import require

    require("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, axes[0]


def png(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
