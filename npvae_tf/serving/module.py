"""SavedModel export for serving: named signatures over a trained run, TensorFlow alone.

Shapes: ``N`` batch (dynamic, may be 0), ``P`` values per example, flattened (784 pixels for
MNIST; image inputs may also come in the data's shape, ``[N, 28, 28]``), ``Z`` latent size,
``D`` size of X, ``M`` reference points. Data the run standardised (the Gaussian likelihood)
is standardised inside every signature and decoded means are mapped back, so clients send
and receive the data's own units. Signatures of the exported SavedModel
(inputs -> outputs):

    serving_default, reconstruct   images [N, P] -> images [N, P]
        decode(E[z|y]): reconstruction probabilities, as ``model(images)``
    encode      images [N, P] -> z_mean [N, Z], z_stddev [N, Z]
                (npVAE: + x [N, D] = f(y); neighbour placement: + x_placed [N, D])
    decode      z [N, Z] -> images [N, P]                 the decoder's mean
    generate_from_x (npVAE)
                x [N, D] -> images [N, P], z [N, Z]
        z = z~(x) = sum_j W(x, x_j) E[z_j] over the reference set stored in the SavedModel
        (``W`` the row-softmax of ``-||x - x_j||^2 / (2 l^2)``, ``l`` the serving lengthscale
        of :func:`serving_lengthscale`), images = the VAE's decoder at z: the sharp images
    sample      count [] int32, seed [] int64 -> images [count, P], z [count, Z]
                (+ x [count, D] for the npVAE)
        npVAE: ancestral sampling in X, x from the Gaussian mixture training stored in the run
        folder (:class:`npvae_tf.runs.x_density.XDensity`, the one evaluation samples), then as
        generate_from_x. VAE: z ~ N(0, I). Stateless, with the random-number algorithm named
        (Philox), so the same (count, seed) gives the same images on every device.
    place (npVAE with neighbour placement)
                images [N, P] -> x [N, D]
        the median location of each image's 15 nearest training images
        (:mod:`npvae_tf.model.placement`; the training images are stored in the SavedModel,
        as uint8 where they are bytes)
    reconstruct_through_x (npVAE)
                images [N, P] -> images [N, P], log_prob [N], x [N, D], z [N, Z]
        each image through its 2-D location: x = the served placement (``place``, or f(y)
        for the other schemes), z = z~(x), images = the X path's decoder mean at z and
        log_prob = log p_X(y | z) of the given image (nats, in the data's own units: a
        standardised run adds the log-determinant of its scaling). The X path's decoder is
        the run's own X-path decoder where it has one (fitted for likelihood: blurrier, the
        conditional mean), else the VAE's.

Written by Keras 3's ``keras.export.ExportArchive``, which saves the TensorFlow variables
the signatures capture, not Keras' wrappers (which the session-style loader of TF Serving and
``saved_model_cli run`` cannot read); only the signatures are saved as functions.

Inputs: shapes are left unknown in the signatures and checked when a signature runs
(:mod:`npvae_tf.serving.inputs`): a wrong rank or width, NaN or Inf, or values outside the
likelihood's support is one ``InvalidArgumentError`` naming the input.

Speed of ``generate_from_x`` (docs/serving.md, docs/grid-index.md): ``z~`` is the kernel's
chunked, streaming-softmax ``predictive_mean`` (``2 N M Z`` flops) in blocks of
:data:`QUERY_BLOCK` queries, through the grid index for a 2-D X, as plain TensorFlow ops (a
stock TF Serving CPU build does not run XLA); ``jit_compile=True`` compiles the kernel with
XLA, padding the last block to one of :data:`QUERY_BUCKETS`. The reference set is stored
padded to a multiple of the chunk size (``x = +inf``, ``E[z] = 0``: kernel weight 0).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from npvae_tf.core.backend import tf
from npvae_tf.model.grid_index import GridIndex
from npvae_tf.model.grid_search import indexed_predictive_mean
# Named, so draws do not depend on the device's default generator.
from npvae_tf.model.layers import RNG_ALG
from npvae_tf.model.placement import PLACEMENT_NEIGHBOURS, neighbour_placement, squared_norms
from npvae_tf.runs.reference import (DEFAULT_CHUNK_SIZE, ReferenceSet, serving_lengthscale)
from npvae_tf.runs.x_density import XDensity, mixture_parameters
from npvae_tf.serving.folders import ExportError
from npvae_tf.serving.inputs import (MAX_SAMPLE_COUNT, checked_count, checked_images,
                                     checked_matrix, checked_seed)

# Padded batch sizes seen by the XLA-compiled kernel; the last is the block size.
QUERY_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 640, 768, 896, 1024)
QUERY_BLOCK = QUERY_BUCKETS[-1]
SIGNATURES_NPVAE = ("serving_default", "reconstruct", "encode", "decode", "generate_from_x",
                    "sample", "reconstruct_through_x")
SIGNATURES_VAE = ("serving_default", "reconstruct", "encode", "decode", "sample")



# --- the exported module --------------------------------------------------------------------
def _pad_reference(x: np.ndarray, z: np.ndarray, chunk: int, order=None):
    """Pads ``[M, D]``, ``[M, Z]`` float32 to a multiple of ``chunk`` rows: x = +inf, z = 0;
    the rows taken in ``order`` (a permutation; default: as given).

    ``-||x* - inf||^2 / (2 l^2) = -inf``: the padding gets kernel weight 0 (and, were exp
    to round -inf up to its smallest output, it still adds nothing: its E[z] is 0). Permuted
    and padded in one allocation each: a copy of E[z] is 2 GB at M = 1,000,000, Z = 500.
    """
    m, pad = len(x), -len(x) % chunk

    def fill(a, value):
        out = np.full((m + pad, a.shape[1]), value, np.float32)
        if order is None:
            out[:m] = a
        else:
            np.take(a, order, axis=0, out=out[:m])
        return out

    return fill(x, np.inf), fill(z, 0.0)


def _function(method, input_signature):
    # The graphs use explicit tf.cond / tf.map_fn / tf.foldl; without AutoGraph, tracing
    # does not depend on re-reading (possibly edited) source files.
    return tf.function(method, input_signature=input_signature, autograph=False)


class ServingModule(tf.Module):
    """The signatures above over a built Keras :class:`~npvae_tf.model.vae.VAE` or npVAE.

    The methods ``reconstruct``, ``encode``, ``decode``, ``sample`` (and ``generate_from_x``)
    are ``tf.function``\\ s for use in this process; :meth:`archive` packs the same maths
    into a ``keras.export.ExportArchive`` to write.

    Args:
      model: the trained model (``NonparametricVAE`` needs ``reference``).
      reference: the reference set (``x`` ``[M, D]``, ``z_mean`` ``[M, Z]``) for the npVAE.
      density: the density over X to sample (default: fitted to ``reference.x``, seed 0).
      lengthscale: the kernel lengthscale to serve with (default:
        :func:`serving_lengthscale`).
      chunk_size: reference points per kernel chunk (memory ``O(QUERY_BLOCK * chunk)``).
      jit_compile: compile the kernel with XLA (see the module docstring).
      indexed: serve ``generate_from_x`` through the grid index
        (:class:`~npvae_tf.model.grid_index.GridIndex`) where it helps (2-D X, plain graph);
        the exact full sum otherwise.
      scaling: the data's :class:`~npvae_tf.data.datasets.Scaling`; a standardised one is
        applied to every input and undone on every output, so clients send and receive the
        data's own units (default: none).
      placement: ``(images [M, P] as stored, scale)``, the training examples new ones are
        placed from (``scale`` times them: the model's values; ``reference.images`` where the
        reference set keeps them); None: new examples are placed at ``f(y)``.
      image_shape: one example's shape (``config.image_shape``); image inputs are accepted
        as ``[N, P]`` or ``[N, *image_shape]`` (default ``[P]``: flat only).
    """

    def __init__(self, model, reference: Optional[ReferenceSet] = None,
                 density: Optional[XDensity] = None, lengthscale: Optional[float] = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, jit_compile: bool = False,
                 indexed: bool = True, scaling=None, placement=None, image_shape=None):
        super().__init__(name="npvae_serving")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        # The Keras model is used by the traced functions but not saved as an object: only
        # the variables the functions capture are (loading needs neither Keras nor npvae_tf).
        object.__setattr__(self, "_model", model)
        self.image_dim, self.z_dim = int(model.image_dim), int(model.z_dim)
        self.image_shape = tuple(int(d) for d in (image_shape or (self.image_dim,)))
        assert math.prod(self.image_shape) == self.image_dim, (self.image_shape, self.image_dim)
        self.has_x = model.has_x
        self.jit_compile = bool(jit_compile)
        self.likelihood = model.likelihood
        self.scaling = scaling if scaling is not None and scaling.kind == "standardised" else None
        self.specs = {"images": [tf.TensorSpec(None, tf.float32, name="images")],
                      "z": [tf.TensorSpec(None, tf.float32, name="z")],
                      "sample": [tf.TensorSpec([], tf.int32, name="count"),
                                 tf.TensorSpec([], tf.int64, name="seed")]}
        self.reconstruct = _function(self._reconstruct, self.specs["images"])
        self.encode = _function(self._encode, self.specs["images"])
        self.decode = _function(self._decode, self.specs["z"])
        if not self.has_x:
            self.sample = _function(self._sample_prior, self.specs["sample"])
            return
        if reference is None or reference.x is None:
            raise ExportError("the npVAE export needs a reference set with x")
        self._check_reference(reference)
        self.x_dim, self.chunk_size = int(model.x_dim), int(chunk_size)
        self.specs["x"] = [tf.TensorSpec(None, tf.float32, name="x")]
        self.reference_size = len(reference.x)
        self.lengthscale = (serving_lengthscale(reference, model) if lengthscale is None
                            else float(lengthscale))
        if not (math.isfinite(self.lengthscale) and self.lengthscale > 0):
            raise ExportError(f"the serving lengthscale must be > 0, got {self.lengthscale}")
        ref_x = np.asarray(reference.x, np.float32)
        ref_z = np.asarray(reference.z_mean, np.float32)
        # The grid index (plain-graph only: its loop has data-dependent shapes). The
        # reference set is stored sorted by cell; the exact kernel does not depend on order.
        self.index = GridIndex(ref_x, self.lengthscale) if indexed and not jit_compile else None
        if self.index is not None and not self.index.usable:
            self.index = None
        if self.index is not None:
            # The index's scalars (origin, cell, radii) are constants of the graph and in
            # npvae_export.json; its cell offsets are a variable beside the reference set.
            self.index_cell_start = tf.Variable(self.index.cell_start, trainable=False,
                                                name="index_cell_start")
        x_pad, z_pad = _pad_reference(ref_x, ref_z, self.chunk_size,
                                      None if self.index is None else self.index.order)
        self.reference_x = tf.Variable(x_pad, trainable=False, name="reference_x")
        self.reference_z_mean = tf.Variable(z_pad, trainable=False, name="reference_z_mean")
        del x_pad, z_pad  # the variables hold them (2 GB each of E[z] at M = 1,000,000)
        if density is None:
            density = XDensity.fit(reference.x, 0)
        if density.means.shape[1:] != (self.x_dim,):
            raise ExportError(f"the density over X has means {density.means.shape}, the model "
                              f"x_dim {self.x_dim}")
        self.density = mixture_parameters(density)
        self.x_density = {name: tf.Variable(value, trainable=False, name=f"x_density_{name}")
                          for name, value in self.density.items()}
        core = (tf.function(self._kernel_mean, jit_compile=True, autograph=False)
                if jit_compile else self._kernel_mean)
        object.__setattr__(self, "_core", core)  # a helper, not a saved endpoint
        self.generate_from_x = _function(self._generate_from_x, self.specs["x"])
        self.sample = _function(self._sample_mixture, self.specs["sample"])
        if placement is None and reference.images is not None:
            placement = (reference.images, reference.images_scale)
        self.placement_size = 0
        if placement is not None:
            self._store_placement(*placement, ref_x)
            self.place = _function(self._place, self.specs["images"])
        self.reconstruct_through_x = _function(self._reconstruct_through_x,
                                               self.specs["images"])

    def _store_placement(self, images, scale: float, ref_x: np.ndarray) -> None:
        images = np.asarray(images).reshape(len(images), -1)
        if images.shape != (self.reference_size, self.image_dim):
            raise ExportError(f"{images.shape[0]} placement images of {images.shape[1]} values "
                              f"for {self.reference_size} reference points of "
                              f"{self.image_dim} values")
        self.placement_size, self.placement_scale = len(images), float(scale)
        self.placement_images = tf.Variable(images, trainable=False, name="placement_images")
        self.placement_norms = tf.Variable(squared_norms(images, scale), trainable=False,
                                           name="placement_norms")
        # Unpadded, in the reference set's own order (the kernel's copy is sorted by cell).
        self.placement_x = tf.Variable(ref_x, trainable=False, name="placement_x")

    def _check_reference(self, reference: ReferenceSet) -> None:
        m = self._model
        x, z = np.shape(reference.x), np.shape(reference.z_mean)
        if len(x) != 2 or len(z) != 2 or x[0] != z[0] or x[0] < 1:
            raise ExportError(f"reference set x {x} and z_mean {z} do not match")
        if x[1] != m.x_dim or z[1] != m.z_dim:
            raise ExportError(f"reference set x {x} / z_mean {z} does not fit the model "
                              f"(x_dim {m.x_dim}, z_dim {m.z_dim})")
        if not (np.all(np.isfinite(reference.x)) and np.all(np.isfinite(reference.z_mean))):
            raise ExportError("reference set holds NaN or Inf values")

    @property
    def signature_names(self):
        if not self.has_x:
            return SIGNATURES_VAE
        return SIGNATURES_NPVAE + (("place",) if self.placement_size else ())

    @property
    def placement_rule(self) -> Optional[str]:
        """How new examples are placed in X (None for a VAE)."""
        if not self.has_x:
            return None
        return "neighbours" if self.placement_size else "encoder"

    def archive(self):
        """A ``keras.export.ExportArchive`` with one endpoint per signature.

        ``reconstruct`` comes first: ExportArchive also serves the first endpoint as
        ``serving_default``. The reference set and the density over X are saved as variable
        collections (``reference_x`` / ``reference_z_mean``: padded, see
        :func:`_pad_reference`; ``x_density``), readable after ``tf.saved_model.load``.
        """
        from npvae_tf.core.backend import keras

        archive = keras.export.ExportArchive()
        archive.track(self._model)
        endpoints = [("reconstruct", self._reconstruct, "images"),
                     ("encode", self._encode, "images"), ("decode", self._decode, "z")]
        if self.has_x:
            endpoints += [("generate_from_x", self._generate_from_x, "x"),
                          ("sample", self._sample_mixture, "sample"),
                          ("reconstruct_through_x", self._reconstruct_through_x, "images")]
            if self.placement_size:
                endpoints.append(("place", self._place, "images"))
        else:
            endpoints.append(("sample", self._sample_prior, "sample"))
        for name, fn, spec in endpoints:
            archive.add_endpoint(name, fn, self.specs[spec])
        if self.has_x:
            archive.add_variable_collection("reference_x", [self.reference_x])
            archive.add_variable_collection("reference_z_mean", [self.reference_z_mean])
            if self.index is not None:
                archive.add_variable_collection("grid_index", [self.index_cell_start])
            archive.add_variable_collection(
                "x_density", [self.x_density[k] for k in ("weights", "means", "scale_tril")])
            if self.placement_size:
                archive.add_variable_collection(
                    "placement", [self.placement_images, self.placement_norms, self.placement_x])
        return archive

    # Clients' units <-> the model's (the data's scaling, see the constructor).
    def _model_values(self, images):
        images = checked_images(images, self.image_shape, self.likelihood != "gaussian")
        if self.scaling is None:
            return images
        return (images - self.scaling.offset) / self.scaling.scale

    def _client_values(self, means):
        if self.scaling is None:
            return means
        return means * self.scaling.scale + self.scaling.offset

    # The model's own maths: approx_posterior, decode, embed, kernel.predictive_mean.
    def _reconstruct(self, images):
        z_mean = self._model.approx_posterior(self._model_values(images)).mean()
        return {"images": self._client_values(self._model.decode(z_mean))}

    def _encode(self, images):
        images = self._model_values(images)
        q = self._model.approx_posterior(images)
        out = {"z_mean": q.mean(), "z_stddev": q.stddev()}
        if self.has_x:
            out["x"] = self._model.embed(images)
        if self.has_x and self.placement_size:
            out["x_placed"] = self._placed(images)
        return out

    def _decode(self, z):
        z = checked_matrix(z, self.z_dim, "z", f"{self.z_dim} latent dimensions")
        return {"images": self._client_values(self._model.decode(z))}

    def _sample_prior(self, count, seed):
        count, seed = checked_count(count), checked_seed(seed)
        z = tf.random.stateless_normal([count, self.z_dim], seed=tf.stack([seed, 0]),
                                       alg=RNG_ALG)
        return {"images": self._client_values(self._model.decode(z)), "z": z}

    def _kernel_mean(self, x):
        if self.index is not None:
            return indexed_predictive_mean(
                self._model.kernel, x, self.reference_x, self.reference_z_mean, self.index,
                self.index_cell_start, chunk_size=self.chunk_size)
        return self._model.kernel.predictive_mean(x, self.reference_x, self.reference_z_mean,
                                                  self.chunk_size, lengthscale=self.lengthscale)

    def _predictive_mean(self, x):
        """``z~(x)`` ``[N, Z]`` in blocks of QUERY_BLOCK queries; the rest padded to a bucket."""
        n = tf.shape(x)[0]
        full = n // QUERY_BLOCK * QUERY_BLOCK
        blocks = tf.reshape(x[:full], [-1, QUERY_BLOCK, self.x_dim])
        # One block at a time: each kernel call already uses every core, and memory stays
        # O(QUERY_BLOCK * (chunk + Z)).
        head = tf.map_fn(self._core, blocks, parallel_iterations=1,
                         fn_output_signature=tf.TensorSpec([QUERY_BLOCK, self.z_dim], tf.float32))
        rest = n - full

        def tail():
            size = rest
            if self.jit_compile:
                buckets = tf.constant(QUERY_BUCKETS, tf.int32)
                size = tf.gather(buckets, tf.searchsorted(buckets, rest[None])[0])
            padded = tf.pad(x[full:], [[0, size - rest], [0, 0]])  # zeros: finite queries
            return self._core(padded)[:rest]

        tail_z = tf.cond(rest > 0, tail, lambda: tf.zeros([0, self.z_dim]))
        return tf.concat([tf.reshape(head, [-1, self.z_dim]), tail_z], axis=0)

    def _generate_from_x(self, x):
        x = checked_matrix(x, self.x_dim, "x", f"{self.x_dim} coordinates of X")
        z = self._predictive_mean(x)
        return {"images": self._client_values(self._model.decode(z)), "z": z}

    def _sample_mixture(self, count, seed):
        x = mixture_sample(**self.x_density, count=checked_count(count),
                           seed=checked_seed(seed))
        z = self._predictive_mean(x)
        return {"images": self._client_values(self._model.decode(z)), "z": z, "x": x}

    def _placed(self, images):
        """``[N, D]``: model-unit ``images`` placed from their nearest training examples, in
        blocks of QUERY_BLOCK queries (memory ``O(QUERY_BLOCK * PLACEMENT_BLOCK)``)."""
        def one_block(block):
            return neighbour_placement(block, self.placement_images, self.placement_norms,
                                       self.placement_x, PLACEMENT_NEIGHBOURS,
                                       self.placement_scale)

        n = tf.shape(images)[0]
        full = n // QUERY_BLOCK * QUERY_BLOCK
        head = tf.map_fn(one_block, tf.reshape(images[:full], [-1, QUERY_BLOCK, self.image_dim]),
                         parallel_iterations=1,
                         fn_output_signature=tf.TensorSpec([QUERY_BLOCK, self.x_dim], tf.float32))
        tail = one_block(images[full:])
        return tf.concat([tf.reshape(head, [-1, self.x_dim]), tail], axis=0)

    def _place(self, images):
        return {"x": self._placed(self._model_values(images))}

    def _reconstruct_through_x(self, images):
        images = self._model_values(images)
        x = self._placed(images) if self.placement_size else self._model.embed(images)
        z = self._predictive_mean(x)
        likelihood = self._model.x_path_likelihood(z)
        return {"images": self._client_values(likelihood.mean()),
                "log_prob": likelihood.log_prob(images) - (
                    0.0 if self.scaling is None else self.scaling.log_det(self.image_dim)),
                "x": x,
                "z": z}

    def info(self) -> dict:
        """What the export holds, written to ``assets.extra/npvae_export.json``."""
        info = {"model": "npvae" if self.has_x else "vae", "image_dim": self.image_dim,
                "image_shape": list(self.image_shape),
                "likelihood": self.likelihood,
                "scaling": None if self.scaling is None else self.scaling.to_dict(),
                "z_dim": self.z_dim, "signatures": list(self.signature_names),
                "max_sample_count": MAX_SAMPLE_COUNT, "rng_alg": RNG_ALG,
                "tensorflow": tf.__version__, "jit_compile": self.jit_compile}
        if self.has_x:
            info.update(
                x_dim=self.x_dim, reference_size=self.reference_size,
                lengthscale=self.lengthscale,
                learned_lengthscale=float(self._model.kernel.lengthscale.numpy()),
                chunk_size=self.chunk_size,
                grid_index=None if self.index is None else {
                    "rows": self.index.n_rows, "cols": self.index.n_cols,
                    "cell": self.index.cell, "radius": self.index.radius,
                    "far_radius": self.index.far_radius, "tolerance": self.index.tolerance},
                query_buckets=list(QUERY_BUCKETS) if self.jit_compile else None,
                placement=self.placement_rule,
                placement_neighbours=PLACEMENT_NEIGHBOURS if self.placement_size else None,
                placement_storage=(str(self.placement_images.dtype.name)
                                   if self.placement_size else None),
                decoders={"generate_from_x": "the VAE's decoder",
                          "sample": "the VAE's decoder",
                          "reconstruct_through_x": (
                              "the X path's own decoder"
                              if self._model.x_path_decoder_net is not None
                              else "the VAE's decoder")},
                x_density={"kind": "gaussian_mixture",
                           **{name: value.tolist() for name, value in self.density.items()}})
        return info


def mixture_sample(weights, means, scale_tril, count, seed) -> tf.Tensor:
    """``count`` draws ``[count, D]`` from the mixture of :func:`mixture_parameters`, stateless.

    ``c`` by inverting the weights' CDF at ``u ~ U(0, 1)`` drawn with the stateless seed
    ``[seed, 0]``, then ``x = mu_c + L_c eps``, ``eps ~ N(0, I_D)`` with ``[seed, 1]``; both
    with the Philox algorithm named (:data:`RNG_ALG`), so the same (count, seed) gives the
    same x on every device. ``seed``: int64 scalar.
    """
    weights, means, scale_tril = (tf.convert_to_tensor(a, tf.float32)
                                  for a in (weights, means, scale_tril))
    seed = tf.cast(seed, tf.int64)
    u = tf.random.stateless_uniform([count], seed=tf.stack([seed, 0]), alg=RNG_ALG)
    cdf = tf.cumsum(weights) / tf.reduce_sum(weights)
    component = tf.minimum(tf.searchsorted(cdf, u, side="right"), tf.size(weights) - 1)
    eps = tf.random.stateless_normal([count, tf.shape(means)[1]], seed=tf.stack([seed, 1]),
                                     alg=RNG_ALG)
    offset = tf.linalg.matvec(tf.gather(scale_tril, component), eps)
    return tf.gather(means, component) + offset
