"""Tests of tf_asvae.flows: planar flows, their parameters layer, MADE and IAF.

Checks follow TFP's bijector tests: inverse(forward(x)) == x, fldj == -ildj,
log-det against the autodiff Jacobian, TransformedDistribution consistency; plus
implicit gradients of the planar inverse against finite differences, the MADE
autoregressive property and config round trips. Fixed seeds; float64 where
precision matters.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tf_asvae import flows
from tf_asvae.flows import (
    MADE,
    PlanarFlow,
    PlanarFlowParameters,
    PlanarFlowStack,
    iaf_bijector,
    planar_flow_chain,
)

tfd = tfp.distributions
tfb = tfp.bijectors


def fresh(t):
    """A new tensor with the same value: defeats the bijector cache."""
    return tf.constant(np.asarray(t))


def random_planar_params(rng, shape, dim, scale=1.0):
    """u, w of shape [*shape, dim], b of shape [*shape], float64."""
    u = rng.normal(size=tuple(shape) + (dim,)) * scale / math.sqrt(dim)
    w = rng.normal(size=tuple(shape) + (dim,)) * scale / math.sqrt(dim)
    b = rng.normal(size=tuple(shape)) * scale
    return u, w, b


def jacobian_logdet(bijector, x):
    x = fresh(x)  # a cached forward(x) would not be on the tape
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = bijector.forward(x)
    jac = tape.batch_jacobian(y, x)
    sign, logdet = np.linalg.slogdet(jac.numpy())
    return sign, logdet


# ---------------------------------------------------------------------------
# PlanarFlow
# ---------------------------------------------------------------------------


def test_planar_single_roundtrip_and_log_det():
    rng = np.random.default_rng(0)
    u, w, b = random_planar_params(rng, (), 5, scale=2.0)
    flow = PlanarFlow(u, w, b)
    assert flow.dtype == tf.float64
    x = rng.normal(size=(7, 5)) * 2.0
    y = flow.forward(x)
    np.testing.assert_allclose(flow.inverse(fresh(y)), x, atol=1e-12)
    y2 = rng.normal(size=(7, 5)) * 3.0
    np.testing.assert_allclose(flow.forward(flow.inverse(fresh(y2))), y2, atol=1e-12)

    fldj = flow.forward_log_det_jacobian(x, event_ndims=1)
    ildj = flow.inverse_log_det_jacobian(fresh(y), event_ndims=1)
    np.testing.assert_allclose(fldj, -ildj, atol=1e-12)
    sign, logdet = jacobian_logdet(flow, x)
    assert np.all(sign > 0)
    np.testing.assert_allclose(fldj, logdet, atol=1e-12)
    # The constraint: w^T u_hat = -1 + softplus(w^T u) > -1.
    wu_hat = np.sum(w * flow.constrained_u().numpy(), -1)
    np.testing.assert_allclose(wu_hat, -1 + np.log1p(np.exp(np.sum(w * u))), atol=1e-12)


def test_planar_zero_w_is_a_translation():
    u, b = np.array([0.5, -1.0, 2.0]), 0.7
    flow = PlanarFlow(u, np.zeros(3), b)
    x = np.random.default_rng(16).normal(size=(4, 3))
    np.testing.assert_allclose(flow.forward(x), x + u * np.tanh(b), atol=1e-15)
    np.testing.assert_allclose(flow.inverse(fresh(x + u * np.tanh(b))), x, atol=1e-15)
    np.testing.assert_allclose(flow.forward_log_det_jacobian(x, event_ndims=1), 0.0)


def test_planar_batch_shaped_parameters():
    rng = np.random.default_rng(1)
    batch, samples, dim = 3, 4, 6
    u, w, b = random_planar_params(rng, (batch,), dim, scale=2.0)
    flow = PlanarFlow(u, w, b)
    assert flow.experimental_batch_shape() == [batch]
    x = rng.normal(size=(samples, batch, dim))
    y = flow.forward(x)
    assert y.shape == (samples, batch, dim)
    # Example i uses parameters i.
    for i in range(batch):
        single = PlanarFlow(u[i], w[i], b[i])
        np.testing.assert_allclose(y[:, i], single.forward(x[:, i]), atol=1e-14)
    np.testing.assert_allclose(flow.inverse(fresh(y)), x, atol=1e-12)
    fldj = flow.forward_log_det_jacobian(x, event_ndims=1)
    assert fldj.shape == (samples, batch)
    np.testing.assert_allclose(
        fldj, -flow.inverse_log_det_jacobian(fresh(y), event_ndims=1), atol=1e-12
    )
    _, logdet = jacobian_logdet(flow, x[0])
    np.testing.assert_allclose(fldj[0], logdet, atol=1e-12)


@pytest.mark.parametrize(
    "wtu, bias, input_scale",
    [(-50.0, 0.0, 1.0), (-50.0, 1e3, 1e3), (-50.0, -30.0, 30.0), (40.0, 5.0, 100.0)],
)
def test_planar_adversarial_parameters_stay_invertible(wtu, bias, input_scale):
    rng = np.random.default_rng(2)
    dim = 5
    w = rng.normal(size=dim) * 3.0
    u = rng.normal(size=dim) * 3.0
    u = u + (wtu - w @ u) * w / (w @ w)  # w^T u = wtu before the constraint
    flow = PlanarFlow(u, w, bias)
    x = rng.normal(size=(500, dim)) * input_scale
    # Include points on and next to the hyperplane w^T x + b = 0, where the
    # map is flattest when w^T u_hat -> -1.
    x[:50] -= ((x[:50] @ w + bias) / (w @ w))[:, None] * w
    x[50:100] += (rng.normal(size=50) * 1e-3 / np.sqrt(w @ w))[:, None] * w
    y = flow.forward(x).numpy()
    fldj = flow.forward_log_det_jacobian(x, event_ndims=1).numpy()
    assert np.all(np.isfinite(fldj))
    x_rec = flow.inverse(fresh(y)).numpy()
    # forward(inverse(y)) is well conditioned; inverse(forward(x)) is limited by
    # the conditioning of f along w (det ~ softplus(-50) at the hyperplane).
    np.testing.assert_allclose(flow.forward(x_rec), y, atol=1e-9 * max(1.0, input_scale))
    np.testing.assert_allclose(x_rec[100:], x[100:], atol=1e-8 * max(1.0, input_scale))
    # On the hyperplane, f compresses w^T x like s -> s^3 / 3 when w^T u_hat ~ -1,
    # so rounding of y (eps ~ 1e-16) costs up to eps^(1/3) ~ 1e-5 in x.
    np.testing.assert_allclose(x_rec[:100], x[:100], atol=1e-3 * max(1.0, input_scale))
    ildj = flow.inverse_log_det_jacobian(fresh(y), event_ndims=1).numpy()
    assert np.all(np.isfinite(ildj))

    # Float32: still finite and invertible to single precision.
    flow32 = PlanarFlow(u.astype("float32"), w.astype("float32"), np.float32(bias))
    x32 = x[100:].astype("float32")
    y32 = flow32.forward(x32)
    assert np.all(np.isfinite(flow32.forward_log_det_jacobian(x32, event_ndims=1)))
    x32_rec = flow32.inverse(fresh(y32))
    assert np.all(np.isfinite(x32_rec))
    np.testing.assert_allclose(
        flow32.forward(x32_rec), y32, atol=1e-4 * max(1.0, input_scale, abs(bias))
    )


def test_planar_inverse_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    batch, dim = 3, 4
    u, w, b = random_planar_params(rng, (batch,), dim, scale=2.0)
    u[0] += (-3.0 - w[0] @ u[0]) * w[0] / (w[0] @ w[0])  # w^T u_hat near -1
    y = rng.normal(size=(batch, dim)) * 2.0
    r_x = rng.normal(size=(batch, dim))
    r_l = rng.normal(size=(batch,))

    @tf.function
    def objective(y, u, w, b):
        flow = PlanarFlow(u, w, b)
        x = flow.inverse(y)
        ildj = flow.inverse_log_det_jacobian(y, event_ndims=1)
        return tf.reduce_sum(r_x * x) + tf.reduce_sum(r_l * ildj)

    args = [tf.constant(a) for a in (y, u, w, b)]
    with tf.GradientTape() as tape:
        tape.watch(args)
        value = objective(*args)
    grads = tape.gradient(value, args)

    h = 1e-6
    for index, (arg, grad) in enumerate(zip(args, grads)):
        base = arg.numpy()
        numeric = np.zeros_like(base)
        for pos in np.ndindex(base.shape):
            plus, minus = base.copy(), base.copy()
            plus[pos] += h
            minus[pos] -= h
            values = []
            for shifted in (plus, minus):
                call = [a.numpy() for a in args]
                call[index] = shifted
                values.append(objective(*[tf.constant(c) for c in call]).numpy())
            numeric[pos] = (values[0] - values[1]) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


def test_planar_inverse_in_tf_function_and_xla():
    rng = np.random.default_rng(4)
    u, w, b = random_planar_params(rng, (2,), 3, scale=3.0)
    y = rng.normal(size=(5, 2, 3)) * 3.0

    def inverse(y):
        flow = PlanarFlow(u, w, b, inverse_iterations=40)
        return flow.inverse(y), flow.inverse_log_det_jacobian(y, event_ndims=1)

    eager = inverse(tf.constant(y))
    graph = tf.function(inverse)(tf.constant(y))
    xla = tf.function(inverse, jit_compile=True)(tf.constant(y))
    for out in (graph, xla):
        np.testing.assert_allclose(out[0], eager[0], atol=1e-12)
        np.testing.assert_allclose(out[1], eager[1], atol=1e-12)


# ---------------------------------------------------------------------------
# Chains
# ---------------------------------------------------------------------------


def test_planar_chain_80_in_64_dims_roundtrip():
    """80 flows in D = 64 with per-example (amortized) parameters [K, B, D]."""
    rng = np.random.default_rng(5)
    length, dim, batch = 80, 64, 3
    u, w, b = random_planar_params(rng, (length, batch), dim, scale=1.0)
    flow = planar_flow_chain(u, w, b)
    x = rng.normal(size=(batch, dim))
    y = flow.forward(x)
    fldj = flow.forward_log_det_jacobian(x, event_ndims=1)
    assert np.all(np.abs(fldj) > 1e-2)  # the flow is far from the identity
    y_fresh = fresh(y)
    np.testing.assert_allclose(flow.inverse(y_fresh), x, atol=1e-10)
    ildj = flow.inverse_log_det_jacobian(y_fresh, event_ndims=1)  # cached inverse
    np.testing.assert_allclose(ildj, -fldj, atol=1e-10)


@pytest.mark.parametrize("amortized", [False, True])
def test_planar_chain_log_det_matches_jacobian(amortized):
    rng = np.random.default_rng(6)
    length, dim, batch = 12, 6, 5
    shape = (length, batch) if amortized else (length,)
    u, w, b = random_planar_params(rng, shape, dim, scale=2.0)
    flow = planar_flow_chain(u, w, b)
    assert isinstance(flow, PlanarFlowStack) and flow.length == length
    # Layer 0 is applied first.
    x = rng.normal(size=(batch, dim))
    manual = tf.constant(x)
    for k in range(length):
        manual = PlanarFlow(u[k], w[k], b[k]).forward(manual)
    np.testing.assert_allclose(flow.forward(x), manual, atol=1e-13)

    fldj = flow.forward_log_det_jacobian(x, event_ndims=1)
    sign, logdet = jacobian_logdet(flow, x)
    assert np.all(sign > 0)
    np.testing.assert_allclose(fldj, logdet, atol=1e-10)


def test_transformed_distribution_with_planar_chain():
    rng = np.random.default_rng(7)
    length, dim, batch = 10, 5, 3
    u, w, b = random_planar_params(rng, (length, batch), dim, scale=2.0)
    flow = planar_flow_chain(u, w, b)
    base = tfd.MultivariateNormalDiag(loc=tf.zeros([batch, dim], tf.float64))
    dist = tfd.TransformedDistribution(base, flow)
    z0 = base.sample(6, seed=(1, 2))
    z = flow.forward(z0)
    expected = base.log_prob(z0) - flow.forward_log_det_jacobian(z0, event_ndims=1)
    np.testing.assert_allclose(dist.log_prob(z), expected, atol=1e-10)  # cached
    np.testing.assert_allclose(dist.log_prob(fresh(z)), expected, atol=1e-10)  # solved
    samples = dist.sample(6, seed=(3, 4))
    assert samples.shape == (6, batch, dim)
    assert np.all(np.isfinite(dist.log_prob(fresh(samples))))


def test_transformed_distribution_planar_784_dims():
    """The p(x|z) set-up: 80 shared planar flows on flattened 28x28 images."""
    keras.utils.set_random_seed(8)
    u, w, b = PlanarFlowParameters(80, 784, dtype="float64")()
    base = tfd.MultivariateNormalDiag(loc=tf.zeros([2, 784], tf.float64))
    flow = planar_flow_chain(u, w, b)
    dist = tfd.TransformedDistribution(base, flow)
    x0 = base.sample(seed=(5, 6))
    x = flow.forward(x0)
    expected = base.log_prob(x0) - flow.forward_log_det_jacobian(x0, event_ndims=1)
    np.testing.assert_allclose(dist.log_prob(fresh(x)), expected, atol=1e-8)
    # Near, but not at, the identity after initialisation.
    shift = np.abs(x.numpy() - x0.numpy()).max()
    assert 1e-6 < shift < 0.5


# ---------------------------------------------------------------------------
# PlanarFlowStack: one loop over the layers, equal to the unrolled chain
# ---------------------------------------------------------------------------


def _outputs_and_gradients(unrolled, x, y, u, w, b, r):
    """Forward and fldj at x, inverse and ildj at y, and the gradients of a random
    linear functional of all four w.r.t. (x, y, u, w, b)."""
    with tf.GradientTape() as tape:
        tape.watch([x, y, u, w, b])
        flow = planar_flow_chain(u, w, b, unrolled=unrolled)
        outputs = [
            flow.forward(x),
            flow.forward_log_det_jacobian(x, event_ndims=1),
            flow.inverse(y),
            flow.inverse_log_det_jacobian(y, event_ndims=1),
        ]
        objective = sum(tf.reduce_sum(o * ri) for o, ri in zip(outputs, r))
    return outputs, tape.gradient(objective, [x, y, u, w, b])


@pytest.mark.parametrize(
    "length, amortized", [(1, False), (1, True), (3, False), (3, True), (80, True)]
)
def test_planar_stack_matches_unrolled_chain(length, amortized):
    """Values and gradients of the one-loop stack equal those of the chain of K
    PlanarFlow. Eager for K = 1, 3; for K = 80 (the paper's length) the stack
    runs in a tf.function against the eager chain (an 80-layer graph would take
    long to trace)."""
    rng = np.random.default_rng(40 + length)
    dim, batch = 5, 3
    u, w, b = random_planar_params(rng, (length, batch) if amortized else (length,), dim,
                                   scale=2.0 if length < 80 else 1.0)
    # Samples [S, B, D] against per-example [K, B, D] parameters; [B, D] when shared.
    shape = (2, batch, dim) if amortized else (batch, dim)
    x = rng.normal(size=shape)
    y = rng.normal(size=shape) * 2.0
    stack = planar_flow_chain(u, w, b)
    chain = planar_flow_chain(u, w, b, unrolled=True)
    assert isinstance(stack, PlanarFlowStack) and stack.length == length
    assert len(chain.bijectors) == length  # a tfb.Chain of PlanarFlow, last layer first
    assert all(isinstance(f, PlanarFlow) for f in chain.bijectors)
    assert stack.experimental_batch_shape() == ([batch] if amortized else [])
    r = [tf.constant(rng.normal(size=shape)), tf.constant(rng.normal(size=shape[:-1]))] * 2
    args = [tf.constant(a) for a in (x, y, u, w, b)]
    stack_fn = _outputs_and_gradients if length < 80 else tf.function(_outputs_and_gradients)
    stack_out, stack_grads = stack_fn(False, *args, r)
    chain_out, chain_grads = _outputs_and_gradients(True, *(fresh(a) for a in args), r)
    for name, a, e in zip(["forward", "fldj", "inverse", "ildj"], stack_out, chain_out):
        assert a.shape == e.shape == (shape if name in ("forward", "inverse") else shape[:-1])
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12, err_msg=name)
    for name, a, e in zip(["x", "y", "u", "w", "b"], stack_grads, chain_grads):
        assert a is not None and np.all(np.isfinite(a)), name
        np.testing.assert_allclose(a, e, rtol=1e-9, atol=1e-10, err_msg=name)
    np.testing.assert_allclose(stack.forward(stack.inverse(fresh(y))), y, atol=1e-10)


def _graph_size(concrete_function):
    """Nodes of a traced function, its function library included."""
    graph_def = concrete_function.graph.as_graph_def()
    return len(graph_def.node) + sum(len(f.node_def) for f in graph_def.library.function)


def test_planar_stack_in_tf_function_and_xla_with_gradients():
    rng = np.random.default_rng(41)
    batch, dim = 3, 4

    def run(x, y, u, w, b):
        with tf.GradientTape() as tape:
            tape.watch([x, y, u, w, b])
            flow = PlanarFlowStack(u, w, b, inverse_iterations=40)
            base = tfd.MultivariateNormalDiag(loc=tf.zeros([batch, dim], tf.float64))
            dist = tfd.TransformedDistribution(base, flow)
            z = flow.forward(x)
            objective = (tf.reduce_sum(z) + tf.reduce_sum(dist.log_prob(z))
                         + tf.reduce_sum(dist.log_prob(y)))
        return objective, tape.gradient(objective, [x, y, u, w, b])

    graph, xla = tf.function(run), tf.function(run, jit_compile=True)
    sizes = []
    for length in (2, 5):
        params = [tf.constant(p) for p in random_planar_params(rng, (length, batch), dim, 2.0)]
        x = tf.constant(rng.normal(size=(2, batch, dim)))
        y = tf.constant(rng.normal(size=(2, batch, dim)) * 2.0)
        sizes.append(_graph_size(graph.get_concrete_function(x, y, *params)))
        eager = run(x, y, *params)
        for compiled in (graph, xla) if length == 5 else (graph,):
            out = compiled(x, y, *params)
            for a, e in zip(tf.nest.flatten(out), tf.nest.flatten(eager)):
                np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-10)
    # One loop per direction: the graph (gradient included) does not grow with K.
    assert sizes[0] == sizes[1]


def test_planar_stack_solves_each_direction_once(monkeypatch):
    calls = []
    run = PlanarFlowStack._run

    def counting_run(self, value, reverse):
        calls.append("inverse" if reverse else "forward")
        return run(self, value, reverse)

    monkeypatch.setattr(PlanarFlowStack, "_run", counting_run)
    rng = np.random.default_rng(42)
    length, batch, dim = 4, 3, 5
    flow = planar_flow_chain(*random_planar_params(rng, (length, batch), dim, 2.0))
    base = tfd.MultivariateNormalDiag(loc=tf.zeros([batch, dim], tf.float64))
    dist = tfd.TransformedDistribution(base, flow)
    # The cache holds outputs weakly: keep them alive, as a graph does.
    z = fresh(rng.normal(size=(2, batch, dim)))
    x = flow.inverse(z)  # solves the roots and the log-det in one loop
    flow.inverse_log_det_jacobian(z, 1)
    dist.log_prob(z)
    flow.forward_log_det_jacobian(x, 1)
    flow.forward(x)
    assert calls == ["inverse"]
    x = fresh(rng.normal(size=(batch, dim)))
    y = flow.forward(x)
    flow.forward_log_det_jacobian(x, 1)
    flow.inverse_log_det_jacobian(y, 1)
    flow.inverse(y)
    assert calls == ["inverse", "forward"]
    flow.forward_log_det_jacobian(fresh(x), 1)  # a log-det alone: one loop
    assert calls == ["inverse", "forward", "forward"]

    @tf.function
    def log_det_then_forward(x):  # the log-det's loop also caches forward(x)
        return flow.forward_log_det_jacobian(x, 1), flow.forward(x)

    log_det_then_forward(x)
    assert calls == ["inverse", "forward", "forward", "forward"]


def test_planar_stack_batch_shapes_and_broadcasting():
    rng = np.random.default_rng(43)
    length, batch, dim = 3, 4, 5
    u, w, _ = random_planar_params(rng, (length, batch), dim)
    b = rng.normal(size=(length, 1))  # broadcasts against [K, B]
    flow = PlanarFlowStack(u, w, b)
    assert flow.experimental_batch_shape() == [batch]
    assert flow.experimental_batch_shape(x_event_ndims=2) == []
    np.testing.assert_array_equal(flow.experimental_batch_shape_tensor(), [batch])
    chain = flow.unrolled()
    x = rng.normal(size=(dim,))  # broadcasts to [B, D]
    np.testing.assert_allclose(flow.forward(x), chain.forward(x), atol=1e-13)
    np.testing.assert_allclose(
        flow.forward_log_det_jacobian(x, 1), chain.forward_log_det_jacobian(x, 1), atol=1e-13)
    xs = rng.normal(size=(2, batch, dim))
    np.testing.assert_allclose(flow.forward_log_det_jacobian(xs, event_ndims=2),
                               chain.forward_log_det_jacobian(xs, event_ndims=2), atol=1e-12)
    base = tfd.MultivariateNormalDiag(loc=tf.zeros([dim], tf.float64))
    assert tfd.TransformedDistribution(base, flow).batch_shape == [batch]
    np.testing.assert_allclose(flow.constrained_u(),
                               np.stack([f.constrained_u() for f in chain.bijectors[::-1]]))


# ---------------------------------------------------------------------------
# PlanarFlowParameters
# ---------------------------------------------------------------------------


def test_planar_flow_parameters_shapes_and_near_identity_init():
    keras.utils.set_random_seed(9)
    params = PlanarFlowParameters(80, 64)
    u, w, b = params()
    assert (u.shape, w.shape, b.shape) == ((80, 64), (80, 64), (80,))
    u_ctx, _, _ = params(tf.ones([3, 7]))  # a context is ignored when not amortized
    np.testing.assert_array_equal(u_ctx, u)
    assert len(params.trainable_weights) == 3

    flow = planar_flow_chain(u, w, b)
    wu_hat = np.sum(w.numpy() * flow.constrained_u().numpy(), -1)
    assert np.all(np.abs(wu_hat) < 0.05)  # w^T u_hat ~ 0: near the identity

    amortized = PlanarFlowParameters(80, 64, amortized=True)
    context = tf.random.stateless_normal([3, 10], seed=(1, 1))
    u, w, b = amortized(context)
    assert (u.shape, w.shape, b.shape) == ((80, 3, 64), (80, 3, 64), (80, 3))
    z = tf.random.stateless_normal([5, 3, 64], seed=(2, 2))
    flow = planar_flow_chain(u, w, b)
    z_out = flow.forward(z)
    ldj = flow.forward_log_det_jacobian(z, event_ndims=1)
    assert np.all(np.isfinite(z_out)) and np.all(np.isfinite(ldj))
    assert 0 < np.abs(z_out.numpy() - z.numpy()).max() < 0.5
    assert np.abs(ldj.numpy()).max() < 0.5

    # The context kernels receive gradients.
    with tf.GradientTape() as tape:
        u, w, b = amortized(context)
        loss = tf.reduce_sum(planar_flow_chain(u, w, b).forward_log_det_jacobian(z, 1))
    grads = tape.gradient(loss, amortized.trainable_weights)
    assert len(grads) == 6 and all(g is not None for g in grads)
    assert np.abs(grads[-1].numpy()).max() > 0  # context_kernel_b


def test_planar_flow_parameters_amortized_needs_context():
    layer = PlanarFlowParameters(3, 4, amortized=True)
    with pytest.raises(ValueError, match="context"):
        layer()


# ---------------------------------------------------------------------------
# MADE and IAF
# ---------------------------------------------------------------------------


def _made(dim=5, context_dim=None, hidden=(16, 16), seed=10):
    keras.utils.set_random_seed(seed)
    return MADE(dim, hidden_units=hidden, context_dim=context_dim, dtype="float64")


@pytest.mark.parametrize("hidden", [(16, 16), (3,), ()])
def test_made_is_autoregressive(hidden):
    dim, params = 5, 3
    made = MADE(dim, hidden_units=hidden, num_params=params, context_dim=2, dtype="float64")
    x = tf.constant(np.random.default_rng(11).normal(size=(4, dim)))
    context = tf.constant(np.random.default_rng(12).normal(size=(4, 2)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = made(x, context)
        flat = tf.reshape(out, [4, dim * params])
    assert out.shape == (4, dim, params)
    jac = tape.batch_jacobian(flat, x).numpy()
    jac = jac.reshape(4, dim, params, dim).transpose(0, 1, 3, 2)  # [B, i, j, p]
    rows, cols = np.indices((dim, dim))
    upper = cols >= rows  # output i must not depend on x_j, j >= i
    assert np.all(jac[:, upper] == 0)
    if len(hidden) != 1:  # 3 hidden units cannot carry every x_j, j < i
        assert np.all(np.abs(jac[:, ~upper]).sum(axis=(0, 2)) > 0)
    # The context reaches every output, including output 0.
    other = made(x, context + 1.0)
    assert np.all(np.abs(other.numpy() - out.numpy()).sum(axis=(0, 2)) > 0)


def test_made_masks_are_natural_order():
    masks = flows.made_masks(3, (4,))  # hidden degrees 1, 2, 1, 2
    np.testing.assert_array_equal(masks[0], [[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(masks[1], [[0, 1, 1], [0, 0, 1], [0, 1, 1], [0, 0, 1]])
    masks = flows.made_masks(3, (4,), conditional=True)  # hidden degrees 0, 1, 2, 0
    np.testing.assert_array_equal(masks[0], [[0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(masks[1], [[1, 1, 1], [0, 1, 1], [0, 0, 1], [1, 1, 1]])


def test_iaf_roundtrip_log_det_and_jacobian():
    dim, batch, hdim = 5, 4, 3
    rng = np.random.default_rng(13)
    made_layers = [_made(dim, hdim, seed=s) for s in (20, 21, 22)]
    context = tf.constant(rng.normal(size=(batch, hdim)))
    flow = iaf_bijector(made_layers, context=context)
    x = tf.constant(rng.normal(size=(batch, dim)))
    y = flow.forward(x)
    np.testing.assert_allclose(flow.inverse(fresh(y)), x, atol=1e-12)  # sequential
    z = tf.constant(rng.normal(size=(batch, dim)) * 2.0)  # an arbitrary point
    np.testing.assert_allclose(flow.forward(flow.inverse(z)), z, atol=1e-12)

    fldj = flow.forward_log_det_jacobian(x, event_ndims=1)
    np.testing.assert_allclose(
        fldj, -flow.inverse_log_det_jacobian(fresh(y), event_ndims=1), atol=1e-12
    )
    sign, logdet = jacobian_logdet(flow, x)
    assert np.all(sign > 0)
    np.testing.assert_allclose(fldj, logdet, atol=1e-10)
    assert np.all(np.abs(fldj) > 1e-3)  # the flow is not the identity

    # The log-scale is soft-clipped to [-B, B] per step.
    big = [_made(dim, hdim, seed=23)]
    big[0](x, context)  # build
    big[0].kernels[-1].assign(big[0].kernels[-1] * 1e4)
    clipped = iaf_bijector(big, context=context, log_scale_bound=2.0)
    ldj = clipped.forward_log_det_jacobian(x, event_ndims=1).numpy()
    assert np.all(np.abs(ldj) <= 2.0 * dim + 1e-9)


def test_iaf_transformed_distribution_and_graph_mode():
    dim, batch, hdim = 4, 3, 2
    rng = np.random.default_rng(14)
    made_layers = [_made(dim, hdim, seed=s) for s in (30, 31)]
    context = tf.constant(rng.normal(size=(batch, hdim)))
    base = tfd.MultivariateNormalDiag(loc=tf.zeros([batch, dim], tf.float64))

    @tf.function
    def run(z0):
        flow = iaf_bijector(made_layers, context=context)
        dist = tfd.TransformedDistribution(base, flow)
        z = flow.forward(z0)
        expected = base.log_prob(z0) - flow.forward_log_det_jacobian(z0, event_ndims=1)
        return z, dist.log_prob(z), dist.log_prob(tf.identity(z)), expected

    z0 = base.sample(5, seed=(7, 8))
    z, cached, solved, expected = run(z0)
    np.testing.assert_allclose(cached, expected, atol=1e-12)
    np.testing.assert_allclose(solved, expected, atol=1e-10)
    flow = iaf_bijector(made_layers, context=context)
    np.testing.assert_allclose(flow.forward(z0), z, atol=1e-12)


# ---------------------------------------------------------------------------
# Serialization
# ---------------------------------------------------------------------------


def _roundtrip_layer(layer, *call_args):
    expected = layer(*call_args)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    clone(*call_args)  # build
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == config
    actual = clone(*call_args)
    for a, e in zip(tf.nest.flatten(actual), tf.nest.flatten(expected)):
        np.testing.assert_array_equal(a, e)
    # Registered under the package name.
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer)
    assert revived.get_config() == config


def test_config_roundtrip():
    keras.utils.set_random_seed(15)
    context = tf.random.stateless_normal([2, 3], seed=(3, 3))
    x = tf.random.stateless_normal([2, 4], seed=(4, 4))
    _roundtrip_layer(PlanarFlowParameters(5, 4, kernel_initializer="he_normal", name="p"))
    _roundtrip_layer(
        PlanarFlowParameters(5, 4, amortized=True, context_kernel_initializer="glorot_uniform"),
        context,
    )
    _roundtrip_layer(
        MADE(4, hidden_units=(8, 6), num_params=3, activation="tanh", name="m"), x
    )
    _roundtrip_layer(MADE(4, hidden_units=(8,), context_dim=3), x, context)


# ---------------------------------------------------------------------------
# Argument validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PlanarFlowParameters(0, 4), "Received: length=0"),
        (lambda: PlanarFlowParameters(3, -2), "Received: dim=-2"),
        (lambda: PlanarFlowParameters(3, 2, amortized="yes"), "Received: amortized='yes'"),
        (lambda: MADE(0), "Received: event_dim=0"),
        (lambda: MADE(3, hidden_units=(4, 0)), r"Received: hidden_units=\(4, 0\)"),
        (lambda: MADE(3, num_params=0), "Received: num_params=0"),
        (lambda: MADE(3, context_dim=-1), "Received: context_dim=-1"),
        (lambda: PlanarFlow([1.0, 2.0], [1.0, 2.0], 0.0, inverse_iterations=0),
         "Received: inverse_iterations=0"),
        (lambda: PlanarFlow([1.0, 2.0], [1.0, 2.0, 3.0], 0.0), r"Received: u.shape=\(2,\)"),
        (lambda: PlanarFlow(np.ones([3, 2]), np.ones([3, 2]), np.ones([4])),
         r"b.shape=\(4,\)"),
        (lambda: planar_flow_chain(np.ones([3]), np.ones([3]), np.ones([3])),
         r"Received: u.shape=\(3,\)"),
        (lambda: planar_flow_chain(np.ones([3, 2]), np.ones([2, 2]), np.ones([3])),
         r"Received: w.shape=\(2, 2\)"),
        (lambda: planar_flow_chain(np.ones([3, 2]), np.ones([3, 2]), np.ones([2])),
         r"Received: b.shape=\(2,\)"),
        (lambda: planar_flow_chain(np.ones([3, 4, 2]), np.ones([3, 5, 2]), np.ones([3])),
         r"Received: u.shape=\(3, 4, 2\), w.shape=\(3, 5, 2\)"),
        (lambda: planar_flow_chain(np.ones([3, 2]), np.ones([3, 2]), np.ones([3]),
                                   unrolled="yes"), "Received: unrolled='yes'"),
        (lambda: PlanarFlowStack(np.ones([3, 2]), np.ones([3, 2]), np.ones([3]),
                                 inverse_iterations=0), "Received: inverse_iterations=0"),
        (lambda: iaf_bijector([]), r"Received: made_layers=\[\]"),
        (lambda: iaf_bijector([MADE(3, num_params=3)]), "num_params=2"),
        (lambda: iaf_bijector([MADE(3), MADE(4)]), r"Received: event_dims=\[3, 4\]"),
        (lambda: iaf_bijector([MADE(3)], log_scale_bound=0.0),
         "Received: log_scale_bound=0.0"),
    ],
)
def test_bad_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_call_arguments_raise():
    made = MADE(3, hidden_units=(4,), context_dim=2)
    with pytest.raises(ValueError, match="Received: context=None"):
        made(tf.zeros([1, 3]))
    with pytest.raises(ValueError, match=r"Received: context.shape=\(1, 5\)"):
        MADE(3, hidden_units=(4,), context_dim=2)(tf.zeros([1, 3]), tf.zeros([1, 5]))
    with pytest.raises(ValueError, match="takes no context"):
        MADE(3, hidden_units=(4,))(tf.zeros([1, 3]), tf.zeros([1, 2]))
    with pytest.raises(ValueError, match=r"Received: input_shape=\(1, 4\)"):
        MADE(3)(tf.zeros([1, 4]))


def test_layers_work_on_symbolic_inputs():
    h = keras.Input((10,))
    x = keras.Input((3,))
    u, w, b = PlanarFlowParameters(4, 3, amortized=True)(h)
    assert (tuple(u.shape), tuple(w.shape), tuple(b.shape)) == ((4, None, 3), (4, None, 3), (4, None))
    assert tuple(MADE(3, (8,), context_dim=10)(x, h).shape) == (None, 3, 2)
    assert tuple(MADE(3, (8,), num_params=4)(x).shape) == (None, 3, 4)
