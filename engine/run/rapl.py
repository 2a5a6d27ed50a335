"""CPU energy from Linux powercap (RAPL) for the telemetry sampler: every package summed, DRAM
apart, and which zones each recorded source sums.

Powercap exposes one top-level zone ``intel-rapl:N`` per package (socket, or die), Intel and AMD
alike, with sub-zones ``intel-rapl:N:M`` (core, uncore: inside the package; dram: outside it).
Each zone has ``energy_uj``, a counter in µJ that wraps at ``max_energy_range_uj``.
"""
from __future__ import annotations

import os
from pathlib import Path

from engine.records import TelemetrySample


class RaplAbsent(Exception):
    """RAPL is not there or not readable; the message is the reason shown to the user."""


RAPL_ZONES = ("intel-rapl:*", "amd-rapl:*")  # top-level zones; AMD CPUs use the same driver


class _RaplZone:
    """One powercap zone's energy counter, kept open; ``read()`` is the wrap-corrected total (µJ)
    since the zone was opened."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.name = (folder / "name").read_text().strip() if (folder / "name").exists() else folder.name
        self.max_uj = None
        try:
            self.max_uj = int((folder / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            pass
        self.fd = os.open(folder / "energy_uj", os.O_RDONLY)
        self.last = self._raw()
        self.total_uj = 0

    def label(self) -> str:
        return f"{self.name} ({self.folder.name})"

    def _raw(self) -> int:
        # pread at offset 0 re-reads the sysfs attribute without reopening it each tick
        return int(os.pread(self.fd, 64, 0).decode().strip())

    def read(self) -> int:
        raw = self._raw()
        delta = raw - self.last
        if delta < 0:  # the counter wrapped at max_energy_range_uj
            delta += (self.max_uj + 1) if self.max_uj else 0
            if delta < 0:
                delta = 0  # unknown range: lose this interval rather than invent energy
        self.last = raw
        self.total_uj += delta
        return self.total_uj

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class _RaplSeries:
    """One recorded source: the sum of some zones' counters (J) and its power (W) between ticks."""

    def __init__(self, source: str, zones: list):
        self.source, self.zones = source, zones
        self.last_j = self.last_t = None


def _zone_index(folder: Path) -> tuple:
    return tuple(int(x) if x.isdigit() else x for x in folder.name.split(":")[1:])


class RaplSource:
    """CPU energy counters from Linux powercap (``/sys/class/powercap``), Intel and AMD.

    Every top-level zone ``intel-rapl:N`` (one per socket, or per die) that is a package is
    summed: one package is recorded as ``rapl:<name>`` (e.g. ``rapl:package-0``); two or more
    as ``rapl:packages`` (their sum, the CPU's energy) and each as ``rapl:<name>``. DRAM
    sub-zones (``intel-rapl:N:M`` named ``dram``) are outside the package domain: summed over
    sockets as ``rapl:dram``; a platform zone (``psys``, which contains the packages) is
    recorded alone as ``rapl:psys``. Other sub-zones (core, uncore) lie inside their package
    and are not read. ``domains`` maps each recorded source to the zones it sums, and
    ``describe()`` says so."""

    def __init__(self, root: Path):
        self.zones: list[_RaplZone] = []
        self.series: list[_RaplSeries] = []
        self.skipped: list[str] = []
        if not root.is_dir():
            raise RaplAbsent(f"RAPL not available: no {root} on this machine (Linux on Intel/AMD CPUs only)")
        tops = sorted({p for g in RAPL_ZONES for p in root.glob(g) if p.name.count(":") == 1},
                      key=lambda p: (p.name.split(":")[0], _zone_index(p)))
        if not tops:
            raise RaplAbsent(f"RAPL not available: no intel-rapl zones in {root}")
        denied = []
        packages, psys, dram = [], [], []
        for top in tops:
            subs = {p.name: p for p in (*root.glob(f"{top.name}:*"), *top.glob(f"{top.name}:*"))}
            for folder, is_top in ((top, True), *((subs[k], False) for k in sorted(subs, key=lambda k: _zone_index(subs[k])))):
                name = _read_name(folder)
                if not is_top and name != "dram":
                    continue  # core/uncore: inside the package, counted there
                try:
                    z = _RaplZone(folder)
                except PermissionError:
                    denied.append(folder)
                    continue
                except (OSError, ValueError) as e:
                    self.skipped.append(f"{name} ({folder.name}): {getattr(e, 'strerror', None) or e}")
                    continue
                self.zones.append(z)
                (dram if not is_top else psys if z.name == "psys" else packages).append(z)
        if not self.zones:
            if denied:
                raise RaplAbsent(f"RAPL not readable: permission denied for {denied[0] / 'energy_uj'} (root only "
                              "since Linux 5.10; run as root or make energy_uj readable)")
            raise RaplAbsent(f"RAPL not available: no readable energy counter in {root}")
        self.skipped += [f"{_read_name(f)} ({f.name}): permission denied" for f in denied]
        names = [z.name for z in packages]
        own = [_RaplSeries("rapl:" + z.name + (f"@{z.folder.name}" if names.count(z.name) > 1 else ""), [z])
               for z in packages]
        if len(packages) > 1:
            self.series.append(_RaplSeries("rapl:packages", packages))
        self.series += own
        if dram:
            self.series.append(_RaplSeries("rapl:dram", dram))
        if psys:
            self.series.append(_RaplSeries("rapl:psys", psys[:1]))
        self.domains = {s.source: [z.label() for z in s.zones] for s in self.series}

    def read(self, t: float, out: list) -> None:
        totals = {}
        for z in self.zones:
            try:
                totals[id(z)] = z.read()
            except (OSError, ValueError):
                totals[id(z)] = None
        for s in self.series:
            parts = [totals[id(z)] for z in s.zones]
            if None in parts:  # a zone missed this tick: no sum; the next one covers the interval
                continue
            energy = sum(parts) / 1e6
            out.append(TelemetrySample(t, s.source, "energy_j", energy))
            if s.last_t is not None and t > s.last_t:
                out.append(TelemetrySample(t, s.source, "power_w", (energy - s.last_j) / (t - s.last_t)))
            s.last_j, s.last_t = energy, t

    def describe(self) -> str:
        """Which zones each recorded source sums, e.g. "CPU package energy: package-0 (intel-rapl:0)
        + package-1 (intel-rapl:1) summed as rapl:packages; DRAM separately as rapl:dram: ..."."""
        parts = []
        for s in self.series:
            zones = " + ".join(z.label() for z in s.zones)
            if s.source == "rapl:packages":
                parts.insert(0, f"CPU package energy: {zones} summed as rapl:packages")
            elif s.source == "rapl:dram":
                parts.append(f"DRAM separately as rapl:dram: {zones}")
            elif s.source == "rapl:psys":
                parts.append(f"platform (psys, includes the packages) as rapl:psys: {zones}")
            elif not any(p.source == "rapl:packages" for p in self.series):
                parts.insert(0, f"CPU package energy: {zones} as {s.source}")
        if not parts:
            parts.append("no package zone")
        if self.skipped:
            parts.append("not counted: " + ", ".join(self.skipped))
        return "; ".join(parts)

    def close(self) -> None:
        for z in self.zones:
            z.close()


def _read_name(folder: Path) -> str:
    try:
        return (folder / "name").read_text().strip()
    except OSError:
        return folder.name
