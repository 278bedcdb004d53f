"""Matplotlib plots for reports, written atomically as PNG.

Figures are standalone `matplotlib.figure.Figure` objects (rendered by the Agg
canvas): pyplot's global backend and figure list are never touched, so
`plt.show()` keeps working in a notebook that calls these.
"""

import numpy as np

from tfdefense._io import atomic_path


def _subplots(*args, **kwargs):
    from matplotlib.figure import Figure

    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(*args, **kwargs)


def _save(fig, path):
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return path


def plot_curves(path, curves, xlabel, ylabel="accuracy", title=None, percent=True):
    """Line plot of `curves`: {label: (xs, ys)} (e.g. accuracy vs eps, accuracy vs epoch)."""
    fig, ax = _subplots(figsize=(5.5, 3.8))
    for label, (xs, ys) in curves.items():
        ys = np.asarray(ys, float) * (100 if percent else 1)
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{ylabel} (%)" if percent else ylabel)
    if percent:
        ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_bars(path, values, ylabel, title=None):
    """Bar chart of {label: value} (e.g. MAE / PSNR per defense, seconds per image)."""
    fig, ax = _subplots(figsize=(5.5, 3.8))
    labels = list(values)
    ax.bar(range(len(labels)), [values[k] for k in labels], color="tab:blue")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_sample_grid(path, rows, max_images=8):
    """Image grid: one row per {name: images} entry (clean / adversarial / purified)."""
    names = list(rows)
    count = min(max_images, min(len(v) for v in rows.values()))
    fig, axes = _subplots(len(names), count, figsize=(1.2 * count, 1.3 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for c in range(count):
            image = np.asarray(rows[name][c])
            ax = axes[r, c]
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    return _save(fig, path)
