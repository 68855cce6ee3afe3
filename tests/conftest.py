"""Test-session setup: 8 virtual CPU devices, one XLA compilation cache per run, runs trained once per session.

The suite runs on every core (``pytest-xdist``, ``-n auto`` in pyproject.toml). Everything expensive is made once
and shared: XLA compiles go into a persistent compilation cache in a fresh temporary directory per test run, which
every worker and every subprocess a test starts (the launchers) read and fill, so a function compiles once per run
however many processes need it; CI still starts cold. The tiny trained run is trained by whichever worker asks
first, under a file lock, and read by all.

The tests' programs are tiny, so their time goes to XLA compiling them, not running them: the suite (and every
process it starts, through ``XLA_FLAGS``) compiles without LLVM's backend optimisations (what
``training.train_state.create_state`` already does for the one-off initialisation) and with XLA:CPU's elemental
emitters instead of its fusion emitters. Both change how fast XLA compiles, not what the programs compute: every
parity test holds its tolerance under them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

# No LLVM backend optimisations, and XLA:CPU's older elemental emitters instead of its fusion emitters: together
# they halve the compile time of the tiny train steps (measured: 29 -> 8 s of CPU for the test EDT's sharded step)
# and leave the step's run time as it was.
FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
for _flag in FAST_COMPILE:
    if _flag not in os.environ.get("XLA_FLAGS", ""):  # before JAX's backend starts, inherited by subprocesses
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)  # before JAX's backend starts

import pytest  # noqa: E402

CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_OWN_CACHE = "EDT_JAX_TEST_OWNS_CACHE"  # set by the process that created the cache directory (it removes it)


def pytest_configure(config):
    if CACHE_ENV not in os.environ:  # the first process of the run (the xdist controller, or a plain run)
        os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="edt_jax_xla_cache_")
        os.environ[_OWN_CACHE] = str(os.getpid())
        # Cache every compile, however quick: the subprocesses and workers repeat the same small ones.
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    jax.config.update("jax_compilation_cache_dir", os.environ[CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


# The modules that take longest, longest first (their share of the suite's CPU seconds, measured with
# --durations=0). With --dist loadscope each module is one unit of work, handed out in collection order
# (--no-loadscope-reorder in pyproject.toml); starting the long ones first keeps one from running alone at the end
# while the other workers idle. The rest keep their order.
SLOWEST_MODULES = ("test_training.py", "test_readme.py", "test_evaluate.py", "test_analysis_text.py",
                   "test_restore_launcher.py", "test_disentangle_launcher.py", "test_mdt.py", "test_latents.py",
                   "test_metrics_disentanglement.py", "test_disentangle_quick.py", "test_analyze.py",
                   "test_disentangle.py", "test_runs.py", "test_models.py", "test_t2i_training.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module's tests keep their order


def pytest_unconfigure(config):
    if os.environ.get(_OWN_CACHE) == str(os.getpid()):
        shutil.rmtree(os.environ.pop(CACHE_ENV), ignore_errors=True)


@contextlib.contextmanager
def _exclusive(path: Path):
    """An inter-process lock (the xdist workers of one run share the file)."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def shared_once(tmp_path_factory, name: str, build) -> Path:
    """``<shared tmp>/<name>``, made by ``build(path)`` once per test run whichever worker asks first."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' base temps are siblings: share their parent
    path, done = root / name, root / f"{name}.done"
    with _exclusive(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
            build(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def tiny_shapes_run(tmp_path_factory):
    """A training workdir (what launch.train writes) of the shapes_edt_tiny test config after 2 steps (plain
    pass), shared by the tests that load trained runs; tests must not write into it."""
    from configs import shapes_edt_tiny
    from edt_jax.runs import train

    def build(workdir: Path) -> None:
        config = shapes_edt_tiny.get_config("test")
        config.total_steps, config.checkpoint_every_steps, config.loss.masked_pass = 2, 2, False
        train(config, str(workdir))

    return shared_once(tmp_path_factory, "tiny_shapes_run", build)

