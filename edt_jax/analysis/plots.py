"""Figures of the analyses (matplotlib, imported on first use: the ``plots`` or ``test`` extra).

Each function takes the numpy results of ``forward`` / ``reverse`` (or the rows of a launcher's table) and writes
one PNG; none of them computes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the analysis plots need matplotlib: pip install -e \".[plots]\" (or matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def forward_figure(by_cutoff: dict[float, dict], path: Path, title: str) -> None:
    """SNR of the low and high bands vs timestep (one pair of lines per cutoff), and the radial SNR at a few t."""
    plt = _pyplot()
    fig, (ax_snr, ax_radial) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (cutoff, stats) in enumerate(sorted(by_cutoff.items())):
        color = f"C{i}"
        ax_snr.plot(stats["timesteps"], stats["snr_low"], color=color, label=f"low band, cutoff {cutoff:g}")
        ax_snr.plot(stats["timesteps"], stats["snr_low_ac"], color=color, ls=":", label="  the same without the mean")
        ax_snr.plot(stats["timesteps"], stats["snr_high"], color=color, ls="--", label=f"high band, cutoff {cutoff:g}")
    ax_snr.axhline(1.0, color="k", lw=0.8)
    ax_snr.set(yscale="log", xlabel="timestep t", ylabel="band SNR (signal / noise power)", title=title)
    ax_snr.legend(fontsize=7)
    stats = next(iter(by_cutoff.values()))
    edges = stats["radial_edges"]
    centres = 0.5 * (edges[1:] + edges[:-1])
    picks = np.unique(np.linspace(0, len(stats["timesteps"]) - 1, 5).round().astype(int))
    for k in picks:
        ax_radial.plot(centres, stats["radial_snr"][k], marker="o", ms=3, label=f"t = {stats['timesteps'][k]}")
    ax_radial.axhline(1.0, color="k", lw=0.8)
    ax_radial.set(yscale="log", xlabel="radial frequency (fraction of Nyquist)", ylabel="SNR per radial band",
                  title="SNR by frequency")
    ax_radial.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reverse_figure(by_cutoff: dict[float, dict], timesteps: np.ndarray, tolerance: float, path: Path,
                   title: str) -> None:
    """Relative distance of each call's data prediction to the final sample, low vs high band, per cutoff."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    calls = np.arange(len(timesteps))
    for i, (cutoff, dist) in enumerate(sorted(by_cutoff.items())):
        ax.plot(calls, dist["low"], color=f"C{i}", marker="o", ms=3, label=f"low band, cutoff {cutoff:g}")
        ax.plot(calls, dist["high"], color=f"C{i}", ls="--", marker="x", ms=3, label=f"high band, cutoff {cutoff:g}")
    ax.axhline(tolerance, color="k", lw=0.8, label=f"{tolerance:g} of the final value")
    ax.set(yscale="log", xlabel="model call k (timestep below)",
           ylabel="||band(x0_k) - band(sample)|| / ||band(sample)||", title=title)
    ax.set_xticks(calls[::max(1, len(calls) // 10)])
    ax.set_xticklabels([f"{k}\n{timesteps[k]:.0f}" for k in calls[::max(1, len(calls) // 10)]], fontsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def trajectory_strip(columns: np.ndarray, titles: Sequence[str], path: Path) -> None:
    """A grid of images: columns (K, B, H, W, C) in [-1, 1], e.g. data predictions at K calls; one row per sample."""
    plt = _pyplot()
    cols, rows = columns.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(1.15 * cols, 1.1 * rows + 0.4), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            image = np.clip((columns[c, r] + 1) / 2, 0, 1)
            axes[r, c].imshow(image[..., 0] if image.shape[-1] == 1 else image[..., :3], cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def panels_figure(panels: Sequence[dict], path: Path, *, xlabel: str, title: str) -> None:
    """Side-by-side panels sharing an x axis. Each panel: ``ylabel``, ``series`` {name: (x, y)} drawn as lines and
    optional ``points`` {name: (x, y)} drawn as stars (e.g. guidance intervals next to guided fractions)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for name, (x, y) in panel["series"].items():
            ax.plot(x, y, marker="o", ms=4, label=name)
        for i, (name, (x, y)) in enumerate(panel.get("points", {}).items()):
            ax.scatter([x], [y], marker="*", s=90, color=f"C{6 + i}", label=name, zorder=3)
        ax.set(xlabel=xlabel, ylabel=panel["ylabel"])
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
