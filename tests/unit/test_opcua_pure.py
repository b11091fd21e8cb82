"""The OPC UA driver's pure parts: the StatusCode -> quality table, value scaling and the values a
point refuses, monitored-item
requests (filters), profile and connection validation, and the server-certificate trust rules."""

import datetime
from pathlib import Path

import pytest
from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from drivers.opcua.codec import BadValue, EncodeError, decoded, reading_of, source_seconds, to_engineering, to_raw
from drivers.opcua.profile import OpcUaConnection, OpcUaProfile, Security
from drivers.opcua.session import security_problems
from drivers.opcua.quality import keeps_last_value, quality_of, status_name
from drivers.opcua.sim.nodes import method_call
from drivers.opcua.subscribe import item_request
from drivers.opcua.trust import UntrustedServer, check_server
from gateway.certs import issue, make_ca, write_pair
from gateway.model import Quality

S = ua.StatusCodes
PROFILE = OpcUaProfile.model_validate({
    "model": "ems", "kind": "ems", "protocol": "opcua",
    "opcua": {"namespace": "urn:test:ems", "sampling_ms": 250, "queue_size": 4, "deadband": {"percent": 1.0}},
    "points": [
        {"id": "soc", "node": "s=BESS.SOC", "data_type": "Float", "unit": "%"},
        {"id": "p", "node": "i=1001", "data_type": "Int16", "scale": 0.1, "unit": "kW",
         "deadband": {"absolute": 0.5}, "sampling_ms": 100, "queue_size": 1},
        {"id": "on", "node": "s=BESS.Running", "data_type": "Boolean", "namespace": "urn:other"},
        {"id": "name", "node": "s=Name", "data_type": "String", "mode": "read"},
        {"id": "u", "node": "s=U", "data_type": "UInt16"},
    ]})


@pytest.mark.parametrize(("status", "quality", "keep"), [
    (S.Good, Quality.GOOD, False),
    (S.GoodLocalOverride, Quality.SB, False),
    (S.UncertainSubstituteValue, Quality.SB, False),
    (S.GoodClamped, Quality.OV, False),
    (S.UncertainEngineeringUnitsExceeded, Quality.OV, False),
    (S.Good | 0x400 | 0x80, Quality.OV, False),  # DataValue info bits with overflow
    (S.UncertainLastUsableValue, Quality.NT, False),
    (S.UncertainNoCommunicationLastUsableValue, Quality.NT, False),
    (S.BadCommunicationError, Quality.NT, True),
    (S.BadTimeout, Quality.NT, True),
    (S.BadSessionClosed, Quality.NT, True),
    (S.BadOutOfService, Quality.BL | Quality.IV, True),
    (S.BadNodeIdUnknown, Quality.IV, True),
    (S.BadSensorFailure, Quality.IV, True),
])
def test_every_row_of_the_status_table(status: int, quality: Quality, keep: bool) -> None:
    assert quality_of(status) == quality
    assert keeps_last_value(status) is keep


def test_status_names_for_logs() -> None:
    assert status_name(S.BadNodeIdUnknown) == "BadNodeIdUnknown (0x80340000)"
    assert status_name(0x12345678) == "0x12345678"


def test_scaling_both_ways_and_type_limits() -> None:
    p, on, u, soc = (PROFILE.point(x) for x in ("p", "on", "u", "soc"))
    assert to_engineering(p, 1234) == pytest.approx(123.4) and to_raw(p, 123.4) == 1234
    assert to_engineering(on, 1) is True and to_raw(on, 0) is False
    assert to_engineering(u, 7) == 7 and isinstance(to_engineering(u, 7), int)
    assert to_raw(soc, 55.5) == 55.5
    with pytest.raises(EncodeError, match="outside Int16"):
        to_raw(p, 4000.0)  # 40000 raw
    with pytest.raises(EncodeError, match="outside UInt16"):
        to_raw(u, -1)
    with pytest.raises(EncodeError, match="not a finite number"):
        to_raw(soc, float("nan"))


V = ua.VariantType


@pytest.mark.parametrize(("point", "variant", "reason"), [
    ("soc", ua.Variant("12.5", V.String), "type"),
    ("soc", ua.Variant(True, V.Boolean), "type"),
    ("on", ua.Variant(2, V.Int32), "type"),  # bool(2) would be a silent True
    ("name", ua.Variant(3.0, V.Double), "type"),
    ("soc", ua.Variant([1.0, 2.0], V.Float, is_array=True), "array"),
    ("soc", ua.Variant(), "empty"),
    ("soc", ua.Variant(float("nan"), V.Float), "not finite"),
    ("soc", ua.Variant(float("-inf"), V.Double), "not finite"),
])
def test_a_value_a_point_cannot_take_is_refused_with_its_cause(point: str, variant: ua.Variant,
                                                                reason: str) -> None:
    with pytest.raises(BadValue) as refused:
        decoded(PROFILE.point(point), reading_of(ua.DataValue(variant)))
    assert refused.value.reason == reason


def test_numbers_of_another_width_are_taken_as_numbers() -> None:
    def value(point: str, variant: ua.Variant) -> object:
        return decoded(PROFILE.point(point), reading_of(ua.DataValue(variant)))
    assert value("p", ua.Variant(70000, V.Int64)) == pytest.approx(7000.0)
    assert value("u", ua.Variant(7.0, V.Double)) == 7
    assert value("on", ua.Variant(False, V.Boolean)) is False


def test_a_null_time_stamp_is_no_time_stamp() -> None:
    at = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
    null, end = (datetime.datetime(1601, 1, 1, tzinfo=datetime.timezone.utc),
                 datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc))
    assert source_seconds(ua.DataValue(SourceTimestamp=at, ServerTimestamp=null)) == at.timestamp()
    assert source_seconds(ua.DataValue(SourceTimestamp=null, ServerTimestamp=at)) == at.timestamp()
    assert source_seconds(ua.DataValue(SourceTimestamp=end, ServerTimestamp=None)) is None


METHOD = {"object": "s=PPC", "node": "s=PPC.SetQ", "arguments": [{"data_type": "Double"},
                                                                 {"data_type": "UInt32", "value": 30}]}


def _method_profile(**point: object) -> dict:
    return {"model": "m", "kind": "pv", "protocol": "opcua", "opcua": {"namespace": "urn:m"},
            "points": [{"id": "q", "node": "s=Q", "data_type": "Float", "writable": {"min": -1, "max": 1},
                        "method": METHOD, **point}]}


@pytest.mark.parametrize(("change", "message"), [
    ({"writable": None}, "needs writable limits"),
    ({"method": {**METHOD, "arguments": [{"data_type": "Double", "value": 1.0}]}}, "exactly one argument"),
    ({"method": {**METHOD, "arguments": [{"data_type": "Double"}, {"data_type": "Double"}]}}, "exactly one argument"),
    ({"method": {**METHOD, "arguments": [{"data_type": "Double"}, {"data_type": "UInt32", "value": -1}]}},
     "-1 is not a UInt32"),
    ({"method": {**METHOD, "arguments": [{"data_type": "Double"}, {"data_type": "Boolean", "value": 1}]}},
     "1 is not a Boolean"),
    ({"method": {**METHOD, "node": "s=Q"}}, "method node s=Q is the node of point q"),
])
def test_a_method_call_that_cannot_work_is_refused_in_the_profile(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OpcUaProfile.model_validate(_method_profile(**change))


def test_the_command_argument_takes_its_own_type() -> None:
    q = OpcUaProfile.model_validate(_method_profile(scale=0.1)).point("q")
    assert q.method is not None and q.method.command_argument().data_type == "Double"
    assert to_raw(q, 0.5, "Double") == pytest.approx(5.0) and to_raw(q, 0.5, "Int16") == 5
    with pytest.raises(EncodeError, match="outside SByte"):
        to_raw(q, 20.0, "SByte")


@pytest.mark.parametrize(("arguments", "status", "per_argument"), [
    ([ua.Variant(1.5, V.Double), ua.Variant(30, V.UInt32)], S.Good, [S.Good, S.Good]),
    ([ua.Variant(1.5, V.Float), ua.Variant(30, V.UInt32)], S.BadInvalidArgument, [S.BadTypeMismatch, S.Good]),
    ([ua.Variant(1.5, V.Double)], S.BadArgumentsMissing, []),
    ([ua.Variant(1.5, V.Double)] * 3, S.BadTooManyArguments, []),
])
def test_the_simulator_checks_a_calls_arguments_as_a_conformant_server(arguments: list, status: int,
                                                                       per_argument: list) -> None:
    method = OpcUaProfile.model_validate(_method_profile()).point("q").method
    result = method_call(method, arguments)
    assert result.StatusCode.value == status and [r.value for r in result.InputArgumentResults] == per_argument


def test_item_requests_carry_trigger_deadband_sampling_and_queue() -> None:
    node = ua.NodeId(1001, 2)
    request = item_request(7, node, PROFILE, "p", 500)
    parameters = request.RequestedParameters
    assert (parameters.ClientHandle, parameters.SamplingInterval, parameters.QueueSize) == (7, 100.0, 1)
    flt = parameters.Filter
    assert flt.Trigger == ua.DataChangeTrigger.StatusValue
    assert (flt.DeadbandType, flt.DeadbandValue) == (ua.DeadbandType.Absolute, pytest.approx(5.0))  # 0.5 kW / 0.1
    soc = item_request(1, node, PROFILE, "soc", 500).RequestedParameters
    assert (soc.SamplingInterval, soc.QueueSize) == (250.0, 4)
    assert (soc.Filter.DeadbandType, soc.Filter.DeadbandValue) == (ua.DeadbandType.Percent, 1.0)
    assert request.ItemToMonitor.AttributeId == ua.AttributeIds.Value and parameters.DiscardOldest


def test_a_group_sets_what_its_points_do_not_and_the_profile_the_rest() -> None:
    profile = OpcUaProfile.model_validate({
        "model": "m", "kind": "ems", "protocol": "opcua",
        "opcua": {"namespace": "u", "sampling_ms": 1000, "queue_size": 2,
                  "groups": {"fast": {"sampling_ms": 0, "deadband": {"absolute": 0.1}}, "slow": {"queue_size": 1}}},
        "points": [{"id": "a", "node": "s=A", "data_type": "Float", "group": "fast"},
                   {"id": "b", "node": "s=B", "data_type": "Float", "group": "fast", "sampling_ms": 50},
                   {"id": "c", "node": "s=C", "data_type": "Float", "group": "slow"},
                   {"id": "d", "node": "s=D", "data_type": "Float"}]})
    settings = {p.id: profile.subscription_of(p) for p in profile.points}
    assert (settings["a"].sampling_ms, settings["a"].queue_size, settings["a"].deadband.absolute) == (0, 2, 0.1)
    assert settings["b"].sampling_ms == 50 and settings["b"].deadband.absolute == 0.1
    assert (settings["c"].sampling_ms, settings["c"].queue_size, settings["c"].deadband) == (1000, 1, None)
    assert (settings["d"].sampling_ms, settings["d"].queue_size) == (1000, 2)
    with pytest.raises(ValidationError, match=r"a: no group 'fastest' in opcua.groups \(it has \['fast', 'slow'\]\)"):
        OpcUaProfile.model_validate({**profile.model_dump(exclude_none=True), "points": [
            {"id": "a", "node": "s=A", "data_type": "Float", "group": "fastest"}]})


def test_a_client_key_and_certificate_that_cannot_work_are_named_before_connecting(tmp_path: Path) -> None:
    ca = make_ca("ca", use_rsa=True)
    write_pair(issue(ca, "gw", "opcua", uri="urn:gw", use_rsa=True), tmp_path / "gw.crt", tmp_path / "gw.key")
    write_pair(issue(ca, "other", "opcua", uri="urn:o", use_rsa=True), tmp_path / "o.crt", tmp_path / "o.key")
    write_pair(issue(ca, "plain", "client", use_rsa=True), tmp_path / "p.crt", tmp_path / "p.key")
    (tmp_path / "bad.key").write_text("not a key")

    def problems(cert: str, key: str) -> list[str]:
        return security_problems(Security(policy="Basic256Sha256", mode="Sign", certificate=str(tmp_path / cert),
                                          private_key_file=str(tmp_path / key), trust_on_first_use=True))
    assert problems("gw.crt", "gw.key") == []
    assert problems("gw.crt", "o.key") == [f"security.private_key_file: {tmp_path / 'o.key'} is not the key of "
                                           f"{tmp_path / 'gw.crt'}"]
    assert "is not an unencrypted private key" in problems("gw.crt", "bad.key")[0]
    assert "is not a certificate" in problems("bad.key", "gw.key")[0]
    assert "has no application URI" in problems("p.crt", "p.key")[0]


def test_points_name_namespaces_by_uri() -> None:
    assert PROFILE.namespace_of(PROFILE.point("on")) == "urn:other"
    assert PROFILE.namespace_of(PROFILE.point("soc")) == "urn:test:ems"
    with pytest.raises(ValidationError, match="String should match pattern"):
        OpcUaProfile.model_validate({"model": "m", "kind": "ems", "protocol": "opcua", "opcua": {"namespace": "u"},
                                     "points": [{"id": "x", "node": "ns=2;s=X", "data_type": "Float"}]})


@pytest.mark.parametrize(("security", "message"), [
    ({"policy": "Basic256Sha256", "mode": "None"}, "policy None goes with mode None"),
    ({"policy": "Basic256Sha256", "mode": "SignAndEncrypt"}, "needs certificate and private_key_file"),
    ({"policy": "Basic256Sha256", "mode": "Sign", "certificate": "c.der", "private_key_file": "k.pem"},
     "name the trusted server certificates"),
])
def test_security_settings_that_cannot_work_are_refused(security: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OpcUaConnection.model_validate({"endpoint": "opc.tcp://127.0.0.1:4840", "security": security})


def test_connection_defaults_and_endpoint() -> None:
    connection = OpcUaConnection.model_validate({"endpoint": "opc.tcp://10.0.0.20"})
    assert connection.host_port == ("10.0.0.20", 4840) and connection.security.policy == "None"
    assert not hasattr(connection, "poll_s")


def _self_signed(name: str) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:{name}")]), False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(Encoding.DER)


def test_a_certificate_in_the_trust_folder_is_trusted(tmp_path: Path) -> None:
    der = _self_signed("ems")
    (tmp_path / "ems.der").write_bytes(der)
    check_server("ems1", ("127.0.0.1", 4840), der, tmp_path, first_use=False)


def test_an_unknown_certificate_is_refused_naming_it_and_where_to_put_it(tmp_path: Path) -> None:
    (tmp_path / "old.der").write_bytes(_self_signed("old"))
    der = _self_signed("ems")
    with pytest.raises(UntrustedServer) as caught:
        check_server("ems1", ("127.0.0.1", 4840), der, tmp_path, first_use=False)
    message = str(caught.value)
    assert message.startswith("ems1: server certificate of opc.tcp://127.0.0.1:4840 is not trusted")
    assert "CN=ems, URI urn:ems, SHA-256" in message and f"into {tmp_path}" in message
    [rejected] = (tmp_path / "rejected").iterdir()
    assert rejected.read_bytes() == der and str(rejected) in message


def test_trust_on_first_use_pins_the_first_and_refuses_a_changed_one(tmp_path: Path) -> None:
    first, second = _self_signed("ems"), _self_signed("ems")
    check_server("ems1", ("127.0.0.1", 4840), first, tmp_path, first_use=True)
    assert (tmp_path / "127.0.0.1_4840.der").read_bytes() == first
    check_server("ems1", ("127.0.0.1", 4840), first, tmp_path, first_use=True)
    with pytest.raises(UntrustedServer, match="a different one is pinned for this endpoint"):
        check_server("ems1", ("127.0.0.1", 4840), second, tmp_path, first_use=True)


def test_a_certificate_issued_by_a_trusted_ca_is_trusted_until_a_crl_revokes_it(tmp_path: Path) -> None:
    ca = make_ca("site CA")
    server = issue(ca, "ems", "server", ips=["127.0.0.1"])
    (tmp_path / "ca.der").write_bytes(ca.cert.public_bytes(Encoding.DER))
    der = server.cert.public_bytes(Encoding.DER)
    check_server("ems1", ("127.0.0.1", 4840), der, tmp_path, first_use=False)
    now = datetime.datetime.now(datetime.timezone.utc)
    revoked = x509.RevokedCertificateBuilder().serial_number(server.cert.serial_number).revocation_date(now).build()
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject).last_update(now)
           .next_update(now + datetime.timedelta(days=7)).add_revoked_certificate(revoked).sign(ca.key, hashes.SHA256()))
    (tmp_path / "crl").mkdir()
    (tmp_path / "crl" / "site.crl").write_bytes(crl.public_bytes(Encoding.DER))
    with pytest.raises(UntrustedServer, match="is not trusted"):
        check_server("ems1", ("127.0.0.1", 4840), der, tmp_path, first_use=False)
    other = issue(make_ca("other CA"), "ems", "server", ips=["127.0.0.1"])
    with pytest.raises(UntrustedServer):
        check_server("ems1", ("127.0.0.1", 4840), other.cert.public_bytes(Encoding.DER), tmp_path, first_use=False)
