"""Degradation operators: shapes, references, linearity, noise, kernels, parsing, errors and the pseudo-inverse.

Few distinct shapes and one jit per degradation, so the whole file compiles in seconds on a 2-core CPU.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edt_jax.restoration import (
    Compose,
    GaussianBlur,
    GaussianNoise,
    MotionBlur,
    SuperResolution,
    create_degradation,
    image_keys,
    motion_kernel,
    null_space_project,
    pseudo_inverse,
)
from edt_jax.restoration.degradations import _per_image_keys

SHAPE = (2, 16, 16, 3)
KEYS = image_keys(0, jnp.arange(SHAPE[0]))
X1 = jax.random.uniform(jax.random.key(1), SHAPE, minval=-1.0, maxval=1.0)
X2 = jax.random.uniform(jax.random.key(2), SHAPE, minval=-1.0, maxval=1.0)
# The motion blur comes with noise so that one compile (the kernels are the slow part) serves all its tests.
MOTION = "motion_blur:size=7,intensity=0.5+noise:sigma=0.05"
SPECS = ["sr4", "sr2", "gaussian_blur:sigma=1.6,size=9", MOTION, "noise:sigma=0.05",
         "gaussian_blur:sigma=1.0+sr4+noise:sigma=0.02", "noise:sigma=0.1+gaussian_blur:sigma=2.0"]
_pinv = jax.jit(pseudo_inverse, static_argnames=("degradation", "x_shape", "iters"))
_null = jax.jit(null_space_project, static_argnames=("degradation", "iters"))


@functools.cache
def _run(spec: str) -> dict[str, np.ndarray]:
    """One compile per degradation: apply, operator and both sides of the linearity identity on SHAPE.

    The three operator inputs go through one call on a tripled batch (with the keys tripled too), so random
    kernels are drawn once per compile instead of once per call.
    """
    d = create_degradation(spec)

    @jax.jit
    def run(x1, x2, keys):
        a, b = 0.7, -1.3
        op1, op2, op_mix = jnp.split(d.operator(jnp.concatenate([x1, x2, a * x1 + b * x2]), jnp.tile(keys, 3)), 3)
        return {"apply": d.apply(x1, keys), "op": op1, "lhs": op_mix, "rhs": a * op1 + b * op2}

    return jax.tree.map(np.asarray, run(X1, X2, KEYS))


@pytest.mark.parametrize("spec", SPECS)
def test_shapes_values_and_linearity(spec):
    d, out = create_degradation(spec), _run(spec)
    assert out["apply"].shape == out["op"].shape == d.output_shape(SHAPE)
    assert out["apply"].dtype == np.float32 and np.isfinite(out["apply"]).all()
    # Averaging operators (sum-1 kernels, interpolation) stay near the input range; noise adds a few sigma.
    assert np.abs(out["op"]).max() <= 1.2 and np.abs(out["apply"]).max() <= 1.2 + 6 * d.noise_std
    assert d.linear
    np.testing.assert_allclose(out["lhs"], out["rhs"], atol=2e-6)
    if d.noise_std == 0:
        np.testing.assert_allclose(out["apply"], out["op"], atol=1e-6)


def test_super_resolution_is_antialiased_bicubic_and_checks_the_scale():
    for scale in (2, 4):
        expected = jax.image.resize(X1, (2, 16 // scale, 16 // scale, 3), method="bicubic", antialias=True)
        np.testing.assert_allclose(_run(f"sr{scale}")["op"], expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"^sr4: the image size 30x32 is not divisible by the scale 4$"):
        SuperResolution(4).output_shape((1, 30, 32, 3))
    with pytest.raises(ValueError, match="not divisible by the scale 3"):
        SuperResolution(3).operator(jnp.zeros((1, 16, 16, 1)), jax.random.key(0))


def test_gaussian_blur_matches_direct_2d_and_scipy_mirror():
    from scipy import ndimage

    d = create_degradation("gaussian_blur:sigma=1.6,size=9")
    k1 = d.kernel()
    assert k1.shape == (9,) and abs(k1.sum() - 1) < 1e-6 and GaussianBlur(1.0).size == 7
    k2 = np.outer(k1, k1)
    x = np.asarray(X1, np.float64)
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (9, 9), axis=(1, 2))  # (B, H, W, C, 9, 9)
    direct = np.einsum("bhwcij,ij->bhwc", windows, k2)
    out = _run("gaussian_blur:sigma=1.6,size=9")["op"]
    np.testing.assert_allclose(out, direct, atol=2e-6)
    # numpy/jnp "reflect" (edge not repeated) is scipy.ndimage's "mirror"; scipy's "reflect" repeats the edge.
    mirror = ndimage.gaussian_filter(x, sigma=(0, 1.6, 1.6, 0), mode="mirror", radius=(0, 4, 4, 0))
    np.testing.assert_allclose(out, mirror, atol=2e-6)
    scipy_reflect = ndimage.gaussian_filter(x, sigma=(0, 1.6, 1.6, 0), mode="reflect", radius=(0, 4, 4, 0))
    assert np.abs(out - scipy_reflect).max() > 1e-3


def test_motion_kernels_are_normalised_reproducible_and_per_image():
    from scipy import ndimage

    d = MotionBlur(7, 0.5)
    kernels = jax.jit(d.kernels, static_argnums=1)
    # In a Compose, stage j draws from fold_in(key, j); the motion blur is stage 0 of MOTION.
    k = np.asarray(kernels(jax.vmap(lambda key: jax.random.fold_in(key, 0))(KEYS), 2))
    assert k.shape == (2, 7, 7) and (k >= 0).all()
    np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0, atol=1e-6)
    assert np.abs(k[0] - k[1]).max() > 1e-3  # different index -> different kernel
    k_index = np.asarray(kernels(image_keys(0, jnp.array([3, 5])), 2))
    swapped = np.asarray(kernels(image_keys(0, jnp.array([5, 3])), 2))
    np.testing.assert_array_equal(swapped, k_index[::-1])  # the kernel follows the index, not the batch slot
    np.testing.assert_array_equal(np.asarray(kernels(image_keys(0, jnp.array([3, 5])), 2)), k_index)
    # operator(x, KEYS) is the true convolution with these kernels, numpy-reflect padded (= scipy "mirror").
    op, x = _run(MOTION)["op"], np.asarray(X1)
    for b in range(2):
        for c in range(3):
            expected = ndimage.convolve(x[b, :, :, c], k[b], mode="mirror")
            np.testing.assert_allclose(op[b, :, :, c], expected, atol=2e-6)
    # Every kernel fills its grid along its long side (the blur extent is the size), centred.
    for ki in k:
        rows, cols = np.nonzero(ki.sum(axis=1) > 1e-6)[0], np.nonzero(ki.sum(axis=0) > 1e-6)[0]
        assert max(np.ptp(rows), np.ptp(cols)) == 6
    # Intensity 0 is Boracchi & Foi's rectilinear blur: the support lies within a pixel of a line.
    line = np.asarray(jax.jit(motion_kernel, static_argnums=(1, 2))(jax.random.key(7), 15, 0.0))
    ys, xs = np.nonzero(line > 1e-6)
    weights = line[ys, xs]
    points = np.stack([xs, ys], 1) - np.average(np.stack([xs, ys], 1), axis=0, weights=weights)
    _, _, vt = np.linalg.svd(points * np.sqrt(weights)[:, None], full_matrices=False)
    assert np.abs(points @ vt[1]).max() < 1.5


def test_noise_std_independence_and_stages():
    x = jnp.zeros((2, 64, 64, 3))
    apply = jax.jit(GaussianNoise(0.05).apply)
    noise = np.asarray(apply(x, image_keys(0, jnp.array([0, 1]))))
    assert abs(noise.std() - 0.05) < 0.05 * 0.02 and abs(noise.mean()) < 0.002
    assert abs(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]) < 0.03
    np.testing.assert_array_equal(np.asarray(apply(x, image_keys(0, jnp.array([1, 0]))))[0], noise[1])
    # Compose: noise after the blur stays white (std sigma); noise before a blur is blurred with it.
    late, early = _run("gaussian_blur:sigma=1.0+sr4+noise:sigma=0.02"), _run("noise:sigma=0.1+gaussian_blur:sigma=2.0")
    assert abs((late["apply"] - late["op"]).std() - 0.02) < 0.004
    assert (early["apply"] - early["op"]).std() < 0.1 / 3
    assert create_degradation("gaussian_blur:sigma=1.0+sr4+noise:sigma=0.02").noise_std == pytest.approx(0.02)
    # The kernel of apply is the kernel of operator (noise keys are derived separately): the difference of
    # the two is exactly the noise.
    blurred = _run(MOTION)
    assert abs((blurred["apply"] - blurred["op"]).std() - 0.05) < 0.005


def test_single_keys_are_split_per_image():
    key = jax.random.key(3)
    split = _per_image_keys(key, 2)
    np.testing.assert_array_equal(jax.random.key_data(split), jax.random.key_data(jax.random.split(key, 2)))
    raw = jax.random.PRNGKey(3)  # legacy uint32 keys are accepted too
    np.testing.assert_array_equal(jax.random.key_data(_per_image_keys(raw, 2)), jax.random.key_data(split))
    assert _per_image_keys(KEYS, 2) is KEYS


def test_composition_order():
    blur, sr = GaussianBlur(1.0), SuperResolution(2)
    x, key = X1, jax.random.key(0)
    both = jax.jit(lambda x: (Compose((blur, sr)).operator(x, key), sr.operator(blur.operator(x, key), key),
                              Compose((sr, blur)).operator(x, key)))
    blur_then_sr, reference, sr_then_blur = (np.asarray(a) for a in both(x))
    np.testing.assert_allclose(blur_then_sr, reference, atol=1e-6)
    assert np.abs(blur_then_sr - sr_then_blur).max() > 1e-2
    assert Compose((Compose((blur, sr)), GaussianNoise(0.1))).parts == (blur, sr, GaussianNoise(0.1))


@pytest.mark.parametrize("spec", SPECS + ["sr:scale=3", "motion_blur:size=11,intensity=0.0", "sr4+sr2"])
def test_spec_and_config_round_trip(spec):
    d = create_degradation(spec)
    assert create_degradation(d.spec()) == d and create_degradation(d.config()) == d
    assert create_degradation(json.loads(json.dumps(d.config()))) == d
    assert hash(d) == hash(create_degradation(d.spec()))


def test_parsing_forms_and_defaults():
    assert create_degradation("sr4") == create_degradation("sr:scale=4") == SuperResolution(4)
    assert create_degradation(" gaussian_blur : sigma = 1.6 ") == GaussianBlur(1.6, 11)
    assert create_degradation("motion_blur:size=11,intensity=0.5") == MotionBlur(11, 0.5)
    assert create_degradation("noise:sigma=0.05").noise_std == 0.05
    composed = create_degradation("gaussian_blur:sigma=1.0+sr4+noise:sigma=0.02")
    assert composed == Compose((GaussianBlur(1.0), SuperResolution(4), GaussianNoise(0.02)))
    assert composed.spec() == "gaussian_blur:sigma=1.0,size=7+sr4+noise:sigma=0.02"
    assert composed.output_shape((3, 64, 64, 3)) == (3, 16, 16, 3)
    assert SuperResolution(4).config() == {"name": "sr", "scale": 4}


@pytest.mark.parametrize("spec, message", [
    ("blur", r"unknown degradation 'blur'; expected one of 'sr', 'gaussian_blur', 'motion_blur', 'noise'"),
    ("sr1", r"sr scale must be an integer >= 2, got 1"),
    ("sr:scale=2.5", r"sr scale must be an integer >= 2, got 2.5"),
    ("sr:factor=2", r"unknown sr parameter 'factor'; expected one of 'scale'"),
    ("gaussian_blur:sigma=0", r"gaussian_blur sigma must be a finite number > 0.0, got 0"),
    ("gaussian_blur:sigma=-1", r"gaussian_blur sigma must be a finite number > 0.0, got -1"),
    ("gaussian_blur:sigma=abc", r"gaussian_blur sigma must be a finite number > 0.0, got 'abc'"),
    ("gaussian_blur:sigma=inf", r"gaussian_blur sigma must be a finite number > 0.0, got inf"),
    ("gaussian_blur:sigma=1,size=8", r"gaussian_blur size must be odd .*, got 8"),
    ("gaussian_blur:sigma=1,size=1", r"gaussian_blur size must be an integer >= 3, got 1"),
    ("gaussian_blur:sigma=1,radius=3", r"unknown gaussian_blur parameter 'radius'; expected one of 'sigma', 'size'"),
    ("gaussian_blur:sigma", r"bad degradation parameter 'sigma' .*expected <name>=<value>"),
    ("motion_blur:size=10", r"motion_blur size must be odd .*, got 10"),
    ("motion_blur:size=11,intensity=1.5", r"motion_blur intensity must be a finite number >= 0.0 and <= 1.0, got 1.5"),
    ("noise:sigma=0", r"noise sigma must be a finite number > 0.0, got 0"),
    ("sr4++noise:sigma=0.1", r"unknown degradation ''"),
    ("compose:parts=1", r"unknown degradation 'compose'"),
    ("", r"degradation spec must be a non-empty string or dict, got ''"),
    ({"name": "sr"}, r"sr needs the parameter 'scale'; its parameters are scale"),
    ("motion_blur:intensity=0.5", r"motion_blur needs the parameter 'size'; its parameters are size, intensity"),
    ({"name": "zoom", "scale": 2}, r"unknown degradation 'zoom'"),
    ({"name": "compose", "parts": [], "order": 1}, r"unknown compose key 'order'; expected one of 'parts'"),
    ({"name": "compose", "parts": []}, r"Compose needs at least one part"),
])
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        create_degradation(spec)
    assert "\n" not in str(info.value)


def test_bad_arguments_are_one_line_errors():
    cases = [
        (lambda: SuperResolution(True), r"sr scale must be an integer >= 2, got True"),
        (lambda: GaussianBlur(1.0).operator(jnp.zeros((16, 16, 3)), jax.random.key(0)),
         r"gaussian_blur: expected an NHWC batch of shape \(B, H, W, C\), got shape \(16, 16, 3\)"),
        (lambda: GaussianNoise(0.1).apply(jnp.zeros((2, 4, 4, 1)), image_keys(0, jnp.arange(3))),
         r"got keys of shape \(3,\) for a batch of 2 images; pass one key or \(2,\)"),
        (lambda: pseudo_inverse(SuperResolution(2), jnp.zeros((1, 2, 2, 1)), KEYS[:1], (1, 4, 4, 1), iters=0),
         r"pseudo_inverse iters must be an integer >= 1, got 0"),
        (lambda: pseudo_inverse(SuperResolution(2), jnp.zeros((1, 2, 2, 1)), KEYS[:1], (1, 4, 4, 1), damping=-1.0),
         r"pseudo_inverse damping must be a finite number >= 0.0, got -1.0"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_pseudo_inverse_solves_sr4_on_32x32():
    d, shape = SuperResolution(4), (2, 32, 32, 3)
    keys = KEYS
    y = jax.random.uniform(jax.random.key(4), d.output_shape(shape), minval=-1.0, maxval=1.0)
    x = _pinv(d, y, keys, shape, iters=30)
    residual = np.linalg.norm(d.operator(x, keys) - y) / np.linalg.norm(y)
    assert residual < 1e-6  # measured 1.5e-7 (float32 floor) from 20 iterations on
    # DDNM's projection: the result is consistent with y, and a consistent x0 is left unchanged.
    x0 = jax.random.uniform(jax.random.key(5), shape, minval=-1.0, maxval=1.0)
    projected = _null(d, x0, y, keys, iters=30)
    assert np.linalg.norm(d.operator(projected, keys) - y) / np.linalg.norm(y) < 1e-6
    np.testing.assert_allclose(_null(d, x0, d.operator(x0, keys), keys, iters=30), x0, atol=1e-5)


def _explicit_matrix(d, key, shape=(1, 8, 8, 1)) -> np.ndarray:
    """The (m, 64) matrix of the operator on one 8x8 single-channel image (the same key for every column)."""
    n = int(np.prod(shape))
    basis = jnp.eye(n, dtype=jnp.float32).reshape((n, *shape[1:]))
    columns = jax.jit(d.operator)(basis, jnp.broadcast_to(key, (n,)))
    return np.asarray(columns, np.float64).reshape(n, -1).T


@pytest.mark.parametrize("spec, damping, tolerance", [
    ("sr4", 0.0, 1e-5), ("gaussian_blur:sigma=1.0+sr2", 0.0, 1e-5),
    # A square blur is ill-conditioned (condition ~5e3 here), so only its damped inverse is meaningful in
    # float32; it is compared with the explicit Tikhonov formula.
    ("gaussian_blur:sigma=1.0", 1e-2, 1e-5),
])
def test_pseudo_inverse_matches_numpy_on_an_explicit_8x8_matrix(spec, damping, tolerance):
    d, shape, key = create_degradation(spec), (1, 8, 8, 1), image_keys(3, jnp.arange(1))
    matrix = _explicit_matrix(d, key[0], shape)
    y = np.asarray(jax.random.normal(jax.random.key(5), d.output_shape(shape)), np.float64).ravel()
    if damping:
        reference = matrix.T @ np.linalg.solve(matrix @ matrix.T + damping * np.eye(len(matrix)), y)
    else:
        reference = np.linalg.pinv(matrix) @ y
    got = np.asarray(_pinv(d, jnp.asarray(y, jnp.float32).reshape(d.output_shape(shape)), key, shape, iters=100,
                           damping=damping)).ravel()
    assert np.abs(got - reference).max() / np.abs(reference).max() < tolerance


def test_batched_motion_blur_equals_the_per_image_conv_and_its_adjoint():
    """The per-image blur is one shift-and-add over the batch (``degradations._shift_sum``) with an explicit adjoint;
    both equal the former path, a depthwise conv per image (vmap) and its ``jax.linear_transpose``, to 1e-6, and so
    does the converged damped pseudo-inverse built on them (DDNM's deblurring step) to float32 accuracy."""
    from edt_jax.restoration.degradations import _depthwise

    d, shape = MotionBlur(7, 0.5), (3, 16, 16, 3)
    keys = image_keys(0, jnp.arange(3))
    kernels = d.kernels(keys, 3)

    def per_image(x):
        return jax.vmap(lambda xi, ki: _depthwise(xi[None], ki[::-1, ::-1])[0])(x, kernels)

    transpose = jax.linear_transpose(per_image, jax.ShapeDtypeStruct(shape, jnp.float32))

    @jax.jit
    def both(x, z):
        return (d._forward(x, kernels), per_image(x), d._adjoint(z, kernels, shape), transpose(z)[0],
                _pinv(d, z, keys, shape, iters=100, damping=1e-2), d._adjoint(
                    _conjugate_solve(lambda v: per_image(transpose(v)[0]) + 1e-2 * v, z), kernels, shape))

    x = jax.random.uniform(jax.random.key(6), shape, minval=-1.0, maxval=1.0)
    z = jax.random.uniform(jax.random.key(7), shape, minval=-1.0, maxval=1.0)
    forward, forward_ref, adjoint, adjoint_ref, pinv, pinv_ref = (np.asarray(a) for a in both(x, z))
    np.testing.assert_allclose(forward, forward_ref, atol=1e-6)
    np.testing.assert_allclose(adjoint, adjoint_ref, atol=1e-6)
    # Converged (100 steps): 1.3e-5 measured. Mid-way (20 steps) the two roundings part by up to 0.1, as float32 CG
    # on a condition-100 system loses orthogonality at its own pace; both then reach the same solution.
    np.testing.assert_allclose(pinv, pinv_ref, atol=1e-4)
    assert np.abs(pinv).max() > 0.1


def _conjugate_solve(matvec, b):
    from edt_jax.restoration.degradations import _conjugate_gradients

    return _conjugate_gradients(matvec, b, 100, 1e-7)
