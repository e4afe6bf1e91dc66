"""Resources of an engine on a board, estimated before synthesis, and the fit check.

Block RAMs are counted memory by memory from the elaborated design, with the rule Yosys's
``memory_libmap`` applies: each memory goes to the cheapest of block RAM (cost 128 per ECP5
``DP16KD``, 64 per iCE40 ``SB_RAM40_4K``, in the best aspect ratio), LUT RAM (ECP5 only: 16x4
cells, an effective cost of 5.5 each with the read register) or flip-flops (cost 1 per bit); a
memory with several read ports is replicated once per read port, and one marked
``ram_style = "distributed"`` (the small memories and the accumulators) is LUT RAM and one
marked ``ram_style = "block"`` (the pointers deeper than 16) block RAM; one at most two rows
deep is marked ``ram_style = "logic"``: flip-flops. The host link's buffers are
counted with the engine's memories. On the 2-PE digits and 16-PE LeNet-300-100 builds this
reproduces Yosys's block RAM count (``bench/accel_build.py`` prints both side by side).

A layer with per-row codebooks (A9) has a codebook memory per PE (its rows'), counted like
the others; a threshold activation (A10) is registers and comparators, estimated per bit
(``LUTS_PER_THRESHOLD_BIT``); an engine in which no layer requantizes has no requantizer logic
(``LUTS_PER_REQUANTIZER``).

Multipliers: each PE multiplies a codebook weight by an activation (MAC), where Yosys splits a
product wider than the hard multiplier into ``ceil(a / w) * ceil(b / w)`` pieces, and a sum by
the layer's requantization multiplier, which the requantizer itself splits at ``LOW_BITS``
of the sum into two products (so two hard multipliers at least, however narrow the sum).
LUTs are a linear model fitted to place-and-route results (see ``LUTS_PER_PE``), to be refitted
when the engine changes: the fit check refuses on LUTs only when even 80% of the estimate does
not fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from accel.gateware.pe.requantizer import LOW_BITS
from core.integer import MULTIPLIER_BITS

__all__ = ["DENSE_LUT_SHARE", "FitError", "ResourceEstimate", "check_fit", "dense_warning",
           "estimate_resources", "memories"]

#: (width, depth) configurations of one block RAM, per family.
_BRAM_SHAPES = {
    "ecp5": ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512)),
    "ice40": ((2, 2048), (4, 1024), (8, 512), (16, 256)),
}
_BRAM_COST = {"ecp5": 128, "ice40": 64}
_LUTRAM_COST = 5.5          # per 16x4 TRELLIS_DPR16X4, read register included (fitted)

#: LUT4s of one PE (datapath, queues' control, drain) and of the rest (host link, broadcaster,
#: input buffers), fitted to nextpnr's TRELLIS_COMB count of the 1-PE, 2-bank digits engine
#: (8,526 with 530 LUT RAM cells) and the 16-PE LeNet-300-100 engine (54,272 with 2,484) on
#: the ULX3S-85F (builds of 63c721e, 2026-12-02); a LUT RAM cell (TRELLIS_DPR16X4) holds its
#: 16x4 bits in four LUT4s.
LUTS_PER_PE = 2524
LUTS_FIXED = 3842
LUTS_PER_LUTRAM = 4
#: LUT4s per layer beyond the three of the engines fitted above, once for the engine (not per
#: PE: the two TRP builds below have the per-PE slope of the 3-layer fit, 2,548): fitted to the
#: six-layer TRP LeNet-300-100 engine (2026-12-05, commits f4878b6 and fc73483): 46,412 LUT4
#: with 8 PEs (nextpnr's count; 30,726 estimated without this term) and, from Yosys's cells,
#: about 68,500 with 16 (52,670 without it).
LUTS_PER_LAYER = 5250
#: Share of the device's LUTs above which the build warns that place and route may not converge
#: in reasonable time: the 16-PE TRP engine (about 82% of the LFE5U-85F's LUTs, its flip-flops
#: 80%) had not finished nextpnr's first placement iteration after an hour.
DENSE_LUT_SHARE = 0.7
#: LUT4s of a threshold activation (A10) per PE and layer: one per bit of each comparator (an
#: ECP5 carry chain), one per two bits of the level table's mux (structural, not fitted).
LUTS_PER_THRESHOLD_BIT = 1
LUTS_PER_LEVEL_BIT = 0.5
#: LUT4s of a PE's requantizer (A6: shift, rounding, clamp) that Yosys removes when no layer
#: requantizes (every hidden layer a threshold activation); included in ``LUTS_PER_PE``.
#: Fitted to the LQ-Nets 2/2 builds (ULX3S-85F, 2026-12-05): the 1-PE digits engine, 8,406
#: LUT4 (8,433 estimated with this term), and the 16-PE LeNet-300-100 engine, 54,376 (54,078).
LUTS_PER_REQUANTIZER = 270

#: Margin under the LUT estimate below which the fit check still lets a design through.
LUT_TOLERANCE = 0.8


class FitError(ValueError):
    """The engine does not fit the board (the message gives the numbers)."""


@dataclass(frozen=True)
class ResourceEstimate:
    """Estimated use of a board's resources by an engine."""

    luts: int
    brams: int
    multipliers: int
    lutram_cells: int
    memories: int

    def as_dict(self) -> dict:
        return {"luts": self.luts, "brams": self.brams, "multipliers": self.multipliers}


def memories(plan) -> list[tuple[str, int, int, int, str | None]]:
    """``(name, depth, width, read_ports, ram_style)`` of every memory of ``Engine(plan)``."""
    from amaranth.hdl import Fragment
    from amaranth.hdl._mem import MemoryInstance

    from accel.gateware.engine import Engine

    found = []

    def walk(fragment, path):
        if isinstance(fragment, MemoryInstance):
            shape = fragment._data.shape
            width = shape if isinstance(shape, int) else shape.width
            found.append((path, fragment._data.depth, width, len(fragment._read_ports),
                          fragment._attrs.get("ram_style")))
        for sub, name, *_ in fragment.subfragments:
            walk(sub, f"{path}.{name}")

    walk(Fragment.get(Engine(plan), None), "engine")
    return found


def _bram_blocks(family, depth, width):
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in _BRAM_SHAPES[family])


def _mapping(family, depth, width, style=None):
    """``("bram", blocks)``, ``("lutram", cells)`` or ``("ff", bits)`` as Yosys chooses."""
    if style == "logic":
        return "ff", depth * width
    if style == "distributed" and family == "ecp5":     # (the iCE40's engine has no style)
        return "lutram", math.ceil(depth / 16) * math.ceil(width / 4)
    blocks = _bram_blocks(family, depth, width)
    if style == "block":
        return "bram", blocks
    options = [(_BRAM_COST[family] * blocks, 0, "bram", blocks)]
    if family == "ecp5":
        cells = math.ceil(depth / 16) * math.ceil(width / 4)
        options.append((_LUTRAM_COST * cells, 1, "lutram", cells))
    options.append((depth * width, 2, "ff", depth * width))
    _, _, kind, count = min(options)
    return kind, count


def _pieces(bits, width):
    return math.ceil(bits / width)


def estimate_resources(plan, board) -> ResourceEstimate:
    """LUTs, block RAMs and multipliers ``Engine(plan)`` needs on ``board``."""
    family = board.family
    brams = lutram = ff_bits = 0
    found = memories(plan)
    # The engine's memories, and the host link's buffers (the build always puts the engine
    # behind the link).
    from amaranth.hdl import Shape

    from accel.gateware.link import buffer_shapes

    link = [(f"link.{name}", depth, Shape.cast(shape).width, 1, None)
            for name, (depth, shape) in buffer_shapes(plan).items()]
    for _, depth, width, read_ports, style in [*found, *link]:
        kind, count = _mapping(family, depth, width, style)
        copies = max(1, read_ports)
        if kind == "bram":
            brams += count * copies
        elif kind == "lutram":
            lutram += count * copies
        else:
            ff_bits += count * copies
    w = board.capacity.multiplier_width
    mac = max(_pieces(layer.weight_bits, w) * _pieces(plan.value_bits, w)
              for layer in plan.layers)
    # Only a layer that requantizes (A6) uses the requantizer's multiply: logits (A8) and
    # threshold activations (A10) do not, and Yosys removes it when no layer does. The
    # requantizer splits its sum (the engine's widest accumulator) at LOW_BITS into two
    # products, however narrow the sum (the EPR LeNet-300-100's 16-bit sums took two hard
    # multipliers per PE, where counting the sum's own pieces said one).
    requantizes = any(not layer.logits and layer.levels is None for layer in plan.layers)
    high_bits = max(max(layer.accumulator_bits for layer in plan.layers) + 1,
                    LOW_BITS + 1) - LOW_BITS
    requant = ((_pieces(LOW_BITS, w) + _pieces(high_bits, w)) * _pieces(MULTIPLIER_BITS, w)
               if requantizes else 0)
    multipliers = plan.n_pes * (mac + requant)
    thresholds = sum(len(layer.thresholds) * layer.threshold_bits * LUTS_PER_THRESHOLD_BIT
                     + len(layer.levels) * layer.output_bits * LUTS_PER_LEVEL_BIT
                     for layer in plan.layers if layer.levels is not None)
    per_pe = LUTS_PER_PE - (LUTS_PER_REQUANTIZER if requant == 0 else 0)
    luts = LUTS_FIXED + per_pe * plan.n_pes + LUTS_PER_LUTRAM * lutram + \
        math.ceil(thresholds * plan.n_pes) + LUTS_PER_LAYER * max(0, len(plan.layers) - 3)
    if family == "ice40":
        # An iCE40 logic cell is a LUT and a flip-flop: memories in flip-flops take cells too.
        luts += ff_bits
    return ResourceEstimate(luts=luts, brams=brams, multipliers=multipliers,
                            lutram_cells=lutram, memories=len(found))


def dense_warning(estimate: ResourceEstimate, board) -> str | None:
    """A warning when the estimate fills more than :data:`DENSE_LUT_SHARE` of ``board``'s
    LUTs (the design may fit and still not place and route in hours), else None."""
    share = estimate.luts / board.capacity.luts
    if share <= DENSE_LUT_SHARE:
        return None
    return (f"the engine fills about {share:.0%} of {board.name}'s LUTs: place and route may "
            "take hours or not converge (the 16-PE six-layer TRP engine, at about 82%, did not "
            "place in an hour); fewer PEs (--pes) build much faster")


def check_fit(plan, board, estimate: ResourceEstimate | None = None) -> ResourceEstimate:
    """The estimate, or :class:`FitError` naming every resource the board lacks."""
    estimate = estimate or estimate_resources(plan, board)
    cap = board.capacity
    short = []
    if estimate.brams > cap.brams:
        short.append(f"needs {estimate.brams} block RAMs; {board.name} has {cap.brams}")
    if estimate.multipliers > cap.multipliers:
        short.append(f"needs {estimate.multipliers} multipliers; {board.name} has "
                     f"{cap.multipliers}")
    if estimate.luts * LUT_TOLERANCE > cap.luts:
        short.append(f"needs about {estimate.luts:,} LUTs; {board.name} has {cap.luts:,}")
    if short:
        maps = _feature_map_note(plan, board) if estimate.brams > cap.brams else ""
        raise FitError(f"the {plan.n_pes}-PE engine does not fit {board.name} "
                       f"({board.device}): " + "; ".join(short) + maps +
                       ". Try fewer PEs (--pes), a sparser model or a larger board "
                       "(--board list).")
    return estimate


def _feature_map_note(plan, board) -> str:
    """What a plan's convolutions' output maps take of the block RAMs (the accumulators of
    whole maps, one memory per PE and bank), as a clause of the fit error."""
    if not getattr(plan, "has_conv", False):
        return ""
    family = board.family
    found = memories(plan)
    parts = []
    for i, layer in enumerate(plan.layers):
        if layer.conv is None:
            continue
        blocks = sum(count * ports for path, depth, width, ports, style in found
                     if f".accumulate.acc{i}_" in path
                     for kind, count in [_mapping(family, depth, width, style)]
                     if kind == "bram")
        g = layer.conv.geometry
        parts.append(f"layer {i}'s feature maps ({layer.out_features}x{g.conv_height}x"
                     f"{g.conv_width} sums of {layer.accumulator_bits} bits, {plan.banks} "
                     f"bank{'s' if plan.banks > 1 else ''}) take {blocks}")
    if not parts:
        return ""
    hint = " (fewer images in flight: --banks 1)" if plan.banks > 1 else ""
    return f"; of those, {', '.join(parts)}{hint}"
