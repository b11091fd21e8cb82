"""The package layout: the real tree keeps the import rules of tests/layout.py, and the checker is
proven on small synthetic trees written under tmp_path."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.layout import (ROOT, RULE_COMMISSIONING, RULE_CORE, RULE_CYCLE, RULE_DRIVER, RULE_NORTHBOUND, RULE_RUNTIME,
                          Import, cycles, imports_of, scan, source_files, violations)


def make_tree(root: Path, files: dict[str, str]) -> Path:
    """Write the files (dedented) and an empty ``__init__.py`` in every package directory without one."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for top in ("gateway", "drivers"):
        (root / top).mkdir(exist_ok=True)
        for directory in [root / top, *(p for p in (root / top).rglob("*") if p.is_dir())]:
            (directory / "__init__.py").touch()
    return root


# --- the real tree -------------------------------------------------------------------------------


def test_the_real_tree_keeps_the_layout() -> None:
    """Every rule holds in gateway/ and drivers/; the message lists every violation, one a line."""
    found = violations(ROOT)
    assert found == [], f"{len(found)} layout violations:\n" + "\n".join(found)


def test_the_checker_reads_every_py_file_under_gateway_and_drivers() -> None:
    files = source_files(ROOT)
    expected = sorted({*(ROOT / "gateway").rglob("*.py"), *(ROOT / "drivers").rglob("*.py")})
    assert len(files) > 0
    assert files == expected
    parsed, unparsable = scan(ROOT)
    assert sorted(parsed) == expected
    assert unparsable == []


def test_a_synthetic_tree_is_read_file_by_file_down_to_its_deepest_module(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/a/b/c/deep.py": "import pymodbus\n",
        "gateway/plain.py": "",
        "drivers/x/y.py": "",
        "tools/elsewhere.py": "import pymodbus\n",  # outside gateway/ and drivers/: not read
    })
    assert [p.relative_to(root).as_posix() for p in sorted(scan(root)[0])] == [
        "drivers/__init__.py", "drivers/x/__init__.py", "drivers/x/y.py",
        "gateway/__init__.py", "gateway/a/__init__.py", "gateway/a/b/__init__.py",
        "gateway/a/b/c/__init__.py", "gateway/a/b/c/deep.py", "gateway/plain.py",
    ]
    assert violations(root) == [
        f"gateway/a/b/c/deep.py:1: core imports pymodbus (rule: {RULE_CORE})"]


# --- imports_of ----------------------------------------------------------------------------------


def test_every_import_form_is_collected_with_its_line_and_place(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/pkg/sub.py": "",
        "gateway/mod.py": """\
            import os.path
            import c104 as lib, pymodbus.client
            from gateway.pkg import sub, NAME, OTHER
            from gateway.pkg import *
            from typing import TYPE_CHECKING
            import typing

            if TYPE_CHECKING:
                from gateway.northbound import station
            else:
                import asyncua
            if typing.TYPE_CHECKING:
                import hat.drivers

            def f():
                import serial
                if TYPE_CHECKING:
                    import gateway.iec104

            class C:
                import json

                async def m(self):
                    from drivers import modbus
            """,
    })
    assert imports_of(root / "gateway/mod.py", root) == [
        Import("os.path", 1, False, False),
        Import("c104", 2, False, False),
        Import("pymodbus.client", 2, False, False),
        Import("gateway.pkg.sub", 3, False, False),  # a submodule: imports gateway/pkg/sub.py
        Import("gateway.pkg", 3, False, False),  # NAME and OTHER: gateway/pkg/__init__.py, once
        Import("gateway.pkg", 4, False, False),
        Import("typing", 5, False, False),
        Import("typing", 6, False, False),
        Import("gateway.northbound", 9, False, True),
        Import("asyncua", 11, False, False),  # the else branch runs
        Import("hat.drivers", 13, False, True),
        Import("serial", 16, True, False),
        Import("gateway.iec104", 18, True, True),
        Import("json", 21, False, False),  # a class body is no function
        Import("drivers", 24, True, False),  # no drivers/modbus in this tree: a name in drivers
    ]


def test_relative_imports_resolve_against_the_files_package(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/nb/a.py": "",
        "gateway/nb/deep/leaf.py": "",
        "gateway/b/c.py": "",
        "gateway/nb/x.py": """\
            from . import a
            from ..b import c
            from ..b import NAME
            from .deep.leaf import thing
            from . import CONST
            from ... import beyond
            """,
        "gateway/nb/__init__.py": "from .a import f\nfrom . import deep\n",
    })
    assert [(i.module, i.line) for i in imports_of(root / "gateway/nb/x.py", root)] == [
        ("gateway.nb.a", 1),
        ("gateway.b.c", 2),
        ("gateway.b", 3),
        ("gateway.nb.deep.leaf", 4),
        ("gateway.nb", 5),
        # line 6 goes above the top-level package: Python refuses it, nothing is collected
    ]
    # in a package's __init__, "." is the package itself
    assert [i.module for i in imports_of(root / "gateway/nb/__init__.py", root)] == [
        "gateway.nb.a", "gateway.nb.deep"]


def test_a_relative_import_breaks_a_rule_like_the_absolute_one(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/northbound/station.py": "",
        "gateway/core.py": "from .northbound import station\n",
        "drivers/a/x.py": "from ...drivers.b import y\nfrom ..b import z\n",
        "drivers/b/z.py": "",
    })
    assert violations(root) == [
        f"drivers/a/x.py:1: driver imports drivers.b (rule: {RULE_DRIVER})",
        f"drivers/a/x.py:2: driver imports drivers.b.z (rule: {RULE_DRIVER})",
        f"gateway/core.py:1: core imports gateway.northbound.station (rule: {RULE_CORE})",
    ]


# --- rule 1: core ----------------------------------------------------------------------------------


@pytest.mark.parametrize("statement, module", [
    ("import c104", "c104"),
    ("import pymodbus.client", "pymodbus.client"),
    ("from asyncua import Server", "asyncua"),
    ("import serial", "serial"),
    ("from hat.drivers import iec104", "hat.drivers"),
    ("from gateway.iec104 import asdus", "gateway.iec104.asdus"),
    ("from gateway.iec104.asdus import Frame", "gateway.iec104.asdus"),
    ("import gateway.northbound", "gateway.northbound"),
    ("from gateway.northbound.outstation import Outstation", "gateway.northbound.outstation"),
    ("from gateway.commissioning.demo import run", "gateway.commissioning.demo"),
    ("import drivers", "drivers"),
    ("from drivers.modbus.codec import decode", "drivers.modbus.codec"),
])
def test_a_core_module_importing_a_protocol_package_is_reported(tmp_path: Path, statement: str, module: str) -> None:
    root = make_tree(tmp_path, {
        "gateway/iec104/asdus.py": "",
        "gateway/northbound/outstation.py": "",
        "gateway/commissioning/demo.py": "",
        "drivers/modbus/codec.py": "",
        "gateway/service.py": f'"""Doc."""\n\nimport logging\n{statement}\n',
    })
    assert violations(root) == [f"gateway/service.py:4: core imports {module} (rule: {RULE_CORE})"]


def test_the_example_message_reads_as_documented(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/northbound/outstation.py": "",
        "gateway/service.py": "\n" * 20 + "from gateway.northbound import outstation\n",
    })
    assert violations(root) == [
        "gateway/service.py:21: core imports gateway.northbound.outstation "
        "(rule: core imports no protocol package)"]


@pytest.mark.parametrize("module", [
    "gateway/__init__.py", "gateway/config/loader.py", "gateway/commands/gate.py",
    "gateway/simulation/simcontrol.py",
])
def test_every_gateway_module_outside_the_protocol_packages_is_core(tmp_path: Path, module: str) -> None:
    root = make_tree(tmp_path, {module: "import pymodbus\n"})
    assert violations(root) == [f"{module}:1: core imports pymodbus (rule: {RULE_CORE})"]


def test_core_may_import_core_the_standard_library_and_lookalike_names(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/config/iec104.py": "",  # gateway.config.iec104 is not gateway.iec104
        "gateway/northbound_names.py": "",  # nor is gateway.northbound_names gateway.northbound
        "gateway/model.py": "",
        "gateway/service.py": """\
            import serialization, hatch, c1045, pymodbus_extra
            from gateway.config import iec104
            from gateway import model, northbound_names
            from twisted.internet import reactor
            """,
    })
    assert violations(root) == []


def test_a_core_import_inside_a_function_or_under_type_checking_still_counts(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/service.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from gateway.northbound.station import Station

            def run():
                from gateway.commissioning import demo
            """,
    })
    assert violations(root) == [
        "gateway/service.py:3: core imports gateway.northbound.station (under TYPE_CHECKING) "
        f"(rule: {RULE_CORE})",
        "gateway/service.py:6: core imports gateway.commissioning (inside a function) "
        f"(rule: {RULE_CORE})",
    ]


# --- the cli exception ---------------------------------------------------------------------------


def test_the_cli_may_import_commissioning_inside_functions_only(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/commissioning/demo.py": "",
        "gateway/northbound/tls.py": "",
        "gateway/iec104/asdus.py": "",
        "drivers/modbus/codec.py": "",
        "gateway/cli.py": """\
            import argparse
            from gateway.northbound import tls

            def cmd_demo(args):
                from gateway.commissioning.demo import run_demo
                from gateway.northbound.tls import summary
                import gateway.commissioning

                def nested():
                    from gateway.commissioning import demo

            class Commands:
                def run(self):
                    from gateway.northbound import tls

            def cmd_other(args):
                from gateway.iec104 import asdus
                import pymodbus
                from drivers import modbus

            if True:
                import gateway.commissioning.demo
            """,
    })
    assert violations(root) == [
        f"gateway/cli.py:2: core imports gateway.northbound.tls (rule: {RULE_CORE})",
        f"gateway/cli.py:6: core imports gateway.northbound.tls (inside a function) (rule: {RULE_CORE})",
        f"gateway/cli.py:14: core imports gateway.northbound.tls (inside a function) (rule: {RULE_CORE})",
        "gateway/cli.py:17: core imports gateway.iec104.asdus (inside a function) "
        f"(rule: {RULE_CORE})",
        f"gateway/cli.py:18: core imports pymodbus (inside a function) (rule: {RULE_CORE})",
        f"gateway/cli.py:19: core imports drivers.modbus (inside a function) (rule: {RULE_CORE})",
        f"gateway/cli.py:22: core imports gateway.commissioning.demo (rule: {RULE_CORE})",
    ]


def test_the_cli_exception_belongs_to_gateway_cli_alone(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/commissioning/demo.py": "",
        "gateway/commands/cli.py": "def f():\n    from gateway.commissioning import demo\n",
        "gateway/clitools.py": "def f():\n    from gateway.commissioning import demo\n",
    })
    assert violations(root) == [
        "gateway/clitools.py:2: core imports gateway.commissioning.demo (inside a function) "
        f"(rule: {RULE_CORE})",
        "gateway/commands/cli.py:2: core imports gateway.commissioning.demo (inside a function) "
        f"(rule: {RULE_CORE})",
    ]


# --- rule 2: drivers ------------------------------------------------------------------------------


def test_a_driver_imports_its_own_package_core_iec104_and_libraries_but_no_other_driver(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "drivers/modbus/codec.py": "",
        "drivers/opcua/client.py": "",
        "gateway/iec104/asdus.py": "",
        "gateway/northbound/station.py": "",
        "gateway/commissioning/demo.py": "",
        "drivers/modbus/driver.py": """\
            import pymodbus, serial
            from drivers.modbus import codec
            from . import codec
            from gateway.interfaces import IDriver
            from gateway.iec104.asdus import Frame
            import drivers
            from drivers.opcua.client import Client
            from drivers import opcua
            from gateway.northbound import station
            from gateway.commissioning import demo
            """,
    })
    assert violations(root) == [
        f"drivers/modbus/driver.py:7: driver imports drivers.opcua.client (rule: {RULE_DRIVER})",
        f"drivers/modbus/driver.py:8: driver imports drivers.opcua (rule: {RULE_DRIVER})",
        f"drivers/modbus/driver.py:9: driver imports gateway.northbound.station (rule: {RULE_DRIVER})",
        # reported once, under rule 2, although it also breaks rule 3
        f"drivers/modbus/driver.py:10: driver imports gateway.commissioning.demo (rule: {RULE_DRIVER})",
    ]


def test_a_drivers_package_init_is_checked_like_its_modules(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "drivers/modbus/__init__.py": "from drivers.modbus.driver import Bus\nfrom drivers.opcua import X\n",
        "drivers/modbus/driver.py": "",
        "drivers/opcua/__init__.py": "",
    })
    assert violations(root) == [
        f"drivers/modbus/__init__.py:2: driver imports drivers.opcua (rule: {RULE_DRIVER})"]


# --- rule 3: runtime, northbound, commissioning ---------------------------------------------------


def test_no_runtime_module_imports_commissioning(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/commissioning/demo.py": "",
        "gateway/iec104/frames.py": "from gateway.commissioning import demo\n",
        "gateway/northbound/station.py": "def f():\n    import gateway.commissioning\n",
    })
    assert violations(root) == [
        f"gateway/iec104/frames.py:1: runtime imports gateway.commissioning.demo (rule: {RULE_RUNTIME})",
        "gateway/northbound/station.py:2: runtime imports gateway.commissioning (inside a function) "
        f"(rule: {RULE_RUNTIME})",
    ]


def test_northbound_imports_iec104_core_and_libraries_but_no_driver(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/iec104/asdus.py": "",
        "gateway/model.py": "",
        "drivers/modbus/codec.py": "",
        "gateway/northbound/station.py": """\
            import c104, hat.drivers
            from gateway.iec104 import asdus
            from gateway.model import Sample
            from gateway.northbound import station
            from drivers.modbus import codec
            """,
    })
    assert violations(root) == [
        f"gateway/northbound/station.py:5: northbound imports drivers.modbus.codec (rule: {RULE_NORTHBOUND})"]


def test_commissioning_imports_anything_in_gateway_and_libraries_but_no_driver(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/iec104/asdus.py": "",
        "gateway/northbound/station.py": "",
        "gateway/model.py": "",
        "drivers/modbus/codec.py": "",
        "gateway/commissioning/demo.py": """\
            import c104, pymodbus, asyncua, serial, hat
            from gateway.iec104 import asdus
            from gateway.northbound import station
            from gateway import model, cli
            from drivers.modbus import codec
            """,
    })
    assert violations(root) == [
        f"gateway/commissioning/demo.py:5: commissioning imports drivers.modbus.codec "
        f"(rule: {RULE_COMMISSIONING})"]


# --- rule 4: cycles -------------------------------------------------------------------------------


def test_a_three_module_cycle_is_reported_once_with_its_files_and_lines(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/a.py": "import os\nfrom gateway import b\n",
        "gateway/b.py": "from gateway.c import thing\n",
        "gateway/c.py": "\n\nimport gateway.a\n",
    })
    assert violations(root) == [
        "gateway/a.py:2: import cycle gateway.a -> gateway.b -> gateway.c -> gateway.a "
        "[gateway/a.py:2 imports gateway.b, gateway/b.py:1 imports gateway.c, "
        f"gateway/c.py:3 imports gateway.a] (rule: {RULE_CYCLE})"]


def test_an_import_inside_a_function_is_in_the_cycle_graph(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "drivers/m/a.py": "from drivers.m import b\n",
        "drivers/m/b.py": "def f():\n    from drivers.m import a\n",
    })
    assert violations(root) == [
        "drivers/m/a.py:1: import cycle drivers.m.a -> drivers.m.b -> drivers.m.a "
        f"[drivers/m/a.py:1 imports drivers.m.b, drivers/m/b.py:2 imports drivers.m.a] (rule: {RULE_CYCLE})"]


def test_a_type_checking_import_makes_no_cycle_but_still_breaks_rule_1(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "gateway/northbound/station.py": "from gateway.service import Service\n",
        "gateway/service.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from gateway.northbound.station import Station
            """,
        "drivers/m/a.py": "from drivers.m.b import B\n",
        "drivers/m/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from drivers.m.a import A\n",
    })
    assert violations(root) == [
        "gateway/service.py:3: core imports gateway.northbound.station (under TYPE_CHECKING) "
        f"(rule: {RULE_CORE})"]


def test_the_same_pair_without_type_checking_is_a_cycle(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "drivers/m/a.py": "from drivers.m.b import B\n",
        "drivers/m/b.py": "import typing\nif not typing.TYPE_CHECKING:\n    from drivers.m.a import A\n",
    })
    assert violations(root) == [
        "drivers/m/a.py:1: import cycle drivers.m.a -> drivers.m.b -> drivers.m.a "
        f"[drivers/m/a.py:1 imports drivers.m.b, drivers/m/b.py:3 imports drivers.m.a] (rule: {RULE_CYCLE})"]


def test_a_child_importing_its_package_init_is_no_cycle_unless_the_init_imports_the_child(tmp_path: Path) -> None:
    quiet = make_tree(tmp_path / "quiet", {
        "gateway/pkg/__init__.py": "CONST = 1\nfrom gateway.pkg.other import X\n",
        "gateway/pkg/other.py": "",
        "gateway/pkg/child.py": "from gateway.pkg import CONST\nfrom . import other\nimport gateway.pkg\n",
    })
    assert violations(quiet) == []
    # `from . import sibling` names the sibling's file, not the __init__ that imports this module
    siblings = make_tree(tmp_path / "siblings", {
        "gateway/pkg/__init__.py": "from gateway.pkg.child import X\n",
        "gateway/pkg/other.py": "",
        "gateway/pkg/child.py": "from . import other\n",
    })
    assert violations(siblings) == []
    real = make_tree(tmp_path / "real", {
        "gateway/pkg/__init__.py": "CONST = 1\nfrom gateway.pkg.child import X\n",
        "gateway/pkg/child.py": "from gateway.pkg import CONST\n",
    })
    assert violations(real) == [
        "gateway/pkg/__init__.py:2: import cycle gateway.pkg -> gateway.pkg.child -> gateway.pkg "
        "[gateway/pkg/__init__.py:2 imports gateway.pkg.child, gateway/pkg/child.py:1 imports gateway.pkg] "
        f"(rule: {RULE_CYCLE})"]


def test_an_init_importing_from_its_own_package_is_no_self_cycle(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"gateway/pkg/__init__.py": "A = 1\nfrom gateway.pkg import A as B\n"})
    assert violations(root) == []


def test_cycles_finds_one_cycle_per_strongly_connected_component() -> None:
    graph = {
        "a": ["b"], "b": ["c"], "c": ["a"],  # a ring of three
        "d": ["e"], "e": ["d", "f"], "f": [],  # a pair, and a tail out of it
        "g": ["g"],  # a self-import is no cycle
        "h": ["i", "j"], "i": ["h"], "j": ["h"],  # a figure eight: one component, one cycle
        "k": ["a", "zz"],  # into a cycle from outside, and to a node not in the graph
    }
    assert cycles(graph) == [["a", "b", "c", "a"], ["d", "e", "d"], ["h", "i", "h"]]


def test_cycles_survives_a_chain_deeper_than_the_recursion_limit() -> None:
    graph = {str(n): [str(n + 1)] for n in range(5000)}
    graph["5000"] = ["0"]
    assert len(cycles(graph)) == 1
    assert len(cycles({str(n): [str(n + 1)] for n in range(5000)})) == 0


def test_a_file_that_does_not_parse_is_reported(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"gateway/broken.py": "import os\ndef f(:\n"})
    (message,) = violations(root)
    assert message.startswith("gateway/broken.py:2: does not parse: ")
    assert message.endswith("(rule: source parses)")


def test_the_gateway_process_loads_no_commissioning_code_and_no_c104(tmp_path: Path) -> None:
    """What the ast rules mean at run time: ``gridgate run``'s path (the CLI parser, the registry,
    the service tree, every installed plugin) leaves the dispatch test and c104 unloaded; only
    the parser's option list of ``dispatch-test`` (``dispatchargs``) is read."""
    probe = ("import sys\nfrom gateway.cli import build_parser\nbuild_parser()\n"
             "from gateway.registry import load_plugins\nload_plugins()\nimport gateway.runner, gateway.service\n"
             "print(' '.join(sorted(m for m in sys.modules if m.startswith(('gateway.commissioning', 'c104')))))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["gateway.commissioning", "gateway.commissioning.dispatchargs"]
