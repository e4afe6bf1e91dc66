"""Slow register inputs of a routed design, from nextpnr's detailed timing report.

nextpnr prints one critical path per clock; closing timing on a large design needs every
endpoint that misses the target. With ``--detailed-timing-report`` (``python -m accel.build
--nextpnr-options=--detailed-timing-report``) its ``--report`` JSON lists, for every net, the
arrival time at each register, memory or multiplier input it drives. :func:`slow_endpoints`
reads those, and groups the slow ones by where they are in the design: cell names with their
numbers replaced by ``N`` (``link.engine.pe7.offset`` and ``link.engine.pe12.offset`` are one
group), so that a path repeated in every PE shows once, with its count.

``python -m boards.timing OUT/gateware/top.report.json --above-ns 9.5`` prints the groups,
worst first.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EndpointGroup", "slow_endpoints"]

# Suffixes Yosys and nextpnr add to a cell's name when they map or pack it.
_MAPPED = re.compile(r"(_TRELLIS_|_LUT4|_CCU2C|_PFUMX|_L6MUX|_DP16KD|_MULT18X18D|\$).*")


@dataclass(frozen=True)
class EndpointGroup:
    """Endpoints of one place in the design (``name``), the worst arrival first."""

    name: str
    worst_ns: float
    count: int
    worst_cell: str
    worst_port: str
    worst_net: str


def _group_name(cell: str, port: str) -> str:
    base = _MAPPED.sub("", cell) or cell
    return f"{re.sub(r'[0-9]+', 'N', base)}.{re.sub(r'[0-9]+', '', port)}"


def slow_endpoints(report: dict | str | Path, above_ns: float) -> list[EndpointGroup]:
    """The groups of endpoints whose arrival is at least ``above_ns``, the worst first.

    ``report`` is nextpnr's ``--report`` JSON (a path or the parsed dict), written with
    ``--detailed-timing-report``.
    """
    if not isinstance(report, dict):
        report = json.loads(Path(report).read_text())
    if "detailed_net_timings" not in report:
        raise ValueError("the report has no detailed net timings: run nextpnr with "
                         "--detailed-timing-report (python -m accel.build "
                         "--nextpnr-options=--detailed-timing-report)")
    if not above_ns >= 0:
        raise ValueError(f"above_ns must be a time in ns (>= 0), not {above_ns!r}")
    found = defaultdict(list)
    for net in report["detailed_net_timings"]:
        for endpoint in net.get("endpoints", []):
            delay = endpoint["delay"]
            # Newer nextpnr gives [the net's routing delay, the arrival]; older, the arrival.
            delay = float(delay[-1] if isinstance(delay, list) else delay)
            if delay >= above_ns:
                key = _group_name(endpoint["cell"], endpoint["port"])
                found[key].append((delay, endpoint["cell"], endpoint["port"], net["net"]))
    groups = []
    for name, hits in found.items():
        delay, cell, port, net = max(hits)
        groups.append(EndpointGroup(name, delay, len(hits), cell, port, net))
    return sorted(groups, key=lambda g: (-g.worst_ns, g.name))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m boards.timing", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("report", type=Path, help="nextpnr's --report JSON (top.report.json)")
    parser.add_argument("--above-ns", type=float, default=None,
                        help="arrival from which an endpoint is slow (default: 90%% of the "
                             "period at the achieved fmax)")
    parser.add_argument("--top", type=int, default=40, help="groups to print (default 40)")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
        fmax = min((v["achieved"] for v in report.get("fmax", {}).values()), default=None)
        above = args.above_ns
        if above is None:
            above = 0.9 * 1000.0 / fmax if fmax else 0.0
        groups = slow_endpoints(report, above)
    except (OSError, json.JSONDecodeError, ValueError) as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    print(f"{sum(g.count for g in groups)} endpoints at or above {above:.2f} ns, "
          f"in {len(groups)} groups" + (f" (fmax {fmax:.2f} MHz)" if fmax else ""))
    for g in groups[:args.top]:
        print(f"{g.worst_ns:7.2f} ns x{g.count:<5d} {g.name}\n"
              f"{'':18}worst: {g.worst_cell}.{g.worst_port} (net {g.worst_net})")


if __name__ == "__main__":
    main()
