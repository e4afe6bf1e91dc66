"""The PE's requantizer: a drained row's sum, bias added, scaled, rounded, shifted and clamped
(A4 .. A8), at a fixed latency (D1R .. D6)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import layouts
from accel.gateware.pe.stages import (drained_layout, pe_widths, requant_input_layout,
                                          requant_output_layout)
from accel.gateware.pe.threshold import LATENCY as THRESHOLD_LATENCY
from accel.gateware.pe.threshold import ThresholdActivation, threshold_layers
from accel.gateware.primitives import _RegisteredProduct, _check_plan, _register, _switch
from accel.planning.plan import SHIFT_BITS, EnginePlan
from core.integer import MULTIPLIER_BITS, activation_range

__all__ = ["LATENCY", "LOW_BITS", "Requantizer"]

#: Clocks from ``i`` to ``o``.
LATENCY = 9

#: The requantization multiply is split at this bit of the sum: the low part unsigned, the
#: high part signed, each one 18x18 hard multiplier.
LOW_BITS = 17


class Requantizer(wiring.Component):
    """``value = clamp(relu?((sum + bias) * multiplier + 2**(shift-1)) >> shift)``, per layer.

    Parameters
    ----------
    plan : EnginePlan
    pe : int
        The PE whose copy of the layers' constants this stage holds (written on its bus).

    Attributes
    ----------
    i : In(requant_input_layout(plan))
        A drained row (``i.stage.valid``): its sum and bias, its row id; or an end mark.
    o : Out(requant_output_layout(plan))
        ``LATENCY`` (9) clocks later: a hidden layer's output (A6, A7: rounded, shifted, ReLU
        if the layer has one, clamped to the next layer's activation range; or, for a layer
        with a threshold activation, A10: the level its sum reaches, from
        :class:`~accel.gateware.pe.threshold.ThresholdActivation`) in ``value``, a
        last layer's logit (A8: ``sum + bias``, ReLU if it has one) in ``logit``; ``stage``
        and ``column`` as they came in.
    write : In(bus)
        The PE's copy of the write bus (each layer's multiplier and shift, thresholds and
        levels).

    Latency and throughput: fixed, ``LATENCY`` clocks; one row per clock. Stages: bias added
    (D1R); the multiplier's operands copied beside the hard multipliers (D2); the two partial
    products (D2M), registered twice (D2S, D2T); the product and the rounding term (D3); the
    rounding added (D4); the arithmetic shift by the shift's low three bits (D4S), then by its
    high bits (D5); ReLU and clamp, registered (D6). One multiplier, carry chain or three-level
    shifter per stage, for the clock rate.
    """

    def __init__(self, plan: EnginePlan, pe: int):
        _check_plan(self, plan)
        self._plan, self._pe = plan, pe
        super().__init__({
            "i": In(requant_input_layout(plan)),
            "o": Out(requant_output_layout(plan)),
            "write": In(layouts(plan).bus),
        })

    def elaborate(self, platform):
        plan, w, layers = self._plan, pe_widths(self._plan), self._plan.layers
        acc_bits = w.acc_bits
        m = Module()
        d_layout = drained_layout(plan)
        # The constants are written from a copy of the bus (its data) a clock after the PE's,
        # with their enables decoded from the PE's and registered beside it (``strobe_from``).
        bus = Signal(layouts(plan).bus)
        m.d.sync += [bus.addr.eq(self.write.addr), bus.data.eq(self.write.data)]
        own = dict(strobe_from=self.write)
        multipliers = [_register(m, plan, bus, "requant", i, 0, unsigned(MULTIPLIER_BITS),
                                 layer.multiplier, **own) for i, layer in enumerate(layers)]
        shifts = [_register(m, plan, bus, "requant", i, 1, unsigned(SHIFT_BITS),
                            layer.shift, **own) for i, layer in enumerate(layers)]
        d1r = self.i.stage

        # -- D1R: bias (A4, A5), and the layer's constants registered for D2 (the multiplier's
        # operands come straight from flip-flops: timing) ---------------------------------------
        d2 = Signal(d_layout)
        d2_sum = Signal(signed(acc_bits + 1))
        d2_column = Signal(plan.column_bits)
        multiplier = Signal(unsigned(MULTIPLIER_BITS))
        shift = Signal(unsigned(SHIFT_BITS))
        m.d.sync += [d2.eq(d1r), d2_sum.eq(self.i.sum + self.i.bias),
                     d2_column.eq(self.i.column),
                     multiplier.eq(_switch(m, d1r.layer, multipliers, unsigned(MULTIPLIER_BITS),
                                           "layer_multiplier")),
                     shift.eq(_switch(m, d1r.layer, shifts, unsigned(SHIFT_BITS), "layer_shift"))]

        # -- D2: the multipliers' operands registered again, in registers that drive nothing
        # else: on an ECP5 the hard multipliers' own input registers (_RegisteredProduct;
        # timing: the routing from shared registers to a hard multiplier took 3 ns) -----------
        product_bits = acc_bits + 1 + MULTIPLIER_BITS + 1
        # The sum sign-extended to at least LOW_BITS + 1 bits, so that the high part always
        # carries the sign: a sum of LOW_BITS bits or fewer split as if it were wider would
        # take a negative sum's low part as unsigned (issue 20).
        wide_sum = d2_sum.as_signed() if acc_bits + 1 > LOW_BITS else \
            Cat(d2_sum, d2_sum[-1].replicate(LOW_BITS + 1 - (acc_bits + 1))).as_signed()
        high_part_bits = len(wide_sum) - LOW_BITS
        m.submodules.requant_low = low = _RegisteredProduct(unsigned(LOW_BITS),
                                                            unsigned(MULTIPLIER_BITS))
        m.submodules.requant_high = high = _RegisteredProduct(signed(high_part_bits),
                                                              unsigned(MULTIPLIER_BITS))
        m.d.comb += [low.a.eq(wide_sum[:LOW_BITS].as_unsigned()), low.b.eq(multiplier),
                     high.a.eq(wide_sum[LOW_BITS:].as_signed()), high.b.eq(multiplier)]
        # The row's other fields ride beside the product: D2M, D2S, D2T.
        d2t, d2t_sum, d2t_column, d2t_shift = self._delay(
            m, 3, (d2, d2_sum, d2_column, shift), ("d2m", "d2s", "d2t"))

        # -- D2M: requantization multiply (A6), as two partial products, each one hard
        # multiplier, combined in D2T: a multiplier and a carry chain in one clock would not
        # meet the clock rate. Each product is registered twice (D2S, D2T), the first register
        # driving nothing else (on an ECP5 the hard multiplier's own output register; timing:
        # 4.9 ns of routing from a hard multiplier to a shared adder) ---------------------------
        d2s_low = Signal(unsigned(LOW_BITS + MULTIPLIER_BITS))
        d2s_high = Signal(signed(high_part_bits + MULTIPLIER_BITS + 1))
        m.d.comb += [d2s_low.eq(low.p), d2s_high.eq(high.p)]
        d2t_low, d2t_high = Signal.like(d2s_low), Signal.like(d2s_high)
        m.d.sync += [d2t_low.eq(d2s_low), d2t_high.eq(d2s_high)]

        # -- D2T: the product (A6) and the rounding term, made from the registered shift, so
        # that D3 .. D5 each hold one carry chain or one shifter --------------------------------
        d3, d3_sum, d3_column, d3_shift = self._delay(
            m, 1, (d2t, d2t_sum, d2t_column, d2t_shift), ("d3",))
        d3_product = Signal(signed(product_bits))
        # 2**(shift-1) (0 for shift 0) on product_bits + 1 bits; exact for shift <= product_bits,
        # and a larger shift gives 0 whatever the product (|product| < 2**(product_bits-1)).
        d3_rounding = Signal(unsigned(product_bits + 1))
        d3_beyond = Signal()
        m.d.sync += [d3_product.eq((d2t_high << LOW_BITS) + d2t_low),
                     d3_rounding.eq((Const(1, product_bits + 2) << d2t_shift)[1:]),
                     d3_beyond.eq(d2t_shift > product_bits)]

        # -- D3 .. D5: a threshold activation (A10) beside the rounding and the shift, for the
        # layers that have one: its level arrives with the row at D5 ------------------------
        threshold = None
        if threshold_layers(plan):
            assert THRESHOLD_LATENCY == 3          # D3 -> D4 -> D4S -> D5
            m.submodules.threshold = threshold = ThresholdActivation(plan, self._pe)
            m.d.comb += [threshold.i.layer.eq(d3.layer), threshold.i.sum.eq(d3_sum),
                         threshold.write.eq(self.write)]

        # -- D3: add the rounding term (A6) ----------------------------------------------------
        d4, d4_sum, d4_column, d4_shift, d4_beyond = self._delay(
            m, 1, (d3, d3_sum, d3_column, d3_shift, d3_beyond), ("d4",))
        d4_rounded = Signal(signed(product_bits + 1))
        m.d.sync += d4_rounded.eq(d3_product + d3_rounding)

        # -- D4, D4S: the arithmetic right shift (A6), by the shift's low three bits, then by
        # its high bits (eight at a time): one shifter of three levels per clock (timing) ---
        d4s, d4s_beyond, d4s_sum, d4s_column = self._delay(
            m, 1, (d4, d4_beyond, d4_sum, d4_column), ("d4s",))
        d4s_partial = Signal(signed(product_bits + 1))
        d4s_high = Signal(SHIFT_BITS - 3)
        m.d.sync += [d4s_partial.eq(d4_rounded >> d4_shift[:3]), d4s_high.eq(d4_shift[3:])]
        d5, d5_sum, d5_column = self._delay(m, 1, (d4s, d4s_sum, d4s_column), ("d5",))
        d5_shifted = Signal(signed(product_bits + 1))
        m.d.sync += d5_shifted.eq(Mux(d4s_beyond, 0, d4s_partial >> Cat(Const(0, 3), d4s_high)))

        # -- D5: ReLU and clamp (A7), or the logit (A8), registered (D6) -------------------------
        hidden = Signal(w.value_shape)
        logit = Signal(signed(plan.logit_bits))
        with m.Switch(d5.layer):
            for i, layer in enumerate(layers):
                with m.Case(i):
                    if layer.logits:
                        m.d.comb += logit.eq(Mux(d5_sum < 0, 0, d5_sum) if layer.relu
                                             else d5_sum)
                    elif layer.levels is not None:                        # A10
                        m.d.comb += hidden.eq(threshold.o)
                    else:
                        lo, hi = activation_range(layer.output_bits, layer.output_signed)
                        t = Mux(d5_shifted < 0, 0, d5_shifted) if layer.relu else d5_shifted
                        m.d.comb += hidden.eq(Mux(t < lo, lo, Mux(t > hi, hi, t)))
        m.d.sync += [self.o.stage.eq(d5), self.o.value.eq(hidden), self.o.logit.eq(logit),
                     self.o.column.eq(d5_column)]
        return m

    @staticmethod
    def _delay(m, clocks, signals, names):
        """``signals`` registered ``clocks`` times (``names``: each clock's prefix); returns the
        last registers."""
        for k in range(clocks):
            delayed = tuple(Signal(s.shape(), name=f"{names[k]}{suffix}")
                            for s, suffix in zip(signals, _suffixes(signals)))
            m.d.sync += [d.eq(s) for d, s in zip(delayed, signals)]
            signals = delayed
        return signals


def _suffixes(signals):
    """A name suffix for each of the requantizer's riders: the row itself, then its named
    fields."""
    suffixes = [""]
    for s in signals[1:]:
        name = s.name if hasattr(s, "name") else ""
        suffixes.append("_" + name.rsplit("_", 1)[-1])
    return suffixes
