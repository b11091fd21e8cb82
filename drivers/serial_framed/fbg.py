"""Fibre Bragg grating temperatures from an interrogator's peak table.

An interrogator reports, per channel (fibre), the wavelengths of the reflection peaks it found;
which peak belongs to which grating is the profile's knowledge: each grating has a wavelength
window on its channel (gratings of one fibre are written at distinct wavelengths). A grating's
temperature follows from its shift from the calibration wavelength, T = c0 + c1·Δλ + c2·Δλ²
(the coefficients of its calibration sheet). A reference grating (one kept free of the quantity
measured, in practice of strain or of the interrogator's drift) shifts with what the others must
not see: a grating that names one subtracts the reference's shift from its own.

A value is only as good as its match: no peak in the window (the grating broke, or its peak
faded), two peaks in it (another grating drifted in, or noise), or a reference that has no good
match, make the grating IV with the reason counted, never a temperature from the wrong peak.
"""

import math
import struct
from dataclasses import dataclass

from drivers.serial_framed.fields import PayloadError
from gateway.model import Quality, Value

_FORMATS = {"u16": "H", "u32": "I", "i32": "i", "f32": "f", "f64": "d"}


@dataclass(frozen=True)
class PeakTable:
    """Where a message's payload holds the peaks: ``channels`` counts (``count_type``) at
    ``counts_at``, then every channel's wavelengths in channel order from ``wavelengths_at``
    (``wavelength_type`` × ``scale`` nm), octets little- or big-endian."""

    counts_at: int
    channels: int
    wavelengths_at: int
    scale: float = 1.0
    count_type: str = "u16"
    wavelength_type: str = "i32"
    byteorder: str = "little"

    def peaks(self, payload: bytes) -> list[list[float]]:
        """Each channel's peak wavelengths (nm); PayloadError when the payload is too short."""
        order = "<" if self.byteorder == "little" else ">"
        counts_format = struct.Struct(f"{order}{self.channels}{_FORMATS[self.count_type]}")
        if len(payload) < self.counts_at + counts_format.size:
            raise PayloadError(f"{len(payload)} octets, the peak counts need {self.counts_at + counts_format.size}")
        counts = counts_format.unpack_from(payload, self.counts_at)
        wavelengths = struct.Struct(f"{order}{sum(counts)}{_FORMATS[self.wavelength_type]}")
        if len(payload) < self.wavelengths_at + wavelengths.size:
            raise PayloadError(f"{len(payload)} octets, {sum(counts)} peaks need "
                               f"{self.wavelengths_at + wavelengths.size}")
        values = [w * self.scale for w in wavelengths.unpack_from(payload, self.wavelengths_at)]
        table, start = [], 0
        for count in counts:
            table.append(values[start:start + count])
            start += count
        return table

    def payload(self, peaks: list[list[float]], size: int = 0) -> bytes:
        """A payload holding ``peaks`` (the simulator's way), at least ``size`` octets."""
        order = "<" if self.byteorder == "little" else ">"
        flat = [round(w / self.scale) if self.wavelength_type[0] in "ui" else w / self.scale
                for channel in peaks for w in channel]
        counts = struct.pack(f"{order}{self.channels}{_FORMATS[self.count_type]}", *[len(c) for c in peaks])
        body = bytearray(max(size, self.wavelengths_at + len(flat) * struct.calcsize(_FORMATS[self.wavelength_type])))
        body[self.counts_at:self.counts_at + len(counts)] = counts
        struct.pack_into(f"{order}{len(flat)}{_FORMATS[self.wavelength_type]}", body, self.wavelengths_at, *flat)
        return bytes(body)


@dataclass(frozen=True)
class Grating:
    """One grating: its point, fibre, window and calibration."""

    point: str
    channel: int  # 1-based, as interrogators number their channels
    window: tuple[float, float]
    base_nm: float
    coefficients: tuple[float, ...]
    reference: str | None = None

    def match(self, peaks: list[list[float]]) -> tuple[float | None, str | None]:
        """The one peak in the window, or None and why not."""
        channel = peaks[self.channel - 1] if self.channel <= len(peaks) else []
        inside = [w for w in channel if self.window[0] <= w <= self.window[1]]
        if len(inside) == 1:
            return inside[0], None
        return None, "missing_peak" if not inside else "ambiguous_peak"

    def temperature(self, shift: float) -> float:
        """c0 + c1·Δλ + c2·Δλ² ..."""
        return sum(c * shift ** n for n, c in enumerate(self.coefficients))

    def shift_for(self, temperature: float) -> float:
        """The shift giving ``temperature`` (the simulator's way back): the root of the
        calibration polynomial nearest to zero shift (linear or quadratic sheets)."""
        c = list(self.coefficients) + [0.0, 0.0]
        a, b, k = c[2], c[1], c[0] - temperature
        if a == 0:
            return -k / b
        roots = [(-b + sign * math.sqrt(max(0.0, b * b - 4 * a * k))) / (2 * a) for sign in (1, -1)]
        return min(roots, key=abs)


def grating_values(gratings: list[Grating], peaks: list[list[float]]) -> tuple[dict[str, tuple[Value, Quality]],
                                                                              dict[str, str]]:
    """Every grating's temperature (IV when its match fails) and the reason of each IV."""
    matched = {g.point: g.match(peaks) for g in gratings}
    values: dict[str, tuple[Value, Quality]] = {}
    reasons: dict[str, str] = {}
    by_point = {g.point: g for g in gratings}
    for grating in gratings:
        wavelength, why = matched[grating.point]
        shift = None if wavelength is None else wavelength - grating.base_nm
        if shift is not None and grating.reference is not None:
            reference_wavelength, _ = matched[grating.reference]
            if reference_wavelength is None:
                shift, why = None, "reference_missing"
            else:
                shift -= reference_wavelength - by_point[grating.reference].base_nm
        if shift is None:
            values[grating.point] = (None, Quality.IV)
            reasons[grating.point] = why or "missing_peak"
        else:
            values[grating.point] = (grating.temperature(shift), Quality.GOOD)
    return values, reasons
