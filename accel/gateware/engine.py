"""The EIE-style sparse engine in Amaranth 0.5: loader, broadcaster, PEs, collector, top level.

Every block is a :class:`wiring.Component` whose parameters all come from an
:class:`accel.planning.plan.EnginePlan`. The dataflow (``docs/accelerator.md``, "Datapath"):

- the **loader** turns input beats into lists of nonzero input activations, one list per
  input lane, each image closed by an end mark;
- the **broadcaster** hands up to ``lanes`` nonzero activations per clock, from the input lists
  (first layer) or the PEs' output lists (later layers), to the queues of the PEs whose column
  mask bit is set, and, once every list has closed a (layer, image) context, a *fence* to all;
- each **PE** reads the column's pointer pair, walks its entries one per clock, decodes the
  relative row, looks the codebook up, multiplies and accumulates (rules A2-A5 of
  ``docs/arithmetic.md``); a fence retires after every earlier product is in its accumulator;
- when all PEs have retired a context's fence, the top level tells every PE to **drain** it:
  bias, requantize, ReLU, clamp (A4, A6, A7) and append the nonzero outputs to the PE's list,
  or, for the last layer, send its logits (A8) to the **collector**, which streams them out in
  neuron order.

Up to ``plan.banks`` images are in flight at a time (image ``i`` uses accumulator bank
``i mod banks``), so one image's last layers overlap the next images' first layers and a PE
idles only when no image in flight has work for it.
"""

from __future__ import annotations

from collections import namedtuple

from amaranth.hdl import (Cat, ClockSignal, Const, Elaboratable, Instance, Module, Mux, Signal,
                          signed, unsigned)
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import FIFOInterface, SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from accel.planning.plan import GROUP_QUEUE_SLACK, SHIFT_BITS, EnginePlan, _bits
from compress.integer import MULTIPLIER_BITS, activation_range

__all__ = ["Broadcaster", "Collector", "Engine", "Loader", "ProcessingElement", "layouts"]

#: Width of the ``cycles`` status counter.
CYCLE_COUNTER_BITS = 48


# -- layouts ------------------------------------------------------------------------------------

class _Layouts:
    """The struct layouts of one plan's buses."""

    def __init__(self, plan: EnginePlan):
        self.item = data.StructLayout({
            "column": unsigned(plan.column_bits),
            "value": signed(plan.value_bits),
            "layer": unsigned(plan.layer_bits),       # the layer that consumes the value
            "bank": unsigned(plan.bank_bits),
        })
        self.source = data.StructLayout({"present": 1, "end": 1, "item": self.item})
        self.group = data.StructLayout({
            "valid": unsigned(plan.lanes),
            "items": data.ArrayLayout(self.item, plan.lanes),
            "fence": 1,
            "fence_layer": unsigned(plan.layer_bits),
            "fence_bank": unsigned(plan.bank_bits),
        })
        bank = unsigned(plan.bank_bits)
        self.context = data.StructLayout({"layer": unsigned(plan.layer_bits), "bank": bank})
        self.retire = data.StructLayout({"valid": 1, "layer": unsigned(plan.layer_bits),
                                         "bank": bank})
        self.trace = data.StructLayout({
            "valid": 1, "end": 1, "layer": unsigned(plan.layer_bits), "bank": bank,
            "column": unsigned(plan.column_bits), "value": signed(plan.value_bits),
        })
        self.write = data.StructLayout({"addr": unsigned(plan.address_bits),
                                        "data": unsigned(plan.data_bits)})
        self.bus = data.StructLayout({"en": 1, "addr": unsigned(plan.address_bits),
                                      "data": unsigned(plan.data_bits)})
        self.logit = signed(plan.logit_bits)
        assert self.trace.size == plan.trace_bits


def layouts(plan: EnginePlan) -> _Layouts:
    """The struct layouts (``item``, ``source``, ``group``, ``trace``, ``write``, ...) of ``plan``."""
    return _Layouts(plan)


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
    that attribute, and its users must never read an address in the clock it is written: the
    engine's memories are written only while it is idle, and a FIFO never reads the slot it
    writes (it reads only when not empty and writes only when not full).
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


def _memory(m, name, plan, bus, region_name, layer, pe, shape, platform=None, *,
            small_in_lutram=True, block=False, strobe_from=None):
    """A memory initialised from the plan, with a write port on the write bus.

    ``small_in_lutram=False`` keeps a memory in block RAM however shallow: one whose read
    address comes from logic and whose read data is registered anyway, where a block RAM's
    address register ends the address path and LUT RAM's read mux would lengthen it.
    ``block=True`` keeps it in block RAM however narrow or deep, for the same reason.
    ``strobe_from``: the bus a clock before ``bus`` (``bus`` is its copy, registered); the
    write enable is then decoded from it and registered, so that it comes from a flip-flop of
    its own (timing: the decode of the address, then LUT RAM's decode of its rows, was the
    critical path of 16-PE LeNet-300-100).
    """
    region = plan.region(region_name, layer, pe)
    if block:
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


# -- loader -------------------------------------------------------------------------------------

class Loader(wiring.Component):
    """Input beats to per-lane lists of nonzero first-layer activations.

    Parameters
    ----------
    plan : EnginePlan

    Attributes
    ----------
    i : In(stream.Signature(unsigned(input_lanes * input_bits)))
        Input beats: ``beats_per_image`` per image, lane ``l`` in bits ``l * A ..`` (two's
        complement when the network input is signed, A1).
    o : Out(stream.Signature(source)).array(input_lanes)
        Per lane, the image's nonzero activations in column order, then an end mark (on the
        entry of the image's last beat, which carries that beat's activation if nonzero).
    started : Out(1)
        Strobe: the first beat of an image was accepted.

    Latency and throughput: one beat per clock while every lane's list has room; an entry is in
    its list the clock after its beat. Images alternate accumulator banks 0, 1, 0, ...
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        self._plan = plan
        self._layouts = layouts(plan)
        super().__init__({
            "i": In(stream.Signature(unsigned(plan.input_lanes * plan.input_bits))),
            "o": Out(stream.Signature(self._layouts.source)).array(plan.input_lanes),
            "started": Out(1),
        })

    def elaborate(self, platform):
        plan = self._plan
        m = Module()
        beat = Signal(range(plan.beats_per_image), name="beat")
        bank = Signal(range(plan.banks), name="bank")
        last = beat == plan.beats_per_image - 1
        room = Cat(o.ready for o in self.o).all()
        do_beat = self.i.valid & room
        bits = plan.input_bits
        for lane, o in enumerate(self.o):
            raw = self.i.payload[lane * bits:(lane + 1) * bits]
            value = raw.as_signed() if plan.input_signed else raw.as_unsigned()
            column = beat * plan.input_lanes + lane
            present = (value != 0) & (column < plan.in_features)
            m.d.comb += [
                o.valid.eq(self.i.valid & room & (present | last)),
                o.payload.present.eq(present),
                o.payload.end.eq(last),
                o.payload.item.column.eq(column),
                o.payload.item.value.eq(value),
                o.payload.item.layer.eq(0),
                o.payload.item.bank.eq(bank),
            ]
        m.d.comb += [
            self.i.ready.eq(room),
            self.started.eq(do_beat & (beat == 0)),
        ]
        with m.If(do_beat):
            with m.If(last):
                m.d.sync += [beat.eq(0),
                             bank.eq(Mux(bank == plan.banks - 1, 0, bank + 1))]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
        return m


# -- broadcaster --------------------------------------------------------------------------------

class Broadcaster(wiring.Component):
    """Hands nonzero activations to the PEs that hold weights in their columns (EIE's broadcast).

    Parameters
    ----------
    plan : EnginePlan

    Attributes
    ----------
    inputs : In(stream.Signature(source)).array(input_lanes)
        The loader's lists (first layer; images tagged with their bank).
    lists : In(stream.Signature(source)).array(n_pes)
        The PEs' output lists (later layers).
    o : Out(stream.Signature(group)).array(n_pes)
        One group per clock to each PE that has work in it: up to ``lanes`` activations (the
        ``valid`` bits are already masked by the PE's column mask bits) or a fence. A group is
        committed to all its PEs in the same clock, when all of them are ready.
    release : In(1), release_bank : In(bank_bits)
        Strobe: the image in ``release_bank`` has left the engine; its bank may take the next
        image's inputs.
    write : In(bus)
        The write port (column masks).

    Behaviour: an entry of a list is taken only if its context is open: a first-layer entry of
    bank ``b`` after that bank's last image left; a later-layer entry at once. Once every input
    lane has delivered its end mark of bank ``b``, or every PE list its end mark of a later
    (layer, bank), a fence for that context is sent to all PEs before any later group.

    Latency and throughput: ``lanes`` entries per clock (each of the ``2 * lanes`` clusters of
    lists moves one per clock); an entry reaches the PEs about nine clocks after it leaves its
    list (the list's skid buffer, the cluster's, the group register, column masks read and
    registered, through a 7-deep group queue that keeps the PEs' ready off the lists' timing
    paths, out of a register). A list's ``ready`` is a flip-flop. The PEs' ``ready`` is
    registered here before the commit tests it; a group committed reaches its PEs, ``valid``,
    in the next clock.
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        self._plan = plan
        self._layouts = lay = layouts(plan)
        super().__init__({
            "inputs": In(stream.Signature(lay.source)).array(plan.input_lanes),
            "lists": In(stream.Signature(lay.source)).array(plan.n_pes),
            "o": Out(stream.Signature(lay.group)).array(plan.n_pes),
            "release": In(1),
            "release_bank": In(plan.bank_bits),
            "write": In(lay.bus),
        })

    def elaborate(self, platform):
        plan, lay = self._plan, self._layouts
        m = Module()
        n_in, n_pe, lanes = plan.input_lanes, plan.n_pes, plan.lanes
        banks = plan.banks
        n_sources = n_pe + n_in
        # The PEs' lists, then the input lists. Each enters through a skid buffer here: the
        # lists are spread over the chip (one per PE), and the picks below then read their
        # heads from local flip-flops and pop them locally, while a list sees a registered
        # ready (timing).
        # A first-layer entry of bank b waits outside while its lane has delivered its end
        # mark of b and the bank has not been released (the image before it in that bank is
        # still in).
        lane_closed = [Signal(banks, name=f"lane_closed{lane}") for lane in range(n_in)]
        sources = []
        for s, src in enumerate(list(self.lists) + list(self.inputs)):
            skid = _SkidBuffer(lay.source.size)
            m.submodules[f"source{s}"] = skid
            if s >= n_pe:
                closed = lane_closed[s - n_pe].bit_select(src.payload.item.bank, 1)
                enter = src.valid & ~closed
                m.d.comb += [skid.i_valid.eq(enter), src.ready.eq(skid.i_ready & ~closed)]
                with m.If(enter & skid.i_ready & src.payload.end):
                    m.d.sync += closed.eq(1)
            else:
                m.d.comb += [skid.i_valid.eq(src.valid), src.ready.eq(skid.i_ready)]
            m.d.comb += skid.i_data.eq(src.payload)
            sources.append(_Head(skid.o_valid, lay.source(skid.o_data), skid.o_ready))
        eligible = Cat(src.valid for src in sources)

        # Two levels of picking, so that no clock's logic spans every list (timing): each of
        # `n_clusters` clusters (lists s with s mod n_clusters == c, the input lanes spread
        # over them) moves one entry per clock, its lowest eligible list's head, tagged with
        # the list's index, into a skid buffer; the second level takes up to `lanes` entries
        # per clock from the clusters' heads. Each list's entries stay in order.
        n_clusters = min(n_sources, 2 * lanes)
        source_bits = _bits(n_sources)
        tagged = data.StructLayout({"source": unsigned(source_bits), "entry": lay.source})
        heads = []
        for c in range(n_clusters):
            members = list(range(c, n_sources, n_clusters))
            skid = _SkidBuffer(tagged.size)
            m.submodules[f"cluster{c}"] = skid
            ready = Signal(len(members), name=f"cluster_eligible{c}")
            first = Signal(len(members), name=f"cluster_pick{c}")
            m.d.comb += [ready.eq(Cat(eligible[s] for s in members)),
                         first.eq(_lowest_set(ready))]
            picked = _or_all([Mux(first[j], Cat(Const(s, source_bits), sources[s].payload), 0)
                              for j, s in enumerate(members)])
            m.d.comb += [skid.i_valid.eq(ready.any()), skid.i_data.eq(picked)]
            for j, s in enumerate(members):
                m.d.comb += sources[s].ready.eq(skid.i_ready & first[j])
            heads.append(_Head(skid.o_valid, tagged(skid.o_data), skid.o_ready))
        with m.If(self.release):
            for closed in lane_closed:
                m.d.sync += closed.bit_select(self.release_bank, 1).eq(0)

        # Context bookkeeping: which lists have closed which context.
        input_done = [Signal(n_in, name=f"input_done{b}") for b in range(banks)]
        fence0_sent = [Signal(name=f"fence0_sent{b}") for b in range(banks)]
        end_seen = {(layer, b): Signal(n_pe, name=f"end_seen{layer}_{b}")
                    for layer in range(1, plan.n_layers) for b in range(banks)}

        # Stage 1 issues a group into S; from S's registered columns the column masks are read
        # into T, where each memory's word is registered as it leaves the memory (block RAM
        # read data is slow); U pushes the group, with the masks of the PEs it targets (its
        # layer's words) and the PEs it goes to, into a small queue;
        # stage 2 commits the queue's head to its PEs. Registers between the lists, the mask
        # reads and the commit keep each clock's logic short (timing); in particular the queue
        # keeps the PEs' ready (an AND over every PE) off the paths that pop the lists.
        s_valid, t_valid, u_valid = Signal(), Signal(), Signal()
        s_group, t_group, u_group = Signal(lay.group), Signal(lay.group), Signal(lay.group)
        # The end marks S holds, and the lists they came from: recorded a clock later.
        s_end = Signal(lanes)
        s_source = [Signal(source_bits, name=f"s_source{k}") for k in range(lanes)]
        group_width = lay.group.size
        queue_depth = 7
        m.submodules.groups = groups = _RegisteredFIFO(
            width=group_width + lanes * n_pe + n_pe, depth=queue_depth - 2)
        m.d.sync += [t_valid.eq(s_valid), t_group.eq(s_group),
                     u_valid.eq(t_valid), u_group.eq(t_group)]

        # Column masks: one memory per layer, one read port per lane; block RAM, whose address
        # register ends the path from S (LUT RAM would add its read mux to a wide fan-out).
        mask_ports = []
        for layer in range(plan.n_layers):
            mem = _memory(m, f"col_mask{layer}", plan, self.write, "col_mask", layer, None,
                          unsigned(n_pe), platform, small_in_lutram=False, block=True)
            ports = [_read_port(m, mem, f"col_mask{layer}_{k}") for k in range(lanes)]
            for k, port in enumerate(ports):
                m.d.comb += port.addr.eq(s_group.items[k].column)
            mask_ports.append(ports)
        mask_words = [_registered(m, [ports[k] for ports in mask_ports], f"mask_word{k}_")
                      for k in range(lanes)]
        masks = [_switch(m, u_group.items[k].layer, mask_words[k], unsigned(n_pe), f"mask{k}")
                 for k in range(lanes)]
        # A lane's mask is zero when the lane carries nothing (or the group is a fence).
        lane_masks = [Mux(u_group.valid[k], masks[k], 0) for k in range(lanes)]
        u_target = Mux(u_group.fence, (1 << n_pe) - 1, _or_all(lane_masks))
        m.d.comb += [
            groups.w_data.eq(Cat(u_group, *lane_masks, u_target)),
            groups.w_en.eq(u_valid),
        ]

        # Stage 2: the queue's head (flip-flops), committed when every PE it targets is ready.
        # The PEs' ready is registered here (they are spread over the chip: timing); a PE's
        # ready allows for that (see ProcessingElement).
        head = lay.group(groups.r_data[:group_width])
        head_masks = [groups.r_data[group_width + k * n_pe:group_width + (k + 1) * n_pe]
                      for k in range(lanes)]
        target = groups.r_data[group_width + lanes * n_pe:]
        ready = Signal(n_pe)
        m.d.sync += ready.eq(Cat(o.ready for o in self.o))
        commit = groups.r_rdy & ((ready | ~target) == (1 << n_pe) - 1)
        m.d.comb += groups.r_en.eq(commit)
        # The committed group goes out from registers: the PEs are spread over the chip, and
        # their ready coming in and the group going out are then in different clocks (timing).
        out_valid = Signal(n_pe)
        out_group = Signal(lay.group)
        out_lane_valid = [Signal(lanes, name=f"out_lane_valid{p}") for p in range(n_pe)]
        # The group and lane flags load every clock, not only at a commit: a PE reads them
        # only in the clock after one (``out_valid``), and the commit, an AND over every PE,
        # then reaches no register's enable but ``out_valid``'s (timing: it fanned out to the
        # whole group's enables, 5.8 ns of routing).
        m.d.sync += [out_valid.eq(Mux(commit, target, 0)), out_group.eq(head)]
        m.d.sync += [out_lane_valid[p].eq(Cat(mask[p] for mask in head_masks))
                     for p in range(n_pe)]
        for p, o in enumerate(self.o):
            m.d.comb += [
                o.valid.eq(out_valid[p]),
                o.payload.items.eq(out_group.items),
                o.payload.fence.eq(out_group.fence),
                o.payload.fence_layer.eq(out_group.fence_layer),
                o.payload.fence_bank.eq(out_group.fence_bank),
                o.payload.valid.eq(out_lane_valid[p]),
            ]
        # Stage 1 may issue while the queue has room for it and for the groups in S and T. The
        # test is registered (timing): at most one group enters S per clock, so room for one
        # more than now is room in the next clock.
        advance = Signal()
        m.d.sync += advance.eq(groups.level + s_valid + t_valid + u_valid + 1 < groups.depth)

        # Stage 1: a pending fence, or up to `lanes` entries from the clusters' heads.
        fences = []                                     # (condition, layer, bank)
        for b in range(banks):
            fences.append((input_done[b].all() & ~fence0_sent[b], 0, b))
        for (layer, b), seen in end_seen.items():
            fences.append((seen.all(), layer, b))
        # A fence is pending from the clock after its condition holds (registered: the pick
        # below then starts from flip-flops, timing); a clock after a fence is sent, the next
        # one waits a clock. Entries taken in between belong to other contexts (a list's end
        # mark of a context follows all its entries of it), so no entry of a context follows
        # its fence.
        # The conditions themselves are registered too (each is an AND over every list): one
        # stays set for a clock after its fence is sent and its bits cleared, the clock in
        # which no fence is sent.
        # The fence a send takes (the first pending one) is picked from the same conditions
        # and registered beside them, one-hot: a send then clears its fence's bits without a
        # priority chain after the registers (timing).
        conditions = Cat(c for c, _, _ in fences)
        ready_fences = Signal(len(fences))
        first_fence = Signal(len(fences))
        m.d.sync += [ready_fences.eq(conditions), first_fence.eq(_lowest_set(conditions))]
        fence_any = Signal()
        fence_pending = Signal()
        send_fence = Signal()
        m.d.comb += [fence_any.eq(ready_fences.any()),
                     send_fence.eq(advance & fence_pending & fence_any)]
        m.d.sync += fence_pending.eq(fence_any & ~send_fence)

        # Lane 0 takes the lowest cluster with an entry, lane 1 the highest other one: two
        # priority encoders side by side rather than one after the other (timing). Further
        # lanes take the lowest of what is left.
        available = Signal(n_clusters)
        m.d.comb += available.eq(Cat(h.valid for h in heads))
        chosen = [Signal(n_clusters, name="pick0")]
        m.d.comb += chosen[0].eq(_lowest_set(available))
        remaining = Signal(n_clusters, name="rest0")
        m.d.comb += remaining.eq(available & ~chosen[0])
        if lanes > 1:
            mirrored = Signal(n_clusters, name="available_mirrored")
            highest_mirrored = Signal(n_clusters, name="highest_mirrored")
            m.d.comb += [mirrored.eq(available[::-1]),
                         highest_mirrored.eq(_lowest_set(mirrored))]
            chosen.append(Signal(n_clusters, name="pick1"))
            m.d.comb += chosen[1].eq(highest_mirrored[::-1] & ~chosen[0])
            rest = Signal(n_clusters, name="rest1")
            m.d.comb += rest.eq(remaining & ~chosen[1])
            remaining = rest
        for k in range(2, lanes):
            pick = Signal(n_clusters, name=f"pick{k}")
            m.d.comb += pick.eq(_lowest_set(remaining))
            chosen.append(pick)
            rest = Signal(n_clusters, name=f"rest{k}")
            m.d.comb += rest.eq(remaining & ~pick)
            remaining = rest
        # The clusters taken, straight from ``available`` rather than through the picks
        # (timing: the picks are a chain of priority encoders, and the clusters' pops load
        # wide registers): the `lanes - 1` lowest available and the highest one.
        take_any = Signal(n_clusters)
        for c in range(n_clusters):
            if lanes == 1:
                picked = _fewer_than(available[:c], 1)
            elif c == n_clusters - 1:
                picked = Const(1)
            else:
                picked = _fewer_than(available[:c], lanes - 1) | ~available[c + 1:].any()
            m.d.comb += take_any[c].eq(available[c] & picked)
        do_take = advance & ~fence_pending
        for c, h in enumerate(heads):
            m.d.comb += h.ready.eq(do_take & take_any[c])
        entries = []
        for k in range(lanes):
            entry = Signal(tagged, name=f"entry{k}")
            m.d.comb += entry.eq(_or_all([Mux(chosen[k][c], h.payload, 0)
                                          for c, h in enumerate(heads)]))
            entries.append(entry)

        m.d.sync += [s_valid.eq(0), s_end.eq(0)]
        with m.If(advance):
            with m.If(send_fence):
                m.d.sync += [s_valid.eq(1), s_group.valid.eq(0), s_group.fence.eq(1)]
                for j, (_, layer, b) in enumerate(fences):
                    with m.If(first_fence[j]):
                        m.d.sync += [s_group.fence_layer.eq(layer), s_group.fence_bank.eq(b)]
                        if layer == 0:
                            m.d.sync += fence0_sent[b].eq(1)
                        else:
                            m.d.sync += end_seen[layer, b].eq(0)
            with m.Elif(~fence_pending & available.any()):
                m.d.sync += s_group.fence.eq(0)
                any_present = []
                for k in range(lanes):
                    taken = chosen[k].any()
                    present = taken & entries[k].entry.present
                    any_present.append(present)
                    m.d.sync += [s_group.valid[k].eq(present),
                                 s_group.items[k].eq(entries[k].entry.item),
                                 s_end[k].eq(taken & entries[k].entry.end),
                                 s_source[k].eq(entries[k].source)]
                m.d.sync += s_valid.eq(Cat(any_present).any())
        # The end marks taken in the clock before, recorded from S's registers (timing). A
        # context's fence condition then holds a clock later; its entries are all before it.
        for k in range(lanes):
            item = s_group.items[k]
            with m.If(s_end[k]):
                for lane in range(n_in):
                    with m.If(s_source[k] == n_pe + lane):
                        for b in range(banks):
                            with m.If(item.bank == b):
                                m.d.sync += input_done[b][lane].eq(1)
                for p in range(n_pe):
                    with m.If(s_source[k] == p):
                        for (layer, b), seen in end_seen.items():
                            with m.If((item.layer == layer) & (item.bank == b)):
                                m.d.sync += seen[p].eq(1)
        with m.If(self.release):
            for b in range(banks):
                with m.If(self.release_bank == b):
                    m.d.sync += [input_done[b].eq(0), fence0_sent[b].eq(0)]
        return m


#: The head of a list as the broadcaster's pick sees it (a skid buffer's output).
_Head = namedtuple("_Head", "valid payload ready")


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


def _or_all(values):
    result = values[0]
    for v in values[1:]:
        result = result | v
    return result


# -- processing element -------------------------------------------------------------------------

class ProcessingElement(wiring.Component):
    """One PE: interleaved-CSC weights of its rows of every layer, a MAC pipeline and a drain.

    Parameters
    ----------
    plan : EnginePlan
    pe : int
        This PE's index ``p``; it owns output rows ``k * N + p`` of every (reordered) layer.

    Attributes
    ----------
    i : In(stream.Signature(group))
        Groups of activations for this PE, and fences (registered as they arrive, then queued,
        ``queue_depth`` deep). ``ready`` is registered (for the clock rate) and the broadcaster
        registers it again: it promises room for every group that arrives (``valid``) up to
        three clocks later, which is always taken.
    drain : In(stream.Signature(context))
        Commands: drain accumulator bank ``bank`` of layer ``layer`` (its context is complete).
        ``ready`` is registered and the sequencer registers it again: it promises room for
        commands that arrive (``valid``) up to three clocks later, which are always taken
        (registered as they arrive, then queued).
    retire : Out(retire)
        Strobe with a context: this PE's fence of the context has retired, every product of the
        context before it is in the accumulators.
    o : Out(stream.Signature(source))
        The PE's list: nonzero hidden outputs ``(row, value)`` tagged with the next layer and the
        bank, then an end mark per drained context.
    logits : Out(stream.Signature(logit))
        The last layer's outputs of this PE's rows, in local row order.
    trace : Out(trace)
        Every entry appended to ``o`` (for verification).
    write : In(bus)
        The write port (entries, pointers, codebooks, biases, row ids, requantization constants).

    Pipeline: an activation is registered as it arrives and queued, its pointer pair read,
    registered as it leaves the memory and again as the layer's pair, its last entry's offset
    computed (4 clocks) and put in an 8-deep column queue whose head is in flip-flops; the
    entry stage then issues one entry per clock, with no bubble
    between columns, into the MAC pipeline: entry read, each layer's word registered, the
    layer's word registered, row decode and codebook read, weight register, multiply and
    accumulator read, accumulator row register (one for every accumulator memory), add and
    write (7 clocks). The accumulator row register takes the sums the read misses (the two
    clocks' writes before it), so back-to-back updates of one row need no stall. Throughput:
    one entry per clock.
    The drain reads one row per clock: accumulator, bias and row id, each layer's bias and row
    id registered, the context's registered, bias added, requantization multiply (four stages:
    the operands copied beside the hard multipliers, the partial products, their copies, the
    product), rounding term, shift (two stages), ReLU and clamp, entry register, append (13
    clocks, one multiplier, carry chain or three-level shifter per stage for the clock rate),
    and clears the row for the next image.
    """

    def __init__(self, plan: EnginePlan, pe: int):
        _check_plan(self, plan)
        if isinstance(pe, bool) or not isinstance(pe, int) or not 0 <= pe < plan.n_pes:
            self._MustUse__used = True
            raise ValueError(f"pe must be 0..{plan.n_pes - 1}, not {pe!r}")
        self._plan = plan
        self._pe = pe
        self._layouts = lay = layouts(plan)
        super().__init__({
            "i": In(stream.Signature(lay.group)),
            "drain": In(stream.Signature(lay.context)),
            "retire": Out(lay.retire),
            "o": Out(stream.Signature(lay.source)),
            "logits": Out(stream.Signature(lay.logit)),
            "trace": Out(lay.trace),
            "write": In(lay.bus),
        })

    def elaborate(self, platform):
        plan, lay, p = self._plan, self._layouts, self._pe
        m = Module()
        layers = plan.layers
        n_layers = plan.n_layers
        pointer_bits = max(layer.image.pointer_bits for layer in layers)
        row_bits = max(layer.image.row_bits for layer in layers) + 1
        weight_bits = max(layer.weight_bits for layer in layers)
        acc_bits = max(layer.accumulator_bits for layer in layers)
        value_shape = signed(plan.value_bits)

        # -- memories ------------------------------------------------------------------------
        entries, pointers, codebooks, biases, row_ids = [], [], [], [], []
        # A local copy of the write bus, in two registers (timing): the first takes every word
        # as it arrives from the top level, far away, with an enable that includes its own
        # register, so that the copies of different PEs differ and synthesis cannot merge them
        # back into one register that drives every PE; the second fans out to every memory of
        # the PE. Each memory's and register's write enable is decoded from the first and
        # registered beside the second (``strobe_from``).
        arriving = Signal(lay.bus)
        with m.If(self.write.en | arriving.en):
            m.d.sync += arriving.eq(self.write)
        bus = Signal(lay.bus)
        # Only the address and data: the enables are the strobes (``bus.en`` stays 0).
        m.d.sync += [bus.addr.eq(arriving.addr), bus.data.eq(arriving.data)]
        own = dict(strobe_from=arriving)
        for i, layer in enumerate(layers):
            image = layer.image
            entries.append(_read_port(m, _memory(m, f"entries{i}", plan, bus, "entries", i, p,
                                                 unsigned(image.entry_bits), platform, **own),
                                      f"entries{i}"))
            # Block RAM, however small: the pointer address comes from the queue head's lane
            # choice, and a block RAM's address register ends that path where LUT RAM's read
            # and its mux tree would lengthen it (timing: on 16-PE LeNet-300-100 a 100-deep
            # pointer memory in LUT RAM was the critical path).
            pointers.append(_read_port(m, _memory(m, f"pointers{i}", plan, bus, "pointers", i, p,
                                                  unsigned(image.pointer_word_bits), platform,
                                                  block=True, **own), f"pointers{i}"))
            codebooks.append(_read_port(m, _memory(m, f"codebook{i}", plan, bus, "codebook", i,
                                                   None, signed(layer.weight_bits), platform,
                                                   **own), f"codebook{i}"))
            biases.append(_read_port(m, _memory(m, f"bias{i}", plan, bus, "bias", i, p,
                                                signed(layer.accumulator_bits), platform, **own),
                                     f"bias{i}"))
            if not layer.logits:
                row_ids.append(_read_port(m, _memory(m, f"row_ids{i}", plan, bus, "row_ids", i,
                                                     p, unsigned(_bits(image.out_features)),
                                                     platform, **own), f"row_ids{i}"))
            else:
                row_ids.append(None)
        multipliers = [_register(m, plan, bus, "requant", i, 0, unsigned(MULTIPLIER_BITS),
                                 layer.multiplier, **own) for i, layer in enumerate(layers)]
        shifts = [_register(m, plan, bus, "requant", i, 1, unsigned(SHIFT_BITS),
                            layer.shift, **own) for i, layer in enumerate(layers)]
        # Accumulators: one memory per (layer, bank), shared by the MAC and the drain (never on
        # the same context at once). The read is not transparent to the write (a transparent
        # read would put the write data, after the adder, on the read path: timing); the MAC
        # forwards the sums its read misses instead (E4).
        acc_mems = {}
        for i, layer in enumerate(layers):
            for b in range(plan.banks):
                # LUT RAM, even when deep: the read-add-write loop has one clock, which block
                # RAM's slow read data would not leave enough of (timing).
                mem = Memory(shape=signed(layer.accumulator_bits), depth=layer.image.rows_per_pe,
                             init=[], attrs=_lutram_attrs(platform))
                m.submodules[f"acc{i}_{b}"] = mem
                wport = mem.write_port()
                rport = mem.read_port()
                acc_mems[i, b] = (rport, wport)

        # -- activation queue and pointer stage ----------------------------------------------
        # In block RAM however shallow: a 64-deep queue in LUT RAM had a read mux tree as deep
        # as its paths to the skid buffer (timing).
        m.submodules.queue = queue = _RegisteredFIFO(width=lay.group.size,
                                                      depth=plan.queue_depth, block=True)
        # A group is registered as it arrives, then queued: the broadcaster is far away
        # (timing). The register loads only when this PE's ``valid`` is high, so the PEs'
        # copies differ and synthesis cannot merge them into one that drives every PE.
        arrived = Signal()
        arrived_group = Signal(lay.group)
        m.d.sync += arrived.eq(self.i.valid)
        with m.If(self.i.valid):
            m.d.sync += arrived_group.eq(self.i.payload)
        # ``ready`` (registered) reaches the broadcaster's commit a clock later, and a group it
        # commits is queued three clocks after that: room for the writes of the five clocks
        # from the one whose level this is, counted in the deep part, which takes every write
        # (GROUP_QUEUE_SLACK; the plan refuses a queue shallower than that).
        room = Signal()
        m.d.sync += room.eq(queue.w_level + GROUP_QUEUE_SLACK <= queue.w_depth)
        m.d.comb += [
            queue.w_data.eq(arrived_group),
            queue.w_en.eq(arrived),
            self.i.ready.eq(room),
        ]
        head = lay.group(queue.r_data)
        # A queued column: its first entry and the offset of its last (a PE gets only columns
        # where it has at least one entry), or a fence.
        # ``single``: the column has one entry (or is a fence); ``penultimate``: the offset of
        # its last entry but one. The entry stage then knows a clock ahead whether its next
        # entry is the column's last, and pops with one LUT from flip-flops (timing).
        column_layout = data.StructLayout({
            "start": unsigned(pointer_bits), "penultimate": unsigned(pointer_bits),
            "single": 1, "value": value_shape, "layer": unsigned(plan.layer_bits),
            "bank": unsigned(plan.bank_bits), "fence": 1,
        })
        # Its head comes from flip-flops: the entry stage compares and adds with it, and pops
        # it, in one clock (timing).
        m.submodules.columns = columns = _RegisteredFIFO(width=column_layout.size, depth=7)

        taken = Signal(plan.lanes)
        remaining = Signal(plan.lanes)
        lowest = Signal(plan.lanes)
        m.d.comb += [remaining.eq(head.valid & ~taken), lowest.eq(_lowest_set(remaining))]
        p0_valid = Signal()
        p1_valid = Signal()
        p1r_valid = Signal()
        p2_valid = Signal()
        p3_valid = Signal()
        # Room in the column queue for this issue and those in P0 .. P3, registered (timing): at
        # most one issue per clock, so room for one more than now is room in the next clock.
        # ``occupancy`` is the queue's level plus the issues in P0 .. P3, counted as they are
        # issued and popped rather than summed (timing).
        room = Signal()
        occupancy = Signal(range(columns.depth + 1))
        m.d.sync += room.eq(occupancy + 1 < columns.depth)
        can_issue = queue.r_rdy & room
        issue_item = can_issue & remaining.any()
        issue_fence = can_issue & ~remaining.any() & head.fence
        pop_group = can_issue & ((remaining & ~lowest) == 0)
        item = Signal(lay.item)
        for k in range(plan.lanes):
            with m.If(lowest[k]):
                m.d.comb += item.eq(head.items[k])
        m.d.comb += queue.r_en.eq(pop_group)
        m.d.sync += occupancy.eq(occupancy + (issue_item | issue_fence)
                                 - (columns.r_rdy & columns.r_en))
        with m.If(pop_group):
            m.d.sync += taken.eq(0)
        with m.Elif(issue_item):
            m.d.sync += taken.eq(taken | lowest)

        # P0: the issue registered, its column the pointer memories' address (timing: the lane
        # choice is several LUTs deep, and each pointer memory's block RAMs sit apart).
        p0 = Signal(data.StructLayout({"value": value_shape, "layer": unsigned(plan.layer_bits),
                                       "bank": unsigned(plan.bank_bits), "fence": 1}))
        p0_column = Signal.like(item.column)
        m.d.sync += [p0_valid.eq(issue_item | issue_fence), p0_column.eq(item.column)]
        with m.If(issue_fence):
            m.d.sync += [p0.fence.eq(1), p0.layer.eq(head.fence_layer),
                         p0.bank.eq(head.fence_bank), p0.value.eq(0)]
        with m.Else():
            m.d.sync += [p0.fence.eq(0), p0.layer.eq(item.layer), p0.bank.eq(item.bank),
                         p0.value.eq(item.value)]
        for port in pointers:
            m.d.comb += port.addr.eq(p0_column[:len(port.addr)])

        p1 = Signal(p0.shape())
        m.d.sync += [p1_valid.eq(p0_valid), p1.eq(p0)]
        # P1R: each layer's pointer word registered as it leaves its block RAM; P2: the pair of
        # the column's layer (block RAM read data is slow: timing).
        p1r = Signal(p1.shape())
        pointer_words = _registered(m, pointers, "pointer_word")
        m.d.sync += [p1r_valid.eq(p1_valid), p1r.eq(p1)]
        p2 = Signal(p1.shape())
        p2_start = Signal(pointer_bits)
        p2_count = Signal(pointer_bits)
        starts = [word[:layer.image.pointer_bits] for word, layer in zip(pointer_words, layers)]
        counts = [(word[layer.image.pointer_bits:] - word[:layer.image.pointer_bits])
                  [:pointer_bits] for word, layer in zip(pointer_words, layers)]
        m.d.sync += [
            p2_valid.eq(p1r_valid), p2.eq(p1r),
            p2_start.eq(_switch(m, p1r.layer, starts, unsigned(pointer_bits), "start")),
            p2_count.eq(_switch(m, p1r.layer, counts, unsigned(pointer_bits), "count")),
        ]
        # P3: the column's ``single`` and ``penultimate`` (see ``column_layout``), so that the
        # entry stage compares with registers instead of adding (timing).
        column = Signal(column_layout)
        m.d.sync += [
            p3_valid.eq(p2_valid),
            column.start.eq(Mux(p2.fence, 0, p2_start)),
            column.penultimate.eq(p2_count - 2),
            column.single.eq(p2.fence | (p2_count == 1)),
            column.value.eq(p2.value), column.layer.eq(p2.layer), column.bank.eq(p2.bank),
            column.fence.eq(p2.fence),
        ]
        m.d.comb += [
            columns.w_data.eq(column),
            columns.w_en.eq(p3_valid),
        ]

        # -- entry stage (E0): one entry per clock from the head column -----------------------
        # ``fresh``: the head column's first entry is next (``offset`` is 0); ``at_last``: the
        # entry after the current one is the column's last, registered a clock ahead.
        current = column_layout(columns.r_data)
        offset = Signal(pointer_bits)
        fresh = Signal(init=1)
        at_last = Signal()
        last_entry = current.fence | Mux(fresh, current.single, at_last)
        m.d.comb += columns.r_en.eq(last_entry)
        with m.If(columns.r_rdy):
            m.d.sync += [offset.eq(Mux(last_entry, 0, offset + 1)), fresh.eq(last_entry),
                         at_last.eq(offset == current.penultimate)]
        # E0: the entry's address registered, the entry memories' only load (timing: each
        # layer's memory is several block RAMs, apart on the chip, behind an address decode).
        address = Signal(pointer_bits)
        m.d.sync += address.eq(current.start + offset)
        for port in entries:
            m.d.comb += port.addr.eq(address[:len(port.addr)])

        stage = data.StructLayout({"valid": 1, "fence": 1, "first": 1,
                                   "layer": unsigned(plan.layer_bits), "bank": unsigned(plan.bank_bits),
                                   "value": value_shape, "row": unsigned(row_bits)})
        e0, e1, e2, e3 = Signal(stage), Signal(stage), Signal(stage), Signal(stage)
        m.d.sync += [
            e0.valid.eq(columns.r_rdy), e0.fence.eq(current.fence), e0.first.eq(fresh),
            e0.layer.eq(current.layer), e0.bank.eq(current.bank), e0.value.eq(current.value),
            e1.eq(e0),
        ]

        # -- E1: each layer's entry word registered as it leaves its block RAM; E1R: the word
        # of the entry's layer (block RAM read data is slow: timing) --------------------------
        word_bits = max(layer.image.entry_bits for layer in layers)
        e1r, e1w = Signal(stage), Signal(stage)
        words = _registered(m, entries, "entry_word")
        word = Signal(word_bits)
        m.d.sync += [e1r.eq(e1), e1w.eq(e1r),
                     word.eq(_switch(m, e1r.layer, words, unsigned(word_bits), "entry_word"))]

        # -- E1W: decode the relative row, read the codebook -----------------------------------
        bz = layers[0].image.zero_run_bits
        v = _switch(m, e1w.layer, [word[:layer.image.index_bits] for layer in layers],
                    unsigned(max(layer.image.index_bits for layer in layers)), "v")
        z = _switch(m, e1w.layer, [word[layer.image.index_bits:layer.image.index_bits + bz]
                                   for layer in layers], unsigned(bz), "z")
        row = Signal(row_bits)
        row_next = Signal(row_bits)
        m.d.comb += row_next.eq(Mux(e1w.first, 0, row + 1) + z)    # row = row + z + 1 from -1
        with m.If(e1w.valid & ~e1w.fence):
            m.d.sync += row.eq(row_next)
        for port in codebooks:
            m.d.comb += port.addr.eq(v[:len(port.addr)])
        m.d.sync += [e2.eq(e1w), e2.row.eq(row_next)]

        # -- E2: the weight (A3) and the activation, registered as the multiplier's operands;
        # E3: multiply, read the accumulator (the product registered in E4) -------------------
        m.submodules.mac = mac = _RegisteredProduct(signed(weight_bits), value_shape)
        m.d.comb += [mac.a.eq(_switch(m, e2.layer, [port.data for port in codebooks],
                                      signed(weight_bits), "codebook_value")),
                     mac.b.eq(e2.value)]
        m.d.sync += e3.eq(e2)
        e4 = Signal(stage)
        product = Signal(signed(weight_bits + plan.value_bits))
        m.d.comb += product.eq(mac.p)
        m.d.sync += e4.eq(e3)

        # -- drain commands --------------------------------------------------------------------
        m.submodules.commands = commands = SyncFIFO(width=lay.context.size,
                                                    depth=2 * n_layers + 5)
        # A command is registered as it arrives (the sequencer is far away: timing). Each
        # register's enable includes this PE's own ``valid`` register, so the PEs' copies
        # differ and synthesis cannot merge them.
        command_arrived = Signal()
        command_arrived_context = Signal(lay.context)
        with m.If(self.drain.valid | command_arrived):
            m.d.sync += [command_arrived.eq(self.drain.valid),
                         command_arrived_context.eq(self.drain.payload)]
        # ``ready`` is registered; the sequencer registers it again, and its command, which
        # is registered here before it is queued: room for the writes of the five clocks from
        # the one whose level this is.
        drain_room = Signal()
        m.d.sync += drain_room.eq(commands.level + 5 <= commands.depth)
        m.d.comb += [
            commands.w_data.eq(command_arrived_context),
            commands.w_en.eq(command_arrived),
            self.drain.ready.eq(drain_room),
        ]
        # The command being drained, registered off the queue (timing): one clock to load it.
        command = lay.context(commands.r_data)
        current = Signal(lay.context)
        current_valid = Signal()
        current_rows = Signal(row_bits)
        current_last = Signal()
        k = Signal(row_bits)
        # k has reached the context's row count: registered with k, so that the drain's issue
        # starts from flip-flops (timing).
        k_at_end = Signal()
        # Which (layer, bank) memory the drain reads, decoded as the command is loaded: it
        # selects the memory's read address (timing).
        draining_of = {key: Signal(name=f"draining{key[0]}_{key[1]}") for key in acc_mems}
        load = commands.r_rdy & ~current_valid
        m.d.comb += commands.r_en.eq(load)
        with m.If(load):
            m.d.sync += [
                current.eq(command), current_valid.eq(1),
                current_rows.eq(_switch(m, command.layer, [layer.image.rows(p) for layer in layers],
                                        unsigned(row_bits), "rows_here")),
                current_last.eq(command.layer == n_layers - 1),
                k_at_end.eq(_switch(m, command.layer,
                                    [int(layer.image.rows(p) == 0) for layer in layers], 1,
                                    "no_rows_here")),
            ]
        issue_row = Signal()            # D0 issues row k (below)
        d_layout = data.StructLayout({"valid": 1, "end": 1, "layer": unsigned(plan.layer_bits),
                                      "bank": unsigned(plan.bank_bits), "row": unsigned(row_bits)})
        d1 = Signal(d_layout)

        # -- E4: the accumulator's row, registered; E5: accumulate (A5) and write it back -------
        # Reading in one clock and adding in the next keeps the LUT RAM's read (and its mux
        # tree) and the adder in separate clocks (timing). The row E5 writes in the clock E4
        # registers the same row was read before that write: E4 takes E5's new sum instead; and
        # the read misses the write of the clock before it too (it is not transparent): E4 then
        # takes that sum, registered (E6). One register and one adder serve every (layer,
        # bank) memory (area). The drain shares the memories' ports
        # (never on the same context as the MAC at once) and registers its own row (D1).
        e5 = Signal(stage)
        e5_product = Signal.like(product)
        m.d.sync += [e5.eq(e4), e5_product.eq(product)]
        accumulated = Signal(signed(acc_bits))
        total = Signal(signed(acc_bits + 1))
        m.d.comb += total.eq(accumulated + e5_product)
        read_rows = {}
        # Each memory's read address, registered from its next value: the LUT RAM's address
        # pins then come straight from flip-flops of their own (timing): D0's row k for the
        # memory being drained, else E2's row (E3's in the next clock).
        drain_done = Signal()           # the drained context's last clock (below)
        k_next = Mux(drain_done, 0, Mux(issue_row, k + 1, k))
        for (i, b), (rport, wport) in acc_mems.items():
            draining = draining_of[i, b]
            draining_next = Mux(load, (command.layer == i) & (command.bank == b),
                                draining & ~drain_done)
            read_address = Signal(row_bits, name=f"read_address{i}_{b}")
            m.d.sync += [draining.eq(draining_next),
                         read_address.eq(Mux(draining_next, k_next, e2.row))]
            # The write's enable and address, registered a clock ahead: they fan out to every
            # LUT RAM cell of the memory (timing). D1 clears the row D0 issues, E5 writes E4's.
            clearing = Signal(name=f"clearing{i}_{b}")
            mac = Signal(name=f"mac{i}_{b}")
            write_row = Signal(row_bits, name=f"write_row{i}_{b}")
            clear_next = issue_row & draining
            m.d.sync += [
                clearing.eq(clear_next),
                mac.eq(e4.valid & ~e4.fence & (e4.layer == i) & (e4.bank == b)),
                write_row.eq(Mux(clear_next, k, e4.row)),
            ]
            read_rows[i, b] = rport.data
            m.d.comb += [
                rport.addr.eq(read_address[:len(rport.addr)]),
                wport.addr.eq(write_row[:len(wport.addr)]),
                wport.data.eq(Mux(clearing, 0, total)),
                wport.en.eq(clearing | mac),
            ]
        e4_read = _switch(m, Cat(e4.bank, e4.layer),
                          [read_rows.get((i >> plan.bank_bits, i & ((1 << plan.bank_bits) - 1)), 0)
                           for i in range(1 << (plan.layer_bits + plan.bank_bits))],
                          signed(acc_bits), "e4_read")
        e6 = Signal(stage)                      # the entry E5 accumulated a clock ago
        written = Signal(signed(acc_bits))      # and the sum it wrote
        m.d.sync += [e6.eq(e5), written.eq(total)]

        def same_row(earlier, later):
            return (earlier.valid & ~earlier.fence & (earlier.row == later.row)
                    & (earlier.layer == later.layer) & (earlier.bank == later.bank))

        # Whether E5's and E6's entries hit E4's row, compared a clock ahead (E4 against E3,
        # E5 against E3) and registered: the forward mux's selects come from flip-flops
        # (timing).
        hit5, hit6 = Signal(), Signal()
        m.d.sync += [hit5.eq(same_row(e4, e3)), hit6.eq(same_row(e5, e3))]
        m.d.sync += accumulated.eq(Mux(hit5, total, Mux(hit6, written, e4_read)))
        m.d.comb += [
            self.retire.valid.eq(e5.valid & e5.fence),
            self.retire.layer.eq(e5.layer),
            self.retire.bank.eq(e5.bank),
        ]

        # -- drain (D0): issue one row per clock while the destination list has room ----------
        list_depth = max(2, max(layer.image.rows_per_pe for layer in layers) + 2)
        logit_depth = max(2, layers[-1].image.rows_per_pe + 1)
        m.submodules.list = out_list = _RegisteredFIFO(width=lay.source.size, depth=list_depth)
        m.submodules.logit_list = logit_list = _RegisteredFIFO(width=lay.logit.width,
                                                                depth=logit_depth)
        credit = Signal(range(list_depth + 1), init=list_depth)
        logit_credit = Signal(range(logit_depth + 1), init=logit_depth)
        is_last = current_last
        more_rows = current_valid & ~k_at_end
        at_end = current_valid & k_at_end
        # Whether a credit is left, registered with the credit (timing: the issue decides the
        # drain's next row and memory, on the way to the memories' read addresses).
        has_credit = Signal(init=list_depth != 0)
        has_logit_credit = Signal(init=logit_depth != 0)
        m.d.comb += issue_row.eq(more_rows & Mux(is_last, has_logit_credit, has_credit))
        issue_end = at_end & ~is_last & has_credit
        finish_last = at_end & is_last
        m.d.comb += drain_done.eq(issue_end | finish_last)
        with m.If(drain_done):
            m.d.sync += [k.eq(0), current_valid.eq(0)]
        with m.Elif(issue_row):
            m.d.sync += [k.eq(k + 1), k_at_end.eq(k + 1 == current_rows)]
        # Each layer's bias and row id memories read row k from an address register of their
        # own, a copy of k counted only while the layer is drained (timing: k itself reached
        # every LUT RAM cell of every layer's two memories, and the PE's other logic).
        for i, ports in enumerate(zip(biases, row_ids)):
            address = Signal(row_bits, name=f"drain_address{i}")
            with m.If(drain_done):
                m.d.sync += address.eq(0)
            with m.Elif(issue_row & (current.layer == i)):
                m.d.sync += address.eq(address + 1)
            for port in ports:
                if port is not None:
                    m.d.comb += port.addr.eq(address[:len(port.addr)])
        m.d.sync += [
            d1.valid.eq(issue_row | issue_end), d1.end.eq(issue_end), d1.layer.eq(current.layer),
            d1.bank.eq(current.bank), d1.row.eq(k),
        ]

        # -- D1: each layer's bias and row id registered as they leave their memories (block
        # RAM read data is slow: timing); the row's sum, from the context's accumulator memory
        # (no MAC runs on a context being drained), registered ---------------------------------
        bias_words = _registered(m, biases, "bias_word")
        row_id_words = _registered(m, row_ids, "row_id_word")
        d1b = Signal(d_layout)
        d1b_acc = Signal(signed(acc_bits))
        m.d.sync += [d1b.eq(d1), d1b_acc.eq(_switch(
            m, Cat(d1.bank, d1.layer),
            [read_rows.get((i >> plan.bank_bits, i & ((1 << plan.bank_bits) - 1)), 0)
             for i in range(1 << (plan.layer_bits + plan.bank_bits))],
            signed(acc_bits), "drained_row"))]

        # -- D1B: the layer's bias, row id and sum, registered -----------------------------------
        bias = _switch(m, d1b.layer, bias_words, signed(acc_bits), "bias")
        row_id = _switch(m, d1b.layer, [0 if word is None else word for word in row_id_words],
                         unsigned(plan.column_bits), "row_id")
        d1r = Signal(d_layout)
        d1r_bias = Signal(signed(acc_bits))
        d1r_column = Signal(plan.column_bits)
        d1r_acc = Signal(signed(acc_bits))
        m.d.sync += [d1r.eq(d1b), d1r_bias.eq(bias), d1r_column.eq(row_id),
                     d1r_acc.eq(d1b_acc)]

        # -- D1R: bias (A4, A5) ----------------------------------------------------------------
        d2 = Signal(d_layout)
        d2_sum = Signal(signed(acc_bits + 1))
        d2_column = Signal(plan.column_bits)
        # The layer's requantization constants, registered for D2 (the multiplier's operands
        # come straight from flip-flops: timing).
        multiplier = Signal(unsigned(MULTIPLIER_BITS))
        shift = Signal(unsigned(SHIFT_BITS))
        m.d.sync += [d2.eq(d1r), d2_sum.eq(d1r_acc + d1r_bias), d2_column.eq(d1r_column),
                     multiplier.eq(_switch(m, d1r.layer, multipliers, unsigned(MULTIPLIER_BITS),
                                           "layer_multiplier")),
                     shift.eq(_switch(m, d1r.layer, shifts, unsigned(SHIFT_BITS), "layer_shift"))]

        # -- D2: the multipliers' operands registered again, in registers that drive nothing
        # else: on an ECP5 the hard multipliers' own input registers (_RegisteredProduct;
        # timing: the routing from shared registers to a hard multiplier took 3 ns) -----------
        product_bits = acc_bits + 1 + MULTIPLIER_BITS + 1
        low_bits = 17
        # The sum sign-extended to at least low_bits + 1 bits, so that the high part always
        # carries the sign: a sum of low_bits bits or fewer split as if it were wider would
        # take a negative sum's low part as unsigned (issue 20).
        wide_sum = d2_sum.as_signed() if acc_bits + 1 > low_bits else \
            Cat(d2_sum, d2_sum[-1].replicate(low_bits + 1 - (acc_bits + 1))).as_signed()
        high_part_bits = len(wide_sum) - low_bits
        d2m = Signal(d_layout)
        d2m_sum = Signal(signed(acc_bits + 1))
        d2m_column = Signal(plan.column_bits)
        d2m_shift = Signal(unsigned(SHIFT_BITS))
        high_part = wide_sum[low_bits:].as_signed()
        # The operands' registers are the multipliers' own where the device has them.
        m.submodules.requant_low = low = _RegisteredProduct(unsigned(low_bits),
                                                            unsigned(MULTIPLIER_BITS))
        m.submodules.requant_high = high = _RegisteredProduct(signed(high_part_bits),
                                                              unsigned(MULTIPLIER_BITS))
        m.d.comb += [low.a.eq(wide_sum[:low_bits].as_unsigned()), low.b.eq(multiplier),
                     high.a.eq(high_part), high.b.eq(multiplier)]
        m.d.sync += [d2m.eq(d2), d2m_sum.eq(d2_sum), d2m_column.eq(d2_column),
                     d2m_shift.eq(shift)]

        # -- D2M: requantization multiply (A6), as two partial products, each one hard
        # multiplier (the sum's low 17 bits unsigned, its high bits signed), combined in D2T: a
        # multiplier and a carry chain in one clock would not meet the clock rate. Each
        # product is registered twice (D2S, D2T), the first register driving nothing else (on
        # an ECP5 the hard multiplier's own output register; timing: 4.9 ns of routing from a
        # hard multiplier to a shared adder). The rounding term is made in D2T from the registered shift, so
        # that D3 .. D5 each hold one carry chain or one shifter ------------------------------
        d2s = Signal(d_layout)
        d2s_low = Signal(unsigned(low_bits + MULTIPLIER_BITS))
        d2s_high = Signal(signed(high_part_bits + MULTIPLIER_BITS + 1))
        d2s_sum = Signal(signed(acc_bits + 1))
        d2s_column = Signal(plan.column_bits)
        d2s_shift = Signal(unsigned(SHIFT_BITS))
        m.d.comb += [d2s_low.eq(low.p), d2s_high.eq(high.p)]
        m.d.sync += [d2s.eq(d2m), d2s_sum.eq(d2m_sum), d2s_column.eq(d2m_column),
                     d2s_shift.eq(d2m_shift)]
        d2t = Signal(d_layout)
        d2t_low = Signal.like(d2s_low)
        d2t_high = Signal.like(d2s_high)
        d2t_sum = Signal(signed(acc_bits + 1))
        d2t_column = Signal(plan.column_bits)
        d2t_shift = Signal(unsigned(SHIFT_BITS))
        m.d.sync += [d2t.eq(d2s), d2t_low.eq(d2s_low), d2t_high.eq(d2s_high),
                     d2t_sum.eq(d2s_sum), d2t_column.eq(d2s_column), d2t_shift.eq(d2s_shift)]

        # -- D2T: the product (A6) ----------------------------------------------------------
        d3 = Signal(d_layout)
        d3_product = Signal(signed(product_bits))
        d3_sum = Signal(signed(acc_bits + 1))
        d3_column = Signal(plan.column_bits)
        d3_shift = Signal(unsigned(SHIFT_BITS))
        # 2**(shift-1) (0 for shift 0) on product_bits + 1 bits; exact for shift <= product_bits,
        # and a larger shift gives 0 whatever the product (|product| < 2**(product_bits-1)).
        d3_rounding = Signal(unsigned(product_bits + 1))
        d3_beyond = Signal()
        m.d.sync += [d3.eq(d2t), d3_product.eq((d2t_high << low_bits) + d2t_low),
                     d3_sum.eq(d2t_sum), d3_column.eq(d2t_column), d3_shift.eq(d2t_shift),
                     d3_rounding.eq((Const(1, product_bits + 2) << d2t_shift)[1:]),
                     d3_beyond.eq(d2t_shift > product_bits)]

        # -- D3: add the rounding term (A6) ----------------------------------------------------
        d4 = Signal(d_layout)
        d4_rounded = Signal(signed(product_bits + 1))
        d4_sum = Signal(signed(acc_bits + 1))
        d4_column = Signal(plan.column_bits)
        d4_shift = Signal(unsigned(SHIFT_BITS))
        d4_beyond = Signal()
        m.d.sync += [d4.eq(d3), d4_rounded.eq(d3_product + d3_rounding), d4_sum.eq(d3_sum),
                     d4_column.eq(d3_column), d4_shift.eq(d3_shift), d4_beyond.eq(d3_beyond)]

        # -- D4, D4S: the arithmetic right shift (A6), by the shift's low three bits, then by
        # its high bits (eight at a time): one shifter of three levels per clock (timing) ---
        d4s = Signal(d_layout)
        d4s_partial = Signal(signed(product_bits + 1))
        d4s_high = Signal(SHIFT_BITS - 3)
        d4s_beyond = Signal()
        d4s_sum = Signal(signed(acc_bits + 1))
        d4s_column = Signal(plan.column_bits)
        m.d.sync += [d4s.eq(d4), d4s_partial.eq(d4_rounded >> d4_shift[:3]),
                     d4s_high.eq(d4_shift[3:]), d4s_beyond.eq(d4_beyond),
                     d4s_sum.eq(d4_sum), d4s_column.eq(d4_column)]
        d5 = Signal(d_layout)
        d5_shifted = Signal(signed(product_bits + 1))
        d5_sum = Signal(signed(acc_bits + 1))
        d5_column = Signal(plan.column_bits)
        m.d.sync += [d5.eq(d4s),
                     d5_shifted.eq(Mux(d4s_beyond, 0, d4s_partial >> Cat(Const(0, 3), d4s_high))),
                     d5_sum.eq(d4s_sum), d5_column.eq(d4s_column)]

        # -- D5: ReLU and clamp (A7), or the logit (A8) ----------------------------------------
        hidden = Signal(value_shape)
        logit = Signal(lay.logit)
        with m.Switch(d5.layer):
            for i, layer in enumerate(layers):
                with m.Case(i):
                    if layer.logits:
                        m.d.comb += logit.eq(Mux(d5_sum < 0, 0, d5_sum) if layer.relu
                                             else d5_sum)
                    else:
                        lo, hi = activation_range(layer.output_bits, layer.output_signed)
                        t = Mux(d5_shifted < 0, 0, d5_shifted) if layer.relu else d5_shifted
                        m.d.comb += hidden.eq(Mux(t < lo, lo, Mux(t > hi, hi, t)))
        d6 = Signal(d_layout)
        d6_value = Signal(value_shape)
        d6_logit = Signal(lay.logit)
        d6_column = Signal(plan.column_bits)
        m.d.sync += [d6.eq(d5), d6_value.eq(hidden), d6_logit.eq(logit),
                     d6_column.eq(d5_column)]

        # -- D6: the entry to append, registered; D7: append it (the lists' write logic, their
        # levels' carry chains, then starts from flip-flops: timing) ---------------------------
        last_layer = d6.layer == n_layers - 1
        entry = Signal(lay.source)
        m.d.comb += [
            entry.present.eq(~d6.end), entry.end.eq(d6.end),
            entry.item.column.eq(Mux(d6.end, 0, d6_column)),
            entry.item.value.eq(Mux(d6.end, 0, d6_value)),
            entry.item.layer.eq(d6.layer + 1), entry.item.bank.eq(d6.bank),
        ]
        push = Signal()
        push_logit = Signal()
        dropped = Signal()
        appended = Signal(lay.source)
        appended_logit = Signal(lay.logit)
        m.d.sync += [
            push.eq(d6.valid & ~last_layer & (d6.end | (d6_value != 0))),
            dropped.eq(d6.valid & ~last_layer & ~d6.end & (d6_value == 0)),
            push_logit.eq(d6.valid & last_layer),
            appended.eq(entry), appended_logit.eq(d6_logit),
        ]
        m.d.comb += [
            out_list.w_data.eq(appended), out_list.w_en.eq(push),
            logit_list.w_data.eq(appended_logit), logit_list.w_en.eq(push_logit),
        ]
        with m.If(push):                    # all zero otherwise: no stale (or X) fields
            m.d.comb += [
                self.trace.valid.eq(1), self.trace.end.eq(appended.end),
                self.trace.layer.eq(appended.item.layer - 1),       # the layer that made it
                self.trace.bank.eq(appended.item.bank),
                self.trace.column.eq(appended.item.column),
                self.trace.value.eq(appended.item.value),
            ]
        # A pop frees its credit a clock later: ``ready`` comes from far away, and then only
        # reaches a register here rather than the credit's adder (timing).
        popped = Signal()
        popped_logit = Signal()
        m.d.sync += [popped.eq(self.o.valid & self.o.ready),
                     popped_logit.eq(self.logits.valid & self.logits.ready)]
        credit_next = Signal.like(credit)
        logit_credit_next = Signal.like(logit_credit)
        m.d.comb += [
            credit_next.eq(credit - (issue_row & ~is_last | issue_end) + popped + dropped),
            logit_credit_next.eq(logit_credit - (issue_row & is_last) + popped_logit),
        ]
        m.d.sync += [credit.eq(credit_next), has_credit.eq(credit_next != 0),
                     logit_credit.eq(logit_credit_next),
                     has_logit_credit.eq(logit_credit_next != 0)]
        m.d.comb += [
            self.o.valid.eq(out_list.r_rdy), self.o.payload.eq(out_list.r_data),
            out_list.r_en.eq(self.o.ready),
            self.logits.valid.eq(logit_list.r_rdy), self.logits.payload.eq(logit_list.r_data),
            logit_list.r_en.eq(self.logits.ready),
        ]
        return m


# -- collector ----------------------------------------------------------------------------------

class Collector(wiring.Component):
    """Streams the last layer's logits out in neuron order.

    Parameters
    ----------
    plan : EnginePlan

    Attributes
    ----------
    i : In(stream.Signature(logit)).array(n_pes)
        Each PE's logits of its rows (row ``k * N + p`` is PE ``p``'s ``k``-th).
    o : Out(stream.Signature(logit))
        ``out_features`` logits per image, neuron 0 first.
    finished : Out(1)
        Strobe: an image's last logit was accepted.

    Latency and throughput: one clock (a skid buffer: the PEs' lists are spread over the chip,
    and ``o`` and the lists' ``ready`` then come from flip-flops, timing); one logit per clock.
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        self._plan = plan
        lay = layouts(plan)
        super().__init__({
            "i": In(stream.Signature(lay.logit)).array(plan.n_pes),
            "o": Out(stream.Signature(lay.logit)),
            "finished": Out(1),
        })

    def elaborate(self, platform):
        plan = self._plan
        m = Module()
        width = len(self.o.payload)
        m.submodules.skid = skid = _SkidBuffer(width + 1)        # the logit and "last"
        # Each PE's logits enter through a skid buffer of their own: the PEs are spread over
        # the chip, and the selection below then reads local flip-flops (timing).
        inputs = []
        for p, i in enumerate(self.i):
            m.submodules[f"input{p}"] = head = _SkidBuffer(width)
            m.d.comb += [head.i_valid.eq(i.valid), head.i_data.eq(i.payload),
                         i.ready.eq(head.i_ready)]
            inputs.append(head)
        pe = Signal(range(plan.n_pes))
        neuron = Signal(range(plan.out_features))
        last = neuron == plan.out_features - 1
        with m.Switch(pe):
            for p, head in enumerate(inputs):
                with m.Case(p):
                    m.d.comb += [skid.i_valid.eq(head.o_valid),
                                 skid.i_data.eq(Cat(head.o_data, last)),
                                 head.o_ready.eq(skid.i_ready)]
        m.d.comb += [
            self.o.valid.eq(skid.o_valid), self.o.payload.eq(skid.o_data[:width]),
            skid.o_ready.eq(self.o.ready),
            self.finished.eq(self.o.valid & self.o.ready & skid.o_data[width]),
        ]
        do_transfer = skid.i_valid & skid.i_ready
        with m.If(do_transfer):
            with m.If(last):
                m.d.sync += [neuron.eq(0), pe.eq(0)]
            with m.Else():
                m.d.sync += [neuron.eq(neuron + 1),
                             pe.eq(Mux(pe == plan.n_pes - 1, 0, pe + 1))]
        return m


# -- top level ----------------------------------------------------------------------------------

class Engine(wiring.Component):
    """The whole network on chip: stream in activations, stream out logits.

    Parameters
    ----------
    plan : EnginePlan
        Every size and memory image (:meth:`EnginePlan.from_model`).

    Attributes
    ----------
    i : In(stream.Signature(unsigned(input_lanes * input_bits)))
        Input beats, ``beats_per_image`` per image (:meth:`EnginePlan.encode_inputs`).
    o : Out(stream.Signature(signed(logit_bits)))
        ``out_features`` integer logits per image (A8), images in order.
    write : In(stream.Signature(write))
        Reload port: ``addr``, ``data`` words (:meth:`EnginePlan.write_image`); accepted only
        while the engine is idle (``ready`` is ``~busy``).
    busy : Out(1)
        An image has entered and not yet left.
    done : Out(1)
        Strobe: an image's last logit was accepted.
    cycles : Out(48)
        Clocks during which ``busy`` was high, since reset.
    trace : Out(unsigned(n_pes * trace_bits))
        Every PE's appended hidden activations (:meth:`EnginePlan.decode_trace`).

    Latency and throughput: see ``docs/accelerator.md`` and :meth:`EnginePlan.predict`; up to
    ``plan.banks`` images are processed at once, and input beats for the next images are
    buffered (two images per lane) while they run.
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        self._plan = plan
        self._layouts = lay = layouts(plan)
        super().__init__({
            "i": In(stream.Signature(unsigned(plan.input_lanes * plan.input_bits))),
            "o": Out(stream.Signature(lay.logit)),
            "write": In(stream.Signature(lay.write)),
            "busy": Out(1),
            "done": Out(1),
            "cycles": Out(CYCLE_COUNTER_BITS),
            "trace": Out(plan.n_pes * plan.trace_bits),
        })

    @property
    def plan(self) -> EnginePlan:
        return self._plan

    def elaborate(self, platform):
        plan, lay = self._plan, self._layouts
        m = Module()
        n_pe = plan.n_pes

        # The write bus is registered here and twice in every PE: it fans out to every memory
        # (timing). A word lands three clocks after it is accepted (two in the broadcaster's
        # column masks), long before an image that enters after it can read any memory.
        bus = Signal(lay.bus)
        m.d.sync += [
            bus.en.eq(self.write.valid & ~self.busy),
            bus.addr.eq(self.write.payload.addr),
            bus.data.eq(self.write.payload.data),
        ]
        m.d.comb += [
            self.write.ready.eq(~self.busy),
        ]

        m.submodules.loader = loader = Loader(plan)
        m.submodules.broadcaster = broadcaster = Broadcaster(plan)
        m.submodules.collector = collector = Collector(plan)
        pes = []
        for p in range(n_pe):
            pe = ProcessingElement(plan, p)
            m.submodules[f"pe{p}"] = pe
            pes.append(pe)
        # The input beats pass a 2-word FIFO: a host's beats may come straight from block RAM,
        # whose read data is late in the clock (timing).
        m.submodules.input_buffer = input_buffer = SyncFIFO(width=len(self.i.payload), depth=2)
        m.d.comb += [
            input_buffer.w_data.eq(self.i.payload), input_buffer.w_en.eq(self.i.valid),
            self.i.ready.eq(input_buffer.w_rdy),
            loader.i.payload.eq(input_buffer.r_data), loader.i.valid.eq(input_buffer.r_rdy),
            input_buffer.r_en.eq(loader.i.ready),
        ]
        wiring.connect(m, collector.o, wiring.flipped(self.o))
        m.d.comb += broadcaster.write.eq(bus)

        input_depth = 2 * plan.beats_per_image + 2           # two images per lane
        for lane in range(plan.input_lanes):
            fifo = _RegisteredFIFO(width=lay.source.size, depth=input_depth,
                                   block=input_depth > SMALL_MEMORY_DEPTH)
            m.submodules[f"inputs{lane}"] = fifo
            # The loader takes a beat only when every lane has room. Its entries are registered
            # before they are written, and the room is registered too (timing: the write logic
            # and the lists' levels then start from flip-flops, and no lane's level reaches
            # another lane's write in one clock): room for the writes of this clock and the
            # next, which the level does not count yet, and for the entry the loader sends now.
            room = Signal(name=f"input_room{lane}")
            m.d.sync += room.eq(fifo.w_level + 3 <= fifo.w_depth)
            entry_valid = Signal(name=f"input_entry_valid{lane}")
            entry = Signal(lay.source, name=f"input_entry{lane}")
            m.d.sync += [entry_valid.eq(loader.o[lane].valid & room),
                         entry.eq(loader.o[lane].payload)]
            m.d.comb += [
                fifo.w_data.eq(entry),
                fifo.w_en.eq(entry_valid),
                loader.o[lane].ready.eq(room),
                broadcaster.inputs[lane].valid.eq(fifo.r_rdy),
                broadcaster.inputs[lane].payload.eq(fifo.r_data),
                fifo.r_en.eq(broadcaster.inputs[lane].ready),
            ]
        for p, pe in enumerate(pes):
            wiring.connect(m, broadcaster.o[p], pe.i)
            wiring.connect(m, pe.o, broadcaster.lists[p])
            wiring.connect(m, pe.logits, collector.i[p])
            m.d.comb += [pe.write.eq(bus),
                         self.trace[p * plan.trace_bits:(p + 1) * plan.trace_bits].eq(pe.trace)]

        # Sequencer: a context is complete when every PE has retired its fence; then every PE
        # drains it. The last layer drains in image order (the collector streams in order).
        done = {(i, b): Signal(n_pe, name=f"retired{i}_{b}")
                for i in range(plan.n_layers) for b in range(plan.banks)}
        out_bank = Signal(range(plan.banks))
        # The PEs' room and the command going out are registered: the PEs are spread over the
        # chip (timing); a PE's ready allows for it (two clocks ahead).
        drain_ready = Signal()
        m.d.sync += drain_ready.eq(Cat(pe.drain.ready for pe in pes).all())
        # Every PE has retired the context's fence: `done`'s AND across the PEs, registered
        # (timing); the clock that issues the context's drain clears it.
        complete = {key: Signal(name=f"complete{key[0]}_{key[1]}") for key in done}
        # One grant per context, the first complete one in `done`'s order (the last layer only
        # for the bank next in image order), so that the clear needs no decode of the context.
        conds = [complete[i, b] & ((out_bank == b) if i == plan.n_layers - 1 else 1)
                 for (i, b) in done]
        grants = [cond & ~Cat(conds[:k]).any() if k else cond
                  for k, cond in enumerate(conds)]
        issue = Signal()
        issue_context = Signal(lay.context)
        m.d.comb += issue.eq(drain_ready & Cat(conds).any())
        for grant, (i, b) in zip(grants, done):
            with m.If(grant):
                m.d.comb += [issue_context.layer.eq(i), issue_context.bank.eq(b)]
        drain_valid = Signal()
        drain_context = Signal(lay.context)
        m.d.sync += [drain_valid.eq(issue), drain_context.eq(issue_context)]
        for pe in pes:
            m.d.comb += [pe.drain.valid.eq(drain_valid), pe.drain.payload.eq(drain_context)]
        for grant, ((i, b), bits) in zip(grants, done.items()):
            issued = drain_ready & grant
            m.d.sync += complete[i, b].eq(bits.all() & ~issued)
            with m.If(issued):
                m.d.sync += bits.eq(0)
                if i == plan.n_layers - 1:
                    m.d.sync += out_bank.eq(Mux(out_bank == plan.banks - 1, 0, out_bank + 1))
        for p, pe in enumerate(pes):
            # Registered as it arrives: the PEs are spread over the chip (timing).
            retire = Signal(lay.retire, name=f"retire{p}")
            m.d.sync += retire.eq(pe.retire)
            for (i, b), bits in done.items():
                with m.If(retire.valid & (retire.layer == i) & (retire.bank == b)):
                    m.d.sync += bits[p].eq(1)

        # Status, and the bank an image frees when its last logit leaves.
        in_flight = Signal(8)
        release_bank = Signal(range(plan.banks))
        m.d.sync += in_flight.eq(in_flight + loader.started - collector.finished)
        with m.If(collector.finished):
            m.d.sync += release_bank.eq(Mux(release_bank == plan.banks - 1, 0,
                                            release_bank + 1))
        m.d.comb += [
            broadcaster.release.eq(collector.finished),
            broadcaster.release_bank.eq(release_bank),
            self.busy.eq((in_flight != 0) | input_buffer.r_rdy),
            self.done.eq(collector.finished),
        ]
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        return m
