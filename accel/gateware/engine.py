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

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from accel.gateware.broadcaster import Broadcaster
from accel.gateware.collector import Collector
from accel.gateware.layouts import CYCLE_COUNTER_BITS, layouts
from accel.gateware.loader import Loader
from accel.gateware.pe import ProcessingElement
from accel.gateware.primitives import SMALL_MEMORY_DEPTH, _RegisteredFIFO, _check_plan
from accel.planning.plan import EnginePlan

# The components, for callers that take the whole engine from here.
__all__ = ["Broadcaster", "Collector", "Engine", "Loader", "ProcessingElement", "layouts"]


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
