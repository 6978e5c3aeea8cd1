"""Normalizing flows: planar flows and inverse autoregressive flows.

Two families are provided, both as TensorFlow Probability bijectors built from
plain tensors, plus the Keras 3 layers that produce those tensors.

Planar flows (Rezende & Mohamed, 2015, Sec. 4.1 and Appendix A.1)
    ``f(z) = z + u_hat * tanh(w^T z + b)``, one bijector per layer
    (:class:`PlanarFlow`), a stack of ``K`` of them as one bijector that loops
    over the layers in a single ``tf.while_loop`` (:class:`PlanarFlowStack`,
    returned by :func:`planar_flow_chain`; graph size independent of ``K``),
    and a layer that owns or predicts their parameters
    (:class:`PlanarFlowParameters`). The AS-VAE paper (Pu et al., 2017) uses
    stacks of length 80 both for ``q(z|x)`` and for ``p(x|z)`` on MNIST.

Inverse autoregressive flows (Kingma et al., 2016)
    built from masked autoregressive MLPs (:class:`MADE`, Germain et al., 2015)
    by :func:`iaf_bijector`.

Conventions
    * Keras layers return tensors only; bijectors are built from those tensors by
      plain functions, so the layers stay serialisable and the bijectors stay
      cheap, throw-away objects rebuilt at every call.
    * Every log-det-Jacobian is summed over the event (last) axis.

References
    [1] D. J. Rezende, S. Mohamed. Variational Inference with Normalizing Flows.
        ICML 2015. Eq. (10)-(12); Appendix A.1 (invertibility of planar flows).
    [2] D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever,
        M. Welling. Improved Variational Inference with Inverse Autoregressive
        Flow. NIPS 2016.
    [3] M. Germain, K. Gregor, I. Murray, H. Larochelle. MADE: Masked
        Autoencoder for Distribution Estimation. ICML 2015.
    [4] G. Papamakarios, T. Pavlakou, I. Murray. Masked Autoregressive Flow for
        Density Estimation. NIPS 2017.
    [5] W. H. Press et al. Numerical Recipes, 3rd ed., Sec. 9.4 ("rtsafe":
        Newton-Raphson safeguarded by bisection).
    [6] Y. Pu et al. Adversarial Symmetric Variational Autoencoder. NIPS 2017.
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow.python.ops import control_flow_util  # XLA-context test (no public API)
from tensorflow_probability.python.internal import cache_util

tfb = tfp.bijectors

__all__ = [
    "PlanarFlow",
    "PlanarFlowStack",
    "planar_flow_chain",
    "PlanarFlowParameters",
    "MADE",
    "made_masks",
    "iaf_bijector",
]

# softplus^{-1}(1) = log(e - 1): the value of w^T u for which the constrained
# w^T u_hat = m(w^T u) = -1 + softplus(w^T u) is exactly zero.
_INV_SOFTPLUS_ONE = math.log(math.e - 1.0)


def _is_positive_int(value):
    return (
        isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        and value > 0
    )


def _float_dtype(*values):
    """The dtype of the first value that has a floating dtype, else float32.

    (``tf.convert_to_tensor(numpy_float64, dtype_hint=tf.float32)`` returns
    float32 in TF 2.20, so the dtype is resolved explicitly.)
    """
    for value in values:
        dtype = getattr(value, "dtype", None)
        if dtype is None:
            continue
        dtype = tf.as_dtype(dtype)
        if dtype.is_floating:
            return dtype
    return tf.float32


def _dot(a, b):
    """Inner product over the last axis, with broadcasting of the others."""
    return tf.reduce_sum(a * b, axis=-1)


def _sech2(s):
    """``1 - tanh(s)^2`` without cancellation: ``4 e^{-2|s|} / (1 + e^{-2|s|})^2``."""
    e = tf.exp(-2.0 * tf.abs(s))
    return 4.0 * e / tf.square(1.0 + e)


# ---------------------------------------------------------------------------
# Planar flow
# ---------------------------------------------------------------------------


def _planar_parameters(u, w, b, inverse_iterations, stacked):
    """Validates and converts the parameters of one planar layer (``stacked=False``:
    u, w [..., D], b [...]) or of K stacked layers (``stacked=True``: u, w [K, ..., D],
    b [K, ...], K static).  Returns (dtype, u, w, b, batch shape of the parameters)."""
    if not _is_positive_int(inverse_iterations):
        raise ValueError(
            "`inverse_iterations` must be a positive integer. "
            f"Received: inverse_iterations={inverse_iterations!r}"
        )
    dtype = _float_dtype(u, w, b)
    u = tf.convert_to_tensor(u, dtype=dtype, name="u")
    w = tf.convert_to_tensor(w, dtype=dtype, name="w")
    b = tf.convert_to_tensor(b, dtype=dtype, name="b")
    lead = 1 if stacked else 0
    k = "K, " if stacked else ""
    if stacked:
        if u.shape.rank is None or u.shape.rank < 2:
            raise ValueError(f"`u` must have shape [K, ..., D]. Received: u.shape={u.shape}")
        length = u.shape[0]
        if length is None or length < 1:
            raise ValueError(
                "The flow length K (leading axis of `u`) must be static and "
                f"positive. Received: u.shape={u.shape}"
            )
        if w.shape.rank is None or w.shape.rank < 2 or w.shape[0] != length:
            raise ValueError(
                f"`w` must have shape [K={length}, ..., D]. Received: w.shape={w.shape}")
        if b.shape.rank is None or b.shape.rank < 1 or b.shape[0] != length:
            raise ValueError(
                f"`b` must have shape [K={length}, ...]. Received: b.shape={b.shape}")
    elif u.shape.rank == 0 or w.shape.rank == 0:
        raise ValueError(
            "`u` and `w` must have shape [..., D]. Received: "
            f"u.shape={u.shape}, w.shape={w.shape}"
        )
    if not u.shape[-1:].is_compatible_with(w.shape[-1:]):
        raise ValueError(
            "`u` and `w` must have the same event size D. Received: "
            f"u.shape={u.shape}, w.shape={w.shape}"
        )
    try:
        batch_shape = tf.broadcast_static_shape(
            tf.broadcast_static_shape(u.shape[lead:-1], w.shape[lead:-1]), b.shape[lead:]
        )
    except ValueError as err:
        raise ValueError(
            f"The batch shapes of `u` [{k}..., D], `w` [{k}..., D] and `b` [{k}...] must "
            f"broadcast. Received: u.shape={u.shape}, w.shape={w.shape}, b.shape={b.shape}"
        ) from err
    return dtype, u, w, b, batch_shape


class PlanarFlow(tfb.Bijector):
    r"""Planar flow ``f(z) = z + u_hat h(w^T z + b)`` with ``h = tanh`` [1].

    Forward map and log-det-Jacobian ([1], eq. 10-12)::

        f(z)               = z + u_hat * tanh(w^T z + b)
        psi(z)             = (1 - tanh^2(w^T z + b)) w
        log|det df/dz|     = log|1 + u_hat^T psi(z)|
                           = log(1 + (w^T u_hat) sech^2(w^T z + b)).

    Invertibility ([1], Appendix A.1). ``f`` is invertible iff
    ``w^T u_hat >= -1``. The unconstrained ``u`` is mapped to::

        u_hat = u + (m(w^T u) - w^T u) w / ||w||^2,    m(a) = -1 + softplus(a),

    so that ``w^T u_hat = m(w^T u) > -1``. Writing ``c = w^T u_hat``, the
    determinant is evaluated as ``tanh^2(s) + sech^2(s) (1 + c)`` with
    ``1 + c = softplus(w^T u)`` computed directly, which stays positive (no
    cancellation) even when ``w^T u`` is very negative and ``c`` rounds to -1.
    If ``w == 0`` exactly, the flow is the translation ``z + u tanh(b)``
    (``u_hat = u``, determinant 1).

    Inverse. Given ``y = f(z)``, write ``alpha = w^T z``. Taking the inner
    product of ``y = z + u_hat tanh(alpha + b)`` with ``w`` gives the scalar
    equation::

        g(alpha) = alpha + c tanh(alpha + b) - w^T y = 0,
        g'(alpha) = 1 + c sech^2(alpha + b) = tanh^2 + (1 + c) sech^2 > 0,

    whose unique root lies in the bracket ``[w^T y - |c|, w^T y + |c|]``
    (because ``|tanh| <= 1``). It is solved by Newton's method safeguarded by
    bisection [5] (a Newton step that leaves the current bracket, or that does
    not at least halve the step before last, is replaced by a bisection), for at
    most ``inverse_iterations`` iterations of a ``tf.while_loop``; elements that
    have converged are frozen, so a result does not depend on the rest of the
    batch, and the loop exits early once all have converged. The loop runs on
    ``tf.stop_gradient``-ed inputs and is followed by ONE differentiable Newton
    step at the converged ``alpha_0`` whose derivative ``g'`` is held constant::

        alpha = alpha_0 - g(alpha_0; y, u, w, b) / stop_gradient(g'(alpha_0)).

    Its gradient is exactly the implicit-function-theorem gradient
    ``d alpha / d theta = -(dg/d theta) / g'``. The value of the step is kept
    only where it stays inside the final bracket; elsewhere (only in the
    ill-conditioned case ``g' ~ 0``, i.e. ``w^T u`` very negative and
    ``alpha ~ -b``) the residual's value is dropped and only its gradient kept.
    Finally ``z = y - u_hat tanh(alpha + b)``.

    Numerics of the inverse. Elements stop once the residual of ``g`` is at
    its rounding level, so ``forward(inverse(y))`` reproduces ``y`` to a few
    ulps. Measured iteration counts (batches of 2000, float64): 2-6 for the
    near-identity and moderate parameters, ~11 for ``w^T u = 40``, ~35 for
    ``w^T u = -50`` with points exactly on the hyperplane ``w^T z + b = 0``
    (there ``g`` behaves like a cubic and ``z`` itself is only determined to
    ``~eps^(1/3) |u_hat|``: the information is lost in ``forward``, not in the
    solver). The default cap of 64 iterations is not reached in these cases;
    when it is, the last iterate is used (finite, inside the bracket).

    Shapes. ``u`` and ``w`` have shape ``[..., D]`` and ``b`` has shape
    ``[...]``; these batch dimensions broadcast against the batch dimensions
    of ``z`` (``[..., D]``), so per-example (amortized) parameters of shape
    ``[B, D]`` apply to ``z`` of shape ``[B, D]`` or ``[S, B, D]``.

    Args:
      u: float tensor ``[..., D]``, unconstrained ``u`` (constrained inside).
      w: float tensor ``[..., D]``.
      b: float tensor ``[...]``.
      inverse_iterations: maximum number of safeguarded Newton iterations of
        the inverse; a positive Python int.
      validate_args: passed to ``tfb.Bijector``.
      name: name scope.
    """

    def __init__(
        self,
        u,
        w,
        b,
        inverse_iterations=64,
        validate_args=False,
        name="planar_flow",
    ):
        parameters = dict(locals())
        with tf.name_scope(name) as scope_name:
            dtype, u, w, b, _ = _planar_parameters(u, w, b, inverse_iterations, stacked=False)
            self._u = u
            self._w = w
            self._b = b
            self._inverse_iterations = int(inverse_iterations)
            super().__init__(
                forward_min_event_ndims=1,
                validate_args=validate_args,
                dtype=dtype,
                parameters=parameters,
                name=scope_name,
            )

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict(
            u=tfp.util.ParameterProperties(event_ndims=1),
            w=tfp.util.ParameterProperties(event_ndims=1),
            b=tfp.util.ParameterProperties(event_ndims=0),
        )

    @property
    def u(self):
        """The unconstrained ``u``, shape ``[..., D]``."""
        return self._u

    @property
    def w(self):
        return self._w

    @property
    def b(self):
        return self._b

    @property
    def inverse_iterations(self):
        return self._inverse_iterations

    def constrained_u(self):
        """Returns ``u_hat``, shape ``[..., D]``, with ``w^T u_hat > -1``."""
        return self._constrained()[0]

    # -- internals ----------------------------------------------------------

    def _constrained(self):
        """Returns ``(u_hat, c, 1 + c)`` with ``c = w^T u_hat = m(w^T u)``."""
        return _planar_constrained(self._u, self._w)

    def _forward(self, x):
        u_hat, _, _ = self._constrained()
        return _planar_forward(x, u_hat, self._w, self._b)[0]

    def _forward_log_det_jacobian(self, x):
        _, _, one_plus_c = self._constrained()
        return _planar_log_det(_planar_preactivation(x, self._w, self._b), one_plus_c)

    def _inverse(self, y):
        u_hat, c, one_plus_c = self._constrained()
        return _planar_inverse(
            y, u_hat, c, one_plus_c, self._w, self._b, self._inverse_iterations
        )

    def _inverse_log_det_jacobian(self, y):
        # -log|det df/dz| at z = f^{-1}(y); `self.inverse` reuses the bijector
        # cache, so the root is not solved twice inside TransformedDistribution.
        x = self.inverse(y)
        return -self._forward_log_det_jacobian(x)


# -- single-layer planar math, shared by PlanarFlow and PlanarFlowStack -------


def _planar_constrained(u, w):
    """Returns ``(u_hat, c, 1 + c)`` with ``c = w^T u_hat = m(w^T u)``.

    ``u``, ``w``: ``[..., D]`` (any leading axes, e.g. a layer axis ``K``).
    """
    wtu = _dot(w, u)
    wsq = _dot(w, w)
    nonzero = wsq > 0
    safe_wsq = tf.where(nonzero, wsq, tf.ones_like(wsq))
    one_plus_c = tf.where(nonzero, tf.nn.softplus(wtu), tf.ones_like(wtu))
    c = one_plus_c - 1.0
    u_hat = u + ((c - wtu) / safe_wsq)[..., tf.newaxis] * w
    return u_hat, c, one_plus_c


def _planar_preactivation(x, w, b):
    """``s = w^T x + b``."""
    return _dot(w, x) + b


def _planar_log_det(s, one_plus_c):
    """``log(1 + c sech^2(s))`` evaluated as ``log(tanh^2 s + (1 + c) sech^2 s)``."""
    # Both terms are >= 0: no cancellation when c -> -1.
    return tf.math.log(tf.square(tf.tanh(s)) + _sech2(s) * one_plus_c)


def _planar_forward(x, u_hat, w, b):
    """Returns ``(f(x), s)``: ``f(x) = x + u_hat tanh(s)``, ``s = w^T x + b``."""
    s = _planar_preactivation(x, w, b)
    return x + u_hat * tf.tanh(s)[..., tf.newaxis], s


def _planar_inverse(y, u_hat, c, one_plus_c, w, b, max_iterations):
    """``f^{-1}(y)`` of one planar layer (see :class:`PlanarFlow`, "Inverse").

    Safeguarded Newton solve of the scalar equation under ``stop_gradient``,
    then one differentiable Newton step giving the implicit-function gradient.
    """
    t = _dot(w, y)
    t, c, one_plus_c, b = _broadcast_all(t, c, one_plus_c, b)

    alpha0, lo, hi = _solve_planar_scalar(
        tf.stop_gradient(t),
        tf.stop_gradient(c),
        tf.stop_gradient(one_plus_c),
        tf.stop_gradient(b),
        max_iterations,
    )

    # One differentiable Newton step with g' held constant: its gradient is
    # the implicit-function-theorem gradient -(dg/dtheta) / g'.
    s0 = alpha0 + b
    th0 = tf.tanh(s0)
    residual = alpha0 + c * th0 - t
    slope = tf.stop_gradient(tf.square(th0) + _sech2(s0) * one_plus_c)
    slope = tf.maximum(slope, np.finfo(slope.dtype.as_numpy_dtype).tiny)
    candidate = tf.stop_gradient(alpha0 - residual / slope)
    keep_value = (candidate >= lo) & (candidate <= hi)
    residual = tf.where(keep_value, residual, residual - tf.stop_gradient(residual))
    alpha = alpha0 - residual / slope
    return y - u_hat * tf.tanh(alpha + b)[..., tf.newaxis]


def _hide_batch_shape(value):
    """``value`` with its leading (batch) dimensions unknown to graph optimisation.

    With a fully known batch shape, grappler's memory optimizer may rewrite gradient
    sums (AddN) of three or more terms in the differentiated flow loop into temporary
    variables, and two of them can collide within one step: ``AlreadyExistsError:
    Resource __per_step_0/.../inverse/while_grad/.../AddN/tmp_var`` (AS-VAE training at
    batch sizes >= 96; a known TensorFlow bug, tensorflow/tensorflow#23780, #37740).
    The rewrite needs known shapes, so hiding the batch dimensions avoids it.  At run
    time the op is an identity.  Under XLA (which needs static shapes and does not run
    that grappler pass) ``value`` is returned unchanged.
    """
    if tf.executing_eagerly() or control_flow_util.GraphOrParentsInXlaContext(
            tf.compat.v1.get_default_graph()):
        return value
    shape = tf.TensorShape([None] * (value.shape.rank - 1)).concatenate(value.shape[-1:])
    return tf.raw_ops.PlaceholderWithDefault(input=value, shape=shape)


def _broadcast_all(*tensors):
    """Broadcasts tensors to their common shape (statically when possible)."""
    static = tf.TensorShape([])
    for tensor in tensors:
        static = tf.broadcast_static_shape(static, tensor.shape)
    if static.is_fully_defined():
        return [
            tensor if tensor.shape == static else tf.broadcast_to(tensor, static)
            for tensor in tensors
        ]
    shape = tf.shape(tensors[0])
    for tensor in tensors[1:]:
        shape = tf.broadcast_dynamic_shape(shape, tf.shape(tensor))
    return [tf.broadcast_to(tensor, shape) for tensor in tensors]


@tf.autograph.experimental.do_not_convert
def _solve_planar_scalar(t, c, one_plus_c, b, max_iterations):
    """Solves ``alpha + c tanh(alpha + b) = t`` elementwise (``c > -1``).

    Newton-Raphson safeguarded by bisection ("rtsafe", [5]) on the bracket
    ``[t - |c|, t + |c|]``: the Newton step is taken when it lands strictly
    inside the current bracket and is at most half the step before last,
    otherwise the bracket is bisected. An element stops (is frozen) once its
    residual is at the rounding level ``4 eps (|alpha| + |c tanh| + |t|)``, or
    its Newton step or its bracket is below ``4 eps (1 + |alpha|)``; the loop
    stops when all have, or after ``max_iterations`` iterations.
    Returns ``(alpha, lo, hi)`` with the final bracket. All inputs must share
    one shape and carry no gradient.
    """
    np_dtype = t.dtype.as_numpy_dtype
    tol = 4.0 * np.finfo(np_dtype).eps
    tiny = np.finfo(np_dtype).tiny
    abs_c = tf.abs(c)
    lo = t - abs_c
    hi = t + abs_c
    # One fixed-point step from alpha = t; always inside the bracket.
    x = tf.clip_by_value(t - c * tf.tanh(t + b), lo, hi)
    dx = hi - lo
    done = tf.zeros_like(t, dtype=tf.bool)

    def body(i, x, lo, hi, dx, dx_old, done):
        th = tf.tanh(x + b)
        th2 = tf.square(th)
        c_th = c * th
        g = x + c_th - t
        # g' = tanh^2 + (1 + c) sech^2 > 0 (the cancellation in 1 - tanh^2 only
        # affects the Newton slope, never the bracket).
        dg = tf.maximum(th2 + (1.0 - th2) * one_plus_c, tiny)
        lo = tf.where(g <= 0, x, lo)
        hi = tf.where(g >= 0, x, hi)
        step = g / dg
        # x is kept once the residual is at its rounding level, ~ eps (|x| +
        # |c th| + |t|), or the Newton step is below the resolution of x.
        limit = tol * (1.0 + tf.abs(x))
        settled = (
            done
            | (tf.abs(g) <= tol * (tf.abs(x) + tf.abs(c_th) + tf.abs(t)))
            | (tf.abs(step) <= limit)
        )
        newton = x - step
        use_newton = (newton > lo) & (newton < hi) & (2.0 * tf.abs(step) <= tf.abs(dx_old))
        new_x = tf.where(use_newton, newton, lo + 0.5 * (hi - lo))
        new_x = tf.where(settled, x, new_x)
        new_dx = new_x - x
        converged = settled | (hi - lo <= limit) | tf.math.is_nan(g)
        return i + 1, new_x, lo, hi, new_dx, dx, done | converged

    def cond(i, x, lo, hi, dx, dx_old, done):
        return tf.logical_not(tf.reduce_all(done))

    _, x, lo, hi, _, _, _ = tf.while_loop(
        cond,
        body,
        (tf.constant(0), x, lo, hi, dx, dx, done),
        maximum_iterations=max_iterations,
    )
    return tf.stop_gradient(x), lo, hi


class PlanarFlowStack(tfb.Bijector):
    r"""``K`` planar flows in one bijector whose graph size does not depend on ``K``.

    The same map as ``tfb.Chain([PlanarFlow(u[K-1], ...), ..., PlanarFlow(u[0],
    ...)])`` (layer 0 applied first, [1] eq. 13)::

        z_{k+1} = f_k(z_k) = z_k + u_hat_k tanh(w_k^T z_k + b_k),
        log|det df/dz_0| = sum_k log(1 + (w_k^T u_hat_k) sech^2(w_k^T z_k + b_k)),

    with the single-layer math of :class:`PlanarFlow` (the same functions are
    called). The layers are visited by ONE ``tf.while_loop`` over ``k``
    (``maximum_iterations=K``, as XLA needs for the backward pass). Per-layer
    parameters are read from ``tf.TensorArray``\ s (as in ``tf.scan``; their
    gradient is written slice by slice), and each layer's pre-activation
    ``s_k = w_k^T z_k + b_k`` is recorded in one, so that all log-dets are
    evaluated in one vectorized op after the loop:

    * forward: ``k = 0..K-1``, giving ``z_K`` and the log-det in one pass;
    * inverse: ``k = K-1..0``, each layer's scalar root solved as in
      :class:`PlanarFlow` (safeguarded Newton under ``stop_gradient``, then one
      differentiable Newton step that carries the implicit-function gradient);
      the log-det is that of the forward map at the recovered ``z_k``, from the
      same pass.

    A Python-unrolled chain of ``K = 80`` layers, each with its own root-solver
    loop, is a graph of ~8,300 nodes whose differentiation dominates the
    compile time of a training step; this bijector's graph is the size of one
    layer. Gradients flow through the loop to ``u``, ``w``, ``b`` and the input
    (``tf.while_loop`` keeps the per-iteration values the backward pass needs);
    it works eagerly, under ``tf.function`` and under ``jit_compile=True``.

    Caching. Forward and inverse each compute the log-det of the pair in the
    same loop and store it in TFP's bijector cache with the ``(x, y)`` pair, so
    ``forward_log_det_jacobian(x)`` after ``forward(x)``, and
    ``inverse_log_det_jacobian(y)`` after ``inverse(y)`` (as in
    ``TransformedDistribution.log_prob``), run no further loop; the roots are
    solved once.

    Shapes. ``u``, ``w``: ``[K, ..., D]``; ``b``: ``[K, ...]`` with ``K``
    static. The parameter batch shapes ``...`` broadcast with each other and
    with the batch shape of the input ``[..., D]`` (shared ``[K, D]`` or
    per-example ``[K, B, D]`` parameters). The batch shape of the bijector is
    the broadcast of the parameters' ``...``.

    Args:
      u: float tensor ``[K, ..., D]``, unconstrained ``u`` of every layer.
      w: float tensor ``[K, ..., D]``.
      b: float tensor ``[K, ...]``.
      inverse_iterations: maximum number of safeguarded Newton iterations per
        layer of the inverse; a positive Python int.
      validate_args: passed to ``tfb.Bijector``.
      name: name scope.
    """

    # forward/inverse return their log-det as a cache attribute (as in
    # tfb.FFJORD), so the LDJ methods find it next to the cached (x, y) pair.
    _cache = cache_util.BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse"
    )

    def __init__(
        self,
        u,
        w,
        b,
        inverse_iterations=64,
        validate_args=False,
        name="planar_flow_stack",
    ):
        parameters = dict(locals())
        with tf.name_scope(name) as scope_name:
            dtype, u, w, b, batch_shape = _planar_parameters(u, w, b, inverse_iterations,
                                                             stacked=True)
            self._u = u
            self._w = w
            self._b = b
            self._length = int(u.shape[0])
            self._param_batch_shape = batch_shape
            self._inverse_iterations = int(inverse_iterations)
            super().__init__(
                forward_min_event_ndims=1,
                validate_args=validate_args,
                dtype=dtype,
                parameters=parameters,
                name=scope_name,
            )

    @property
    def u(self):
        """The unconstrained ``u`` of every layer, shape ``[K, ..., D]``."""
        return self._u

    @property
    def w(self):
        return self._w

    @property
    def b(self):
        return self._b

    @property
    def length(self):
        """The number of layers ``K``."""
        return self._length

    @property
    def inverse_iterations(self):
        return self._inverse_iterations

    def constrained_u(self):
        """Returns ``u_hat`` of every layer, shape ``[K, ..., D]``."""
        return _planar_constrained(self._u, self._w)[0]

    def unrolled(self):
        """The same flow as a ``tfb.Chain`` of ``K`` :class:`PlanarFlow`.

        Its graph grows with ``K``; meant for tests and inspection.
        """
        flows = [
            PlanarFlow(
                self._u[k],
                self._w[k],
                self._b[k],
                inverse_iterations=self._inverse_iterations,
                validate_args=self.validate_args,
                name=f"planar_flow_{k}",
            )
            for k in range(self._length)
        ]
        # tfb.Chain applies its list right to left.
        return tfb.Chain(flows[::-1], validate_args=self.validate_args, name=self.name)

    # -- batch shape ------------------------------------------------------------
    # The layer axis K leads the parameters, so TFP's inference from trailing
    # parameter event ranks does not apply: the batch shape of every layer is
    # the broadcast of u[k], w[k] (rank-1 events) and b[k], and event ranks above
    # 1 absorb its trailing dimensions.

    def _batch_shape(self, x_event_ndims):
        shape = self._param_batch_shape
        extra = int(x_event_ndims) - 1
        return shape[: max(shape.rank - extra, 0)]

    def _batch_shape_tensor(self, x_event_ndims):
        shape = tf.broadcast_dynamic_shape(
            tf.broadcast_dynamic_shape(tf.shape(self._u)[1:-1], tf.shape(self._w)[1:-1]),
            tf.shape(self._b)[1:],
        )
        rank = self._param_batch_shape.rank
        return shape[: max(rank - (int(x_event_ndims) - 1), 0)]

    # -- the loop -----------------------------------------------------------

    def _full_shape(self, value):
        """Broadcasts an input ``[..., D]`` against the parameters' batch shape."""
        event = tf.TensorShape(value.shape[-1:])
        static = tf.broadcast_static_shape(
            value.shape, self._param_batch_shape.concatenate(event)
        )
        if static.is_fully_defined():
            return value if value.shape == static else tf.broadcast_to(value, static)
        param_shape = tf.concat(
            [self._batch_shape_tensor(1), tf.shape(value)[-1:]], axis=0
        )
        shape = tf.broadcast_dynamic_shape(tf.shape(value), param_shape)
        out = tf.broadcast_to(value, shape)
        out.set_shape(static)
        return out

    def _run(self, value, reverse):
        """One loop over the layers; returns ``(output, sum of log-dets)``.

        ``reverse=False``: forward from ``value = z_0``, log-dets at ``z_k``.
        ``reverse=True``: inverse from ``value = z_K``; the log-dets are those of
        the forward map at the recovered ``z_k`` (their sum is ``-ildj``).

        The loop carries ``z`` and records each layer's pre-activation
        ``s_k = w_k^T z_k + b_k`` in a ``TensorArray``; the log-dets of all
        layers are then evaluated in one vectorized op after the loop (fewer
        ops per iteration, forward and backward).
        """
        length = self._length
        iterations = self._inverse_iterations
        u_hat, c, one_plus_c = _planar_constrained(self._u, self._w)
        w, b = self._w, self._b
        value = _hide_batch_shape(self._full_shape(value))

        def unstack(tensor):
            array = tf.TensorArray(
                tensor.dtype,
                size=length,
                element_shape=tensor.shape[1:],
                clear_after_read=False,
            )
            return array.unstack(tensor)

        if reverse:
            arrays = [unstack(t) for t in (u_hat, c, one_plus_c, w, b)]
        else:
            arrays = [unstack(t) for t in (u_hat, w, b)]
        pre_activations = tf.TensorArray(
            value.dtype, size=length, element_shape=value.shape[:-1]
        )

        def body(i, z, pre_activations):
            if reverse:
                k = length - 1 - i
                u_hat_k, c_k, one_plus_c_k, w_k, b_k = [a.read(k) for a in arrays]
                z = _planar_inverse(z, u_hat_k, c_k, one_plus_c_k, w_k, b_k, iterations)
                s = _planar_preactivation(z, w_k, b_k)
            else:
                k = i
                u_hat_k, w_k, b_k = [a.read(k) for a in arrays]
                z, s = _planar_forward(z, u_hat_k, w_k, b_k)
            return i + 1, z, pre_activations.write(k, s)

        _, value, pre_activations = tf.while_loop(
            lambda i, z, pre_activations: i < length,
            body,
            (tf.constant(0), value, pre_activations),
            maximum_iterations=length,
        )
        s = pre_activations.stack()  # [K, *batch]
        # one_plus_c [K, *param_batch] -> [K, 1, ..., 1, *param_batch].
        missing = s.shape.rank - one_plus_c.shape.rank
        if missing > 0:
            new_shape = tf.concat(
                [tf.shape(one_plus_c)[:1], tf.ones([missing], tf.int32),
                 tf.shape(one_plus_c)[1:]],
                axis=0,
            )
            one_plus_c = tf.reshape(one_plus_c, new_shape)
        log_det = tf.reduce_sum(_planar_log_det(s, one_plus_c), axis=0)
        return value, log_det

    def _augmented_forward(self, x):
        y, log_det = self._run(x, reverse=False)
        return y, {"ildj": -log_det}

    def _augmented_inverse(self, y):
        x, log_det = self._run(y, reverse=True)
        return x, {"ildj": -log_det}

    def _forward(self, x):
        return self._augmented_forward(x)[0]

    def _inverse(self, y):
        return self._augmented_inverse(y)[0]

    def _forward_log_det_jacobian(self, x):
        # Only reached when the pair's log-det is not cached yet: forward(x)
        # computes it (and y) in one loop and caches both.
        attrs = self._cache.forward_attributes(x)
        if "ildj" not in attrs:
            self.forward(x)
        if "ildj" not in attrs:  # forward(x) was cached without attributes
            attrs.update(self._augmented_forward(x)[1])
        return -attrs["ildj"]

    def _inverse_log_det_jacobian(self, y):
        attrs = self._cache.inverse_attributes(y)
        if "ildj" not in attrs:
            self.inverse(y)
        if "ildj" not in attrs:
            attrs.update(self._augmented_inverse(y)[1])
        return attrs["ildj"]


@tf.autograph.experimental.do_not_convert
def planar_flow_chain(
    u,
    w,
    b,
    inverse_iterations=64,
    validate_args=False,
    name="planar_flow_chain",
    unrolled=False,
):
    """Stack of ``K`` planar flows, layer 0 applied first.

    ``f = f_{K-1} o ... o f_1 o f_0`` with ``f_k = PlanarFlow(u[k], w[k], b[k])``
    ([1], eq. 13): ``log q_K(z_K) = log q_0(z_0) - sum_k log|det df_k/dz_{k}|``.

    Args:
      u: ``[K, ..., D]`` (e.g. ``[K, D]`` shared, or ``[K, B, D]`` amortized).
      w: ``[K, ..., D]``.
      b: ``[K, ...]``.
      inverse_iterations, validate_args: passed to the bijector(s).
      name: name of the returned bijector.
      unrolled: if False (default), one :class:`PlanarFlowStack` (one
        ``tf.while_loop`` over the layers; graph size independent of ``K``).
        If True, the equivalent ``tfb.Chain`` of ``K`` :class:`PlanarFlow`
        (graph size linear in ``K``; for tests and inspection).

    Returns:
      A bijector with event rank 1, usable in ``tfd.TransformedDistribution``.
    """
    if not isinstance(unrolled, bool):
        raise ValueError(f"`unrolled` must be a bool. Received: unrolled={unrolled!r}")
    stack = PlanarFlowStack(
        u,
        w,
        b,
        inverse_iterations=inverse_iterations,
        validate_args=validate_args,
        name=name,
    )
    return stack.unrolled() if unrolled else stack


@keras.saving.register_keras_serializable(package="tf_asvae")
class PlanarFlowParameters(keras.layers.Layer):
    """Parameters ``(u, w, b)`` of a stack of ``length`` planar flows in ``dim``.

    Calling convention (the result feeds :func:`planar_flow_chain` directly)::

        u, w, b = params()           # non-amortized: [K, D], [K, D], [K]
        u, w, b = params(context)    # amortized: context [..., H] ->
                                     #   [K, ..., D], [K, ..., D], [K, ...]
        flow = planar_flow_chain(u, w, b)

    A non-amortized layer ignores a ``context`` passed to it (so model code can
    call both kinds the same way); the unbatched parameters broadcast against
    any batch of ``z``. An amortized layer requires ``context``.

    Parameterisation. The layer owns raw weights ``v`` [K, D], ``w`` [K, D],
    ``b`` [K]; amortized, each gets an additional linear function of the
    context (``w(h) = w + h W_w``, etc., kernels of shape ``[H, K*D]`` and
    ``[H, K]``). It returns::

        u = v + softplus^{-1}(1) * w / ||w||^2

    so that, after the invertibility constraint of :class:`PlanarFlow`,
    ``u_hat = v_perp + m(w^T v + softplus^{-1}(1)) w / ||w||^2`` with
    ``m(softplus^{-1}(1)) = 0``: ``v = 0`` is exactly the identity map and the
    per-layer deviation from the identity is of order ``||v|| ||w||``. (Without
    the offset, ``u = 0`` would give ``w^T u_hat = m(0) = -0.31``: a
    contraction, not the identity.)

    Initialisation. ``w`` from ``kernel_initializer`` (Glorot on ``[K, D]``
    gives ``||w|| ~ 1`` for the paper's sizes), ``b = 0``, ``v ~ N(0,
    (0.01 / sqrt(D))^2)`` so that ``||v|| ~ 0.01``: close to, but not exactly,
    the identity (exactly the identity would give ``w`` no gradient at
    the first step), and 80 layers move a point by ~1e-2 relative at most.
    Context kernels come from ``context_kernel_initializer`` (zeros by default:
    every example starts from the shared flow; the kernels still receive
    gradients).

    Args:
      length: number of flows ``K`` (positive int).
      dim: event size ``D`` (positive int).
      amortized: whether the parameters are a function of a context tensor.
      kernel_initializer: initializer of ``w``.
      context_kernel_initializer: initializer of the amortized context kernels.
      **kwargs: base layer arguments (``name``, ``dtype``, ``trainable``).
    """

    def __init__(
        self,
        length,
        dim,
        amortized=False,
        kernel_initializer="glorot_uniform",
        context_kernel_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not _is_positive_int(length):
            raise ValueError(
                f"`length` must be a positive integer. Received: length={length!r}"
            )
        if not _is_positive_int(dim):
            raise ValueError(f"`dim` must be a positive integer. Received: dim={dim!r}")
        if not isinstance(amortized, bool):
            raise ValueError(f"`amortized` must be a bool. Received: amortized={amortized!r}")
        self.length = int(length)
        self.dim = int(dim)
        self.amortized = amortized
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.context_kernel_initializer = keras.initializers.get(
            context_kernel_initializer
        )

    def build(self, context_shape=None):
        k, d = self.length, self.dim
        self.w = self.add_weight(
            shape=(k, d), initializer=self.kernel_initializer, name="w"
        )
        self.v = self.add_weight(
            shape=(k, d),
            initializer=keras.initializers.RandomNormal(stddev=0.01 / math.sqrt(d)),
            name="v",
        )
        self.b = self.add_weight(shape=(k,), initializer="zeros", name="b")
        if self.amortized:
            if context_shape is None or context_shape[-1] is None:
                raise ValueError(
                    "An amortized PlanarFlowParameters needs a context [..., H] "
                    f"with a known H. Received: context_shape={context_shape}"
                )
            h = int(context_shape[-1])
            self.context_kernel_v = self.add_weight(
                shape=(h, k * d),
                initializer=self.context_kernel_initializer,
                name="context_kernel_v",
            )
            self.context_kernel_w = self.add_weight(
                shape=(h, k * d),
                initializer=self.context_kernel_initializer,
                name="context_kernel_w",
            )
            self.context_kernel_b = self.add_weight(
                shape=(h, k),
                initializer=self.context_kernel_initializer,
                name="context_kernel_b",
            )

    def call(self, context=None):
        k, d = self.length, self.dim
        ops = keras.ops
        v = ops.convert_to_tensor(self.v)
        w = ops.convert_to_tensor(self.w)
        b = ops.convert_to_tensor(self.b)
        if self.amortized:
            if context is None:
                raise ValueError(
                    "This PlanarFlowParameters is amortized: call it on a context "
                    "tensor [..., H]. Received: context=None"
                )
            context = ops.convert_to_tensor(context, dtype=self.compute_dtype)
            batch = ops.shape(context)[:-1]

            def per_example(kernel, base, event):
                out = ops.matmul(context, kernel)
                out = ops.reshape(out, tuple(batch) + (k,) + event) + base
                # [..., K, *event] -> [K, ..., *event]
                return ops.moveaxis(out, -1 - len(event), 0)

            v = per_example(self.context_kernel_v, v, (d,))
            w = per_example(self.context_kernel_w, w, (d,))
            b = per_example(self.context_kernel_b, b, ())
        wsq = ops.sum(ops.square(w), axis=-1, keepdims=True)
        safe_wsq = ops.where(wsq > 0, wsq, ops.ones_like(wsq))
        u = v + _INV_SOFTPLUS_ONE * w / safe_wsq
        return u, w, b

    def compute_output_spec(self, context=None):
        k, d = self.length, self.dim
        batch = () if (not self.amortized or context is None) else tuple(context.shape[:-1])
        dtype = self.compute_dtype
        return (
            keras.KerasTensor((k,) + batch + (d,), dtype=dtype),
            keras.KerasTensor((k,) + batch + (d,), dtype=dtype),
            keras.KerasTensor((k,) + batch, dtype=dtype),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            length=self.length,
            dim=self.dim,
            amortized=self.amortized,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            context_kernel_initializer=keras.initializers.serialize(
                self.context_kernel_initializer
            ),
        )
        return config


# ---------------------------------------------------------------------------
# MADE and inverse autoregressive flow
# ---------------------------------------------------------------------------


def made_masks(event_dim, hidden_units, conditional=False):
    """Binary masks of a MADE with degrees in natural order [3].

    Input (and output) unit ``i`` has degree ``i + 1`` (``1..D``). Hidden unit
    ``k`` of every hidden layer has degree ``1 + (k mod max(D - 1, 1))``
    (``1..D-1``), or, when ``conditional``, ``k mod D`` (``0..D-1``): units of
    degree 0 see no input at all, only the unmasked context, and carry it to
    every output, including output 0. A hidden unit of degree ``m`` sees units
    of degree ``<= m``; an output of degree ``d`` sees hidden units of degree
    ``< d`` (strict), so output ``i`` depends only on ``x_{<i}`` ([3], eq.
    12-13).

    Returns a list of numpy arrays of shape ``[fan_in, fan_out]``: one per
    hidden layer, then the output mask of shape ``[H_last, D]`` (to be repeated
    for each of the ``num_params`` outputs of an event dimension).
    """
    in_degrees = np.arange(1, event_dim + 1)
    masks = []
    prev = in_degrees
    for units in hidden_units:
        if conditional:
            degrees = np.arange(units) % event_dim
        else:
            degrees = 1 + np.arange(units) % max(event_dim - 1, 1)
        masks.append((degrees[np.newaxis, :] >= prev[:, np.newaxis]).astype("float32"))
        prev = degrees
    masks.append((in_degrees[np.newaxis, :] > prev[:, np.newaxis]).astype("float32"))
    return masks


@keras.saving.register_keras_serializable(package="tf_asvae")
class MADE(keras.layers.Layer):
    """Masked autoregressive MLP (Germain et al., 2015 [3]).

    ``call(x, context=None)`` maps ``x`` of shape ``[..., event_dim]`` to
    ``[..., event_dim, num_params]`` where output ``[..., i, :]`` depends only
    on ``x[..., :i]`` (and on ``context``). With hidden layers ``h_l``::

        h_1 = act(x (W_1 * M_1) + b_1 + context C)      (C unmasked)
        h_l = act(h_{l-1} (W_l * M_l) + b_l)
        out = h_L (W_out * M_out) + b_out

    Masks come from :func:`made_masks` (natural ordering, deterministic; built
    with numpy in ``build()``). With a context, hidden degrees start at 0 so
    that the context reaches every output (output 0 depends on the context and
    the biases only); without one, output 0 is a constant (its bias). With
    ``hidden_units=()`` the network is a single strictly lower-triangular
    linear map (context added to the output).

    Args:
      event_dim: ``D``, positive int.
      hidden_units: sequence of positive ints.
      num_params: outputs per event dimension (2 for shift and log-scale).
      context_dim: size ``H`` of the conditioning input, or None for none.
      activation: hidden activation.
      kernel_initializer: initializer of every kernel.
      **kwargs: base layer arguments.
    """

    def __init__(
        self,
        event_dim,
        hidden_units=(256, 256),
        num_params=2,
        context_dim=None,
        activation="elu",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not _is_positive_int(event_dim):
            raise ValueError(
                f"`event_dim` must be a positive integer. Received: event_dim={event_dim!r}"
            )
        try:
            units = tuple(hidden_units)
        except TypeError:
            units = None
        if units is None or not all(_is_positive_int(h) for h in units):
            raise ValueError(
                "`hidden_units` must be a sequence of positive integers. "
                f"Received: hidden_units={hidden_units!r}"
            )
        if not _is_positive_int(num_params):
            raise ValueError(
                f"`num_params` must be a positive integer. Received: num_params={num_params!r}"
            )
        if context_dim is not None and not _is_positive_int(context_dim):
            raise ValueError(
                "`context_dim` must be None or a positive integer. "
                f"Received: context_dim={context_dim!r}"
            )
        self.event_dim = int(event_dim)
        self.hidden_units = tuple(int(h) for h in units)
        self.num_params = int(num_params)
        self.context_dim = None if context_dim is None else int(context_dim)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.event_dim:
            raise ValueError(
                f"MADE(event_dim={self.event_dim}) got an input of shape "
                f"{tuple(input_shape)}. Received: input_shape={tuple(input_shape)}"
            )
        d, p = self.event_dim, self.num_params
        masks = made_masks(d, self.hidden_units, conditional=self.context_dim is not None)
        # Output column i * num_params + j belongs to event dimension i.
        masks[-1] = np.repeat(masks[-1], p, axis=1)
        self._masks = masks
        self.kernels, self.biases = [], []
        fan_in = d
        for index, units in enumerate(self.hidden_units + (d * p,)):
            self.kernels.append(
                self.add_weight(
                    shape=(fan_in, units),
                    initializer=self.kernel_initializer,
                    name=f"kernel_{index}",
                )
            )
            self.biases.append(
                self.add_weight(shape=(units,), initializer="zeros", name=f"bias_{index}")
            )
            fan_in = units
        self.context_kernel = None
        if self.context_dim is not None:
            first = self.hidden_units[0] if self.hidden_units else d * p
            self.context_kernel = self.add_weight(
                shape=(self.context_dim, first),
                initializer=self.kernel_initializer,
                name="context_kernel",
            )

    def call(self, x, context=None):
        ops = keras.ops
        if self.context_dim is None and context is not None:
            raise ValueError(
                "This MADE was built without `context_dim`; it takes no context. "
                f"Received: context with shape {tuple(context.shape)}"
            )
        if self.context_dim is not None:
            if context is None:
                raise ValueError(
                    f"This MADE needs a context of size context_dim={self.context_dim}. "
                    "Received: context=None"
                )
            context = ops.convert_to_tensor(context, dtype=self.compute_dtype)
            if context.shape[-1] is not None and context.shape[-1] != self.context_dim:
                raise ValueError(
                    f"Expected a context [..., {self.context_dim}]. "
                    f"Received: context.shape={tuple(context.shape)}"
                )
        h = x
        num_layers = len(self.kernels)
        for index in range(num_layers):
            mask = ops.convert_to_tensor(self._masks[index], dtype=self.compute_dtype)
            h = ops.matmul(h, self.kernels[index] * mask) + self.biases[index]
            if index == 0 and self.context_kernel is not None:
                h = h + ops.matmul(context, self.context_kernel)
            if index < num_layers - 1:
                h = self.activation(h)
        out_shape = tuple(ops.shape(h)[:-1]) + (self.event_dim, self.num_params)
        return ops.reshape(h, out_shape)

    def compute_output_shape(self, x_shape, context_shape=None):
        return tuple(x_shape[:-1]) + (self.event_dim, self.num_params)

    def get_config(self):
        config = super().get_config()
        config.update(
            event_dim=self.event_dim,
            hidden_units=list(self.hidden_units),
            num_params=self.num_params,
            context_dim=self.context_dim,
            activation=keras.activations.serialize(self.activation),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@tf.autograph.experimental.do_not_convert
def iaf_bijector(
    made_layers,
    context=None,
    log_scale_bound=3.0,
    validate_args=False,
    name="iaf",
):
    """Inverse autoregressive flow [2] from MADE networks.

    Each MADE ``k`` defines one autoregressive step. In sampling (forward)
    direction, with ``(mu, r) = MADE_k(z)`` (``mu_i, r_i`` functions of
    ``z_{<i}`` and the context)::

        z'_i = (z_i - mu_i) * exp(-l_i),   l_i = B tanh(r_i / B),
        log|det dz'/dz| = -sum_i l_i,

    which is ``tfb.Invert(tfb.MaskedAutoregressiveFlow(...))`` [4] with
    ``shift = mu`` and ``log_scale = l``: the forward pass (sampling, and the
    log-density of its own samples through the bijector cache) is one network
    evaluation; the inverse (log-density of an arbitrary ``z``) is sequential,
    ``D`` network evaluations per step. Steps are separated by a reversal
    ``tfb.Permute`` so that every coordinate is eventually conditioned on
    every other; MADE 0 is applied first.

    Scale parameterisation: the log-scale is soft-clipped, ``l = B tanh(r/B)``
    with ``B = log_scale_bound``, so every step scales each coordinate by a
    factor in ``[e^{-B}, e^{B}]`` in both directions. This keeps long stacks
    and the sequential inverse (evaluated at arbitrary points, e.g. prior
    samples in AS-VAE's second half) finite, while behaving like the raw
    log-scale ``r`` near 0. (Kingma et al.'s sigmoid gate bounds the forward
    scale only from above and the inverse scale not at all.)

    Args:
      made_layers: a :class:`MADE` or a non-empty sequence of them, all with
        ``num_params=2`` and the same ``event_dim``.
      context: optional conditioning tensor ``[..., H]`` passed to every MADE.
      log_scale_bound: ``B > 0``.
      validate_args: passed to the bijectors.
      name: name of the returned ``tfb.Chain``.

    Returns:
      A ``tfb.Chain`` with event rank 1.
    """
    if isinstance(made_layers, MADE):
        made_layers = [made_layers]
    try:
        made_layers = list(made_layers)
    except TypeError:
        raise ValueError(
            "`made_layers` must be a MADE or a sequence of MADE layers. "
            f"Received: made_layers={made_layers!r}"
        ) from None
    if not made_layers:
        raise ValueError(
            "`made_layers` must contain at least one MADE. Received: made_layers=[]"
        )
    for made in made_layers:
        if not isinstance(made, MADE) or made.num_params != 2:
            raise ValueError(
                "Every element of `made_layers` must be a MADE with num_params=2. "
                f"Received: {made!r}"
            )
    event_dim = made_layers[0].event_dim
    if any(made.event_dim != event_dim for made in made_layers):
        raise ValueError(
            "All MADE layers must share one event_dim. Received: event_dims="
            f"{[made.event_dim for made in made_layers]}"
        )
    if not (
        isinstance(log_scale_bound, (int, float))
        and not isinstance(log_scale_bound, bool)
        and log_scale_bound > 0
        and math.isfinite(log_scale_bound)
    ):
        raise ValueError(
            "`log_scale_bound` must be a positive finite number. "
            f"Received: log_scale_bound={log_scale_bound!r}"
        )
    bound = float(log_scale_bound)

    def make_fn(made):
        def shift_and_log_scale_fn(x, **unused_condition_kwargs):
            params = made(x, context)
            shift = params[..., 0]
            log_scale = bound * tf.tanh(params[..., 1] / bound)
            return shift, log_scale

        return shift_and_log_scale_fn

    steps = []
    reversal = list(range(event_dim - 1, -1, -1))
    for index, made in enumerate(made_layers):
        if index > 0:
            steps.append(
                tfb.Permute(
                    permutation=reversal,
                    validate_args=validate_args,
                    name=f"reverse_{index}",
                )
            )
        steps.append(
            tfb.Invert(
                tfb.MaskedAutoregressiveFlow(
                    shift_and_log_scale_fn=make_fn(made),
                    validate_args=validate_args,
                    name=f"maf_{index}",
                ),
                validate_args=validate_args,
                name=f"iaf_{index}",
            )
        )
    return tfb.Chain(steps[::-1], validate_args=validate_args, name=name)
