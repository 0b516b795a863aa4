"""Price coloured by the regime posterior (PNG via matplotlib's Agg backend)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from himari.regime.labeller import REGIME_NAMES
from himari.regime.palette import REGIME_COLOURS
from himari.utils.io import atomic_write_bytes


def plot_regimes(
    timestamps_ns: np.ndarray,
    close: np.ndarray,
    posterior: np.ndarray,
    out: str | Path,
    title: str = "",
    labels: np.ndarray | None = None,
) -> Path:
    """Top: log price, each bar's point coloured by the posterior-weighted regime colour (argmax colour with alpha =
    confidence). Bottom: stacked posterior P(regime_t | data <= t); optional rule labels as a strip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = timestamps_ns.astype("datetime64[ns]")
    best = posterior.argmax(axis=1)
    conf = posterior.max(axis=1)
    rows = 3 if labels is not None else 2
    fig, axes = plt.subplots(rows, 1, figsize=(13, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.2, 0.4][:rows]})
    ax = axes[0]
    ax.plot(times, close, color="#999999", lw=0.4, zorder=1)
    for k, name in enumerate(REGIME_NAMES):
        m = best == k
        if m.any():
            ax.scatter(times[m], close[m], s=2, color=REGIME_COLOURS[k], alpha=None, label=name, zorder=2,
                       linewidths=0, edgecolors="none")
    ax.set_yscale("log")
    ax.set_ylabel("close (log scale)")
    ax.legend(loc="upper left", markerscale=6, fontsize=8)
    ax.set_title(title or "price coloured by the filtered regime posterior")
    axes[1].stackplot(times, posterior.T, colors=REGIME_COLOURS, labels=REGIME_NAMES, lw=0)
    axes[1].plot(times, conf, color="black", lw=0.3)
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("P(regime | data<=t)")
    if labels is not None:
        strip = np.where(labels[None, :] >= 0, labels[None, :], np.nan)
        from matplotlib.colors import ListedColormap

        axes[2].imshow(strip, aspect="auto", cmap=ListedColormap(REGIME_COLOURS), vmin=-0.5, vmax=3.5,
                       extent=(float(matplotlib.dates.date2num(times[0])), float(matplotlib.dates.date2num(times[-1])), 0, 1))
        axes[2].set_yticks([])
        axes[2].set_ylabel("rules", rotation=0, labelpad=20)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())
