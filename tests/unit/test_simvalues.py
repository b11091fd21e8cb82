"""The simulator value engine: every behaviour, driven by hand-fed time."""

import math

import pytest

from gateway.config.profile import PointSpec, ProfileSpec, SimBehaviour
from gateway.simulation.simvalues import ValueEngine


def profile(*points: PointSpec) -> ProfileSpec:
    return ProfileSpec(model="test", kind="pcs", protocol="test", points=list(points))


def point(point_id: str, **sim: object) -> PointSpec:
    return PointSpec(id=point_id, sim=SimBehaviour(**sim) if sim else None)


def test_points_without_sim_start_at_zero_and_keep_what_is_set() -> None:
    """A point with no behaviour serves 0 until set, then keeps the set value across steps."""
    engine = ValueEngine(profile(point("p_set")))
    assert engine.step(0.0) == {"p_set": 0}
    engine.set("p_set", 42.5)
    assert engine.step(10.0)["p_set"] == 42.5


def test_constant_serves_its_value_until_set() -> None:
    """A constant starts at sim.value and a write replaces it for good."""
    engine = ValueEngine(profile(point("v", kind="constant", value=230.0)))
    assert engine.step(0.0)["v"] == 230.0
    engine.set("v", 231.0)
    assert engine.step(5.0)["v"] == 231.0


def test_ramp_moves_step_per_second_and_wraps_at_max() -> None:
    """A ramp climbs step per second and folds back to min once past max."""
    engine = ValueEngine(profile(point("r", kind="ramp", value=0.0, step=2.0, min=0.0, max=10.0)))
    engine.step(100.0)
    assert engine.step(103.0)["r"] == pytest.approx(6.0)
    assert engine.step(106.0)["r"] == pytest.approx(2.0)  # 12 wraps to 2


def test_negative_ramp_wraps_at_min() -> None:
    """A falling ramp wraps from below min back near max."""
    engine = ValueEngine(profile(point("r", kind="ramp", value=1.0, step=-1.0, min=0.0, max=10.0)))
    engine.step(0.0)
    assert engine.step(3.0)["r"] == pytest.approx(8.0)


def test_ramp_without_bounds_never_wraps() -> None:
    """With no min/max a ramp grows without limit."""
    engine = ValueEngine(profile(point("r", kind="ramp", value=0.0, step=1000.0)))
    engine.step(0.0)
    assert engine.step(100.0)["r"] == pytest.approx(100_000.0)


def test_sine_oscillates_around_its_value_from_the_first_step() -> None:
    """A sine is value + amplitude*sin(2 pi t / period), t counted from the first step."""
    engine = ValueEngine(profile(point("s", kind="sine", value=50.0, amplitude=10.0, period_s=8.0)))
    assert engine.step(1000.0)["s"] == pytest.approx(50.0)
    assert engine.step(1002.0)["s"] == pytest.approx(60.0)
    assert engine.step(1006.0)["s"] == pytest.approx(40.0)
    assert engine.step(1001.0 + 8.0)["s"] == pytest.approx(50.0 + 10.0 * math.sin(math.pi / 4))


def test_set_moves_the_centre_of_a_sine() -> None:
    """Setting a sine point moves the centre it oscillates around."""
    engine = ValueEngine(profile(point("s", kind="sine", value=50.0, amplitude=10.0, period_s=8.0)))
    engine.step(0.0)
    engine.set("s", 100.0)
    assert engine.step(2.0)["s"] == pytest.approx(110.0)


def test_random_walk_stays_within_bounds() -> None:
    """A random walk never leaves [min, max] however long it runs."""
    engine = ValueEngine(profile(point("w", kind="random_walk", value=5.0, step=3.0, min=0.0, max=10.0)))
    seen = [engine.step(float(t))["w"] for t in range(2000)]
    assert min(seen) >= 0.0 and max(seen) <= 10.0
    assert min(seen) < 2.0 and max(seen) > 8.0  # it does wander


def test_random_walk_changes_at_most_step_per_second() -> None:
    """Each step of a random walk is within +-step*dt."""
    engine = ValueEngine(profile(point("w", kind="random_walk", value=0.0, step=1.0)))
    previous = engine.step(0.0)["w"]
    for t in range(1, 200):
        current = engine.step(t * 0.5)["w"]
        assert abs(current - previous) <= 0.5 + 1e-12
        previous = current


def test_random_walk_is_reproducible_with_a_seed() -> None:
    """Two engines with the same seed walk the same path; another seed walks another."""
    spec = profile(point("w", kind="random_walk", value=0.0, step=1.0))
    engines = [ValueEngine(spec, seed=seed) for seed in (7, 7, 8)]
    paths = [[engine.step(float(t))["w"] for t in range(50)] for engine in engines]
    assert paths[0] == paths[1]
    assert paths[0] != paths[2]


def pcs() -> ProfileSpec:
    return profile(point("p_set"), point("p", kind="follow", source="p_set", rate_per_s=10.0))


def test_follow_slews_towards_its_source_at_the_rate() -> None:
    """PCS power moves towards a new setpoint by at most rate_per_s per second."""
    engine = ValueEngine(pcs())
    engine.step(0.0)
    engine.set("p_set", 25.0)
    assert engine.step(1.0)["p"] == pytest.approx(10.0)
    assert engine.step(2.0)["p"] == pytest.approx(20.0)
    assert engine.step(3.0)["p"] == pytest.approx(25.0)
    assert engine.step(9.0)["p"] == pytest.approx(25.0)


def test_follow_also_slews_downwards() -> None:
    """Following a lower setpoint decreases at the same rate."""
    engine = ValueEngine(pcs())
    engine.step(0.0)
    engine.set("p", 30.0)
    engine.set("p_set", -30.0)
    assert engine.step(2.0)["p"] == pytest.approx(10.0)


def test_follow_with_rate_zero_jumps_at_once() -> None:
    """A follow without a rate copies its source on the next step."""
    engine = ValueEngine(profile(point("a"), point("b", kind="follow", source="a")))
    engine.step(0.0)
    engine.set("a", 7.0)
    assert engine.step(0.1)["b"] == 7.0


def test_follow_is_clamped_to_its_bounds() -> None:
    """A follower with max never passes it, whatever its source says."""
    engine = ValueEngine(profile(point("a"), point("b", kind="follow", source="a", max=5.0)))
    engine.step(0.0)
    engine.set("a", 9.0)
    assert engine.step(1.0)["b"] == 5.0


def test_integrate_accumulates_rate_times_source() -> None:
    """SoC grows by rate_per_s * power * dt and stops at max."""
    engine = ValueEngine(profile(
        point("p", kind="constant", value=100.0),
        point("soc", kind="integrate", value=50.0, source="p", rate_per_s=0.01, min=0.0, max=100.0)))
    engine.step(0.0)
    assert engine.step(10.0)["soc"] == pytest.approx(60.0)
    assert engine.step(100.0)["soc"] == pytest.approx(100.0)
    engine.set("p", -100.0)
    assert engine.step(110.0)["soc"] == pytest.approx(90.0)


def test_dependents_read_sources_as_of_the_start_of_the_step() -> None:
    """The order of points in the profile does not change what a dependent sees."""
    chain = [point("p_set"), point("p", kind="follow", source="p_set"),
             point("soc", kind="integrate", source="p", rate_per_s=1.0)]
    results = []
    for order in (chain, list(reversed(chain))):
        engine = ValueEngine(profile(*order))
        engine.step(0.0)
        engine.set("p_set", 2.0)
        results.append([engine.step(float(t)) for t in (1, 2, 3)])
    assert results[0] == results[1]
    assert results[0][0]["soc"] == 0.0 and results[0][1]["soc"] == 2.0


def test_time_going_backwards_moves_nothing() -> None:
    """A step with an earlier time than the last one is treated as no time passing."""
    engine = ValueEngine(profile(point("r", kind="ramp", value=0.0, step=1.0)))
    engine.step(10.0)
    engine.step(12.0)
    assert engine.step(5.0)["r"] == pytest.approx(2.0)


def test_unknown_source_fails_when_built() -> None:
    """A follow/integrate whose source is not a point of the profile is refused at once."""
    with pytest.raises(ValueError, match="'p'.*'nope'"):
        ValueEngine(profile(point("p", kind="follow", source="nope")))


def test_set_of_unknown_point_raises_key_error() -> None:
    """Writing a point the profile lacks is an error, never a silent new point."""
    with pytest.raises(KeyError):
        ValueEngine(profile(point("a"))).set("b", 1.0)


def test_initial_values_override_the_profile() -> None:
    """Initial values (a string for a text point) replace the profile's starting value."""
    engine = ValueEngine(profile(point("serial"), point("v", kind="constant", value=1.0)),
                         initial={"serial": "SN-1"})
    assert engine.step(0.0) == {"serial": "SN-1", "v": 1.0}
    assert engine.get("serial") == "SN-1" and engine.values()["v"] == 1.0


def test_a_hotspot_travels_along_the_zones_once_per_period() -> None:
    """Zones 1..10, the spot crossing min 1 -> max 10 in 9 s: at t the hottest zone is 1 + t,
    rising by the amplitude there and falling off over the width; then it starts again."""
    zones = [point(f"z{n}", kind="hotspot", value=25.0, amplitude=40.0, position=n, min=1, max=10,
                   period_s=9.0, width=1.0) for n in range(1, 11)]
    engine = ValueEngine(profile(*zones))
    engine.step(0.0)
    for t in (0.0, 3.0, 7.0):
        values = engine.step(t)
        assert max(values, key=values.__getitem__) == f"z{int(1 + t)}"
        assert values[f"z{int(1 + t)}"] == pytest.approx(65.0)
        assert values[f"z{int(1 + t) + 1}"] == pytest.approx(25.0 + 40.0 * math.exp(-1))
    assert engine.step(9.0)["z1"] == pytest.approx(65.0)


def test_a_hotspot_needs_its_position_and_path() -> None:
    with pytest.raises(ValueError, match="needs position, min and max"):
        SimBehaviour(kind="hotspot", position=3)


def charger(**power: object) -> ProfileSpec:
    return profile(
        point("power", kind="session", value=60.0, period_s=100.0, duty=0.4, taper=0.5, **power),
        point("state", kind="session", value=3, idle=1, period_s=100.0, duty=0.4),
        point("energy", kind="integrate", source="power", rate_per_s=1 / 3600, reset_on_start=True),
        point("limit", kind="constant", value=150.0), point("enabled", kind="constant", value=1))


def sessions(engine: ValueEngine, until: int) -> list[tuple[float, float, float]]:
    return [(v["power"], v["state"], v["energy"]) for v in (engine.step(float(t)) for t in range(until))]


def test_sessions_come_and_go_each_period_with_power_state_and_energy_in_step() -> None:
    """40 s of every 100 s charging (60 kW, tapering to 30 kW over the last quarter), the state 3
    then, 1 between; each session's energy starts again from 0; two devices differ in phase."""
    run = sessions(ValueEngine(charger(), seed=1), 300)
    charging = [t for t, (p, s, _) in enumerate(run) if p > 0]
    assert all(run[t][1] == 3 for t in charging) and all(s == 1 for p, s, _ in run if p == 0)
    assert len(charging) == pytest.approx(120, abs=3)
    assert max(p for p, _, _ in run) == 60.0 and min(p for p, _, _ in run if p > 0) == pytest.approx(30.0, abs=3.0)
    starts = [t for t in charging if t - 1 not in charging]
    ends = [t for t in charging if t + 1 not in charging]
    assert len(starts) >= 2
    for start, end in zip(starts, ends):
        assert run[start + 1][2] == pytest.approx(run[start][0] / 3600)  # from 0 again (a source lags a step)
        assert run[end][2] == pytest.approx(sum(run[t][0] for t in range(start, end)) / 3600, rel=0.05)
    other = sessions(ValueEngine(charger(), seed=2), 300)
    assert [p for p, _, _ in other] != [p for p, _, _ in run]


def test_a_session_is_capped_by_its_limit_and_stopped_by_its_gate() -> None:
    engine = ValueEngine(charger(source="limit", gate="enabled"), seed=1)
    engine.set("limit", 22.0)
    run = sessions(engine, 100)
    assert max(p for p, _, _ in run) == 22.0
    engine.set("enabled", 0)
    assert all(p == 0 for p, _, _ in sessions(engine, 300)[100:])
