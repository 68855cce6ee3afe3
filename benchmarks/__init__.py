"""The benchmark scripts. Run each from the repository root as a module, ``python -m benchmarks.<name> ...``:
the root is then on ``sys.path`` (``configs`` and ``benchmarks`` import from it) and the library is ``edt_jax``."""
