"""Matplotlib plots for reports (Agg backend, written atomically as PNG)."""

import numpy as np

from tfdefense import _io


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    plt = _pyplot()
    with _io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_curves(path, curves, xlabel, ylabel="accuracy", title=None, percent=True):
    """Line plot of `curves`: {label: (xs, ys)} (e.g. accuracy vs eps, accuracy vs epoch)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
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
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    labels = list(values)
    ax.bar(range(len(labels)), [values[k] for k in labels], color="tab:blue")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_sample_grid(path, rows, max_images=8):
    """Image grid: one row per {name: images} entry (clean / adversarial / purified)."""
    plt = _pyplot()
    names = list(rows)
    count = min(max_images, min(len(v) for v in rows.values()))
    fig, axes = plt.subplots(len(names), count, figsize=(1.2 * count, 1.3 * len(names)), squeeze=False)
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
