"""notebooks/quickstart.ipynb runs top to bottom with its QUICK settings, as on a fresh Colab runtime."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def _outputs(cell, output_type: str) -> list:
    return [o for o in cell.get("outputs", []) if o["output_type"] == output_type]


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    # The kernel inherits this environment: QUICK settings, and two CPU devices so the mesh and the sharded
    # sampling split the batch for real.
    monkeypatch.setenv("EDT_JAX_QUICK", "1")
    monkeypatch.setenv("XLA_FLAGS", f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert 'QUICK = os.environ.get("EDT_JAX_QUICK", "0") == "1"' in notebook.cells[1].source  # the one switch
    assert not any(_outputs(cell, "error") for cell in notebook.cells if cell.cell_type == "code")
    # Any failing cell raises CellExecutionError naming it.
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    text = "".join(o.get("text", "") for cell in code for o in _outputs(cell, "stream") if o["name"] == "stdout")
    assert "CpuDevice(id=1)" in text and "'data': 2" in text
    assert "launch.train --config configs/mnist_edt_quick.py" in text  # the run comes from the launcher
    assert "samples (10, 32, 32, 1) float32" in text  # and is sampled through edt_jax.load_run(...).sample
    assert "batch sharded over the mesh: True" in text
    assert text.count("class accuracy") == 3
    figures = [o for cell in code for o in _outputs(cell, "display_data") if "image/png" in o["data"]]
    assert len(figures) >= 3  # the loss curve, the grid, the frequency bands
