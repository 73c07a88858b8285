"""Bad input to the flow variants (activation, loss, regularizer, learning rates, coordinates,
solve options, teacher activation) raises ValueError naming the parameter and the valid choices
or range; plus the behaviour those checks guard: custom regularisers in full but not reduced
coordinates, `options=` equivalent to the loose keywords, the `dtmin` floor for a ReLU flow that
slides along its kink, and what `fine_tune_reduced` saves with a regulariser.

Every face is validated before anything is compiled, so the error cases cost microseconds; the few
solves use the small `DIMS` shapes.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from _strategies import DIMS, build, make_head, time_grid

import linprobe_theory as lt
from linprobe_theory.dynamics import SolveStatus

FACES = [lt.fine_tune, lt.linear_probe, lt.lp_ft]
ACTIVATION_CHOICES = r"\('identity', 'relu', 'leaky_relu', 'tanh', 'gelu'\)"


@pytest.fixture(scope="module")
def problem():
    return build(DIMS[0], seed=0, eps=0.1)


def _head(problem):
    return make_head(problem, "random", 0)


# --- the variant keywords, on every face ------------------------------------------------------------


VARIANT_CASES = [
    (
        lambda: dict(activation="swish"),
        rf"activation='swish' is unknown; choose one of {ACTIVATION_CHOICES} or pass a callable",
    ),
    (lambda: dict(activation=3), rf"activation=3 must be one of {ACTIVATION_CHOICES} or a callable"),
    (lambda: dict(loss="hinge"), r"loss='hinge' is unknown; choose one of \('squared', 'logistic'\)"),
    (
        lambda: dict(learning_rates=(1.0, -1.0)),
        r"learning_rates\[1\] \(η_B\)=-1.0 is out of range \[0, inf\]",
    ),
    (
        lambda: dict(learning_rates=(0.0, 0.0)),
        r"learning_rates=\(0.0, 0.0\): at least one of η_v, η_B must be positive",
    ),
    (lambda: dict(learning_rates=(float("nan"), 1.0)), r"learning_rates\[0\] \(η_v\)=nan must be finite"),
    (lambda: dict(learning_rates=(1.0, float("inf"))), r"learning_rates\[1\] \(η_B\)=inf must be finite"),
    (lambda: dict(learning_rates=(1.0,)), r"learning_rates=\(1.0,\) must be a pair \(η_v, η_B\)"),
    (lambda: dict(learning_rates=(1.0, 1.0, 1.0)), r"learning_rates=\(1.0, 1.0, 1.0\) must be a pair"),
    (lambda: dict(learning_rates=2.0), r"learning_rates=2.0 must be a pair"),
    # The regulariser's constructor raises while the keywords are being built.
    (lambda: dict(regularizer=lt.WeightDecay(-0.1)), r"mu=-0.1 is out of range \[0, inf\]"),
    (lambda: dict(regularizer=lt.WeightDecay(float("inf"))), r"mu=inf must be finite"),
    (lambda: dict(regularizer=lt.WeightDecay(0.1, on="v")), r"WeightDecay\(on='v'\) must be 'B' or 'both'"),
    (lambda: dict(regularizer=lt.L2SP(-1.0)), r"lam=-1.0 is out of range \[0, inf\]"),
    (lambda: dict(regularizer=lt.L2SP(float("nan"))), r"lam=nan must be finite"),
    (
        lambda: dict(regularizer="l2"),
        r"regularizer='l2' must be None, a Regularizer instance \(e.g. lt.WeightDecay\(0.1\)",
    ),
    (
        lambda: dict(regularizer=[lt.WeightDecay(0.1), "l2"]),
        r"must be None, a Regularizer instance \(e.g. lt.WeightDecay\(0.1\), lt.L2SP\(0.1\)\) or a list",
    ),
    (lambda: dict(coordinates="polar"), r"coordinates='polar' must be one of \('reduced', 'full'\)"),
]


@pytest.mark.parametrize("face", FACES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("make_kwargs, match", VARIANT_CASES)
def test_faces_reject_bad_variant_keywords(problem, face, make_kwargs, match):
    with pytest.raises(ValueError, match=match):
        face(problem, _head(problem), t_final=1.0, **make_kwargs())


@pytest.mark.parametrize(
    "regularizer, match",
    [
        pytest.param(
            "l2",
            r"regularizer='l2' must be None, a Regularizer",
            id="string-named-in-full",
        ),
        pytest.param(
            3,
            r"must be None, a Regularizer instance",
            id="non-iterable",
        ),
        pytest.param(
            lt.WeightDecay,
            r"must be None, a Regularizer instance",
            id="class-not-instance",
        ),
        pytest.param(
            "",
            r"must be None, a Regularizer instance",
            id="empty-string",
        ),
    ],
)
def test_any_non_regularizer_is_a_value_error_naming_it(regularizer, match):
    """Whatever is not a Regularizer (or a sequence of them) should be a ValueError naming it.
    `lt.make_flow` is what every face calls with its keywords (checking it here avoids
    compiling a solve)."""
    with pytest.raises(ValueError, match=match):
        lt.make_flow(regularizer=regularizer)


def test_unhashable_loss_is_a_value_error(problem):
    with pytest.raises(ValueError, match=r"loss=\['squared'\] is unknown"):
        lt.fine_tune(problem, _head(problem), t_final=1.0, loss=["squared"])


# --- custom regularisers --------------------------------------------------------------------------


class PenaltyOnlyL2SP(lt.Regularizer):
    """L2-SP written as a user would, with `penalty` only: no `perp_pull`, so the toolkit cannot
    know how it moves the S⊥ part of B and must refuse reduced coordinates."""

    lam: float

    def penalty(self, v, W, W0):
        D = W - W0
        return self.lam * jnp.sum(D * D)


def test_penalty_only_regularizer_works_in_full_coordinates(problem):
    """The same penalty as `lt.L2SP` gives the same full-coordinate flow (≤ 1e-12), and it does
    change the flow; LP and LP-FT take it too."""
    v0 = _head(problem)
    kwargs = dict(t_final=5.0, save_at=time_grid(5.0, num=8), coordinates="full")
    custom = lt.fine_tune(problem, v0, regularizer=PenaltyOnlyL2SP(0.5), **kwargs)
    builtin = lt.fine_tune(problem, v0, regularizer=lt.L2SP(0.5), **kwargs)
    plain = lt.fine_tune(problem, v0, **kwargs)
    assert bool(custom.ok)
    np.testing.assert_allclose(custom.v, builtin.v, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(custom.B, builtin.B, rtol=1e-12, atol=1e-14)
    assert float(jnp.max(jnp.abs(custom.B - plain.B))) > 1e-3
    for face in (lt.linear_probe, lt.lp_ft):
        traj = face(problem, v0, regularizer=PenaltyOnlyL2SP(0.5), **kwargs)
        assert bool(traj.ok) and bool(jnp.all(jnp.isfinite(traj.v)))


REDUCED_REFUSAL = (
    r"regularizer PenaltyOnlyL2SP does not say how it moves the S⊥ part of B \(perp_pull\), "
    r"so reduced coordinates cannot represent it; use coordinates='full'"
)


@pytest.mark.parametrize("face", FACES, ids=lambda f: f.__name__)
def test_penalty_only_regularizer_is_refused_in_reduced_coordinates(problem, face):
    with pytest.raises(ValueError, match=REDUCED_REFUSAL):
        face(problem, _head(problem), t_final=1.0, regularizer=PenaltyOnlyL2SP(0.5))
    with pytest.raises(ValueError, match=REDUCED_REFUSAL):  # also inside a list
        face(problem, _head(problem), t_final=1.0, regularizer=[lt.WeightDecay(0.1), PenaltyOnlyL2SP(0.5)])


def test_fine_tune_reduced_refuses_a_penalty_only_regularizer(problem):
    rp = lt.ReducedProblem.from_problem(problem)
    with pytest.raises(ValueError, match=REDUCED_REFUSAL):
        lt.fine_tune_reduced(rp, _head(problem), t_final=1.0, regularizer=PenaltyOnlyL2SP(0.5))


# --- SolveOptions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(t_final=0.0), r"t_final=0.0 is out of range \(0, inf\]"),
        (dict(t_final=-1.0), r"t_final=-1.0 is out of range \(0, inf\]"),
        (dict(t_final=float("inf")), r"t_final=inf must be finite"),
        (dict(t_final=1.0, rtol=0.0), r"rtol=0.0 is out of range \(0, inf\]"),
        (dict(t_final=1.0, rtol=-1e-8), r"rtol=-1e-08 is out of range \(0, inf\]"),
        (dict(t_final=1.0, dtmin=0.0), r"dtmin=0.0 is out of range \(0, inf\]"),
        (dict(t_final=1.0, dtmin=-1e-3), r"dtmin=-0.001 is out of range \(0, inf\]"),
        (dict(t_final=1.0, dtmin=float("nan")), r"dtmin=nan must be finite"),
        (
            dict(t_final=1.0, save_at=[0.5, 0.1]),
            r"save_at must be strictly increasing times in \[0, t_final=1\]",
        ),
        (dict(t_final=1.0, save_at=[0.2, 0.2]), r"save_at must be strictly increasing times"),
        (dict(t_final=1.0, save_at=[0.0, 0.5, 0.5, 1.0]), r"save_at must be strictly increasing times"),
        (dict(t_final=1.0, max_steps=0), r"max_steps=0 is out of range: need ≥ 1"),
    ],
)
def test_solve_options_reject_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lt.SolveOptions(**kwargs)


@pytest.mark.parametrize("face", FACES, ids=lambda f: f.__name__)
def test_options_and_loose_keywords_are_exclusive(problem, face):
    v0 = _head(problem)
    with pytest.raises(ValueError, match=r"pass either options= or the solve keywords \['rtol'\], not both"):
        face(problem, v0, options=lt.SolveOptions(t_final=1.0), rtol=1e-6)
    with pytest.raises(TypeError, match=r"missing keyword argument 't_final'"):
        face(problem, v0)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['tfinal'\]"):
        face(problem, v0, tfinal=1.0)
    with pytest.raises(ValueError, match=r"options must be a SolveOptions, got dict"):
        face(problem, v0, options=dict(t_final=1.0))


def test_fine_tune_reduced_takes_the_same_solve_options(problem):
    rp = lt.ReducedProblem.from_problem(problem)
    v0 = _head(problem)
    with pytest.raises(ValueError, match=r"not both"):
        lt.fine_tune_reduced(rp, v0, options=lt.SolveOptions(t_final=1.0), rtol=1e-6)
    with pytest.raises(TypeError, match=r"missing keyword argument 't_final'"):
        lt.fine_tune_reduced(rp, v0)
    with pytest.raises(TypeError, match=r"\['tfinal'\]"):
        lt.fine_tune_reduced(rp, v0, tfinal=1.0)


def test_options_give_the_same_trajectory_as_loose_keywords(problem):
    """`options=SolveOptions(...)` and the same fields as keywords are one computation: every
    field of the Trajectory is bit-identical."""
    v0 = _head(problem)
    save_at = time_grid(5.0, num=20)
    by_options = lt.fine_tune(problem, v0, options=lt.SolveOptions(t_final=5.0, save_at=save_at, rtol=1e-9))
    by_keywords = lt.fine_tune(problem, v0, t_final=5.0, save_at=save_at, rtol=1e-9)
    for name in ("t", "v", "B", "status", "num_steps", "t_stop"):
        np.testing.assert_array_equal(getattr(by_options, name), getattr(by_keywords, name), err_msg=name)
    assert by_options.v.shape == (save_at.shape[0], problem.k)


# --- the teacher activation -----------------------------------------------------------------------


def test_teacher_activation_must_be_known():
    match = rf"teacher_activation='swish' must be one of {ACTIVATION_CHOICES}"
    with pytest.raises(ValueError, match=match):
        lt.ProblemSpec(d=12, k=2, m=4, n=8, teacher_activation="swish")
    p = build(DIMS[0], seed=0)
    arrays = dict(X=p.X, y=p.y, B_star=p.B_star, v_star=p.v_star, B0=p.B0)
    with pytest.raises(ValueError, match=match):
        lt.Problem.from_arrays(**arrays, teacher_activation="swish")
    assert lt.Problem.from_arrays(**arrays, teacher_activation="relu").teacher_activation == "relu"


# --- a ReLU flow sliding along its kink --------------------------------------------------------------


def test_relu_flow_on_its_kink_needs_dtmin():
    """FT with ReLU from a random head (d, k, m, n = 16, 3, 6, 12, seed 5): a pre-activation
    `bᵢᵀxₙ` reaches 0 and slides along it, error control shrinks the step without bound and the
    default solve spends 5000 steps before t ≈ 0.05 (all 12 seeds 0–11 we tried do this). With the
    floor dtmin = 1e-3 the same flow reaches t = 20 in 2651 steps (one pre-activation stays within
    1e-3 of 0 for ~1.6 time units of it)."""
    problem = build(DIMS[1], 5, eps=0.1, coverage=0.95)
    v0 = make_head(problem, "random", 5)
    with pytest.raises(lt.SolveError, match=r"status 'max_steps'.*dtmin") as info:
        lt.fine_tune(problem, v0, t_final=20.0, activation="relu", max_steps=5000)
    t_stop = float(str(info.value).split(" at t=")[1].split(" ")[0])
    assert t_stop < 1.0
    traj = lt.fine_tune(problem, v0, t_final=20.0, activation="relu", max_steps=200_000, dtmin=1e-3)
    assert bool(traj.ok), SolveStatus.NAMES[int(traj.status)]
    assert float(traj.t_stop) == pytest.approx(20.0) or bool(traj.steady_state)
    assert int(traj.num_steps) < 200_000


# --- fine_tune_reduced with a regulariser -------------------------------------------------------------


def test_fine_tune_reduced_saves_the_perp_scale_with_weight_decay(problem):
    """A weight decay moves the S⊥ part of B, so each save is `(v, Z, s)` with
    `B P_{S⊥} = s B0 P_{S⊥}`, `s(t) = e^{−2 η_B μ t}` (here μ = 0.1, η_B = 1, t = 1). Rebuilding
    `B = s B0 + (Z − s Z0)Eᵀ` gives the full-coordinates flow to integration accuracy (both at
    rtol 1e-10; 1e-7 is 1000× that)."""
    rp = lt.ReducedProblem.from_problem(problem)
    v0 = _head(problem)
    mu = 0.1
    sol = lt.fine_tune_reduced(rp, v0, t_final=1.0, regularizer=lt.WeightDecay(mu), rtol=1e-10)
    assert bool(sol.ok)
    assert isinstance(sol.ys, tuple) and len(sol.ys) == 3
    v, Z, s = sol.ys
    assert v.shape == (2, problem.k) and Z.shape == (2, problem.k, problem.m) and s.shape == (2,)
    np.testing.assert_allclose(s, [1.0, math.exp(-2 * mu * float(sol.t_stop))], rtol=1e-12)
    E = np.asarray(rp.subspace_basis(problem))
    B = s[-1] * problem.B0 + (Z[-1] - s[-1] * rp.Z0) @ E.T
    full = lt.fine_tune(
        problem, v0, t_final=1.0, regularizer=lt.WeightDecay(mu), coordinates="full", rtol=1e-10
    )
    np.testing.assert_allclose(v[-1], full.v[-1], atol=1e-7)
    np.testing.assert_allclose(B, full.B[-1], atol=1e-7)


def test_fine_tune_reduced_saves_v_and_z_with_l2sp(problem):
    """L2-SP keeps the S⊥ part of B at B0 (`moves_perp` is False): each save is `(v, Z)`, as with
    no regulariser."""
    rp = lt.ReducedProblem.from_problem(problem)
    v0 = _head(problem)
    for regularizer in (lt.L2SP(0.1), None):
        sol = lt.fine_tune_reduced(rp, v0, t_final=1.0, regularizer=regularizer)
        assert bool(sol.ok)
        assert isinstance(sol.ys, tuple) and len(sol.ys) == 2
        v, Z = sol.ys
        assert v.shape == (2, problem.k) and Z.shape == (2, problem.k, problem.m)
