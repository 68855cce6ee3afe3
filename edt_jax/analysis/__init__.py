"""Where a diffusion model puts what: frequency bands of the forward process and of sampler trajectories.

    from edt_jax.analysis import frequency
    low, high = frequency.split(x, cutoff=0.25)      # x (B, H, W, C); low + high == x
    power = frequency.radial_power(x, num_bins=16)   # (B, 16) power per radial frequency band

``forward`` measures how the noise of the forward process swamps each band, ``reverse`` how fast each band of a
sampler's data predictions settles, ``label_switch`` changes the class label part-way through sampling. They back
``launch/analyze.py`` (Yi et al., NeurIPS 2024: shape first, details later). ``text`` runs the paper's experiments
on a text-to-image pipeline (``edt_jax.t2i``): the reverse analysis, the prompt switch, the [EOS] study and guidance
in the first calls; ``prompts`` holds their prompt records, embedding edits and reader.
"""

from edt_jax.analysis import forward, frequency, label_switch, reverse

__all__ = ["forward", "frequency", "label_switch", "reverse"]
