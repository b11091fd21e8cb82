"""Runs a c104 Server and Client on 127.0.0.1 in this process (its TZ is the one under test).

Usage: ``python wiretime_probe.py OUT.json TS PORT``. The server listens on 127.0.0.1:PORT, a port of
the calling test run's block (``tests.ports``; a c104 Server given port 0 does not say which port it
got). It sends TS through ``WireClock`` for each wire zone (and once as c104's own naive datetime),
the client then clock-syncs the server. OUT.json records the CP56Time2a fields seen on the wire and
what c104 handed to Python on the other side.
c104 callbacks need real annotations: no ``from __future__ import annotations`` here.
"""

import datetime
import json
import sys
import threading
import time

import c104

from gateway.iec104.wiretime import WireClock

CA = 47
WIRE_ZONES = {11: "UTC", 12: "Asia/Shanghai"}
RAW_IOA = 13  # a naive datetime handed to c104 as is: pins what c104 itself does
TIMEOUT_S = 5.0


def cp56time2a(octets: bytes) -> list[int]:
    """[year, month, day, hour, minute, milliseconds-in-minute, day-of-week] of 7 CP56Time2a octets."""
    return [2000 + (octets[6] & 0x7F), octets[5] & 0x0F, octets[4] & 0x1F, octets[3] & 0x1F,
            octets[2] & 0x3F, int.from_bytes(octets[0:2], "little"), octets[4] >> 5]


def open_connection(conn: c104.Connection, opened: threading.Event) -> None:
    """Wait for OPEN. c104 2.2.1's client sometimes stays OPEN_MUTED without sending STARTDT: unmute it."""
    deadline = time.monotonic() + TIMEOUT_S
    while not opened.wait(0.2):
        if conn.state == c104.ConnectionState.OPEN_MUTED:
            conn.unmute()
        if time.monotonic() > deadline:
            raise TimeoutError(f"connection still {conn.state.name}")


def probe(ts: float, port: int) -> dict:
    server = c104.Server(ip="127.0.0.1", port=port, tick_rate_ms=50)
    station = server.add_station(common_address=CA)
    client = c104.Client(tick_rate_ms=50)
    conn = client.add_connection(ip="127.0.0.1", port=port, init=c104.Init.NONE)
    client_station = conn.add_station(common_address=CA)
    points = {ioa: station.add_point(io_address=ioa, type=c104.Type.M_ME_TF_1, report_ms=0)
              for ioa in (*WIRE_ZONES, RAW_IOA)}

    received: dict[int, datetime.datetime] = {}
    wire: dict[int, list[int]] = {}
    all_received = threading.Event()
    opened = threading.Event()
    sync: dict = {}
    synced = threading.Event()

    def on_state(connection: c104.Connection, state: c104.ConnectionState) -> None:
        if state == c104.ConnectionState.OPEN:
            opened.set()

    def on_point(point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage) -> c104.ResponseState:
        if message.cot == c104.Cot.SPONTANEOUS:
            received[point.io_address] = point.info.recorded_at
            check_all_received()
        return c104.ResponseState.NONE

    def on_client_raw(connection: c104.Connection, data: bytes) -> None:
        if len(data) == 27 and data[6] == 36 and data[7] == 1:  # one M_ME_TF_1 object
            wire[int.from_bytes(data[12:15], "little")] = cp56time2a(data[20:27])
            check_all_received()

    def check_all_received() -> None:  # raw and point callbacks come on different c104 threads, in any order
        if len(received) == len(wire) == len(points):
            all_received.set()

    def on_server_raw(server: c104.Server, data: bytes) -> None:
        if len(data) == 22 and data[6] == 103:  # C_CS_NA_1
            sync["wire"] = cp56time2a(data[15:22])
            check_synced()

    def on_clock_sync(server: c104.Server, ip: str, date_time: datetime.datetime) -> c104.ResponseState:
        sync.update(now=time.time(), date_time=date_time.isoformat(),
                    from_c104=WireClock("UTC").from_c104(date_time))
        check_synced()
        return c104.ResponseState.SUCCESS

    def check_synced() -> None:
        if "wire" in sync and "now" in sync:
            synced.set()

    for ioa in points:
        client_station.add_point(io_address=ioa, type=c104.Type.M_ME_TF_1).on_receive(callable=on_point)
    conn.on_state_change(callable=on_state)
    conn.on_receive_raw(callable=on_client_raw)
    server.on_receive_raw(callable=on_server_raw)
    server.on_clock_sync(callable=on_clock_sync)

    server.start()
    client.start()
    try:
        open_connection(conn, opened)
        sent_at = {ioa: WireClock(zone).to_c104(ts) for ioa, zone in WIRE_ZONES.items()}
        sent_at[RAW_IOA] = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).replace(tzinfo=None)
        for ioa, recorded_at in sent_at.items():
            points[ioa].info = c104.ShortInfo(actual=1.5, quality=c104.Quality(), recorded_at=recorded_at)
            if not points[ioa].transmit(cause=c104.Cot.SPONTANEOUS):
                raise RuntimeError(f"transmit of IOA {ioa} refused")
        if not all_received.wait(TIMEOUT_S):
            raise TimeoutError(f"seen only: callbacks for IOAs {sorted(received)}, raw frames for {sorted(wire)}")
        # not waiting for ACT_CON: c104 2.2.1's blocking clock_sync() now and then misses a confirmation
        # that came back within a millisecond and returns False after command_timeout_ms (10 s)
        if not conn.clock_sync(common_address=CA, wait_for_response=False):
            raise RuntimeError(f"clock sync not sent, connection {conn.state.name}")
        if not synced.wait(TIMEOUT_S):
            raise TimeoutError(f"clock sync seen only as {sync}")
    finally:
        client.stop()
        server.stop()

    zones = {zone: {"wire": wire[ioa], "recorded_at": received[ioa].isoformat(),
                    "from_c104": WireClock(zone).from_c104(received[ioa])}
             for ioa, zone in WIRE_ZONES.items()}
    return {"utc_offset_s": time.localtime(ts).tm_gmtoff, "zones": zones,
            "raw_naive": {"sent": sent_at[RAW_IOA].isoformat(), "wire": wire[RAW_IOA]}, "clock_sync": sync}


if __name__ == "__main__":
    out_path, ts_arg, port_arg = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(probe(ts_arg, port_arg), out)
