"""The plugin registry refuses what it cannot trust, naming the distributions involved.

The plugins come from real (if tiny) installed distributions: a dist-info folder with METADATA
and entry_points.txt on a temporary path, read by importlib.metadata as pip-installed ones are.
"""

import sys
from importlib.metadata import EntryPoint, distributions
from pathlib import Path
from typing import Iterator

import pytest

from gateway.interfaces import IDriverPlugin, INorthboundPlugin
from gateway.registry import DRIVERS, PluginError, by_name, load_plugins

GOOD_PLUGIN = '''
from zope.interface import implementer
from gateway.interfaces import IDriverPlugin

@implementer(IDriverPlugin)
class Plugin:
    name = "{name}"
    profile_model = object
    connection_model = object
    def prepare(self, connection, folder): return connection
    def profile_problems(self, profile): return []
    def site_problems(self, devices): return []
    def load_summary(self, devices): return ""
    def device_summary(self, device): return ""
    def build(self, devices, sink, reactor, metrics): return []

PLUGIN = Plugin()
'''

MISSING_BUILD = GOOD_PLUGIN.format(name="half").replace("    def build(self, devices, sink, reactor, metrics): return []\n", "")


def _distribution(root: Path, dist: str, version: str, module: str, source: str, entry: str) -> None:
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[{DRIVERS}]\n{entry} = {module}:PLUGIN\n")


@pytest.fixture
def site_packages(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("gg_test_")]:
        del sys.modules[name]


def _entries(root: Path) -> list[EntryPoint]:
    return sorted((e for d in distributions(path=[str(root)]) for e in d.entry_points if e.group == DRIVERS),
                  key=lambda e: e.value)


def test_two_plugins_with_one_name_are_refused_naming_both_distributions(site_packages: Path) -> None:
    _distribution(site_packages, "gridgate-vendor-a", "1.2", "gg_test_a", GOOD_PLUGIN.format(name="sunspec"), "a")
    _distribution(site_packages, "gridgate-vendor-b", "0.3", "gg_test_b", GOOD_PLUGIN.format(name="sunspec"), "b")
    with pytest.raises(PluginError) as caught:
        by_name(_entries(site_packages), IDriverPlugin)
    message = str(caught.value)
    assert "two plugins are named 'sunspec'" in message
    assert "gg_test_a:PLUGIN from gridgate-vendor-a 1.2" in message
    assert "gg_test_b:PLUGIN from gridgate-vendor-b 0.3" in message


def test_a_plugin_failing_its_interface_is_refused_with_its_distribution(site_packages: Path) -> None:
    _distribution(site_packages, "gridgate-half", "0.1", "gg_test_half", MISSING_BUILD, "half")
    with pytest.raises(PluginError) as caught:
        by_name(_entries(site_packages), IDriverPlugin)
    message = str(caught.value)
    assert "plugin 'half' (gg_test_half:PLUGIN) from gridgate-half 0.1 does not provide IDriverPlugin" in message
    assert "build" in message


def test_distinct_plugins_load_by_name(site_packages: Path) -> None:
    _distribution(site_packages, "gridgate-one", "1.0", "gg_test_one", GOOD_PLUGIN.format(name="one"), "one")
    _distribution(site_packages, "gridgate-two", "1.0", "gg_test_two", GOOD_PLUGIN.format(name="two"), "two")
    plugins = by_name(_entries(site_packages), IDriverPlugin)
    assert sorted(plugins) == ["one", "two"]
    assert IDriverPlugin.providedBy(plugins["one"])


def test_the_installed_plugins_pass_their_interfaces() -> None:
    """The project's own plugins: Modbus and the IEC 104 outstation."""
    plugins = load_plugins()
    assert "modbus" in plugins.drivers and "iec104" in plugins.northbound
    assert INorthboundPlugin.providedBy(plugins.northbound["iec104"])
