"""The FID Inception-v3 of pytorch-fid in Flax (NHWC): pool3 features (2048) and the 1008-way logits.

Mirrors ``pytorch_fid.inception.InceptionV3(output_blocks=[3], resize_input=True,
normalize_input=True, use_fid_inception=True)`` in eval mode: the torchvision ``Inception3`` layout
with the FID patches (the port of TensorFlow's 2015-12-05 graph that every published FID uses):

- ``Mixed_5b/5c/5d`` (A), ``Mixed_6b..6e`` (C) and ``Mixed_7b`` (E) average-pool their pool branch
  without counting the zero padding (TensorFlow's ``SAME`` average pool);
- ``Mixed_7c`` (E) max-pools its pool branch (a quirk of the TensorFlow graph);
- BatchNorm eps 1e-3 with running statistics (collection ``batch_stats``), ReLU after each BN;
- input: bilinear resize to 299x299 (half-pixel centres, no antialiasing, as ``F.interpolate(...,
  align_corners=False)``), then [0, 1] -> [-1, 1].

Submodules carry the torchvision names (``Conv2d_1a_3x3``, ``Mixed_5b/branch1x1/conv``, ``fc``), which
``inception_convert`` maps to either state-dict naming scheme. The public weights
(``pt_inception-2015-12-05-6726825d.pth``) are never downloaded here: see ``load_inception_weights``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from edt_jax.metrics.inception_convert import (
    WEIGHTS_FILE,
    inception_params_from_torch,
    load_inception_weights,
)

Dtype = jnp.dtype | type
Pair = int | tuple[int, int]

INPUT_SIZE = 299
POOL3_FEATURES = 2048
NUM_CLASSES = 1008  # the TensorFlow graph's 1008-way softmax (1000 ImageNet classes + 8 unused)

__all__ = ["FIDInceptionV3", "create_fid_inception", "inception_params_from_torch", "load_inception_weights",
           "load_fid_inception", "WEIGHTS_FILE"]


def _pair(value: Pair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class BasicConv2d(nn.Module):
    """torchvision's BasicConv2d: Conv (no bias) -> BatchNorm(eps=1e-3, running stats) -> ReLU."""

    features: int
    kernel_size: Pair
    strides: int = 1
    padding: Pair = 0
    dtype: Dtype = jnp.float32
    precision: jax.lax.Precision | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = _pair(self.padding)
        x = nn.Conv(self.features, _pair(self.kernel_size), strides=(self.strides, self.strides),
                    padding=((ph, ph), (pw, pw)), use_bias=False, dtype=self.dtype, precision=self.precision,
                    name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, dtype=self.dtype, name="bn")(x)
        return nn.relu(x)


class _Block(nn.Module):
    """Base of the Inception blocks: ``conv(name, ...)`` builds a named BasicConv2d."""

    dtype: Dtype = jnp.float32
    precision: jax.lax.Precision | None = None

    def conv(self, name: str, features: int, kernel_size: Pair, strides: int = 1, padding: Pair = 0) -> nn.Module:
        return BasicConv2d(features, kernel_size, strides, padding, dtype=self.dtype, precision=self.precision,
                           name=name)


def _avg_pool_same(x: jax.Array) -> jax.Array:
    # TensorFlow's SAME average pool: the zero padding is not counted (count_include_pad=False).
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x: jax.Array, stride: int, pad: int = 0) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class FIDInceptionA(_Block):
    """Mixed_5b/5c/5d (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    pool_features: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = self.conv("branch1x1", 64, 1)(x)
        b5 = self.conv("branch5x5_2", 64, 5, padding=2)(self.conv("branch5x5_1", 48, 1)(x))
        b3 = self.conv("branch3x3dbl_1", 64, 1)(x)
        b3 = self.conv("branch3x3dbl_3", 96, 3, padding=1)(self.conv("branch3x3dbl_2", 96, 3, padding=1)(b3))
        bp = self.conv("branch_pool", self.pool_features, 1)(_avg_pool_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    """Mixed_6a (35x35 -> 17x17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.conv("branch3x3", 384, 3, strides=2)(x)
        bd = self.conv("branch3x3dbl_2", 96, 3, padding=1)(self.conv("branch3x3dbl_1", 64, 1)(x))
        bd = self.conv("branch3x3dbl_3", 96, 3, strides=2)(bd)
        return jnp.concatenate([b3, bd, _max_pool(x, 2)], axis=-1)


class FIDInceptionC(_Block):
    """Mixed_6b..6e (17x17): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""

    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c7 = self.channels_7x7
        b1 = self.conv("branch1x1", 192, 1)(x)
        b7 = self.conv("branch7x7_1", c7, 1)(x)
        b7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7)
        b7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
        bd = self.conv("branch7x7dbl_1", c7, 1)(x)
        bd = self.conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd)
        bd = self.conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd)
        bd = self.conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd)
        bd = self.conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd)
        bp = self.conv("branch_pool", 192, 1)(_avg_pool_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    """Mixed_7a (17x17 -> 8x8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.conv("branch3x3_2", 320, 3, strides=2)(self.conv("branch3x3_1", 192, 1)(x))
        b7 = self.conv("branch7x7x3_1", 192, 1)(x)
        b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
        b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
        b7 = self.conv("branch7x7x3_4", 192, 3, strides=2)(b7)
        return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)


class FIDInceptionE(_Block):
    """Mixed_7b (``pool="avg"``) / Mixed_7c (``pool="max"``) at 8x8:
    1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1."""

    pool: str = "avg"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = self.conv("branch1x1", 320, 1)(x)
        b3 = self.conv("branch3x3_1", 384, 1)(x)
        b3 = jnp.concatenate([self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                              self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3)], axis=-1)
        bd = self.conv("branch3x3dbl_2", 384, 3, padding=1)(self.conv("branch3x3dbl_1", 448, 1)(x))
        bd = jnp.concatenate([self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                              self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd)], axis=-1)
        pooled = _max_pool(x, 1, pad=1) if self.pool == "max" else _avg_pool_same(x)
        bp = self.conv("branch_pool", 192, 1)(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """FID Inception-v3. ``apply(variables, x)`` with x (B, H, W, 3) in [0, 1] -> pool3 (B, 2048) float32.

    ``apply(variables, x, method="pool3_and_logits")`` also returns the logits (B, 1008) of the ``fc``
    head (for the Inception Score); it needs variables converted from a state dict with
    ``fc.weight``/``fc.bias`` (the real weights file has them).

    Attributes:
      resize_input: bilinearly resize to 299x299 first (any input size is accepted then).
      normalize_input: map [0, 1] to [-1, 1]; switch off for inputs already in [-1, 1].
      dtype: compute dtype of the convolutions (params and the features stay float32).
      precision: matmul precision of the convolutions; the default HIGHEST keeps accelerators off
        reduced-precision (TF32/bf16-pass) convolutions, to which FID is sensitive.
    """

    resize_input: bool = True
    normalize_input: bool = True
    num_classes: int = NUM_CLASSES
    dtype: Dtype = jnp.float32
    precision: jax.lax.Precision | None = jax.lax.Precision.HIGHEST

    def setup(self):
        kw = dict(dtype=self.dtype, precision=self.precision)
        self.Conv2d_1a_3x3 = BasicConv2d(32, 3, strides=2, **kw)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 3, **kw)
        self.Conv2d_2b_3x3 = BasicConv2d(64, 3, padding=1, **kw)
        self.Conv2d_3b_1x1 = BasicConv2d(80, 1, **kw)
        self.Conv2d_4a_3x3 = BasicConv2d(192, 3, **kw)
        self.Mixed_5b = FIDInceptionA(pool_features=32, **kw)
        self.Mixed_5c = FIDInceptionA(pool_features=64, **kw)
        self.Mixed_5d = FIDInceptionA(pool_features=64, **kw)
        self.Mixed_6a = InceptionB(**kw)
        self.Mixed_6b = FIDInceptionC(channels_7x7=128, **kw)
        self.Mixed_6c = FIDInceptionC(channels_7x7=160, **kw)
        self.Mixed_6d = FIDInceptionC(channels_7x7=160, **kw)
        self.Mixed_6e = FIDInceptionC(channels_7x7=192, **kw)
        self.Mixed_7a = InceptionD(**kw)
        self.Mixed_7b = FIDInceptionE(pool="avg", **kw)
        self.Mixed_7c = FIDInceptionE(pool="max", **kw)
        # Created lazily: only variables that include ``fc`` (converted with fc.weight) can use it.
        self.fc = nn.Dense(self.num_classes, precision=self.precision)

    def preprocess(self, x: jax.Array) -> jax.Array:
        """(B, H, W, 3) in [0, 1] -> (B, 299, 299, 3) in [-1, 1] (each step as configured)."""
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"FID Inception expects NHWC RGB images (B, H, W, 3) in [0, 1]; got shape {x.shape}")
        x = x.astype(jnp.float32)
        if self.resize_input and x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
            # No antialiasing: F.interpolate(bilinear, align_corners=False) does not low-pass either.
            x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), "bilinear", antialias=False)
        if self.normalize_input:
            x = 2.0 * x - 1.0
        return x.astype(self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.preprocess(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # 147x147x64
        x = _max_pool(x, 2)  # 73x73
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # 71x71x192
        x = _max_pool(x, 2)  # 35x35
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        # Adaptive average pool to 1x1, in float32 whatever the compute dtype.
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))

    def classify(self, pool3: jax.Array) -> jax.Array:
        """Logits (B, 1008) of pool3 features (B, 2048) (eval-mode dropout is the identity)."""
        if not self.is_initializing() and "fc" not in self.variables.get("params", {}):
            raise ValueError("these variables have no 'fc' logits head; convert a state dict that holds fc.weight "
                             "and fc.bias (the real pt_inception-2015-12-05-6726825d.pth does)")
        return self.fc(pool3.astype(jnp.float32))

    def pool3_and_logits(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(pool3 (B, 2048), logits (B, 1008)) of images x (B, H, W, 3) in [0, 1]."""
        pool3 = self(x)
        return pool3, self.classify(pool3)


def create_fid_inception(dtype: Dtype = jnp.float32, *, resize_input: bool = True, normalize_input: bool = True,
                         precision: jax.lax.Precision | None = jax.lax.Precision.HIGHEST) -> FIDInceptionV3:
    """The FID Inception-v3 (pool3 features, inputs in [0, 1] resized to 299x299)."""
    return FIDInceptionV3(resize_input=resize_input, normalize_input=normalize_input, dtype=dtype,
                          precision=precision)


def load_fid_inception(path: str, dtype: Dtype = jnp.float32) -> tuple[FIDInceptionV3, dict]:
    """The network and its converted variables from a local weights file (``.pth``/``.npz``/``.safetensors``)."""
    net = create_fid_inception(dtype)
    return net, inception_params_from_torch(load_inception_weights(path), net)

