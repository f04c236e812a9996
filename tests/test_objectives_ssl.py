"""The improved recipe's objectives (CL2L and the SSL add-ons) against NumPy
float64 closed forms, written pair by pair as in the paper."""

import keras
import numpy as np
import pytest

from keras_towers import objectives
from keras_towers import objectives_rocket as rocket
from keras_towers import objectives_ssl as ssl
from tests.helpers import value_and_grads


def _unit(rng, *shape):
    x = rng.normal(size=shape)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _ce(logits, eps=0.0):
    """Row cross-entropy with torch's label smoothing: (1-eps) onehot + eps/K."""
    n, k = logits.shape
    target = np.eye(n, k) * (1 - eps) + eps / k
    return -(target * _log_softmax(logits)).sum(1).mean()


def numpy_cl2l(zi, zt, s, hi, ht, sh, eps, w=None, reduction="mean"):
    zi, zt = zi.astype("float64"), zt.astype("float64")
    g = s * zi @ zt.T
    gi, gt = _ce(g), _ce(g.T)
    num_views = len(hi)
    li = lt = 0.0
    for a in range(num_views):
        for b in range(num_views):
            logits = sh * hi[a].astype("float64") @ ht[b].astype("float64").T
            li += _ce(logits, eps) / num_views**2
            # text view a against image view b
            logits_t = sh * ht[a].astype("float64") @ hi[b].astype("float64").T
            lt += _ce(logits_t, eps) / num_views**2
    w = num_views if w is None else w
    i2t, t2i = (gi + w * li) / (1 + w), (gt + w * lt) / (1 + w)
    total = (i2t + t2i) * (1.0 if reduction == "sum" else 0.5)
    return total, dict(global_i2t=gi, global_t2i=gt, local_i2t=li, local_t2i=lt)


def numpy_d(p, v):
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return 2 - 2 * (p * v).sum(1).mean()


def numpy_siamlip(pi, pt, vi, vt, pis=(), pts=(), vis=(), vts=()):
    terms = [numpy_d(pi, vt), numpy_d(pt, vi)]
    terms += [numpy_d(p, v) for p in pis for v in vts]
    terms += [numpy_d(p, v) for p in pts for v in vis]
    return np.mean(terms)


def numpy_barlow(v1, v2, lam=5e-3, scale=0.025):
    n, d = v1.shape
    c = v1.astype("float64").T @ v2.astype("float64") / n
    total = 0.0
    for i in range(d):
        for j in range(d):
            total += (1 - c[i, j]) ** 2 if i == j else lam * c[i, j] ** 2
    return scale * total


def numpy_sinkhorn(scores, eps=0.05, iters=3):
    q = np.exp(scores.astype("float64") / eps).T  # prototypes x samples
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(1, keepdims=True) * k
        q /= q.sum(0, keepdims=True) * b
    return (q * b).T


def numpy_swalip(hi, ht, sh, eps=0.05, iters=3, frozen=None):
    hi, ht = hi.astype("float64"), ht.astype("float64")
    li = [[hi[a] @ ht[b].T for b in range(2)] for a in range(2)]
    lt = [[ht[a] @ hi[b].T for b in range(2)] for a in range(2)]
    if frozen is None:
        qi = [[numpy_sinkhorn(x, eps, iters) for x in row] for row in li]
        qt = [[numpy_sinkhorn(x, eps, iters) for x in row] for row in lt]
    else:
        qi, qt = frozen
    loss = 0.0
    for a in range(2):
        for b in range(2):
            ce_i = -(qi[1 - a][1 - b] * _log_softmax(sh * li[a][b])).sum(1).mean()
            ce_t = -(qt[1 - a][1 - b] * _log_softmax(sh * lt[a][b])).sum(1).mean()
            loss += (ce_i + ce_t) / 2 / 4
    return loss, (qi, qt)


# --- CL2L ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "b,d,a,eps,w,reduction",
    [
        (1, 4, 2, 0.1, None, "mean"),
        (6, 8, 2, 0.1, None, "sum"),
        (5, 3, 3, 0.3, 0.5, "mean"),
    ],
)
def test_cl2l_matches_numpy(b, d, a, eps, w, reduction):
    rng = np.random.default_rng(b * 10 + a)
    zi, zt = _unit(rng, b, d), _unit(rng, b, d)
    hi, ht = _unit(rng, a, b, d), _unit(rng, a, b, d)
    loss, diag = rocket.cl2l_loss(
        zi,
        zt,
        14.3,
        hi,
        list(ht),  # a list of views is the same as a stack
        9.0,
        label_smoothing=eps,
        local_weight=w,
        reduction=reduction,
    )
    assert tuple(diag) == rocket.CL2L_DIAGNOSTICS
    expected, parts = numpy_cl2l(zi, zt, 14.3, hi, ht, 9.0, eps, w, reduction)
    np.testing.assert_allclose(_np(loss), expected, rtol=1e-5, atol=1e-6)
    for key, value in parts.items():
        np.testing.assert_allclose(
            _np(diag[f"{key}_loss"]), value, rtol=1e-5, atol=1e-6
        )
    factor = 2.0 if reduction == "sum" else 1.0
    np.testing.assert_allclose(_np(diag["clip_loss"]) * factor, expected, rtol=1e-5)
    local = np.einsum("aid,bjd->abij", hi, ht)
    np.testing.assert_allclose(
        _np(diag["local_i2t_accuracy"]), np.mean(local.argmax(-1) == np.arange(b))
    )
    np.testing.assert_allclose(
        _np(diag["local_t2i_accuracy"]), np.mean(local.argmax(-2) == np.arange(b))
    )


def test_cl2l_default_weight_is_number_of_views_and_sum_doubles():
    rng = np.random.default_rng(0)
    zi, zt = _unit(rng, 6, 8), _unit(rng, 6, 8)
    hi, ht = _unit(rng, 2, 6, 8), _unit(rng, 2, 6, 8)
    mean, diag = rocket.cl2l_loss(zi, zt, 10.0, hi, ht, 10.0)
    explicit, _ = rocket.cl2l_loss(zi, zt, 10.0, hi, ht, 10.0, local_weight=2.0)
    total, _ = rocket.cl2l_loss(zi, zt, 10.0, hi, ht, 10.0, reduction="sum")
    np.testing.assert_allclose(_np(mean), _np(explicit), rtol=1e-6)
    np.testing.assert_allclose(_np(total), 2 * _np(mean), rtol=1e-6)
    g, loc = _np(diag["global_i2t_loss"]), _np(diag["local_i2t_loss"])
    np.testing.assert_allclose(_np(diag["i2t_loss"]), (g + 2 * loc) / 3, rtol=1e-6)


def test_cl2l_without_views_is_infonce():
    rng = np.random.default_rng(1)
    zi, zt = _unit(rng, 6, 8), _unit(rng, 6, 8)
    loss, diag = rocket.cl2l_loss(zi, zt, 14.3, label_smoothing=0.1)
    clip, clip_diag = objectives.infonce_loss(zi, zt, 14.3)
    np.testing.assert_allclose(_np(loss), _np(clip), rtol=1e-6)
    for key in objectives.PAIR_DIAGNOSTICS:
        np.testing.assert_allclose(_np(diag[key]), _np(clip_diag[key]), rtol=1e-6)
    assert float(_np(diag["local_i2t_loss"])) == 0.0


def test_label_smoothing_changes_only_the_local_terms():
    rng = np.random.default_rng(2)
    zi, zt = _unit(rng, 6, 8), _unit(rng, 6, 8)
    hi, ht = _unit(rng, 2, 6, 8), _unit(rng, 2, 6, 8)
    _, plain = rocket.cl2l_loss(zi, zt, 20.0, hi, ht, 10.0, label_smoothing=0.0)
    _, smooth = rocket.cl2l_loss(zi, zt, 20.0, hi, ht, 10.0, label_smoothing=0.4)
    for key in ("global_i2t_loss", "global_t2i_loss", "positive_logit"):
        np.testing.assert_allclose(_np(plain[key]), _np(smooth[key]), rtol=1e-7)
    for key in ("local_i2t_loss", "local_t2i_loss", "clip_loss"):
        assert abs(float(_np(plain[key]) - _np(smooth[key]))) > 1e-3, key


def test_cl2l_gradients_reach_every_input():
    rng = np.random.default_rng(3)
    zi, zt = _unit(rng, 6, 8), _unit(rng, 6, 8)
    hi, ht = _unit(rng, 2, 6, 8), _unit(rng, 2, 6, 8)

    def fn(zi, zt, hi, ht, s, sh):
        return rocket.cl2l_loss(zi, zt, s, hi, ht, sh)[0]

    value, grads = value_and_grads(
        fn, zi, zt, hi, ht, np.float32(10.0), np.float32(5.0)
    )
    np.testing.assert_allclose(
        value, numpy_cl2l(zi, zt, 10.0, hi, ht, 5.0, 0.1)[0], rtol=1e-5
    )
    for g in grads:
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0


# --- SiamLIP / BYOLIP ----------------------------------------------------------


@pytest.mark.parametrize("a", [0, 2])
def test_siamlip_matches_numpy(a):
    rng = np.random.default_rng(a + 5)
    pi, pt, vi, vt = (rng.normal(size=(6, 8)).astype("float32") for _ in range(4))
    local = [rng.normal(size=(a, 6, 8)).astype("float32") for _ in range(4)]
    if a:
        loss, diag = ssl.siamlip_loss(pi, pt, vi, vt, *local)
    else:
        loss, diag = ssl.siamlip_loss(pi, pt, vi, vt)
    assert tuple(diag) == ssl.PAIR_TERM_DIAGNOSTICS
    expected = numpy_siamlip(pi, pt, vi, vt, *local)  # 2 + 2 a^2 terms
    np.testing.assert_allclose(_np(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(
        _np(diag["global_loss"]), numpy_siamlip(pi, pt, vi, vt), rtol=1e-5
    )


def test_siamlip_is_zero_when_predictions_match_targets():
    rng = np.random.default_rng(6)
    v = rng.normal(size=(5, 3)).astype("float32")
    loss, _ = ssl.siamlip_loss(2 * v, 3 * v, v, v)
    assert abs(float(_np(loss))) < 1e-6


def test_siamlip_targets_get_no_gradient():
    rng = np.random.default_rng(7)
    args = [rng.normal(size=(6, 8)) for _ in range(4)]
    args += [rng.normal(size=(2, 6, 8)) for _ in range(4)]

    def fn(*tensors):
        return ssl.siamlip_loss(*tensors)[0]

    value, grads = value_and_grads(fn, *args)
    assert np.isfinite(value)
    p_grads = grads[0], grads[1], grads[4], grads[5]
    v_grads = grads[2], grads[3], grads[6], grads[7]
    for g in p_grads:
        assert np.abs(g).max() > 1e-4
    for g in v_grads:
        np.testing.assert_array_equal(g, 0.0)


# --- EMA -----------------------------------------------------------------------


def test_ema_update_and_assign():
    target = [np.zeros((2, 3), "float32"), np.full((4,), 2.0, "float32")]
    online = [np.ones((2, 3), "float32"), np.zeros((4,), "float32")]
    new = ssl.ema_update(target, online, momentum=0.99)
    np.testing.assert_allclose(_np(new[0]), 0.01, rtol=1e-6)
    np.testing.assert_allclose(_np(new[1]), 1.98, rtol=1e-6)
    variables = [keras.Variable(t) for t in target]
    online_variables = [keras.Variable(o) for o in online]
    ssl.ema_assign(variables, online_variables, momentum=0.9)
    ssl.ema_assign(variables, online_variables, momentum=0.9)
    # Two steps towards 1 from 0: 1 - 0.9^2; towards 0 from 2: 2 * 0.9^2.
    np.testing.assert_allclose(_np(variables[0]), 1 - 0.81, rtol=1e-6)
    np.testing.assert_allclose(_np(variables[1]), 2 * 0.81, rtol=1e-6)
    np.testing.assert_allclose(_np(online_variables[0]), 1.0)
    with pytest.raises(ValueError, match="same length"):
        ssl.ema_update(target, online[:1])
    with pytest.raises(ValueError, match=r"Shapes of `target_values\[1\]`"):
        ssl.ema_update(target, [online[0], np.zeros(3)])
    with pytest.raises(ValueError, match="momentum"):
        ssl.ema_update(target, online, momentum=1.5)
    with pytest.raises(ValueError, match="must be a keras.Variable"):
        ssl.ema_assign(target, online)


# --- BarLIP --------------------------------------------------------------------


@pytest.mark.parametrize(
    "a,lam,scale", [(0, 5e-3, 0.025), (2, 5e-3, 0.025), (1, 0.5, 1.0)]
)
def test_barlip_matches_numpy(a, lam, scale):
    rng = np.random.default_rng(a + 20)
    n, d = 7, 5
    vi, vt = rng.normal(size=(2, n, d)).astype("float32")
    vis, vts = rng.normal(size=(2, a, n, d)).astype("float32")
    if a:
        loss, diag = ssl.barlip_loss(
            vi, vt, vis, list(vts), redundancy_weight=lam, scale=scale
        )
    else:
        loss, diag = ssl.barlip_loss(vi, vt, redundancy_weight=lam, scale=scale)
    terms = [numpy_barlow(vi, vt, lam, scale)]
    terms += [numpy_barlow(x, y, lam, scale) for x in vis for y in vts]
    np.testing.assert_allclose(_np(loss), np.mean(terms), rtol=1e-5)
    np.testing.assert_allclose(_np(diag["global_loss"]), terms[0], rtol=1e-5)
    if a:
        np.testing.assert_allclose(
            _np(diag["local_loss"]), np.mean(terms[1:]), rtol=1e-5
        )


def test_barlip_is_zero_for_decorrelated_identical_views():
    # Orthogonal columns of norm sqrt(N): C = I exactly.
    n = 8
    v = (
        np.linalg.qr(np.random.default_rng(0).normal(size=(n, 4)))[0] * np.sqrt(n)
    ).astype("float32")
    loss, _ = ssl.barlip_loss(v, v)
    assert abs(float(_np(loss))) < 1e-6


def test_barlip_gradients_reach_both_sides():
    rng = np.random.default_rng(21)
    vi, vt = rng.normal(size=(2, 6, 4))

    def fn(vi, vt):
        return ssl.barlip_loss(vi, vt)[0]

    _, (gi, gt) = value_and_grads(fn, vi, vt)
    assert np.abs(gi).max() > 1e-5 and np.abs(gt).max() > 1e-5


# --- Sinkhorn and SwALIP -------------------------------------------------------


@pytest.mark.parametrize("b,k,iters", [(6, 6, 3), (6, 3, 1)])
def test_sinkhorn_matches_numpy(b, k, iters):
    rng = np.random.default_rng(b + k)
    scores = _unit(rng, b, 4) @ _unit(rng, k, 4).T
    q = _np(ssl.sinkhorn_knopp(scores, 0.05, iters))
    expected = numpy_sinkhorn(scores, 0.05, iters)
    np.testing.assert_allclose(q, expected, rtol=1e-4, atol=1e-6)
    # Rows (samples) sum to 1 exactly; columns (prototypes) to about B / K.
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)
    many = _np(ssl.sinkhorn_knopp(scores, 0.05, 200))
    np.testing.assert_allclose(many.sum(0), b / k, rtol=1e-3)
    np.testing.assert_allclose(many.sum(1), 1.0, rtol=1e-5)


def test_sinkhorn_is_stable_for_large_scores_and_batches_leading_axes():
    rng = np.random.default_rng(9)
    scores = (
        rng.normal(size=(2, 2, 6, 6)).astype("float32") * 10.0
    )  # exp(200) overflows
    q = _np(ssl.sinkhorn_knopp(scores, 0.05, 3))
    assert np.all(np.isfinite(q))
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-5)
    small = scores[1, 0] / 10.0
    np.testing.assert_allclose(
        _np(ssl.sinkhorn_knopp(small, 0.05, 3)), numpy_sinkhorn(small), rtol=1e-4
    )


def test_sinkhorn_carries_no_gradient():
    rng = np.random.default_rng(10)
    scores = rng.normal(size=(6, 6))
    weights = rng.normal(size=(6, 6)).astype("float32")

    def fn(x):
        return keras.ops.sum(ssl.sinkhorn_knopp(x) * weights) + 0.0 * keras.ops.sum(x)

    _, (g,) = value_and_grads(fn, scores)
    np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("b,d,sh", [(6, 8, 30.0)])
def test_swalip_matches_numpy(b, d, sh):
    rng = np.random.default_rng(b + d)
    hi, ht = _unit(rng, 2, b, d), _unit(rng, 2, b, d)
    loss, diag = ssl.swalip_loss(list(hi), ht, sh)
    assert tuple(diag) == ssl.SWALIP_DIAGNOSTICS
    expected, _ = numpy_swalip(hi, ht, sh)
    np.testing.assert_allclose(_np(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(
        0.5 * (_np(diag["i2t_loss"]) + _np(diag["t2i_loss"])), expected, rtol=1e-5
    )


def test_swalip_targets_get_no_gradient():
    # The autodiff gradient equals the finite-difference gradient of the loss
    # with the Sinkhorn targets held fixed, and differs from the one where
    # the targets move with the inputs: the targets are under stop-gradient.
    rng = np.random.default_rng(11)
    hi, ht = _unit(rng, 2, 4, 3), _unit(rng, 2, 4, 3)
    sh = 5.0

    def fn(hi, ht):
        return ssl.swalip_loss(hi, ht, sh)[0]

    value, (gi, gt) = value_and_grads(fn, hi, ht)
    base, frozen = numpy_swalip(hi, ht, sh)
    np.testing.assert_allclose(value, base, rtol=1e-5)
    x0 = [hi.astype("float64"), ht.astype("float64")]
    fixed, moving = [np.zeros_like(x) for x in x0], [np.zeros_like(x) for x in x0]
    step = 1e-5
    for which in range(2):
        for idx in np.ndindex(x0[which].shape):
            plus, minus = [x.copy() for x in x0], [x.copy() for x in x0]
            plus[which][idx] += step
            minus[which][idx] -= step
            fixed[which][idx] = (
                numpy_swalip(*plus, sh, frozen=frozen)[0]
                - numpy_swalip(*minus, sh, frozen=frozen)[0]
            ) / (2 * step)
            moving[which][idx] = (
                numpy_swalip(*plus, sh)[0] - numpy_swalip(*minus, sh)[0]
            ) / (2 * step)
    np.testing.assert_allclose(gi, fixed[0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gt, fixed[1], rtol=1e-3, atol=1e-4)
    assert np.abs(moving[0] - fixed[0]).max() > 1e-2  # the check has power


# --- combination and bad inputs ------------------------------------------------


def test_combine_addon_weights_and_label_smoothing_rule():
    rng = np.random.default_rng(12)
    zi, zt = _unit(rng, 6, 8), _unit(rng, 6, 8)
    hi, ht = _unit(rng, 2, 6, 8), _unit(rng, 2, 6, 8)
    clip = rocket.cl2l_loss(zi, zt, 10.0, hi, ht, 10.0, label_smoothing=0.0)
    swalip = ssl.swalip_loss(hi, ht, 10.0)
    loss, diag = ssl.combine_addon(clip, swalip, "swalip", label_smoothing=0.0)
    c, s = float(_np(clip[0])), float(_np(swalip[0]))
    np.testing.assert_allclose(_np(loss), c + 0.2 * s, rtol=1e-6)
    assert ssl.ADDONS.get("swalip").weight == 0.2
    assert set(diag) == {
        *rocket.CL2L_DIAGNOSTICS,
        "swalip_loss",
        *(f"swalip_{k}" for k in ssl.SWALIP_DIAGNOSTICS),
    }
    with pytest.raises(ValueError, match="swalip add-on needs CL2L without label"):
        ssl.combine_addon(clip, swalip, "swalip", label_smoothing=0.1)
    siam = ssl.siamlip_loss(zi, zt, zi, zt)
    loss, diag = ssl.combine_addon(
        clip,
        siam,
        "byolip",
        label_smoothing=0.1,
        weight=keras.ops.convert_to_tensor(3.0),
    )
    np.testing.assert_allclose(_np(loss), c + 3.0 * float(_np(siam[0])), rtol=1e-6)
    assert "byolip_global_loss" in diag and ssl.ADDONS.get("byolip").ema_target
    with pytest.raises(ValueError, match="Unknown SSL add-on"):
        ssl.combine_addon(clip, siam, "simclr", label_smoothing=0.0)


def test_half_precision_inputs_compute_in_float32():
    rng = np.random.default_rng(13)
    z = keras.ops.cast(_unit(rng, 4, 3), "float16")
    h = keras.ops.cast(_unit(rng, 2, 4, 3), "bfloat16")
    for loss, _ in (
        rocket.cl2l_loss(z, z, 10.0, h, h, 10.0),
        ssl.swalip_loss(h, h, 10.0),
    ):
        assert keras.backend.standardize_dtype(loss.dtype) == "float32"
        assert np.isfinite(float(_np(loss)))


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(14)
    z, h = _unit(rng, 4, 3), _unit(rng, 2, 4, 3)
    with pytest.raises(ValueError, match=r"`z_image` must have rank 2"):
        rocket.cl2l_loss(z[0], z, 1.0)
    with pytest.raises(ValueError, match="Batch sizes of `z_image` and `z_text`"):
        rocket.cl2l_loss(z, z[:3], 1.0)
    with pytest.raises(ValueError, match="Widths of `z_image` and `z_text`"):
        rocket.cl2l_loss(z, z[:, :2], 1.0)
    with pytest.raises(ValueError, match=r"`h_images` must have rank 3"):
        rocket.cl2l_loss(z, z, 1.0, h[0], h, 1.0)
    with pytest.raises(ValueError, match="Views of `h_images` and `h_texts`"):
        rocket.cl2l_loss(z, z, 1.0, h, h[:1], 1.0)
    with pytest.raises(ValueError, match="Batch sizes of `z_image` and `h_images`"):
        rocket.cl2l_loss(z, z, 1.0, h[:, :3], h[:, :3], 1.0)
    with pytest.raises(ValueError, match=r"Give all of `h_images`, `h_texts`"):
        rocket.cl2l_loss(z, z, 1.0, h)
    with pytest.raises(ValueError, match="`h_logit_scale` is required"):
        rocket.cl2l_loss(z, z, 1.0, h, h)
    with pytest.raises(ValueError, match="label_smoothing"):
        rocket.cl2l_loss(z, z, 1.0, h, h, 1.0, label_smoothing=1.0)
    with pytest.raises(ValueError, match="reduction"):
        rocket.cl2l_loss(z, z, 1.0, reduction="avg")
    with pytest.raises(ValueError, match="local_weight"):
        rocket.cl2l_loss(z, z, 1.0, local_weight=-1.0)
    with pytest.raises(ValueError, match=r"Missing: `v_texts`"):
        ssl.siamlip_loss(z, z, z, z, h, h, h)
    with pytest.raises(ValueError, match="Batch sizes of `p_image` and `v_text`"):
        ssl.siamlip_loss(z, z, z, z[:3])
    with pytest.raises(ValueError, match="Batch sizes of `v_image` and `v_images`"):
        ssl.barlip_loss(z, z, h[:, :3], h[:, :3])
    with pytest.raises(ValueError, match="redundancy_weight"):
        ssl.barlip_loss(z, z, redundancy_weight=-1.0)
    with pytest.raises(ValueError, match="exactly 2 views"):
        ssl.swalip_loss(h[:1], h[:1], 1.0)
    with pytest.raises(ValueError, match=r"`h_images` must hold at least one view"):
        ssl.swalip_loss([], h, 1.0)
    with pytest.raises(ValueError, match="epsilon"):
        ssl.sinkhorn_knopp(z, epsilon=0.0)
    with pytest.raises(ValueError, match="iterations"):
        ssl.sinkhorn_knopp(z, iterations=0)
    with pytest.raises(ValueError, match="`scores` must have rank >= 2"):
        ssl.sinkhorn_knopp(z[0])
