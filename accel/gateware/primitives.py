"""The engine's building blocks: memories and their read ports, FIFOs, skid buffers, the
registered hard multiplier, the helpers that give every plan memory its write strobe, and
bit tricks (lowest set bit, fewer-than, OR of many).

Names keep their leading underscore: they are shared inside :mod:`accel.gateware` only.
"""

from __future__ import annotations

from collections import namedtuple

from amaranth.hdl import (Cat, ClockSignal, Const, Elaboratable, Instance, Module, Mux, Signal,
                          signed)
from amaranth.lib.fifo import FIFOInterface
from amaranth.lib.memory import Memory

from accel.planning.plan import EnginePlan, _bits

__all__ = ["SMALL_MEMORY_DEPTH"]


#: Memory attribute: a read of the address being written in the same clock may return anything.
#: Yosys otherwise emulates "old data" around a block RAM (whose two ports do not promise it)
#: with a copy of the write data, an address comparison and a mux on the read data: the
#: critical path of the 16-PE LeNet-300-100 build (timing), and 1,700 flip-flops of its group
#: queues. Set only on memories that are never read and written at one address in one clock
#: (see :func:`_read_port`); it takes effect through Yosys's ``memory_dff``, which folds the
#: read data's register into the memory.
_NO_COLLISION = {"no_rw_check": 1}


class _ReadPort(namedtuple("_ReadPort", ["addr", "en", "data"])):
    """See :func:`_read_port`."""


def _read_port(m, memory, name):
    """A read port of ``memory`` with one clock of latency, as ``memory.read_port()``.

    Built as an asynchronous read and a register (``data`` loads ``memory[addr]`` at each
    clock where ``en`` is high, 1 unless driven): the same values on the same clocks as the
    synchronous, non-transparent port, and the form in which Yosys honours ``no_rw_check``
    (:data:`_NO_COLLISION`) when it folds the register into the memory. ``memory`` must carry
    that attribute, and its users must never read an address in the clock it is written, or
    never use what such a read returns: the engine's memories are written only while it is
    idle, a FIFO never reads the slot it writes (it reads only when not empty and writes only
    when not full), and a block RAM accumulator's MAC takes a forwarded sum instead of such a
    read (``accel.gateware.pe.accumulate``).
    """
    port = memory.read_port(domain="comb")
    read = _ReadPort(Signal.like(port.addr, name=f"{name}_addr"), Signal(init=1, name=f"{name}_en"),
                     Signal.like(port.data, name=f"{name}_data", reset_less=True))
    m.d.comb += port.addr.eq(read.addr)
    with m.If(read.en):
        m.d.sync += read.data.eq(port.data)
    return read


class _BufferedFIFO(Elaboratable, FIFOInterface):
    """A first-word-fall-through FIFO whose ``r_data`` is a memory's registered read data.

    Interface, behaviour and timing of :class:`amaranth.lib.fifo.SyncFIFOBuffered` (``depth``
    words, ``r_data`` a clock after the word is written); its storage is read through
    :func:`_read_port`, so that a block RAM needs no collision logic around it (timing).
    ``attrs``: the storage memory's attributes (``ram_style``).
    """

    def __init__(self, *, width: int, depth: int, attrs: dict | None = None):
        if depth < 2:
            self._MustUse__used = True          # never built: no "created but never used"
            raise ValueError(f"depth must be at least 2, not {depth!r}")
        super().__init__(width=width, depth=depth)
        self.level = Signal(range(depth + 1))
        self._attrs = dict(attrs or {})

    def elaborate(self, platform):
        m = Module()
        inner_depth = self.depth - 1
        inner_level = Signal(range(inner_depth + 1))
        inner_rdy = Signal()
        do_write = self.w_rdy & self.w_en
        # The register takes the next word when it is empty or being read.
        do_inner_read = inner_rdy & (~self.r_rdy | self.r_en)

        m.submodules.storage = storage = Memory(shape=self.width, depth=inner_depth, init=[],
                                                attrs={**self._attrs, **_NO_COLLISION})
        write = storage.write_port()
        read = _read_port(m, storage, "storage_read")
        produce = Signal(range(inner_depth))
        consume = Signal(range(inner_depth))

        m.d.comb += [
            self.w_rdy.eq(inner_level != inner_depth),
            inner_rdy.eq(inner_level != 0),
            write.addr.eq(produce), write.data.eq(self.w_data), write.en.eq(do_write),
            read.addr.eq(consume), read.en.eq(do_inner_read),
            self.r_data.eq(read.data),
            self.level.eq(inner_level + self.r_rdy),
            self.w_level.eq(self.level), self.r_level.eq(self.level),
        ]
        with m.If(do_write):
            m.d.sync += produce.eq(Mux(produce == inner_depth - 1, 0, produce + 1))
        with m.If(do_inner_read):
            m.d.sync += consume.eq(Mux(consume == inner_depth - 1, 0, consume + 1))
        with m.If(do_write & ~do_inner_read):
            m.d.sync += inner_level.eq(inner_level + 1)
        with m.Elif(do_inner_read & ~do_write):
            m.d.sync += inner_level.eq(inner_level - 1)
        with m.If(do_inner_read):
            m.d.sync += self.r_rdy.eq(1)
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        return m


class _RegisteredFIFO(Elaboratable):
    """A first-word-fall-through FIFO whose ``r_data`` comes from fabric flip-flops.

    :class:`_BufferedFIFO` followed by a skid buffer (a main and a spare register): a consumer's
    ``r_en`` then reaches only a few flip-flop enables, not a memory's pointers (timing).
    Interface and behaviour as :class:`amaranth.lib.fifo.SyncFIFOBuffered` with room for
    ``depth + 2`` words, one more clock of latency, one word per clock throughput.

    ``block=True`` puts the storage in block RAM, and a register between it and the skid buffer
    (room for ``depth + 3`` words, two more clocks of latency than ``SyncFIFOBuffered``): block
    RAM read data arrives about 5.6 ns after the clock on an ECP5, and the skid buffer's input
    mux after it had been placed up to 5.7 ns of routing away (timing: the 16-PE LeNet-300-100
    build's group queues). The register loads with an enable only, so the read data reaches a
    flip-flop's data pin with no logic in between.
    """

    def __init__(self, *, width: int, depth: int, block: bool = False):
        self.width, self.block = width, block
        self.depth = depth + 2 + int(block)
        self.w_data = Signal(width)
        self.w_en = Signal()
        self.w_rdy = Signal()
        self.r_data = Signal(width)
        self.r_en = Signal()
        self.r_rdy = Signal()
        self.level = Signal(range(self.depth + 1))
        #: The deep part's level and depth: a write is taken while ``w_level < w_depth``.
        self.w_depth = depth
        self.w_level = Signal(range(depth + 1))

    def elaborate(self, platform):
        m = Module()
        m.submodules.deep = deep = _BufferedFIFO(
            width=self.width, depth=self.w_depth,
            attrs=_block_ram_attrs(platform) if self.block else {})
        m.submodules.skid = skid = _SkidBuffer(self.width)
        m.d.comb += [
            deep.w_data.eq(self.w_data), deep.w_en.eq(self.w_en), self.w_rdy.eq(deep.w_rdy),
            self.r_data.eq(skid.o_data), self.r_rdy.eq(skid.o_valid),
            skid.o_ready.eq(self.r_en),
            self.w_level.eq(deep.level),
        ]
        if not self.block:
            m.d.comb += [
                skid.i_valid.eq(deep.r_rdy), skid.i_data.eq(deep.r_data),
                deep.r_en.eq(skid.i_ready),
                self.level.eq(deep.level + skid.o_valid + skid.spare_valid),
            ]
            return m
        # The block RAM's read data, registered: taken whenever the register is empty or
        # passes its word on.
        staged_valid = Signal()
        staged = Signal(self.width, reset_less=True)
        take = ~staged_valid | skid.i_ready
        with m.If(take):
            m.d.sync += [staged_valid.eq(deep.r_rdy), staged.eq(deep.r_data)]
        m.d.comb += [
            deep.r_en.eq(take),
            skid.i_valid.eq(staged_valid), skid.i_data.eq(staged),
            self.level.eq(deep.level + staged_valid + skid.o_valid + skid.spare_valid),
        ]
        return m


#: Operand width of the ECP5's hard multiplier (MULT18X18D, signed operands).
_ECP5_MULTIPLIER_BITS = 18


class _RegisteredProduct(Elaboratable):
    """``p = a * b``, two clocks after ``a`` and ``b``: the operands registered, then the product.

    On an ECP5, when both operands fit its signed 18-bit inputs, both registers are a
    MULT18X18D's own input and output registers: the hard multipliers sit in rows of their
    own, and a flip-flop in the fabric on either side of one was placed as far as 4.6 ns of
    routing away (timing: the 16-PE LeNet-300-100 build's critical path). Elsewhere, and in
    simulation, flip-flops and ``*``: the same values on the same clocks (``p`` is exact; it
    is reset to 0 in the fabric version only).

    Attributes
    ----------
    a, b : Signal
        The operands (signed or unsigned, of the shapes given).
    p : Signal(signed)
        Their product, wide enough for every value.
    """

    def __init__(self, a_shape, b_shape):
        self.a = Signal(a_shape)
        self.b = Signal(b_shape)
        self.p = Signal(signed(_signed_bits(self.a) + _signed_bits(self.b)))

    def elaborate(self, platform):
        m = Module()
        fits = max(_signed_bits(self.a), _signed_bits(self.b)) <= _ECP5_MULTIPLIER_BITS
        if not (fits and _is_ecp5(platform)):
            a, b = Signal.like(self.a), Signal.like(self.b)
            m.d.sync += [a.eq(self.a), b.eq(self.b), self.p.eq(a * b)]
            return m
        # Both operands signed (an unsigned one zero-extended): the product of the values.
        a = Signal(signed(_ECP5_MULTIPLIER_BITS))
        b = Signal(signed(_ECP5_MULTIPLIER_BITS))
        product = Signal(2 * _ECP5_MULTIPLIER_BITS)
        m.d.comb += [a.eq(self.a), b.eq(self.b), self.p.eq(product[:len(self.p)])]
        registers = {f"p_REG_{name}_{kind}": f"{kind}0"
                     for name in ("INPUTA", "INPUTB", "OUTPUT") for kind in ("CLK", "CE", "RST")}
        m.submodules.multiplier = Instance(
            "MULT18X18D",
            **registers,
            p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
            # SOURCEB_MODE stays at its default (B_SHIFT, as Yosys's own mapping leaves it):
            # ecppack refuses B_INPUT. SOURCEB is 0, so B is the B input either way.
            p_MULT_BYPASS="DISABLED", p_RESETMODE="SYNC", p_GSR="DISABLED",
            p_CAS_MATCH_REG="FALSE",
            i_CLK0=ClockSignal("sync"), i_CE0=Const(1), i_RST0=Const(0),
            i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
            **{f"i_A{k}": a[k] for k in range(_ECP5_MULTIPLIER_BITS)},
            **{f"i_B{k}": b[k] for k in range(_ECP5_MULTIPLIER_BITS)},
            **{f"i_C{k}": Const(0) for k in range(_ECP5_MULTIPLIER_BITS)},
            **{f"o_P{k}": product[k] for k in range(2 * _ECP5_MULTIPLIER_BITS)},
        )
        return m


def _signed_bits(value) -> int:
    """Bits of a signed number that holds every value of ``value``."""
    return len(value) + (0 if value.shape().signed else 1)


def _is_ecp5(platform) -> bool:
    from amaranth.vendor import LatticePlatform

    return isinstance(platform, LatticePlatform) and platform.family == "ecp5"


class _SkidBuffer(Elaboratable):
    """A two-register stage whose ``i_ready`` and ``o_valid``/``o_data`` are flip-flops.

    It cuts every combinational path between a producer and a consumer that sit far apart on
    the chip (timing): the producer sees a registered ready, the consumer registered data. Same
    handshake as a stream on both sides; one clock of latency, one word per clock.
    """

    def __init__(self, width: int):
        self.width = width
        self.i_data = Signal(width)
        self.i_valid = Signal()
        self.i_ready = Signal()
        self.o_data = Signal(width)
        self.o_valid = Signal()
        self.o_ready = Signal()
        #: The spare register holds a word (the buffer holds ``o_valid + spare_valid`` words).
        self.spare_valid = Signal()

    def elaborate(self, platform):
        m = Module()
        spare, spare_valid = Signal(self.width), self.spare_valid
        take = self.i_valid & ~spare_valid
        pop = self.o_ready & self.o_valid
        m.d.comb += self.i_ready.eq(~spare_valid)
        # The spare register loads whatever arrives while it is empty: its enable is then a
        # flip-flop, not the consumer's pop (timing: the pop reaches half as many enables).
        # Only a word taken while the output stalls is kept (spare_valid).
        with m.If(~spare_valid):
            m.d.sync += spare.eq(self.i_data)
        with m.If(pop | ~self.o_valid):
            with m.If(spare_valid):
                m.d.sync += [self.o_data.eq(spare), self.o_valid.eq(1), spare_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o_data.eq(self.i_data), self.o_valid.eq(take)]
        with m.Elif(take):
            m.d.sync += spare_valid.eq(1)
        return m


def _lutram_attrs(platform) -> dict:
    """Attributes that put a memory in LUT RAM where the device has it (not the iCE40)."""
    from amaranth.vendor import SiliconBluePlatform

    return {} if isinstance(platform, SiliconBluePlatform) else {"ram_style": "distributed"}


def _register_attrs() -> dict:
    """Attributes that put a memory in flip-flops (any device)."""
    return {"ram_style": "logic"}


def _shallow_attrs(platform, depth: int) -> dict:
    """LUT RAM, or flip-flops when at most :data:`REGISTER_DEPTH` deep."""
    return _register_attrs() if depth <= REGISTER_DEPTH else _lutram_attrs(platform)


def _block_ram_attrs(platform) -> dict:
    """Attributes that keep a memory in block RAM even when Yosys would take LUT RAM."""
    from amaranth.vendor import SiliconBluePlatform

    return {} if isinstance(platform, SiliconBluePlatform) else {"ram_style": "block"}


def _check_plan(component, plan):
    if not isinstance(plan, EnginePlan):
        component._MustUse__used = True         # never built: no "created but never used"
        raise TypeError(f"plan must be an EnginePlan, not {plan!r}")


#: Memories at most this deep go to LUT RAM where the device has it: a block RAM's slow output
#: (about 5.6 ns clock-to-out on the ECP5) would otherwise start the drain's and the decoder's
#: critical paths, and a few rows of biases or codewords would each hold a whole block RAM.
SMALL_MEMORY_DEPTH = 64
#: A memory kept in block RAM for its address path (``block=True``) still goes to LUT RAM when
#: it is at most this deep: one ECP5 LUT RAM cell (16x4) deep, it has no read mux tree to
#: lengthen that path, and a whole block RAM per PE for a few rows (the small layers of a
#: factorized network) would not fit 16 PEs' worth on the ULX3S-85F.
ONE_CELL_DEPTH = 16
#: Memories at most this deep are flip-flops: a row or two (a factorized network's rank-9
#: layer has one row per PE) would otherwise hold whole ECP5 LUT RAM cells, each of which takes
#: three of a logic block's four slices (its write port takes one): on the 16-PE TRP
#: LeNet-300-100 engine 1,544 of 3,634 cells, for 436 bits per PE, and that design did not
#: route. A 2-row read is one LUT per bit.
REGISTER_DEPTH = 2


def _memory(m, name, plan, bus, region_name, layer, pe, shape, platform=None, *,
            small_in_lutram=True, block=False, strobe_from=None):
    """A memory initialised from the plan, with a write port on the write bus.

    ``small_in_lutram=False`` keeps a memory in block RAM however shallow: one whose read
    address comes from logic and whose read data is registered anyway, where a block RAM's
    address register ends the address path and LUT RAM's read mux would lengthen it.
    ``block=True`` keeps it in block RAM however narrow, for the same reason, unless it is at
    most :data:`ONE_CELL_DEPTH` deep.
    Whatever the flags, a memory at most :data:`REGISTER_DEPTH` deep is flip-flops.
    ``strobe_from``: the bus a clock before ``bus`` (``bus`` is its copy, registered); the
    write enable is then decoded from it and registered, so that it comes from a flip-flop of
    its own (timing: the decode of the address, then LUT RAM's decode of its rows, was the
    critical path of 16-PE LeNet-300-100).
    """
    region = plan.region(region_name, layer, pe)
    if region.depth <= REGISTER_DEPTH:
        attrs = _register_attrs()
    elif block and region.depth <= ONE_CELL_DEPTH:
        attrs = _lutram_attrs(platform)
    elif block:
        attrs = _block_ram_attrs(platform)
    elif region.depth > SMALL_MEMORY_DEPTH:
        attrs = {}
    elif small_in_lutram:
        attrs = _lutram_attrs(platform)
    else:
        attrs = _block_ram_attrs(platform)
    # Written only while the engine is idle: no collisions (see ``_read_port``).
    mem = Memory(shape=shape, depth=region.depth, init=plan.init(region_name, layer, pe),
                 attrs={**attrs, **_NO_COLLISION})
    m.submodules[name] = mem
    size_bits = _bits(region.depth)
    port = mem.write_port()

    def match(b):
        return b.addr[size_bits:] == (region.base >> size_bits)

    m.d.comb += port.en.eq(_strobe(m, f"{name}_write", bus, strobe_from, match))
    if strobe_from is None:
        m.d.comb += [port.addr.eq(bus.addr[:size_bits]), port.data.eq(bus.data)]
        return mem
    # The word's address and data in registers of the memory's own, loaded with its strobe's
    # decode (which keeps synthesis from merging the memories' copies into one): ``bus`` had
    # reached every memory of the PE (timing: 10.9 ns of routing from ``bus.data`` to a LUT
    # RAM's write data).
    addr = Signal(size_bits, name=f"{name}_write_addr")
    data = Signal(len(port.data), name=f"{name}_write_data")
    with m.If(strobe_from.en & match(strobe_from)):
        m.d.sync += [addr.eq(strobe_from.addr[:size_bits]), data.eq(strobe_from.data)]
    m.d.comb += [port.addr.eq(addr), port.data.eq(data)]
    return mem


def _strobe(m, name, bus, strobe_from, match):
    """``bus``'s write enable for the words ``match(bus)`` selects; with ``strobe_from`` (the bus
    a clock earlier), decoded from it into a register of its own (see :func:`_memory`)."""
    if strobe_from is None:
        return bus.en & match(bus)
    strobe = Signal(name=name)
    m.d.sync += strobe.eq(strobe_from.en & match(strobe_from))
    return strobe


def _register(m, plan, bus, region_name, layer, index, shape, init, *, strobe_from=None):
    """A register on the write bus: word ``index`` of a register region (``strobe_from`` as
    for :func:`_memory`)."""
    region = plan.region(region_name, layer)
    reg = Signal(shape, init=init, name=f"{region_name}{layer}_{index}")
    with m.If(_strobe(m, f"{region_name}{layer}_{index}_write", bus, strobe_from,
                      lambda b: b.addr == region.base + index)):
        m.d.sync += reg.eq(bus.data)
    return reg


def _registered(m, ports, name):
    """Each read port's data in a flip-flop of its own, with no logic in between.

    A block RAM's read data leaves it about 5.8 ns after the clock on an ECP5; registered at
    once, next to the memory, before the layer's mux, that path is a single short hop (timing).
    """
    regs = []
    for i, port in enumerate(ports):
        if port is None:
            regs.append(None)
            continue
        reg = Signal(port.data.shape(), name=f"{name}{i}")        # signed stays signed
        m.d.sync += reg.eq(port.data)
        regs.append(reg)
    return regs


def _switch(m, selector, choices, shape, name):
    """``choices[selector]`` as a combinational signal (the first choice when out of range)."""
    out = Signal(shape, name=name)
    with m.Switch(selector):
        for i, choice in enumerate(choices):
            with m.Case(i):
                m.d.comb += out.eq(choice)
    return out


def _lowest_set(bits):
    """``bits`` with only its lowest set bit kept: each bit ANDed with the NOR of those below
    it, which synthesis maps to a few LUTs (``bits & -bits`` became a carry chain: timing)."""
    return Cat(bits[k] & ~bits[:k].any() if k else bits[0] for k in range(len(bits)))


def _fewer_than(bits, count: int):
    """Whether fewer than ``count`` of ``bits`` are set: a table, which synthesis maps to a few
    LUTs, rather than an adder tree and a comparison."""
    width = len(bits)
    if width == 0:
        return Const(count > 0)
    table = sum(1 << v for v in range(1 << width) if bin(v).count("1") < count)
    return Const(table, 1 << width).bit_select(bits, 1)


def _at_most_one(bits):
    """Whether at most one of ``bits`` is set: per group of four bits, whether any and whether
    two or more are set (a LUT each), then the same over the groups' "any", recursively: a
    tree a few LUTs deep (``bits & ~_lowest_set(bits) == 0`` was a priority chain: timing)."""
    if len(bits) <= 4:
        return _fewer_than(bits, 2)
    groups = [bits[k:k + 4] for k in range(0, len(bits), 4)]
    several = Cat(~_fewer_than(group, 2) for group in groups)
    return ~several.any() & _at_most_one(Cat(group.any() for group in groups))


def _or_all(values):
    result = values[0]
    for v in values[1:]:
        result = result | v
    return result
