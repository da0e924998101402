"""ScaledGradient: exact PSG update (eq. 4.7-4.8), scope, keep-8bit, masks, training."""

import keras
import numpy as np
import pytest
from psg_testutil import grid_error, mse_grads, normalized_grid_error, ref_grid, toy_data

from tfcompress.psg import QuantizationGrid, ScaledGradient, Zero, default_psg_variables

LR, LAM, EPS = 0.1, 4.0, 1e-3


def _kernel(value, name="kernel"):
    return keras.Variable(np.asarray(value, "float32"), name=name)


def _quadratic_grad(w, a, c):
    # L(w) = 0.5 * sum(a * (w - c)^2)  ->  dL/dw = a * (w - c)
    return a * (w - c)


def test_one_step_on_toy_quadratic_is_exact():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3)).astype("float32")
    a, c = rng.uniform(0.5, 2.0, size=(4, 3)), rng.normal(size=(4, 3))
    w = _kernel(w0)
    opt = ScaledGradient(keras.optimizers.SGD(LR), QuantizationGrid(3), lambda_s=LAM, epsilon=EPS)
    g = _quadratic_grad(w0, a, c).astype("float32")
    opt.apply([g], [w])
    expected = w0 - LR * LAM * (np.abs(w0 - ref_grid(w0, 3)) + EPS) * g
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5, atol=1e-7)
    # A second step recomputes the grid from the updated weights.
    w1 = w.numpy()
    g1 = _quadratic_grad(w1, a, c).astype("float32")
    opt.apply([g1], [w])
    expected = w1 - LR * LAM * (np.abs(w1 - ref_grid(w1, 3)) + EPS) * g1
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert int(opt.iterations) == 2


def test_weights_on_the_grid_barely_move():
    delta = 0.25
    w0 = (np.array([[-3, -1, 0], [1, 2, 3]]) * delta).astype("float32")  # 3-bit grid, max = 3Δ
    w = _kernel(w0)
    opt = ScaledGradient(keras.optimizers.SGD(LR), QuantizationGrid(3), lambda_s=LAM, epsilon=1e-6)
    g = np.ones_like(w0)
    scaled = opt.scaled_gradients([g], [w])[0]
    np.testing.assert_allclose(np.asarray(scaled), LAM * 1e-6 * g, rtol=1e-3)
    opt.apply([g], [w])
    # float32 resolution near |w| = 0.75 is ~6e-8
    np.testing.assert_allclose(w.numpy() - w0, -LR * LAM * 1e-6 * g, atol=5e-8)
    # Plain SGD would have moved each weight by LR.
    assert np.abs(w.numpy() - w0).max() < 1e-5 * LR


def test_zero_target_step():
    w0 = np.array([[0.0, 0.5], [-1.5, 0.01]], "float32")
    w = _kernel(w0)
    opt = ScaledGradient(keras.optimizers.SGD(LR), Zero(), lambda_s=LAM, epsilon=EPS)
    g = np.full_like(w0, 0.3)
    opt.apply([g], [w])
    np.testing.assert_allclose(w.numpy(), w0 - LR * LAM * (np.abs(w0) + EPS) * g, rtol=1e-6)


def _dense_model(seed=0, n_out=3):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, activation="tanh", name="first"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(n_out, name="last"),
        ]
    )


def _expected_step(model, x, y, bits_by_layer, lam=LAM, eps=EPS, lr=LR):
    """Full-batch SGD step with PSG on kernels, plain on everything else."""
    grads = mse_grads(model, x, y)
    out = []
    for v, g in zip(model.trainable_variables, grads):
        w = v.numpy()
        layer, leaf = v.path.split("/")[-2:]
        if leaf == "kernel":
            g = lam * (np.abs(w - ref_grid(w, bits_by_layer[layer])) + eps) * g
        out.append(w - lr * g)
    return out


def test_fit_step_scales_kernels_and_leaves_biases_and_bn_plain():
    x, y = toy_data()
    model = _dense_model()
    model.compile(
        ScaledGradient(keras.optimizers.SGD(LR), QuantizationGrid(4), lambda_s=LAM, epsilon=EPS),
        "mse",
    )
    expected = _expected_step(model, x, y, {"first": 4, "last": 4})
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for v, e in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-4, atol=1e-6, err_msg=v.path)
    plan = {"/".join(p.split("/")[-2:]): (s, b) for p, s, b in model.optimizer.psg_plan()}
    assert plan["first/kernel"] == (True, 4)
    assert plan["first/bias"] == (False, None)
    assert plan["bn/gamma"] == (False, None)


@pytest.mark.parametrize(
    "keep, below, bits",
    [
        (["first", "last"], 4, {"first": 8, "last": 8}),
        ("first_last", 4, {"first": 8, "last": 8}),
        (["last"], 4, {"first": 3, "last": 8}),
        (lambda v: "first" in v.path, 4, {"first": 8, "last": 3}),
        (["first"], 3, {"first": 3, "last": 3}),  # target not below keep_8bit_below
        (["first"], None, {"first": 8, "last": 3}),  # always 8 bits
    ],
)
def test_keep_8bit_layers_use_the_8bit_grid(keep, below, bits):
    x, y = toy_data()
    model = _dense_model()
    opt = ScaledGradient(
        keras.optimizers.SGD(LR),
        QuantizationGrid(3),
        lambda_s=LAM,
        epsilon=EPS,
        keep_8bit=keep,
        keep_8bit_below=below,
    )
    model.compile(opt, "mse")
    expected = _expected_step(model, x, y, bits)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for v, e in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-4, atol=1e-6, err_msg=v.path)
    plan = {p.split("/")[-2]: b for p, s, b in opt.psg_plan() if s}
    assert plan == bits


def test_keep_8bit_unknown_name_is_reported():
    model = _dense_model()
    opt = ScaledGradient(keras.optimizers.SGD(LR), QuantizationGrid(2), keep_8bit=["frist"])
    with pytest.raises(ValueError, match=r"\['frist'\] match no scoped variable"):
        opt.build(model.trainable_variables)


def test_variables_predicate_overrides_the_scope():
    x, y = toy_data()
    model = _dense_model()
    opt = ScaledGradient(
        keras.optimizers.SGD(LR),
        Zero(),
        lambda_s=LAM,
        epsilon=EPS,
        variables=lambda v: v.path.endswith("last/kernel"),
    )
    model.compile(opt, "mse")
    grads = mse_grads(model, x, y)
    before = [v.numpy() for v in model.trainable_variables]
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for v, w, g in zip(model.trainable_variables, before, grads):
        if v.path.endswith("last/kernel"):
            g = LAM * (np.abs(w) + EPS) * g
        np.testing.assert_allclose(v.numpy(), w - LR * g, rtol=1e-4, atol=1e-6, err_msg=v.path)


def test_no_scoped_variable_is_an_error():
    opt = ScaledGradient(keras.optimizers.SGD(LR), variables=lambda v: False)
    with pytest.raises(ValueError, match="no variable to scale"):
        opt.build(_dense_model().trainable_variables)


def test_default_scope():
    i = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, name="conv")(i)
    h = keras.layers.DepthwiseConv2D(2, name="dw")(h)
    h = keras.layers.SeparableConv2D(2, 2, name="sep")(h)
    h = keras.layers.Flatten()(h)
    o = keras.layers.Dense(2, name="fc")(keras.layers.Embedding(3, 2)(keras.ops.cast(h[:, :1], "int32"))[:, 0])
    model = keras.Model(i, o)
    scoped = {v.path for v in model.trainable_variables if default_psg_variables(v)}
    assert scoped == {
        "conv/kernel",
        "dw/kernel",
        "sep/depthwise_kernel",
        "sep/pointwise_kernel",
        "fc/kernel",
    }


def test_mask_fn_scales_only_active_weights_with_grid_of_active_weights():
    w0 = np.array([[0.1, -0.35, 0.5], [4.0, 0.27, -0.6]], "float32")
    mask = keras.Variable(np.array([[1, 1, 1], [0, 1, 1]], "float32"), trainable=False, name="mask")
    w = _kernel(w0)
    opt = ScaledGradient(
        keras.optimizers.SGD(LR),
        QuantizationGrid(2),
        lambda_s=LAM,
        epsilon=EPS,
        mask_fn=lambda v: mask if v is w else None,
    )
    g = np.full_like(w0, 0.5)
    opt.apply([g], [w])
    m = mask.numpy()
    active = w0[m == 1]
    q = np.zeros_like(w0)
    q[m == 1] = ref_grid(active, 2)  # Δ from the active weights only (eq. 6.1-6.2)
    scale = np.where(m == 1, LAM * (np.abs(w0 - q) + EPS), 1.0)
    np.testing.assert_allclose(w.numpy(), w0 - LR * scale * g, rtol=1e-6)
    # The pruned weight got the plain gradient.
    assert w.numpy()[1, 0] == pytest.approx(4.0 - LR * 0.5)
    # The mask is read at every step (a new mask changes the update).
    mask.assign(np.ones_like(w0))
    w1 = w.numpy()
    opt.apply([g], [w])
    expected = w1 - LR * LAM * (np.abs(w1 - ref_grid(w1, 2)) + EPS) * g
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)


def test_disabled_is_plain_gradient_descent():
    x, y = toy_data()
    a, b = _dense_model(), _dense_model()
    a.compile(ScaledGradient(keras.optimizers.SGD(LR), lambda_s=LAM, enabled=False), "mse")
    b.compile(keras.optimizers.SGD(LR), "mse")
    for m in (a, b):
        m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-7)
    assert float(a.optimizer.psg_enabled.numpy()) == 0.0


def test_learning_rate_and_iterations_pass_through():
    inner = keras.optimizers.SGD(0.1, momentum=0.9)
    opt = ScaledGradient(inner)
    opt.learning_rate = 0.05
    assert float(inner.learning_rate.numpy()) == pytest.approx(0.05)
    assert float(opt.learning_rate.numpy()) == pytest.approx(0.05)
    w = _kernel(np.ones((2, 2)))
    opt.apply([np.ones((2, 2), "float32")], [w])
    assert opt.iterations is inner.iterations and int(opt.iterations) == 1
    # Momentum state lives in the inner optimizer and is listed by the wrapper.
    assert any("momentum" in v.path for v in opt.variables)


def test_jit_compile_step_is_exact():
    x, y = toy_data()
    model = _dense_model()
    model.compile(
        ScaledGradient(keras.optimizers.SGD(LR), QuantizationGrid(3), lambda_s=LAM, epsilon=EPS),
        "mse",
        jit_compile=True,
    )
    expected = _expected_step(model, x, y, {"first": 3, "last": 3})
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for v, e in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-4, atol=1e-6, err_msg=v.path)


def _classification_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    w = rng.normal(size=(8, 3))
    y = (x @ w + 0.1 * rng.normal(size=(256, 3))).argmax(-1)
    return x, y


def _mlp():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]
    )


@pytest.fixture(scope="module")
def pretrained():
    x, y = _classification_data()
    base = _mlp()
    base.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    base.fit(x, y, epochs=2, batch_size=32, verbose=0)
    return base.get_weights()


@pytest.mark.parametrize(
    "make_inner",
    [lambda: keras.optimizers.SGD(0.05, momentum=0.9), lambda: keras.optimizers.Adam(0.01)],
    ids=["sgd_momentum", "adam"],
)
def test_psg_trains_and_pulls_weights_to_the_grid(make_inner, pretrained):
    bits = 3
    x, y = _classification_data()
    results = {}
    for name, opt in [
        ("plain", make_inner()),
        ("psg", ScaledGradient(make_inner(), QuantizationGrid(bits), lambda_s=10.0)),
    ]:
        model = _mlp()
        model.set_weights(pretrained)
        model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        loss0 = model.evaluate(x, y, verbose=0)
        hist = model.fit(x, y, epochs=8, batch_size=16, verbose=0)
        results[name] = (
            loss0,
            hist.history["loss"][-1],
            grid_error(model, bits),
            normalized_grid_error(model, bits),
        )
    print(results)
    loss0, loss1, err_psg, nerr_psg = results["psg"]
    assert loss1 < 0.7 * loss0, results
    _, _, err_plain, nerr_plain = results["plain"]
    assert err_psg < 0.8 * err_plain, results
    # Weights spread uniformly within grid cells give mean |w − Q(w)| / Δ = 0.25.
    assert nerr_psg < 0.8 * nerr_plain, results


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"inner_optimizer": "sgd"}, TypeError, "inner_optimizer='sgd'"),
        ({"inner_optimizer": object()}, TypeError, "inner_optimizer=<object"),
        ({"lambda_s": -1.0}, ValueError, "lambda_s=-1.0"),
        ({"lambda_s": "big"}, ValueError, "lambda_s='big'"),
        ({"lambda_s": float("nan")}, ValueError, "lambda_s=nan"),
        ({"epsilon": -1e-8}, ValueError, "epsilon=-1e-08"),
        ({"target": 4}, TypeError, "target=4"),
        ({"variables": "kernel"}, TypeError, "variables='kernel'"),
        ({"keep_8bit": "first"}, ValueError, "keep_8bit='first'"),
        ({"keep_8bit": [1]}, TypeError, r"keep_8bit=\[1\]"),
        ({"keep_8bit_below": 0}, ValueError, "keep_8bit_below=0"),
        ({"mask_fn": 3}, TypeError, "mask_fn=3"),
        ({"enabled": 1}, TypeError, "enabled=1"),
        ({"weight_decay": 1e-4}, ValueError, "weight_decay"),
    ],
)
def test_bad_input(kwargs, exc, match):
    kwargs = {"inner_optimizer": keras.optimizers.SGD(0.1), **kwargs}
    with pytest.raises(exc, match=match):
        ScaledGradient(**kwargs)


def test_bits_zero_is_rejected():
    with pytest.raises(ValueError, match="bits=0"):
        ScaledGradient(keras.optimizers.SGD(0.1), QuantizationGrid(bits=0))


def test_running_range_is_optimizer_state_and_damps_an_outlier():
    """QuantizationGrid(range_momentum=m): Δ from the running range (authors' code)."""
    m, bits = 0.1, 3
    levels = 2 ** (bits - 1) - 1
    w0 = np.array([[0.9, -0.3, 0.1], [0.45, -1.0, 0.2]], "float32")
    w = _kernel(w0)
    opt = ScaledGradient(
        keras.optimizers.SGD(LR), QuantizationGrid(bits, range_momentum=m), lambda_s=LAM,
        epsilon=EPS,
    )
    g = np.full_like(w0, 0.5)
    opt.apply([g], [w])
    # First step: the running range starts at the current range -> exact eq. 4.13.
    np.testing.assert_allclose(
        w.numpy(), w0 - LR * LAM * (np.abs(w0 - ref_grid(w0, bits)) + EPS) * g, rtol=1e-6
    )
    (lo, hi), = opt.psg_ranges().values()
    assert (float(lo.numpy()), float(hi.numpy())) == pytest.approx((-1.0, 0.9))
    assert any("psg_range_hi" in v.path for v in opt.variables)
    # One weight overshoots to 4.0: Δ moves by the momentum fraction only.
    w1 = w.numpy()
    w1[0, 0] = 4.0
    w.assign(w1)
    opt.apply([g], [w])
    hi1 = m * 4.0 + (1 - m) * 0.9
    lo1 = m * float(w1.min()) + (1 - m) * -1.0
    assert float(hi.numpy()) == pytest.approx(hi1, rel=1e-6)
    assert float(lo.numpy()) == pytest.approx(lo1, rel=1e-6)
    delta = max(-lo1, hi1) / levels
    q = np.clip(np.round(w1 / delta), -levels, levels) * delta
    expected = w1 - LR * LAM * (np.abs(w1 - q) + EPS) * g
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5, atol=1e-7)
    # The outlier is not frozen on a grid point (the per-step range would
    # put it exactly on the outermost point: scale λ_s·ε).
    assert abs(w1[0, 0] - w.numpy()[0, 0]) > 0.1 * LR * LAM * g[0, 0]


def test_running_range_under_jit_fit_matches_eager():
    x, y = toy_data()
    results = []
    for jit in (False, True):
        model = _dense_model()
        model.compile(
            ScaledGradient(keras.optimizers.SGD(LR, momentum=0.9),
                           QuantizationGrid(2, range_momentum=0.1), lambda_s=LAM),
            "mse",
            jit_compile=jit,
        )
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        ranges = [v.numpy() for pair in model.optimizer.psg_ranges().values() for v in pair]
        results.append(([v.numpy() for v in model.trainable_variables], ranges))
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert all(np.all(r != 0) for r in results[1][1])
