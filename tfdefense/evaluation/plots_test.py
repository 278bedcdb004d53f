import matplotlib
import numpy as np

from tfdefense.evaluation import plots


def test_plots_write_png_and_leave_pyplot_backend_alone(tmp_path):
    import matplotlib.pyplot as plt

    previous = matplotlib.get_backend()
    matplotlib.use("svg", force=True)  # a user's backend (a notebook's inline one, say)
    try:
        plots.plot_curves(tmp_path / "curves.png", {"pgd": ([0.0, 0.1, 0.3], [0.99, 0.6, 0.0])}, "eps")
        plots.plot_bars(tmp_path / "bars.png", {"none": 0.0, "robust": 0.9}, "accuracy")
        plots.plot_sample_grid(tmp_path / "grid.png", {"clean": np.zeros((3, 8, 8, 1)), "adv": np.ones((3, 8, 8, 1))})
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == []
    finally:
        matplotlib.use(previous, force=True)
    for name in ("curves.png", "bars.png", "grid.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
