"""The working-mechanism experiments of Yi et al. (NeurIPS 2024) on a text-to-image pipeline, as reports.

    pipe = StableDiffusion.from_pretrained(folder)
    records = prompts.load_prompts("prompts.jsonl")   # {"prompt": ..., "factors": {"shape": 1, ...}} per line
    options = dict(steps=25, guidance_scale=7.5, seeds=(0, 1), num_per_prompt=4)
    report = text_reverse_experiment(pipe, records, **options)   # shape first, details later
    report = prompt_switch_experiment(pipe, records, **options)  # prompt A for the first k calls, then B
    report = eos_experiment(pipe, records, **options)            # what the [EOS] part of the embedding carries
    report = text_guidance_experiment(pipe, records, **options)  # guidance in the first calls only: fidelity, time
    experiments.write_report(report, "eos", "/tmp/analysis")     # eos.md, eos.json and the figures

reverse   the data prediction of every model call, decoded, against the final image: low / high frequency bands
          (``analysis.reverse``) and the call from which the reader sees the final image's shape (and colours).
switch    prompt A for the first k of the S model calls, then prompt B (A and B differ in every factor), k = 0..S:
          whose shape, object hue and background hue the reader sees.
eos       A's word embeddings with B's [EOS] part (whose factors show?), and the [EOS] part or the words alone
          (the other part from the empty prompt): the reader's accuracy on the prompted factors.
guidance  guidance on the first fraction of the calls only, then the conditional prediction alone ("cond") or the
          unconditional one ("uncond", the paper's text removed): prompt accuracy and wall time per image.

The reader is the shipped shapes classifier (``prompts.read_factors``). Every sample of prompt p and replicate r
starts from the same noise z(seed, r) in every experiment and every condition (common random numbers: the
conditions differ by the text alone, and the switch at k = S is prompt A alone). Each experiment samples in
chunks of ``batch_size`` (the last padded), so a pipeline compiles one program per kind of sampling: the
per-call guidance scales and the switch point are arguments of it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging

from edt_jax import samplers
from edt_jax.analysis import plots
from edt_jax.analysis.experiments import Report
from edt_jax.analysis.prompts import (
    FACTORS,
    check_records,
    eos_positions,
    factor_names,
    keep_only,
    prompt_pairs,
    read_factors,
    swap_eos,
)
from edt_jax.analysis.reverse import band_distances, settling_call
from edt_jax.batching import pad_rows
from edt_jax.checks import check_choice, check_int
from edt_jax.metrics import extractors
from edt_jax.reporting import md_table, spread
from edt_jax.samplers.label_switch import switch_threshold
from edt_jax.t2i.pipeline import SCHEDULER, StableDiffusion

TEXT_EXPERIMENTS = ("reverse", "switch", "eos", "guidance")
GUIDED_FRACTIONS = (1, 0.8, 0.6, 0.4, 0.2, 0)


@functools.lru_cache(maxsize=1)
def default_reader() -> extractors.Extractor:
    """The shipped shapes classifier, loaded once per process (its compiled function with it); 64 images per call
    rather than 256, as the experiments read a few chunks of images at a time."""
    return extractors.load_extractor("shapes", batch_size=64)


class _Bench:
    """The pipe, the reader, the records and the sampling options an experiment shares, and its sampling loop."""

    def __init__(self, pipe: StableDiffusion, records, *, steps: int, sampler: str, guidance_scale: float,
                 seeds: Sequence[int], num_per_prompt: int, negative_prompt: str, batch_size: int,
                 reader: extractors.Extractor | None):
        self.pipe, self.records = pipe, check_records(records)
        if not self.records or not factor_names(self.records):
            raise ValueError(f"the text experiments need prompt records that name factors, got {len(self.records)} "
                             f"records naming none")
        # ddpm is left out: StableDiffusion.sample passes it no noise key.
        check_choice("sampler", sampler, (SCHEDULER, *samplers.ODE_SAMPLERS))
        self.steps, self.sampler = check_int("steps", steps, 1), sampler
        self.scale = float(guidance_scale)
        self.seeds = [check_int("seed", s, 0) for s in seeds]
        if not self.seeds:
            raise ValueError("seeds must name at least one sampling seed, got none")
        self.per_prompt = check_int("num_per_prompt", num_per_prompt, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.negative_prompt = negative_prompt
        self.reader = reader if reader is not None else default_reader()
        self.timesteps = np.asarray(pipe.call_timesteps(self.steps, sampler))
        self.num_calls = len(self.timesteps)
        self._embeddings: dict[str, np.ndarray] = {}

    def setup(self) -> dict:
        return dict(sampler=self.sampler, steps=self.steps, num_calls=self.num_calls, guidance_scale=self.scale,
                    seeds=self.seeds, num_per_prompt=self.per_prompt, negative_prompt=self.negative_prompt,
                    timesteps=self.timesteps.tolist(), prompts=[r["prompt"] for r in self.records])

    def describe(self) -> str:
        return (f"{self.sampler} {self.steps} steps ({self.num_calls} model calls), guidance {self.scale:g}, "
                f"{self.per_prompt} samples per prompt and seed, seeds {self.seeds}")

    def scales(self, fraction: float = 1.0, after: str = "cond") -> np.ndarray:
        """(S,) per-call guidance scales: every experiment passes an array, so they share compiled programs."""
        return samplers.guidance_schedule(self.scale, self.num_calls, fraction, after=after)

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """(n, L, D) text embeddings, each prompt encoded once."""
        for p in dict.fromkeys(prompts):
            if p not in self._embeddings:
                self._embeddings[p] = np.asarray(self.pipe.encode_prompt([p]))[0]
        return np.stack([self._embeddings[p] for p in prompts])

    def repeat(self, per_group: np.ndarray) -> np.ndarray:
        """(G, ...) -> (G * R, ...): sample g * R + r is replicate r of group g."""
        return np.repeat(np.asarray(per_group), self.per_prompt, axis=0)

    def latents(self, seed: int, groups: int) -> np.ndarray:
        """(G * R, h, w, c): replicate r starts from z(seed, r) whatever its prompt or condition."""
        shape = self.pipe.latent_shape()
        noise = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(jax.random.key(seed), r), shape))
                          for r in range(self.per_prompt)])
        return np.tile(noise, (groups, 1, 1, 1))

    def targets(self, records: Sequence[dict], factors: Sequence[str]) -> dict[str, np.ndarray]:
        """{factor: (G * R,) the prompted class, -1 where the record does not name the factor}."""
        return {f: self.repeat([r["factors"].get(f, -1) for r in records]) for f in factors}

    def chunks(self, cond: np.ndarray, latents: np.ndarray, *, scales: np.ndarray | None = None,
               switch: np.ndarray | None = None, switch_after_calls: int | None = None, trajectory: bool = False):
        """Yields (start, count, seconds, pipe.sample's output) per chunk of ``batch_size`` samples; the last
        chunk is padded with its last row (one compiled program), its outputs keep the padding."""
        size = min(self.batch_size, len(cond))
        uncond = np.repeat(self.embed([self.negative_prompt]), size, axis=0)
        scales = self.scales() if scales is None else scales
        for start in range(0, len(cond), size):
            count = min(size, len(cond) - start)

            def pad(a, start=start):
                return None if a is None else pad_rows(a[start:start + size], size)

            begin = time.perf_counter()
            out = self.pipe.sample(pad(cond), uncond, latents=pad(latents), num_inference_steps=self.steps,
                                   guidance_scale=scales, sampler=self.sampler, switch_condition=pad(switch),
                                   switch_after_calls=switch_after_calls, return_trajectory=trajectory)
            yield start, count, time.perf_counter() - begin, out  # pipe.sample returns numpy: the work is done

    def draw(self, cond: np.ndarray, latents: np.ndarray, **options) -> tuple[np.ndarray, float]:
        """(images (N, H, W, 3) in [0, 1], seconds spent in ``pipe.sample``)."""
        images, seconds = [], 0.0
        for _, count, took, out in self.chunks(cond, latents, **options):
            images.append(out["images"][:count])
            seconds += took
        return np.concatenate(images), seconds


def _agreement(seen: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float | None]:
    """{factor: share of samples whose read class equals the target (targets of -1 skipped); None if none}."""
    out = {}
    for factor, t in target.items():
        valid = t >= 0
        out[factor] = float(np.mean(seen[factor][valid] == t[valid])) if valid.any() else None
    return out


def _stats(values: Sequence[float | None]) -> dict:
    """Per-seed values with their mean, min, max and standard deviation (over the seeds that have a value)."""
    have = [float(v) for v in values if v is not None]
    if not have:
        return dict(per_seed=list(values), mean=None, min=None, max=None, std=None)
    return dict(per_seed=[None if v is None else float(v) for v in values], mean=float(np.mean(have)),
                min=float(np.min(have)), max=float(np.max(have)), std=float(np.std(have, ddof=1)) if len(have) > 1
                else 0.0)


def _cell(stats: dict, digits: int = 3) -> str:
    """'mean (min-max)' over seeds, '-' without values."""
    have = [v for v in stats["per_seed"] if v is not None]
    return spread(have, digits) if have else "-"


def _mean_over_factors(by_factor: dict[str, dict]) -> float | None:
    means = [s["mean"] for s in by_factor.values() if s["mean"] is not None]
    return float(np.mean(means)) if means else None


def _pair_records(bench: _Bench) -> tuple[list[dict], list[dict], list[str]]:
    pairs = prompt_pairs(bench.records)
    if not pairs:
        raise ValueError(f"no two prompt records differ in every one of {', '.join(FACTORS)} that both name; the "
                         f"switch and [EOS] swap need such pairs (got {len(bench.records)} records)")
    a = [bench.records[i] for i, _ in pairs]
    b = [bench.records[j] for _, j in pairs]
    factors = [f for f in FACTORS if any(f in x["factors"] and f in y["factors"] for x, y in zip(a, b, strict=True))]
    return a, b, factors


def _pair_targets(bench: _Bench, a: list[dict], b: list[dict], factors: list[str]):
    """{factor: (G * R,)} targets of A and of B, -1 where the pair does not both name the factor."""

    def side(records, others):
        return bench.targets([{"factors": {f: x["factors"][f] for f in factors
                                           if f in x["factors"] and f in y["factors"]}}
                              for x, y in zip(records, others, strict=True)], factors)

    return side(a, b), side(b, a)


def _median_settling_call(same: np.ndarray) -> float:
    """same (S, n) bool, the reader sees the final class in x0_k: the median over samples of the first call from
    which it always does (S when even the last call's x0 is read otherwise)."""
    calls = [settling_call(1.0 - column, 0.5) for column in same.T.astype(float)]
    return float(np.median([same.shape[0] if k is None else k for k in calls]))


def _common(steps, sampler, guidance_scale, seeds, num_per_prompt, negative_prompt, batch_size, reader) -> dict:
    return dict(steps=steps, sampler=sampler, guidance_scale=guidance_scale, seeds=seeds,
                num_per_prompt=num_per_prompt, negative_prompt=negative_prompt, batch_size=batch_size, reader=reader)


# ----------------------------------------------------------------------------------------------------- reverse
def text_reverse_experiment(pipe: StableDiffusion, records, *, steps: int = 25, sampler: str = SCHEDULER,
                            guidance_scale: float = 7.5, seeds: Sequence[int] = (0,), num_per_prompt: int = 4,
                            negative_prompt: str = "", batch_size: int = 8,
                            reader: extractors.Extractor | None = None, cutoffs: Sequence[float] = (0.125, 0.25, 0.5),
                            tolerance: float = 0.1) -> Report:
    """Shape first, details later, along text-conditioned trajectories.

    For every model call k the data prediction x0_k (S, B, h, w, c) is decoded (``pipe.decode``) and compared
    with the final image: per band ||band(x0_k - image)|| / ||band(image)|| (images in [-1, 1]) and the call from
    which each band stays within ``tolerance``; and per factor the share of samples where the reader sees in
    x0_k what it sees in the final image, and each sample's settling call (from it on, always the final class).
    """
    bench = _Bench(pipe, records, **_common(steps, sampler, guidance_scale, seeds, num_per_prompt, negative_prompt,
                                            batch_size, reader))
    cutoffs, num_calls = [float(c) for c in cutoffs], bench.num_calls
    factors = factor_names(bench.records)
    cond, targets = bench.repeat(bench.embed([r["prompt"] for r in bench.records])), bench.targets(bench.records,
                                                                                                    factors)
    strip_calls = np.unique(np.linspace(0, num_calls - 1, min(8, num_calls)).round().astype(int))
    strip_samples = [g * bench.per_prompt for g in range(min(6, len(bench.records)))]
    per_seed, strip = [], {}
    for seed in bench.seeds:
        sums = {c: {b: np.zeros(num_calls) for b in ("low", "high", "total")} for c in cutoffs}
        same, final_seen = {f: [] for f in factors}, {f: [] for f in factors}
        for start, count, _, out in bench.chunks(cond, bench.latents(seed, len(bench.records)), trajectory=True):
            # The padded chunk goes through decode too: one compiled decoder for every chunk.
            decoded = np.stack([pipe.decode(d)[:count] for d in out["trajectory"].denoised])  # (S, n, H, W, 3)
            final = out["images"][:count]
            for c in cutoffs:
                for band, d in band_distances(decoded * 2 - 1, final * 2 - 1, c).items():
                    sums[c][band] += d * count
            seen_final = read_factors(bench.reader, final, factors)
            seen_calls = [read_factors(bench.reader, x, factors) for x in decoded]
            for f in factors:
                final_seen[f].append(seen_final[f])
                same[f].append(np.stack([s[f] == seen_final[f] for s in seen_calls]))  # (S, n)
            for i in strip_samples:
                if seed == bench.seeds[0] and start <= i < start + count:
                    strip[i] = np.concatenate([decoded[strip_calls, i - start], final[None, i - start]])
        distances = {c: {b: v / len(cond) for b, v in d.items()} for c, d in sums.items()}
        same = {f: np.concatenate(v, axis=1) for f, v in same.items()}
        final_seen = {f: np.concatenate(v) for f, v in final_seen.items()}
        per_seed.append(dict(
            distances=distances,
            band_settling={c: {b: settling_call(d[b], tolerance) for b in d} for c, d in distances.items()},
            agreement={f: s.mean(axis=1) for f, s in same.items()},
            settle_call={f: _median_settling_call(s) for f, s in same.items()},
            accuracy=_agreement(final_seen, targets), final_seen={f: v.tolist() for f, v in final_seen.items()}))
        logging.info("reverse, seed %d: %s", seed, per_seed[-1]["settle_call"])
    return _reverse_report(bench, cutoffs, tolerance, factors, per_seed, strip, strip_calls)


def _reverse_report(bench: _Bench, cutoffs, tolerance, factors, per_seed, strip, strip_calls) -> Report:
    num_calls, timesteps = bench.num_calls, bench.timesteps
    mean_distances = {c: {b: np.mean([s["distances"][c][b] for s in per_seed], axis=0) for b in ("low", "high",
                                                                                                 "total")}
                      for c in cutoffs}
    band_settling = {c: {b: [s["band_settling"][c][b] for s in per_seed] for b in ("low", "high", "total")}
                     for c in cutoffs}
    settle = {f: _stats([s["settle_call"][f] for s in per_seed]) for f in factors}
    agreement = {f: np.mean([s["agreement"][f] for s in per_seed], axis=0) for f in factors}
    accuracy = {f: _stats([s["accuracy"][f] for s in per_seed]) for f in factors}

    def at(calls):  # the settling call of each seed: one number when they agree
        have = [k for k in calls if k is not None]
        if len(have) < len(calls):
            return "not by the last call"
        return have[0] if len(set(have)) == 1 else spread(have, 1)

    mid = cutoffs[len(cutoffs) // 2]
    focus = "shape" if "shape" in factors else factors[0]
    k_focus = settle[focus]["mean"]
    low, high = at(band_settling[mid]["low"]), at(band_settling[mid]["high"])
    # A median call of S: most samples' last data prediction is still read otherwise than the image.
    where = (f"call {k_focus:.1f} of {num_calls} (t = {np.interp(k_focus, np.arange(num_calls), timesteps):.0f})"
             if k_focus < num_calls else f"no call of {num_calls} (not even the last x0 is read as the image)")
    verdict = (f"The reader's {focus} settles at {where}, median over samples, mean over seeds; the low band "
               f"(cutoff {mid:g}) settles at call {low}, the high band at call {high}.")
    rows = [[f"{c:g}", at(band_settling[c]["low"]), at(band_settling[c]["high"]), at(band_settling[c]["total"])]
            for c in cutoffs]
    factor_rows = [[f, _cell(settle[f], 1), _cell(accuracy[f])] for f in factors]
    per_call = [[k, f"{timesteps[k]:.0f}", *(f"{mean_distances[mid][b][k]:.3f}" for b in ("low", "high", "total")),
                 *(f"{agreement[f][k]:.3f}" for f in factors)] for k in range(num_calls)]
    markdown = "\n".join([
        "# Text-to-image reverse process: shape first, details later?", "", verdict, "",
        f"{len(bench.records)} prompts, {bench.describe()}. For each model call k the data prediction x0_k, decoded, "
        f"against the final image: ||band(x0_k - image)|| / ||band(image)|| (mean over samples; a band settles at the "
        f"first call from which it stays within {tolerance:g}), and the share of samples whose x0_k the reader puts "
        f"in the class it gives the final image.", "",
        f"## Settling call per band (calls 0 to {num_calls - 1})", "",
        md_table(["cutoff", "low band", "high band", "whole image"], rows), "",
        "## The reader", "",
        md_table(["factor", "settles at call (median over samples)", "final image shows the prompt"], factor_rows),
        "", f"## Per call (cutoff {mid:g}; 'same': the reader sees the final image's class)", "",
        md_table(["call k", "timestep", "low band", "high band", "whole image", *(f"same {f}" for f in factors)],
                 per_call), ""])
    payload = dict(setup=bench.setup(), verdict=verdict, tolerance=tolerance,
                   distances={str(c): {b: v.tolist() for b, v in d.items()} for c, d in mean_distances.items()},
                   band_settling={str(c): v for c, v in band_settling.items()}, settle_call=settle,
                   agreement={f: v.tolist() for f, v in agreement.items()}, accuracy=accuracy,
                   per_seed=[dict(distances={str(c): {b: v.tolist() for b, v in d.items()}
                                             for c, d in s["distances"].items()},
                                  agreement={f: v.tolist() for f, v in s["agreement"].items()},
                                  settle_call=s["settle_call"], final_seen=s["final_seen"]) for s in per_seed])
    series = {f"same {f}": (np.arange(num_calls), agreement[f]) for f in factors}
    figures = {
        "reverse.png": lambda path: plots.reverse_figure(
            mean_distances, timesteps, tolerance, path, f"x0 of each call vs the image ({bench.sampler} "
                                                        f"{bench.steps} steps)"),
        "reverse_reader.png": lambda path: plots.panels_figure(
            [{"ylabel": "share of samples: x0_k read as the final image", "series": series}], path,
            xlabel="model call k", title="the reader on each call's data prediction")}
    if strip:
        columns = np.stack([strip[i] for i in sorted(strip)], axis=1) * 2 - 1  # (K + 1, samples, H, W, 3)
        titles = [f"x0 of call {k}\nt = {timesteps[k]:.0f}" for k in strip_calls] + ["image"]
        figures["reverse_strip.png"] = lambda path: plots.trajectory_strip(columns, titles, path)
    return Report(markdown, payload, figures)


# ------------------------------------------------------------------------------------------------------ switch
def prompt_switch_experiment(pipe: StableDiffusion, records, *, steps: int = 25, sampler: str = SCHEDULER,
                             guidance_scale: float = 7.5, seeds: Sequence[int] = (0,), num_per_prompt: int = 4,
                             negative_prompt: str = "", batch_size: int = 8,
                             reader: extractors.Extractor | None = None) -> Report:
    """Prompt A for the first k of the S model calls, then prompt B, for k = 0..S (pairs from ``prompt_pairs``:
    A and B differ in every factor both name); per factor, the share of samples where the reader sees A's class
    and B's. "A alone" and "B alone" (without the switch) are the reference rows: k = S is A alone."""
    bench = _Bench(pipe, records, **_common(steps, sampler, guidance_scale, seeds, num_per_prompt, negative_prompt,
                                            batch_size, reader))
    a, b, factors = _pair_records(bench)
    cond_a, cond_b = (bench.repeat(bench.embed([r["prompt"] for r in side])) for side in (a, b))
    target_a, target_b = _pair_targets(bench, a, b, factors)
    num_calls = bench.num_calls
    cases = [(f"A for {k} calls", dict(cond=cond_a, switch=cond_b, switch_after_calls=k)) for k in
             range(num_calls + 1)] + [("A alone", dict(cond=cond_a)), ("B alone", dict(cond=cond_b))]
    shows = {name: {"a": {f: [] for f in factors}, "b": {f: [] for f in factors}} for name, _ in cases}
    for seed in bench.seeds:
        latents = bench.latents(seed, len(a))
        for name, case in cases:
            images, _ = bench.draw(latents=latents, **case)
            seen = read_factors(bench.reader, images, factors)
            for side, target in (("a", target_a), ("b", target_b)):
                for f, value in _agreement(seen, target).items():
                    shows[name][side][f].append(value)
        logging.info("switch, seed %d done", seed)
    stats = {name: {side: {f: _stats(v) for f, v in s.items()} for side, s in by.items()}
             for name, by in shows.items()}
    rows = []
    for k in range(num_calls + 1):
        at = switch_threshold(bench.timesteps, k)
        rows.append(dict(calls_with_a=k, fraction=k / num_calls, switch_timestep=at if np.isfinite(at) else None,
                         shows_a=stats[f"A for {k} calls"]["a"], shows_b=stats[f"A for {k} calls"]["b"]))
    decided = {}
    for f in factors:
        wins = [r["shows_a"][f]["mean"] > r["shows_b"][f]["mean"] for r in rows]
        # The first k from which A's class is seen more often than B's for every later k.
        decided[f] = next((k for k in range(num_calls + 1) if all(wins[k:])), None)
    verdict = ("The share of the calls prompt A must hold for its class to win (seen more often than B's at that "
               "switch and every later one): " + "; ".join(
                   f"{f} {decided[f] / num_calls:.2f} (k = {decided[f]} of {num_calls})" if decided[f] is not None
                   else f"{f} never" for f in factors) + ".")
    table = [[r["calls_with_a"], f"{r['fraction']:.2f}",
              "-" if r["switch_timestep"] is None else f"{r['switch_timestep']:.0f}",
              *(f"{_cell(r['shows_a'][f])} / {_cell(r['shows_b'][f])}" for f in factors)] for r in rows]
    table += [[name, "-", "-", *(f"{_cell(stats[name]['a'][f])} / {_cell(stats[name]['b'][f])}" for f in factors)]
              for name in ("A alone", "B alone")]
    markdown = "\n".join([
        "# Prompt switch: prompt A for the first k model calls, then prompt B", "", verdict, "",
        f"{len(a)} prompt pairs (A and B differ in every factor both name), {bench.describe()}; the unconditional "
        f"branch keeps the negative prompt. Each cell: the share of samples where the reader sees A's / B's class.",
        "", md_table(["calls with A", "k / S", "switch at t", *(f"{f}: A / B" for f in factors)], table), ""])
    pairs = [[x["prompt"], y["prompt"]] for x, y in zip(a, b, strict=True)]
    payload = dict(setup=bench.setup(), verdict=verdict, pairs=pairs, rows=rows, decided_at=decided,
                   references={n: stats[n] for n in ("A alone", "B alone")})
    fractions = np.array([r["fraction"] for r in rows])
    panels = [{"ylabel": f"{f}: share of samples", "series": {
        "shows A": (fractions, [r["shows_a"][f]["mean"] for r in rows]),
        "shows B": (fractions, [r["shows_b"][f]["mean"] for r in rows])}} for f in factors]
    return Report(markdown, payload, {"switch.png": lambda path: plots.panels_figure(
        panels, path, xlabel="k / S: share of the calls with prompt A",
        title=f"prompt A, then B ({bench.sampler} {bench.steps} steps)")})


# --------------------------------------------------------------------------------------------------------- eos
def eos_experiment(pipe: StableDiffusion, records, *, steps: int = 25, sampler: str = SCHEDULER,
                   guidance_scale: float = 7.5, seeds: Sequence[int] = (0,), num_per_prompt: int = 4,
                   negative_prompt: str = "", batch_size: int = 8,
                   reader: extractors.Extractor | None = None) -> Report:
    """What the [EOS] part of the text embedding carries.

    (i) swap: prompt A's embedding with its [EOS] part replaced by prompt B's (``swap_eos``; pairs as in the
    switch): per factor, the share of samples showing A's class, B's, or neither, next to A and B alone.
    (ii) keep-only: the [EOS] part alone or the words alone (the other positions from the empty prompt "",
    ``keep_only``), the full prompt and the empty prompt: the reader's accuracy on the prompted factors.
    """
    bench = _Bench(pipe, records, **_common(steps, sampler, guidance_scale, seeds, num_per_prompt, negative_prompt,
                                            batch_size, reader))
    eos_id = pipe.tokenizer.eos_token_id
    a, b, pair_factors = _pair_records(bench)
    target_a, target_b = _pair_targets(bench, a, b, pair_factors)
    emb_a, emb_b = (bench.embed([r["prompt"] for r in side]) for side in (a, b))
    eos_a, eos_b = (eos_positions(pipe.tokenize([r["prompt"] for r in side]), eos_id) for side in (a, b))
    swap_cases = {"A": emb_a, "B": emb_b, "A's words + B's [EOS]": np.asarray(swap_eos(emb_a, eos_a, emb_b, eos_b))}
    prompts = [r["prompt"] for r in bench.records]
    factors = factor_names(bench.records)
    targets = bench.targets(bench.records, factors)
    emb, empty = bench.embed(prompts), bench.embed([""])
    eos = eos_positions(pipe.tokenize(prompts), eos_id)
    keep_cases = {"full prompt": emb, "[EOS] part only": np.asarray(keep_only(emb, empty, eos, keep="eos")),
                  "words only": np.asarray(keep_only(emb, empty, eos, keep="words")),
                  "empty prompt": np.repeat(empty, len(emb), axis=0)}
    swap = {n: {s: {f: [] for f in pair_factors} for s in ("a", "b", "neither")} for n in swap_cases}
    keep = {n: {f: [] for f in factors} for n in keep_cases}
    for seed in bench.seeds:
        latents = bench.latents(seed, len(a))
        for name, condition in swap_cases.items():
            seen = read_factors(bench.reader, bench.draw(bench.repeat(condition), latents)[0], pair_factors)
            shows_a, shows_b = _agreement(seen, target_a), _agreement(seen, target_b)
            for f in pair_factors:
                swap[name]["a"][f].append(shows_a[f])
                swap[name]["b"][f].append(shows_b[f])
                swap[name]["neither"][f].append(None if shows_a[f] is None else 1.0 - shows_a[f] - shows_b[f])
        latents = bench.latents(seed, len(emb))
        for name, condition in keep_cases.items():
            seen = read_factors(bench.reader, bench.draw(bench.repeat(condition), latents)[0], factors)
            for f, value in _agreement(seen, targets).items():
                keep[name][f].append(value)
        logging.info("eos, seed %d done", seed)
    swap = {n: {s: {f: _stats(v) for f, v in by.items()} for s, by in sides.items()} for n, sides in swap.items()}
    keep = {n: {f: _stats(v) for f, v in by.items()} for n, by in keep.items()}
    mixed = swap["A's words + B's [EOS]"]
    shows_a, shows_b = _mean_over_factors(mixed["a"]), _mean_over_factors(mixed["b"])
    share = None if not shows_a + shows_b else shows_b / (shows_a + shows_b)
    accuracy = {n: _mean_over_factors(by) for n, by in keep.items()}
    verdict = (f"With A's words and B's [EOS] part the samples show B's class in {shows_b:.0%} and A's in "
               f"{shows_a:.0%} of the cases (mean over factors and seeds): the [EOS] part carries "
               f"{'-' if share is None else f'{share:.0%}'} of the factors the reader attributes to either prompt. "
               f"Prompt accuracy with the [EOS] part only: {accuracy['[EOS] part only']:.3f}, the words only: "
               f"{accuracy['words only']:.3f}, the full prompt: {accuracy['full prompt']:.3f}, the empty prompt: "
               f"{accuracy['empty prompt']:.3f}.")
    swap_table = [[n, *(f"{_cell(swap[n]['a'][f])} / {_cell(swap[n]['b'][f])} / {_cell(swap[n]['neither'][f])}"
                        for f in pair_factors)] for n in swap_cases]
    keep_table = [[n, *(_cell(keep[n][f]) for f in factors), f"{accuracy[n]:.3f}"] for n in keep_cases]
    markdown = "\n".join([
        "# The [EOS] part of the text embedding", "", verdict, "",
        f"{bench.describe()}. The [EOS] part of a prompt is its embedding from the first [EOS] token on (the [EOS] "
        f"token and the padding, which have attended to every word); A's words + B's [EOS]: B's [EOS] part placed "
        f"from A's [EOS] position on (cut at the sequence length, its last padding repeated if it is the shorter).",
        "", f"## (i) Swap: the reader sees A's / B's / neither class ({len(a)} pairs)", "",
        md_table(["condition", *pair_factors], swap_table), "",
        f"## (ii) Keep only one part: the reader's accuracy on the prompted factors ({len(emb)} prompts; the other "
        f"part from the empty prompt)", "",
        md_table(["condition", *factors, "mean over factors"], keep_table), "",
        "Chance (uniform guess): " + ", ".join(f"{f} {1 / n:.3f}" for f, n in bench.reader.spec.heads
                                               if f in factors) + ".", ""])
    payload = dict(setup=bench.setup(), verdict=verdict, eos_share=share, swap=swap, keep_only=keep,
                   mean_accuracy=accuracy, eos_a=eos_a.tolist(), eos_b=eos_b.tolist(), eos=eos.tolist())
    return Report(markdown, payload, {})


# ---------------------------------------------------------------------------------------------------- guidance
def text_guidance_experiment(pipe: StableDiffusion, records, *, steps: int = 25, sampler: str = SCHEDULER,
                             guidance_scale: float = 7.5, seeds: Sequence[int] = (0,), num_per_prompt: int = 4,
                             negative_prompt: str = "", batch_size: int = 8,
                             reader: extractors.Extractor | None = None,
                             fractions: Sequence[float] = GUIDED_FRACTIONS, accuracy_tolerance: float = 0.02) -> Report:
    """Guidance on the first ``fractions`` of the model calls only, then the conditional prediction alone
    (``after="cond"``) or the unconditional one (``"uncond"``: the text removed), against full guidance.

    Per schedule: the reader's accuracy on the prompted factors, the mean L1 distance (pixels in [0, 1]) to the
    full-guidance image from the same noise, and the wall time per image of ``pipe.sample`` through one compiled
    sampler (the per-call scales are its argument; a warm-up call compiles it first, every row is timed after).
    """
    bench = _Bench(pipe, records, **_common(steps, sampler, guidance_scale, seeds, num_per_prompt, negative_prompt,
                                            batch_size, reader))
    if bench.scale == 1.0:
        raise ValueError("the guidance experiment needs a guidance scale other than 1, got 1")
    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0 <= f <= 1 for f in fractions):
        raise ValueError(f"fractions must lie in [0, 1], got {fractions}")
    rows = [dict(name="full guidance", fraction=1.0, after="cond", scales=bench.scales())]
    rows += [dict(name=f"first {f:g}, then {after}", fraction=f, after=after, scales=bench.scales(f, after))
             for after in ("cond", "uncond") for f in sorted(set(fractions), reverse=True) if f < 1]
    factors = factor_names(bench.records)
    cond, targets = bench.repeat(bench.embed([r["prompt"] for r in bench.records])), bench.targets(bench.records,
                                                                                                    factors)
    size = min(bench.batch_size, len(cond))
    bench.draw(cond[:size], bench.latents(bench.seeds[0], len(bench.records))[:size])  # warm-up: compiles
    for row in rows:
        row["guided"] = float(np.mean((row["scales"] != 0) & (row["scales"] != 1)))
        row.update(accuracy={f: [] for f in factors}, seen={f: [] for f in factors}, l1=[], seconds_per_image=[],
                   relative_time=[])
    for seed in bench.seeds:
        latents, reference = bench.latents(seed, len(bench.records)), None
        for row in rows:
            images, seconds = bench.draw(cond, latents, scales=row["scales"])
            reference = images if reference is None else reference  # the first row is full guidance
            seen = read_factors(bench.reader, images, factors)
            for f, value in _agreement(seen, targets).items():
                row["accuracy"][f].append(value)
                row["seen"][f].append(seen[f].tolist())
            row["l1"].append(float(np.mean(np.abs(images - reference))))
            row["seconds_per_image"].append(seconds / len(images))
            row["relative_time"].append(row["seconds_per_image"][-1] / rows[0]["seconds_per_image"][-1])
        logging.info("guidance, seed %d done", seed)
    for row in rows:
        row["scales"] = row["scales"].tolist()
        row["accuracy"] = {f: _stats(v) for f, v in row["accuracy"].items()}
        row["mean_accuracy"] = _mean_over_factors(row["accuracy"])
        for key in ("l1", "seconds_per_image", "relative_time"):
            row[key] = _stats(row[key])
        row["saving"] = 1.0 - row["relative_time"]["mean"]
        row["ideal_saving"] = (1.0 - row["guided"]) / 2  # an unguided call runs one of the two network passes
    full = rows[0]
    # The shortest "then cond" window whose accuracy stays within the tolerance of full guidance.
    good = [r for r in rows[1:] if r["after"] == "cond" and r["mean_accuracy"] is not None
            and r["mean_accuracy"] >= full["mean_accuracy"] - accuracy_tolerance]
    best = min(good, key=lambda r: r["fraction"]) if good else None
    verdict = (f"Guiding only the first {best['fraction']:g} of the calls (then conditional only) keeps the prompt "
               f"accuracy within {accuracy_tolerance:g} of full guidance ({best['mean_accuracy']:.3f} vs "
               f"{full['mean_accuracy']:.3f}) at {best['saving']:.0%} less time per image (ideal "
               f"{best['ideal_saving']:.0%})." if best else
               f"Every shorter guidance window loses more than {accuracy_tolerance:g} of full guidance's prompt "
               f"accuracy ({full['mean_accuracy']:.3f}).")
    table = [[r["name"], f"{r['guided']:.2f}", *(_cell(r["accuracy"][f]) for f in factors),
              f"{r['mean_accuracy']:.3f}", _cell(r["l1"], 4), _cell(r["seconds_per_image"], 4),
              f"{r['saving']:.1%}", f"{r['ideal_saving']:.0%}"] for r in rows]
    markdown = "\n".join([
        "# Guidance in the first calls only: prompt fidelity and time", "", verdict, "",
        f"{len(bench.records)} prompts, {bench.describe()}. After the guided calls the conditional prediction alone "
        f"(then cond) or the unconditional one (then uncond: the text removed); one network pass instead of two. "
        f"Time: wall time per image of the one compiled program (sampling and the VAE decoding; after a warm-up "
        f"call), the saving relative to full guidance; ideal: the share of UNet passes saved. L1: to the "
        f"full-guidance image from the same noise.",
        "", md_table(["schedule", "guided calls", *factors, "accuracy (mean)", "L1 to full", "s / image", "saving",
                      "ideal"], table), ""])
    panels = []
    for ylabel, value in (("prompt accuracy (mean over factors)", lambda r: r["mean_accuracy"]),
                          ("time saved vs full guidance", lambda r: r["saving"]),
                          ("L1 to the full-guidance image", lambda r: r["l1"]["mean"])):
        series = {}
        for after in ("cond", "uncond"):
            line = sorted([full] + [r for r in rows[1:] if r["after"] == after], key=lambda r: r["fraction"])
            series[f"then {after}"] = ([r["fraction"] for r in line], [value(r) for r in line])
        panels.append({"ylabel": ylabel, "series": series})
    payload = dict(setup=bench.setup(), verdict=verdict, accuracy_tolerance=accuracy_tolerance, rows=rows)
    return Report(markdown, payload, {"guidance.png": lambda path: plots.panels_figure(
        panels, path, xlabel="guided fraction of the calls",
        title=f"guidance in the first calls ({bench.sampler} {bench.steps} steps, scale {bench.scale:g})")})


def run_text_experiment(kind: str, pipe: StableDiffusion, records, **options) -> Report:
    """The experiment ``kind`` (one of ``TEXT_EXPERIMENTS``) with its options; options another kind takes only
    (cutoffs and tolerance: reverse; fractions: guidance) are dropped."""
    if kind not in TEXT_EXPERIMENTS:
        raise ValueError(f"unknown text experiment {kind!r}; accepted: {', '.join(TEXT_EXPERIMENTS)}")
    only = {"reverse": ("cutoffs", "tolerance"), "guidance": ("fractions", "accuracy_tolerance")}
    drop = {k for other, keys in only.items() if other != kind for k in keys}
    run = {"reverse": text_reverse_experiment, "switch": prompt_switch_experiment, "eos": eos_experiment,
           "guidance": text_guidance_experiment}[kind]
    return run(pipe, records, **{k: v for k, v in options.items() if k not in drop})
