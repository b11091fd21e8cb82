"""The metrics registry (gateway.metrics): counters, gauges, labels, collection and the Prometheus text format."""

import logging

import pytest

from gateway.metrics import MetricFamily, Metrics, render_text


def test_same_name_and_labels_return_the_same_counter() -> None:
    metrics = Metrics()
    first = metrics.counter("polls_total", "Polls sent.", device="pcs1")
    again = metrics.counter("polls_total", "Polls sent.", device="pcs1")
    assert again is first
    first.inc()
    again.inc(2.5)
    assert first.value == 3.5
    assert metrics.value("polls_total", device="pcs1") == 3.5


def test_label_sets_are_counted_apart_and_total_sums_them() -> None:
    metrics = Metrics()
    pcs = metrics.counter("polls_total", "Polls sent.", device="pcs1", bus="rtu0")
    meter = metrics.counter("polls_total", "Polls sent.", device="meter", bus="rtu0")
    pcs.inc(3)
    meter.inc()
    assert metrics.value("polls_total", bus="rtu0", device="pcs1") == 3.0  # label order does not matter
    assert metrics.value("polls_total", device="meter", bus="rtu0") == 1.0
    assert metrics.total("polls_total") == 4.0
    assert metrics.series("polls_total") == {(("bus", "rtu0"), ("device", "meter")): 1.0,
                                             (("bus", "rtu0"), ("device", "pcs1")): 3.0}


def test_total_and_series_of_an_unknown_name_are_empty() -> None:
    metrics = Metrics()
    assert metrics.total("nothing") == 0.0
    assert metrics.series("nothing") == {}


def test_value_of_an_unknown_name_or_label_set_raises_key_error_naming_it() -> None:
    metrics = Metrics()
    metrics.counter("polls_total", "Polls sent.", device="pcs1")
    with pytest.raises(KeyError, match="no metric 'nope' with labels {}"):
        metrics.value("nope")
    with pytest.raises(KeyError, match="'polls_total' with labels {'device': 'pcs2'}"):
        metrics.value("polls_total", device="pcs2")


def test_counter_refuses_to_go_down() -> None:
    counter = Metrics().counter("polls_total", "Polls sent.")
    counter.inc(2)
    with pytest.raises(ValueError, match="cannot add -1"):
        counter.inc(-1)
    assert counter.value == 2.0


def test_gauge_set_inc_dec() -> None:
    metrics = Metrics()
    depth = metrics.gauge("spool_depth", "Samples in the spool.")
    depth.set(10)
    depth.inc()
    depth.dec(4)
    depth.inc(0.5)
    assert depth.value == 7.5
    assert metrics.value("spool_depth") == 7.5


def test_a_gauge_with_read_is_read_at_collection_time() -> None:
    metrics = Metrics()
    queue = [1, 2]
    metrics.gauge("queue_length", "Commands queued.", read=lambda: len(queue), device="pcs1")
    queue.append(3)
    assert metrics.collect() == [MetricFamily("queue_length", "Commands queued.", "gauge", [({"device": "pcs1"}, 3.0)])]
    queue.clear()
    assert metrics.value("queue_length", device="pcs1") == 0.0
    assert metrics.total("queue_length") == 0.0


def test_registering_a_gauge_again_with_a_new_read_replaces_it() -> None:
    metrics = Metrics()
    first = metrics.gauge("online", "Device online.", read=lambda: 0.0, device="pcs1")
    again = metrics.gauge("online", "Device online.", read=lambda: 1.0, device="pcs1")
    assert again is first
    assert metrics.value("online", device="pcs1") == 1.0


def test_a_name_registered_as_one_kind_cannot_be_the_other() -> None:
    metrics = Metrics()
    metrics.gauge("spool_depth", "Samples in the spool.")
    metrics.counter("polls_total", "Polls sent.")
    with pytest.raises(ValueError, match="'spool_depth' is registered as a gauge, not a counter"):
        metrics.counter("spool_depth", "Samples in the spool.")
    with pytest.raises(ValueError, match="'polls_total' is registered as a counter, not a gauge"):
        metrics.gauge("polls_total", "Polls sent.", device="x")
    assert [f.kind for f in metrics.collect()] == ["counter", "gauge"]


@pytest.mark.parametrize("name", ["", "1polls", "polls-total", "polls total", "pölls"])
def test_invalid_metric_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid metric name"):
        Metrics().counter(name, "x")


@pytest.mark.parametrize("label", ["1dev", "dev-name", "dev:name"])
def test_invalid_label_names_are_refused(label: str) -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match=f"invalid label name '{label}' on metric 'polls_total'"):
        metrics.gauge("polls_total", "x", **{label: "pcs1"})
    assert metrics.collect() == []


def test_valid_names_with_colons_and_underscores_are_taken() -> None:
    metrics = Metrics()
    metrics.counter("_gw:polls_total", "x", _device1="pcs1").inc()
    assert metrics.value("_gw:polls_total", _device1="pcs1") == 1.0


def test_render_text_exact_output() -> None:
    metrics = Metrics()
    metrics.counter("polls_total", "Polls sent.", device="pcs1", bus="rtu0").inc(3)
    metrics.counter("polls_total", "Polls sent.", device='odd "name"\\\n', bus="rtu0").inc()
    metrics.gauge("spool_depth", "Samples in the spool,\nnot yet sent \\ written.").set(42)
    metrics.gauge("points_unseen", "Points never seen.", read=lambda: 1.5)
    assert render_text(metrics) == (
        "# HELP points_unseen Points never seen.\n"
        "# TYPE points_unseen gauge\n"
        "points_unseen 1.5\n"
        "# HELP polls_total Polls sent.\n"
        "# TYPE polls_total counter\n"
        'polls_total{bus="rtu0",device="odd \\"name\\"\\\\\\n"} 1.0\n'
        'polls_total{bus="rtu0",device="pcs1"} 3.0\n'
        "# HELP spool_depth Samples in the spool,\\nnot yet sent \\\\ written.\n"
        "# TYPE spool_depth gauge\n"
        "spool_depth 42.0\n")


def test_render_text_of_special_values_and_an_empty_registry() -> None:
    metrics = Metrics()
    assert render_text(metrics) == ""
    metrics.gauge("g", "x", kind="nan").set(float("nan"))
    metrics.gauge("g", "x", kind="pinf").set(float("inf"))
    metrics.gauge("g", "x", kind="ninf").set(float("-inf"))
    assert render_text(metrics).splitlines()[2:] == ['g{kind="nan"} NaN', 'g{kind="ninf"} -Inf', 'g{kind="pinf"} +Inf']


def test_unregister_forgets_one_label_set_then_the_name() -> None:
    metrics = Metrics()
    metrics.counter("polls_total", "Polls sent.", device="pcs1").inc(2)
    metrics.counter("polls_total", "Polls sent.", device="meter").inc(5)
    metrics.unregister("polls_total", device="meter")
    assert metrics.total("polls_total") == 2.0
    with pytest.raises(KeyError):
        metrics.value("polls_total", device="meter")
    metrics.unregister("polls_total", device="pcs1")
    metrics.unregister("polls_total", device="pcs1")  # a second stop is harmless
    metrics.unregister("never_registered")
    assert metrics.collect() == []
    assert metrics.gauge("polls_total", "Now a gauge.").value == 0.0  # the name is free again
    assert metrics.counter("other_total", "x", device="meter").value == 0.0  # a new counter starts at zero


def test_a_gauge_whose_read_fails_is_skipped_and_logged_once(caplog) -> None:
    metrics = Metrics()
    state = {"broken": True}

    def read() -> float:
        if state["broken"]:
            raise RuntimeError("driver gone")
        return 7.0

    metrics.gauge("queue_length", "Commands queued.", read=read, device="pcs1")
    metrics.gauge("queue_length", "Commands queued.", read=lambda: 2.0, device="pcs2")
    with caplog.at_level(logging.ERROR, logger="gateway.metrics"):
        for _ in range(3):
            assert metrics.collect() == [
                MetricFamily("queue_length", "Commands queued.", "gauge", [({"device": "pcs2"}, 2.0)])]
        assert metrics.total("queue_length") == 2.0
        assert render_text(metrics).splitlines()[2:] == ['queue_length{device="pcs2"} 2.0']
    errors = [r for r in caplog.records if r.name == "gateway.metrics"]
    assert len(errors) == 1
    assert errors[0].levelno == logging.ERROR
    assert errors[0].getMessage() == "gauge queue_length{'device': 'pcs1'}: read() failed; left out until it works again"
    assert str(errors[0].exc_info[1]) == "driver gone"
    with pytest.raises(RuntimeError, match="driver gone"):
        metrics.value("queue_length", device="pcs1")  # asked for by name, the failure is not hidden
    state["broken"] = False
    assert metrics.series("queue_length") == {(("device", "pcs1"),): 7.0, (("device", "pcs2"),): 2.0}


def test_a_read_that_fails_again_after_recovering_is_logged_again(caplog) -> None:
    metrics = Metrics()
    results: list[float | Exception] = [RuntimeError("first"), 1.0, RuntimeError("second")]

    def read() -> float:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    metrics.gauge("g", "x", read=read)
    with caplog.at_level(logging.ERROR, logger="gateway.metrics"):
        assert [metrics.total("g") for _ in range(3)] == [0.0, 1.0, 0.0]
    assert [str(r.exc_info[1]) for r in caplog.records if r.name == "gateway.metrics"] == ["first", "second"]


def test_the_exposition_reads_back_with_the_prometheus_clients_own_parser() -> None:
    """What a Prometheus server (or promtool) parses: every family, its type, labels and values."""
    from prometheus_client.parser import text_string_to_metric_families
    metrics = Metrics()
    metrics.counter("gridgate_polls_total", "Polls started.", device="pcs1").inc(7)
    metrics.counter("gridgate_polls_total", "Polls started.", device='odd "name"\n').inc(2)
    metrics.gauge("gridgate_spool_depth", "Samples in the spool.", read=lambda: 12.0)
    metrics.gauge("gridgate_lag_seconds", "Oldest sample's age.", site="a").set(float("inf"))
    parsed = {f.name: f for f in text_string_to_metric_families(render_text(metrics))}
    assert {name: f.type for name, f in parsed.items()} == {
        "gridgate_polls": "counter", "gridgate_spool_depth": "gauge", "gridgate_lag_seconds": "gauge"}
    assert {(s.name, s.labels["device"], s.value) for s in parsed["gridgate_polls"].samples} == {
        ("gridgate_polls_total", "pcs1", 7.0), ("gridgate_polls_total", 'odd "name"\n', 2.0)}
    assert [s.value for s in parsed["gridgate_spool_depth"].samples] == [12.0]
    assert [s.value for s in parsed["gridgate_lag_seconds"].samples] == [float("inf")]
