"""Training metrics: one JSON object per logged step in ``workdir/metrics.jsonl``, and a progress line.

Only process 0 writes. On resume the file is cut back to the restored step, so steps replayed after
a crash appear once. Locally each record is appended; object stores (``gs://``) cannot append, so there the
writer keeps the file's text and rewrites the object at each log step (an object write is atomic: a reader sees
the old or the new file, never half a record).
"""

from __future__ import annotations

import json
import math
import time

import jax
from absl import logging

from edt_jax import paths


class MetricsWriter:
    """Appends ``{"step": ..., "loss": ..., ...}`` lines and logs progress with images/s and ETA."""

    def __init__(self, workdir: paths.PathLike, total_steps: int, global_batch: int | None = None):
        self.path = paths.as_path(workdir) / "metrics.jsonl"
        self._append = not paths.is_url(self.path)
        self._text: str | None = None  # the file's text, kept where it is rewritten instead of appended
        self.total_steps = total_steps
        self.global_batch = global_batch
        self.is_writer = jax.process_index() == 0
        self._last_time: float | None = None
        self._last_step = 0

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps > ``step`` (written after the checkpoint a resumed run starts from), and a torn last
        line (a process killed while writing it)."""
        if not (self.is_writer and self.path.exists()):
            return
        kept = [record for record in read_records(self.path) if record.get("step", 0) <= step]
        self._text = "".join(json.dumps(record) + "\n" for record in kept)
        self.path.write_text(self._text)

    def start(self, step: int) -> None:
        self._last_time, self._last_step = time.perf_counter(), step

    def write(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """Record the metrics of ``step`` (already fetched to host floats), with throughput since the last call."""
        now = time.perf_counter()
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        if self._last_time is not None and step > self._last_step and self.global_batch:
            seconds = (now - self._last_time) / (step - self._last_step)
            record["step_time_s"] = seconds
            record["images_per_s"] = self.global_batch / seconds
            eta = seconds * (self.total_steps - step)
        else:
            eta = math.nan
        self._last_time, self._last_step = now, step
        if self.is_writer:
            self._record(json.dumps(record) + "\n")
            extras = "".join(f" {k} {record[k]:.4g}" for k in ("grad_norm", "learning_rate") if k in record)
            rate = f" {record['images_per_s']:.1f} img/s" if "images_per_s" in record else ""
            logging.info("step %d/%d (%.0f%%) loss %.5f%s%s ETA %s", step, self.total_steps,
                         100.0 * step / self.total_steps, record["loss"], extras, rate, _format_eta(eta))
        return record

    def _record(self, line: str) -> None:
        if self._append:
            with self.path.open("a") as f:
                f.write(line)
            return
        if self._text is None:
            self._text = self.path.read_text() if self.path.exists() else ""
        self._text += line
        self.path.write_text(self._text)


def read_records(path: paths.PathLike) -> list[dict]:
    """The complete records of a ``metrics.jsonl``: every newline-terminated JSON line. A last line without its
    newline is still being written (or its writer was killed) and is left out, so a reader never sees half a
    record."""
    text = paths.as_path(path).read_text()
    lines = text.split("\n")[:-1]  # the text after the last newline is not a complete record yet
    return [json.loads(line) for line in lines if line.strip()]


def _format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
