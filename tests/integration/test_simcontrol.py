"""The simulator control API (``gateway.simulation.simcontrol``) over real HTTP, in-process and behind ``gridgate simulate --control``."""

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor, threads
from twisted.internet.defer import inlineCallbacks

from gateway.config.loader import Site, load_site
from gateway.registry import load_plugins
from gateway.simulation.simcontrol import control_url, parse_hostport, start_control
from tests.integration.sites import wait_until

pytestmark = pytest.mark.integration

PROFILE = {"model": "control-test", "kind": "meter", "protocol": "modbus", "points": [
    {"id": "soc", "address": 0, "type": "uint16", "scale": 0.1, "sim": {"kind": "constant", "value": 55}},
    {"id": "name", "address": 1, "type": "string", "length": 2},
    {"id": "run", "table": "coil", "address": 0, "type": "bool", "sim": {"kind": "constant", "value": 1}},
]}


def write_site(folder: Path, port: int = 0) -> Path:
    """A one-device site file (Modbus on ``port``) next to its profile."""
    (folder / "meter.yaml").write_text(yaml.safe_dump(PROFILE), encoding="utf-8")
    spec = {"site": "control", "spool": {"path": str(folder / "spool.db")},
            "devices": [{"name": "m1", "profile": "meter.yaml", "connection": {"host": "127.0.0.1", "port": port}}]}
    (folder / "site.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return folder / "site.yaml"


def http(url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    """(status, decoded JSON) of a GET, or of a POST when a body is given."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """The one-device site, validated."""
    return load_site(write_site(tmp_path), load_plugins())


@inlineCallbacks
def with_control(site: Site, body: Any) -> Iterator[Any]:
    """Start the simulator and the API on a free port, run ``body(url, simulator)`` in a thread, stop both."""
    simulator = load_plugins().drivers["modbus"].simulator(site.devices, reactor)
    yield simulator.start()
    listening = start_control(reactor, [simulator], site.devices)
    try:
        result = yield threads.deferToThread(body, control_url(listening), simulator)
    finally:
        yield listening.stopListening()
        yield simulator.stop()
    return result


@pytest_twisted.inlineCallbacks
def test_values_lists_every_simulated_point(site: Site) -> Iterator[Any]:
    """GET /values answers every point of every device as ``device.point``, in JSON types."""
    status, values = yield with_control(site, lambda url, _: http(f"{url}/values"))
    assert status == 200
    assert values == {"m1.soc": pytest.approx(55.0), "m1.name": "name", "m1.run": True}


@pytest_twisted.inlineCallbacks
def test_set_serves_the_value_and_answers_what_is_served(site: Site) -> Iterator[Any]:
    """POST /set changes what the device serves (quantised by its register) and answers the served value."""
    def body(url: str, simulator: Any) -> tuple:
        answer = http(f"{url}/set", {"point": "m1.soc", "value": 61.04})
        return answer, http(f"{url}/values")[1]["m1.soc"], simulator.value("m1", "soc")
    (status, answer), listed, served = yield with_control(site, body)
    assert status == 200 and answer == {"point": "m1.soc", "value": pytest.approx(61.0)}
    assert listed == pytest.approx(61.0) and served == pytest.approx(61.0)


@pytest_twisted.inlineCallbacks
def test_set_refuses_unknown_points_and_bad_requests(site: Site) -> Iterator[Any]:
    """Unknown point: 404. Not JSON, no value, wrong kind, beyond the register: 400, and nothing changes."""
    def body(url: str, simulator: Any) -> list:
        answers = [http(f"{url}/set", {"point": "m1.nope", "value": 1}),
                   http(f"{url}/set", {"point": "m9.soc", "value": 1}),
                   http(f"{url}/set", raw=b"{not json"),
                   http(f"{url}/set", {"point": "m1.soc"}),
                   http(f"{url}/set", {"point": "m1.soc", "value": True}),
                   http(f"{url}/set", {"point": "m1.run", "value": 3}),
                   http(f"{url}/set", {"point": "m1.soc", "value": 7000})]
        return [status for status, _ in answers] + [simulator.value("m1", "soc")]
    *statuses, soc = yield with_control(site, body)
    assert statuses == [404, 404, 400, 400, 400, 400, 400]
    assert soc == pytest.approx(55.0)


# soc is uint16 x 0.1: 6553.5 encodes to 0xFFFF, the uint16 'not implemented' sentinel
REFUSED = [(6553.5, "'not implemented' marker"), (-1, "carries 0..6553.5"), (7000, "carries 0..6553.5"),
           ("55", "finite number"), (None, "finite number")]


@pytest_twisted.inlineCallbacks
def test_set_answers_400_naming_the_point_for_a_value_it_cannot_take(site: Site) -> Iterator[Any]:
    """A sentinel, out-of-range, non-number or too long value answers 400 naming the point and why; no change."""
    def body(url: str, simulator: Any) -> tuple:
        before = (simulator.engine("m1").values(), http(f"{url}/values")[1])
        answers = [http(f"{url}/set", {"point": "m1.soc", "value": value}) for value, _ in REFUSED]
        answers.append(http(f"{url}/set", {"point": "m1.name", "value": "abcde"}))
        after = (simulator.engine("m1").values(), http(f"{url}/values")[1])
        edge = http(f"{url}/set", {"point": "m1.soc", "value": 6553.4})
        return answers, before, after, edge
    answers, before, after, edge = yield with_control(site, body)
    for (status, answer), (_, why) in zip(answers, REFUSED + [(None, "string too long")]):
        assert status == 400 and answer["point"] in ("m1.soc", "m1.name"), answer
        assert answer["error"].startswith(f"{answer['point']} cannot take ") and why in answer["error"], answer
    assert after == before, "a refused value changes nothing"
    assert edge == (200, {"point": "m1.soc", "value": pytest.approx(6553.4)}), "the count below the sentinel serves"


def test_parse_hostport() -> None:
    """HOST:PORT, :PORT and bracketed IPv6 parse; anything else is a ValueError naming the input."""
    assert parse_hostport("127.0.0.1:8910") == ("127.0.0.1", 8910)
    assert parse_hostport(":8910") == ("127.0.0.1", 8910)
    assert parse_hostport("[::1]:8910") == ("::1", 8910)
    with pytest.raises(ValueError, match="'localhost'"):
        parse_hostport("localhost")


def test_simulate_command_serves_the_control_api(tmp_path: Path) -> None:
    """`gridgate simulate SITE --control HOST:PORT` logs the API's URL and answers GET /values.

    Both the device and the API are given port 0: the process binds what it gets and its log names
    the API's port, so no port is chosen before the process binds it."""
    site = write_site(tmp_path)
    log = tmp_path / "simulate.log"
    with open(log, "w", encoding="utf-8") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "simulate", str(site), "--control",
                                    "127.0.0.1:0"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        announced = lambda: re.search(r"simulator control API at (http://127\.0\.0\.1:(\d+))",
                                      log.read_text(encoding="utf-8"))
        wait_until(lambda: announced() or process.poll() is not None, 30, "the control API's log line")
        assert announced(), log.read_text(encoding="utf-8")[-2000:]
        url, port = announced().groups()
        assert int(port) != 0
        answer = http(f"{url}/values")
        assert answer[0] == 200 and answer[1]["m1.soc"] == pytest.approx(55.0)
    finally:
        process.terminate()
        process.wait(30)
