"""bench_train.py's FLOP accounting and measuring instruments: the matmul peak of this machine, the model's own
matmuls, a stream of cached batches and a runner of compiled training steps."""

from __future__ import annotations

import gc
import math
import time

import numpy as np

# --- FLOP accounting ------------------------------------------------------------------------

def dense_layers(config):
    """``(name, fan_in, fan_out, needs_input_grad)`` of every Dense layer of the model."""
    layers = []

    def mlp(name, d_in, d_out, input_grad):
        dims = [d_in, *config.hidden, d_out]
        for i in range(len(dims) - 1):
            layers.append((f"{name}/{i}", dims[i], dims[i + 1], input_grad or i > 0))

    mlp("encoder", config.image_dim, 2 * config.z_dim, False)
    mlp("decoder", config.z_dim, config.image_dim, True)
    if config.has_x:
        mlp("x_encoder", config.image_dim, config.x_dim, False)
    return layers


def matmuls(config):
    """Every matmul of one training step: ``(name, m, k, n, transpose_a, transpose_b)``.

    Shapes are those TensorFlow's MatMul gradient uses: forward ``x @ W``, weight gradient
    ``x^T @ dy`` (``transpose_a``), input gradient ``dy @ W^T`` (``transpose_b``).
    """
    b = config.batch_size
    out = []
    for name, d_in, d_out, input_grad in dense_layers(config):
        out.append((f"{name}/fwd", b, d_in, d_out, False, False))
        out.append((f"{name}/dW", d_in, b, d_out, True, False))
        if input_grad:
            out.append((f"{name}/dX", b, d_out, d_in, False, True))
    if config.has_x:
        z = config.z_dim
        out.append(("kernel/W@mu", b, b, z, False, False))
        out.append(("kernel/dW", b, z, b, False, True))
        out.append(("kernel/dmu", b, b, z, True, False))
    return out


def step_flops(config):
    """``(total, matmul)`` FLOPs of one training step (see the module docstring)."""
    mm = sum(2 * m * k * n for _, m, k, n, _, _ in matmuls(config))
    other = 0
    if config.has_x:
        other = 3 * (3 * config.batch_size ** 2 * config.x_dim)  # distances, fwd + 2x bwd
    return mm + other, mm


# --- matmul peak ----------------------------------------------------------------------------

class MatmulPeak:
    """Times one matmul shape as a chain of ``chain`` back-to-back products in one call.

    Every product is returned whole, so neither Grappler nor XLA can drop or shrink one
    (XLA would turn a slice of a product into a smaller product).
    """

    def __init__(self, m, k, n, transpose_a, transpose_b, xla, target_flops=2e8, max_chain=32):
        import tensorflow as tf

        self.flops = 2 * m * k * n
        self.chain = int(min(max_chain, max(4, math.ceil(target_flops / self.flops))))
        rng = np.random.default_rng(0)
        a_shape = (k, m) if transpose_a else (m, k)
        b_shape = (n, k) if transpose_b else (k, n)
        # Distinct left operands, so no two products are the same computation.
        self.a = [tf.constant(rng.standard_normal(a_shape, dtype=np.float32))
                  for _ in range(min(self.chain, 8))]
        self.b = tf.constant(rng.standard_normal(b_shape, dtype=np.float32))

        def chain_fn(a_list, b):
            outputs = []
            for i in range(self.chain):
                with tf.control_dependencies(outputs[-1:]):
                    outputs.append(tf.matmul(a_list[i % len(a_list)], b,
                                             transpose_a=transpose_a, transpose_b=transpose_b))
            return outputs

        self.fn = tf.function(chain_fn, jit_compile=xla)
        self.fn(self.a, self.b)  # trace / compile

    def seconds_per_matmul(self, min_seconds=0.03):
        """Fastest call of a short window (at least 3 calls), per product."""
        best, spent, calls = math.inf, 0.0, 0
        while calls < 3 or spent < min_seconds:
            t0 = time.perf_counter()
            self.fn(self.a, self.b)
            dt = time.perf_counter() - t0
            best, spent, calls = min(best, dt), spent + dt, calls + 1
        return best / self.chain


class ModelMatmuls:
    """Every matmul of one training step, alone: a chain of products at the step's shapes.

    Timed like the step (windows of the same number of calls, right after it), it is the
    fastest the step could run if it were nothing but its matmuls.
    """

    def __init__(self, config, xla):
        import tensorflow as tf

        rng = np.random.default_rng(1)
        self.operands = []
        self.flags = []
        for _, m, k, n, ta, tb in matmuls(config):
            a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
            b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
            self.operands.append((tf.constant(a), tf.constant(b)))
            self.flags.append((ta, tb))

        def chain_fn(operands):
            outputs = []
            for (a, b), (ta, tb) in zip(operands, self.flags):
                with tf.control_dependencies(outputs[-1:]):
                    outputs.append(tf.matmul(a, b, transpose_a=ta, transpose_b=tb))
            return outputs

        self.fn = tf.function(chain_fn, jit_compile=xla)
        self.fn(self.operands)

    def time_window(self, calls):
        """Mean seconds per call (one pass over all the step's matmuls)."""
        t0 = time.perf_counter()
        for _ in range(calls):
            self.fn(self.operands)
        return (time.perf_counter() - t0) / calls


# --- training steps -------------------------------------------------------------------------

class BatchStream:
    """The training pipeline and one shared iterator, renewed (untimed) before it runs out."""

    def __init__(self, images, batch_size, seed):
        from npvae_tf.data.pipeline import make_dataset

        self.dataset = make_dataset(images, batch_size, shuffle=True, seed=seed)
        self.steps_per_epoch = len(images) // batch_size
        self.epoch_start_seconds = []  # iter() + first batch: waits for the shuffle buffer
        self.iterator, self.left = None, 0

    def renew(self):
        # Dropping an iterator mid-epoch (as the benchmark does, unlike fit) can block for
        # seconds while its background threads stop: that is done, and collected, untimed.
        self.iterator = None
        gc.collect()
        t0 = time.perf_counter()
        self.iterator = iter(self.dataset)
        next(self.iterator)
        self.epoch_start_seconds.append(time.perf_counter() - t0)
        self.left = self.steps_per_epoch - 1

    def reserve(self, steps):
        """An iterator good for ``steps`` more batches."""
        if steps > self.steps_per_epoch - 1:
            raise ValueError(f"{steps} steps do not fit in an epoch of {self.steps_per_epoch}")
        if self.left < steps:
            self.renew()
        self.left -= steps
        return self.iterator

    def next_seconds(self, batches=50):
        """Pulling prefetched batches with nothing else running: the pipeline's own pace."""
        batches = min(batches, self.steps_per_epoch - 1)
        iterator = self.reserve(batches)
        time.sleep(0.2)  # let prefetch fill
        t0 = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        return (time.perf_counter() - t0) / batches


class StepRunner:
    """One compiled model, its Keras train function (what ``fit`` calls per batch) and parts.

    The parts, compiled with the same ``jit_compile`` setting, split the step for the
    breakdown: ``forward`` (the loss), ``gradients`` (loss and gradients, no optimizer) and,
    for the npVAE, ``kernel`` (the kernel's forward and backward alone at the step's shapes).
    """

    def __init__(self, config, jit, cached_batch):
        import keras
        import tensorflow as tf

        from npvae_tf.model.vae import build_model
        from npvae_tf.training.fit import make_optimizer

        keras.utils.set_random_seed(config.seed)
        self.config, self.jit = config, jit
        self.model = model = build_model(config)
        model.compile(optimizer=make_optimizer(config), jit_compile=jit)
        model.make_train_function()
        self.train_function = model.train_function
        # The same batch over and over from memory, with the training pipeline's element
        # spec ([None, P]): the very same compiled step runs, without the pipeline's work.
        self.cached = iter(tf.data.Dataset.from_tensors(cached_batch).unbatch()
                           .batch(config.batch_size).cache().repeat())
        self.compile_seconds = None

        def forward(y):
            return model.scaled_loss(model.loss_terms(y, training=True)["loss"])

        def gradients(y):
            with tf.GradientTape() as tape:
                loss = model.scaled_loss(model.loss_terms(y, training=True)["loss"])
            return loss, tape.gradient(loss, model.trainable_variables)

        forward = tf.function(forward, jit_compile=jit)
        gradients = tf.function(gradients, jit_compile=jit)
        self.parts = {"forward": lambda: forward(cached_batch),
                      "gradients": lambda: gradients(cached_batch)}
        if config.has_x:
            rng = np.random.default_rng(config.seed)
            x = tf.constant(rng.standard_normal((config.batch_size, config.x_dim), np.float32))
            z = tf.constant(rng.standard_normal((config.batch_size, config.z_dim), np.float32))
            kernel = model.kernel

            def kernel_step(x, z):
                with tf.GradientTape() as tape:
                    tape.watch([x, z])
                    loss = tf.reduce_mean(tf.reduce_sum(tf.square(z - kernel(x, z)), axis=-1))
                return loss, tape.gradient(loss, [x, z] + kernel.trainable_variables)

            kernel_step = tf.function(kernel_step, jit_compile=jit)
            self.parts["kernel"] = lambda: kernel_step(x, z)

    def warm_up(self, stream, steps):
        t0 = time.perf_counter()
        self._run(stream.reserve(1), 1)
        self._run(self.cached, 1)
        self.compile_seconds = time.perf_counter() - t0
        self._run(stream.reserve(steps), steps)
        self._run(self.cached, steps)
        for part in self.parts.values():
            for _ in range(2):
                part()

    def _run(self, source, steps):
        logs = None
        for _ in range(steps):
            logs = self.train_function(source)
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            raise RuntimeError(f"{self.name}: loss is {loss}")
        return loss

    def time_window(self, source, steps):
        """Mean seconds per training step over ``steps`` consecutive steps."""
        t0 = time.perf_counter()
        self._run(source, steps)
        return (time.perf_counter() - t0) / steps

    def time_part(self, name, calls):
        part = self.parts[name]
        t0 = time.perf_counter()
        for _ in range(calls):
            part()
        return (time.perf_counter() - t0) / calls

    @property
    def name(self):
        return config_name(self.config.model, self.config.z_dim, self.jit)


def first_batch_timer():
    """A Keras callback; ``.seconds``: from the start of the epoch to the end of its first step."""
    import keras

    class FirstBatchTimer(keras.callbacks.Callback):
        seconds = None

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                self.seconds = time.perf_counter() - self.started

    return FirstBatchTimer()


def config_name(model, z_dim, jit):
    return f"{model} z{z_dim} jit={'on' if jit else 'off'}"
