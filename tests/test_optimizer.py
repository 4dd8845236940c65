"""`scion` steps equal a float64 numpy reference; init norms; errors; optax/flax interop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx

import scion_jax
from scion_jax import Role

RULES = [
    ("embed", "l1_to_rms"),
    ("head", Role("rms_to_inf", lr_scale=0.5)),
    ("stack", Role("rms_to_rms", lr_scale=0.125, batch_axes=0)),
    ("bias", "bias_rms"),
    ("frozen", "none"),
    ("hidden", Role("rms_to_rms", lr_scale=0.125)),
]
SHAPES = {
    "embed": (30, 16),
    "hidden": (16, 24),
    "stack": (3, 24, 16),
    "head": (16, 30),
    "bias": (24,),
    "frozen": (4, 4),
}


def _tree(key, scale=1.0):
    keys = jax.random.split(key, len(SHAPES))
    return {n: scale * jax.random.normal(k, s) for k, (n, s) in zip(keys, SHAPES.items())}


# ----- float64 numpy reference (PAPER.md §2), written independently of the library -----
def _polar(m):
    u, _, vt = np.linalg.svd(m, full_matrices=False)
    return u @ vt


def _lmo(name, g):
    if name == "embed":
        return g / np.linalg.norm(g, axis=1, keepdims=True) * np.sqrt(g.shape[1])
    if name == "head":
        return g / np.linalg.norm(g, axis=0, keepdims=True) / np.sqrt(g.shape[0])
    if name == "bias":
        return g / np.sqrt(np.mean(g**2))
    if name == "frozen":
        return np.zeros_like(g)
    d_in, d_out = g.shape[-2:]
    return np.sqrt(d_out / d_in) * _polar(g)  # hidden, stack (batched over the leading axis)


LR_SCALE = {"embed": 1.0, "head": 0.5, "stack": 0.125, "bias": 1.0, "frozen": 0.0, "hidden": 0.125}


def _reference(params, grads_seq, lrs, momentum, nesterov, weight_decay, radius):
    w = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    for grads, lr in zip(grads_seq, lrs):
        for k in w:
            g = np.asarray(grads[k], np.float64)
            rate = 1.0 if momentum == 0 else momentum
            m[k] = (1 - rate) * m[k] + rate * g
            x = (1 - rate) * m[k] + rate * g if nesterov else m[k]
            s = LR_SCALE[k]
            w[k] = w[k] - lr * s * (radius * _lmo(k, x) + weight_decay * w[k])
    return w


CASES = {
    "plain": dict(momentum=0.0, nesterov=False, weight_decay=0.0, radius=1.0),
    "momentum": dict(momentum=0.1, nesterov=False, weight_decay=0.0, radius=1.0),
    "momentum_one": dict(momentum=1.0, nesterov=False, weight_decay=0.0, radius=1.0),
    "nesterov": dict(momentum=0.3, nesterov=True, weight_decay=0.0, radius=1.0),
    "weight_decay": dict(momentum=0.1, nesterov=False, weight_decay=0.1, radius=1.0),
    "constrained": dict(momentum=0.5, nesterov=False, weight_decay=1.0, radius=3.0),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("schedule", [False, True])
def test_steps_equal_float64_reference(case, steps, schedule):
    hp = CASES[case]
    params = _tree(jax.random.key(0))
    grads_seq = [_tree(jax.random.key(10 + i)) for i in range(steps)]
    if schedule:
        lr = optax.linear_schedule(0.1, 0.02, transition_steps=2)
        lrs = [float(lr(i)) for i in range(steps)]
    else:
        lr, lrs = 0.05, [0.05] * steps
    tx = scion_jax.scion(lr, RULES, ns_coeffs="svd", **hp)
    state = tx.init(params)
    step = jax.jit(tx.update)
    p = params
    for grads in grads_seq:
        updates, state = step(grads, state, p)
        p = optax.apply_updates(p, updates)
    ref = _reference(params, grads_seq, lrs, **hp)
    for k in SHAPES:
        np.testing.assert_allclose(p[k], ref[k], rtol=2e-5, atol=2e-5, err_msg=k)


def test_no_momentum_keeps_no_state():
    params = _tree(jax.random.key(0))
    assert scion_jax.scion(0.1, RULES).init(params)[0].mu is None
    mu = scion_jax.scion(0.1, RULES, momentum=0.1, mu_dtype=jnp.bfloat16).init(params)[0].mu
    assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(mu))


def test_newton_schulz_path_close_to_exact():
    """The default bf16 Muon path lands near the exact LMO (its band is ~(0.68, 1.13))."""
    params = _tree(jax.random.key(0))
    grads = _tree(jax.random.key(1))
    state = scion_jax.scion(1.0, RULES).init(params)
    exact, _ = scion_jax.scion(1.0, RULES, ns_coeffs="svd").update(grads, state)
    approx, _ = scion_jax.scion(1.0, RULES).update(grads, state)
    for k in ("hidden", "stack"):
        cos = np.sum(exact[k] * approx[k]) / np.linalg.norm(exact[k]) / np.linalg.norm(approx[k])
        assert cos > 0.97, (k, cos)
    np.testing.assert_allclose(exact["embed"], approx["embed"], rtol=1e-6)


# ----- init -----
@pytest.mark.parametrize("n_layers", [None, 4])
def test_init_params_unit_norms(n_layers):
    rules = [
        ("embed", "l1_to_rms"),
        ("head", "rms_to_inf"),
        ("sgn", "sign"),
        ("bias|frozen", "none"),
        ("stack", Role("rms_to_rms", batch_axes=0)),
        (".*", "rms_to_rms"),
    ]
    shapes = {
        "embed": (50, 16),
        "head": (16, 50),
        "sgn": (8, 6),
        "hidden": (16, 40),
        "tall": (40, 16),
        "stack": (3, 16, 16),
        "attn": {"o": (16, 16)},
        "bias": (5,),
    }
    params = jax.tree.map(
        lambda s: jnp.full(s, 7.0), shapes, is_leaf=lambda x: isinstance(x, tuple)
    )
    new = scion_jax.init_params(jax.random.key(0), params, rules, n_layers=n_layers)
    norms = scion_jax.layer_norms(new, rules)
    residual = 1.0 if n_layers is None else 1 / np.sqrt(2 * n_layers)
    for key, value in norms.items():
        expected = residual if "attn/o" in key else 1.0
        assert float(value) == pytest.approx(expected, rel=1e-5), key
    assert set(norms) >= {"l1_to_rms/embed", "rms_to_inf/head", "sign/sgn", "rms_to_rms/stack/2"}
    np.testing.assert_array_equal(new["bias"], params["bias"])  # "none": untouched
    # Semi-orthogonal: all singular values equal (not just the largest).
    s = np.linalg.svd(np.asarray(new["tall"]), compute_uv=False)
    np.testing.assert_allclose(s, s[0], rtol=1e-5)


def test_init_params_at_the_radius():
    """Each matrix starts at norm ρ: its role's radius, else init_params(radius=ρ) (the value
    passed to scion), so Role(radius=ρ) and scion(radius=ρ) start alike."""
    params = {
        "embed": jnp.zeros((50, 16)),
        "hidden": jnp.zeros((16, 40)),
        "conv": jnp.zeros((3, 3, 4, 8)),
        "sgn": jnp.zeros((8, 6)),
        "head": jnp.zeros((16, 50)),
    }
    norms = {
        "embed": "l1_to_rms",
        "hidden": "rms_to_rms",
        "conv": "conv_spectral",
        "sgn": "sign",
        "head": "rms_to_inf",
    }
    plain = list(norms.items())
    own = [(k, Role(n, radius=3.0)) for k, n in norms.items()]
    for rules, radius in ((own, 0.5), (plain, 3.0)):
        new = scion_jax.init_params(jax.random.key(0), params, rules, radius=radius)
        got = scion_jax.layer_norms(new, rules)
        assert len(got) == len(params)
        for key, value in got.items():
            assert float(value) == pytest.approx(3.0, rel=1e-5), (key, radius)


# ----- bad input -----
def test_unmatched_path_names_it():
    with pytest.raises(ValueError, match="'frozen'.*matches no rule"):
        scion_jax.scion(0.1, [("embed", "l1_to_rms")]).init(
            {"embed": jnp.ones((3, 2)), "frozen": jnp.ones(2)}
        )


def test_spectral_norm_on_vector():
    with pytest.raises(ValueError, match="'b' of shape \\(4,\\).*rms_to_rms"):
        scion_jax.scion(0.1, [(".*", "rms_to_rms")]).init({"b": jnp.ones(4)})


def test_unknown_norm_and_preset():
    with pytest.raises(ValueError, match="Unknown norm 'spectral'.*rms_to_rms"):
        scion_jax.scion(0.1, [(".*", "spectral")])
    with pytest.raises(ValueError, match="Unknown ns_coeffs 'cubic'.*polar_express"):
        scion_jax.scion(0.1, RULES, ns_coeffs="cubic")
    with pytest.raises(ValueError, match="Unknown norm 'l2'"):
        scion_jax.operator_norm(jnp.ones((2, 2)), "l2")


@pytest.mark.parametrize("momentum", [-0.1, 1.5])
def test_momentum_out_of_range(momentum):
    with pytest.raises(ValueError, match="momentum must be in \\[0, 1\\]"):
        scion_jax.scion(0.1, RULES, momentum=momentum)


def test_weight_decay_needs_params():
    params = _tree(jax.random.key(0))
    tx = scion_jax.scion(0.1, RULES, weight_decay=0.1)
    with pytest.raises(ValueError, match="needs `params`"):
        tx.update(params, tx.init(params))


# ----- interop -----
def _descends(tx, params, loss, steps=5):
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    first = loss(params)
    for _ in range(steps):
        params, state = step(params, state)
    return float(first), float(loss(params)), params, state


def _quadratic(params):
    return sum(jnp.sum((v - 0.3) ** 2) for v in jax.tree.leaves(params))


def test_chain_with_clipping_equals_manual_clip():
    params, grads = _tree(jax.random.key(0)), _tree(jax.random.key(1), scale=10.0)
    chained = optax.chain(optax.clip_by_global_norm(1.0), scion_jax.scion(0.1, RULES, momentum=0.5))
    u1, _ = chained.update(grads, chained.init(params), params)
    clipped, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    plain = scion_jax.scion(0.1, RULES, momentum=0.5)
    u2, _ = plain.update(clipped, plain.init(params), params)
    for k in SHAPES:
        np.testing.assert_allclose(u1[k], u2[k], rtol=1e-6, atol=1e-7)


def test_inject_hyperparams():
    params, grads = _tree(jax.random.key(0)), _tree(jax.random.key(1))
    tx = optax.inject_hyperparams(scion_jax.scion)(
        learning_rate=0.1, rules=RULES, momentum=0.5, weight_decay=0.0, ns_coeffs="svd"
    )
    state = tx.init(params)
    assert set(state.hyperparams) >= {"learning_rate", "momentum", "weight_decay", "ns_steps"}
    state.hyperparams["learning_rate"] = jnp.asarray(0.02)
    state.hyperparams["weight_decay"] = jnp.asarray(0.1)
    updates, state = jax.jit(tx.update)(grads, state, params)
    ref = scion_jax.scion(0.02, RULES, momentum=0.5, weight_decay=0.1, ns_coeffs="svd")
    expected, _ = ref.update(grads, ref.init(params), params)
    for k in SHAPES:
        np.testing.assert_allclose(updates[k], expected[k], rtol=1e-5, atol=1e-7)


def test_inject_hyperparams_newton_schulz_traced_steps():
    params, grads = _tree(jax.random.key(0)), _tree(jax.random.key(1))
    tx = optax.inject_hyperparams(scion_jax.scion)(learning_rate=0.1, rules=RULES, ns_steps=5)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    ref = scion_jax.scion(0.1, RULES, ns_steps=5)
    expected, _ = ref.update(grads, ref.init(params), params)
    for k in SHAPES:
        np.testing.assert_allclose(updates[k], expected[k], rtol=1e-5, atol=1e-6)


def test_any_pytree_and_linen():
    class MLP(linen.Module):
        @linen.compact
        def __call__(self, x):
            x = linen.Dense(32, name="hidden")(x)
            return linen.Dense(4, name="head")(jax.nn.relu(x))

    x = jax.random.normal(jax.random.key(0), (64, 8))
    y = jnp.tanh(x @ jax.random.normal(jax.random.key(1), (8, 4)))
    model = MLP()
    params = model.init(jax.random.key(2), x)
    rules = [("bias", "bias_rms"), ("head", "rms_to_inf"), ("hidden", "rms_to_rms")]
    params = scion_jax.init_params(jax.random.key(3), params, rules)
    loss = lambda p: jnp.mean((model.apply(p, x) - y) ** 2)
    tx = scion_jax.scion(0.02, rules, momentum=0.5)
    first, last, _, _ = _descends(tx, params, loss, steps=20)
    assert last < 0.7 * first
    # A tuple/list pytree: paths are indices.
    tree = (jnp.ones((4, 4)), [jnp.ones(3)])
    first, last, _, _ = _descends(
        scion_jax.scion(0.05, [("^1/", "bias_rms"), ("^0$", "rms_to_rms")]), tree, _quadratic
    )
    assert last < first


def test_nnx_optimizer():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(16, 8, rngs=rngs)
            self.hidden = nnx.Linear(8, 8, use_bias=False, rngs=rngs)
            self.head = nnx.Linear(8, 16, use_bias=False, rngs=rngs)

        def __call__(self, t):
            return self.head(jax.nn.relu(self.hidden(self.embed(t))))

    rules = [("embed", "l1_to_rms"), ("head", "rms_to_inf"), ("hidden", "rms_to_rms")]
    model = Net(nnx.Rngs(0))
    nnx.update(model, scion_jax.init_params(jax.random.key(1), nnx.state(model, nnx.Param), rules))
    assert float(
        scion_jax.layer_norms(nnx.state(model, nnx.Param), rules)["rms_to_inf/head/kernel"]
    ) == pytest.approx(1.0, rel=1e-5)
    opt = nnx.Optimizer(model, scion_jax.scion(0.05, rules, momentum=0.5), wrt=nnx.Param)
    tokens = jnp.arange(16) % 7

    def loss(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(tokens), (tokens + 1) % 16).mean()

    @nnx.jit
    def step(m, o):
        value, grads = nnx.value_and_grad(loss)(m)
        o.update(m, grads)
        return value

    first = float(step(model, opt))
    for _ in range(10):
        last = float(step(model, opt))
    assert last < 0.7 * first
