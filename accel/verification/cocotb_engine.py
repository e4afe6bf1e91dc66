"""cocotb testbench of the engine: every logit and hidden activation against the reference.

Run by :func:`accel.verification.cosim.simulate`, which writes the data file (the encoded input beats, the
expected output of every layer from ``sim.trace``, the settings) and passes its path in the
environment variable ``DCACCEL_COSIM_DATA``. The testbench is built in layers, like cocotb's
``examples/matrix_multiplier``:

- :class:`InputDriver` streams the beats into ``i`` with seeded random idle cycles;
- :class:`LogitMonitor` drives ``o.ready`` with seeded random backpressure and collects the
  accepted logits;
- :class:`TraceMonitor` samples ``trace`` every clock and rebuilds each hidden layer's output
  vector per image (image ``i`` uses accumulator bank ``i mod banks``, so image ``k * banks + b``
  is the ``k``-th image of bank ``b``);
- :class:`StatusMonitor` counts ``done`` pulses;
- :class:`Reference` holds the expected outputs;
- :class:`Scoreboard` compares every logit and hidden vector, records the first mismatch and the
  cycle counts.

The test writes the results file and fails on any mismatch, protocol error or timeout.

Every monitor samples in the ``ReadOnly`` phase after a rising edge: a transfer is seen while
``valid & ready`` are settled and happens at the next edge. Cycle numbers count rising edges
since reset was released.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from collections.abc import Callable

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, Event, ReadOnly, RisingEdge, SimTimeoutError, with_timeout

DATA_ENV = "DCACCEL_COSIM_DATA"
RESET_CYCLES = 4
#: Clock cycles the testbench keeps watching after the last expected logit, to catch extra
#: logits, late trace records and the last ``done`` pulse.
DRAIN_CYCLES = 16
#: Errors recorded in full; further ones are only counted.
MAX_ERRORS = 50


def _bit(handle) -> int | None:
    """A one-bit signal as 0/1, or None when it is X/Z."""
    value = handle.value
    return int(value) if value.is_resolvable else None


class Clocking:
    """Cycle numbers from simulation time: rising edges since reset was released."""

    def __init__(self, dut, period_ns: int):
        self.clk = dut.clk
        self.period_ns = period_ns
        self.origin = 0.0

    def start_counting(self) -> None:
        self.origin = get_sim_time("ns")

    def now(self) -> int:
        return round((get_sim_time("ns") - self.origin) / self.period_ns)


class Errors:
    """Protocol errors and timeouts (mismatches are the scoreboard's)."""

    def __init__(self, log):
        self.log = log
        self.messages: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if self.count <= MAX_ERRORS:
            self.messages.append(message)
            self.log.error(message)
        elif self.count == MAX_ERRORS + 1:
            self.messages.append("further errors suppressed")

    def __bool__(self) -> bool:
        return self.count > 0


# -- stimulus and monitors ---------------------------------------------------------------------

class InputDriver:
    """Drives the input beats into ``i``, with random idle cycles between beats.

    Before each beat, with probability ``idle`` per cycle, ``i.valid`` stays low (and the
    payload carries random bits, which the engine must ignore). Once raised, ``valid`` and the
    payload hold until the engine accepts the beat.
    """

    def __init__(self, dut, clocking: Clocking, beats: list[int], idle: float, seed: int):
        self.dut = dut
        self.clocking = clocking
        self.beats = beats
        self.idle = idle
        self.rng = random.Random(f"dcaccel-input-{seed}")
        self.width = len(dut.i__payload)
        self.accepted: list[int] = []          # clock cycle of each accepted beat

    async def run(self) -> None:
        dut = self.dut
        for word in self.beats:
            while self.idle and self.rng.random() < self.idle:
                dut.i__valid.value = 0
                dut.i__payload.value = self.rng.getrandbits(self.width)
                await RisingEdge(dut.clk)
            dut.i__valid.value = 1
            dut.i__payload.value = word
            while True:
                await ReadOnly()
                if _bit(dut.i__ready) == 1:
                    break
                await RisingEdge(dut.clk)
            self.accepted.append(self.clocking.now())
            await RisingEdge(dut.clk)          # the beat is taken at this edge
        dut.i__valid.value = 0


class LogitMonitor:
    """Drives ``o.ready`` (low with probability ``backpressure`` each cycle) and reports every
    accepted logit, decoded to a signed integer, to ``callback(cycle, value)``."""

    def __init__(self, dut, clocking: Clocking, decode: Callable[[int], int],
                 backpressure: float, seed: int, callback, errors: Errors):
        self.dut = dut
        self.clocking = clocking
        self.decode = decode
        self.backpressure = backpressure
        self.rng = random.Random(f"dcaccel-output-{seed}")
        self.callback = callback
        self.errors = errors

    async def run(self) -> None:
        dut = self.dut
        while True:
            ready = not (self.backpressure and self.rng.random() < self.backpressure)
            dut.o__ready.value = int(ready)
            await ReadOnly()
            valid = _bit(dut.o__valid)
            if valid is None:
                self.errors.add(f"cycle {self.clocking.now()}: o.valid is X/Z")
            elif ready and valid:
                payload = dut.o__payload.value
                if not payload.is_resolvable:
                    self.errors.add(f"cycle {self.clocking.now()}: o.payload is {payload} "
                                    "while o.valid is high")
                else:
                    self.callback(self.clocking.now(), self.decode(payload.to_unsigned()))
            await RisingEdge(dut.clk)


class TraceMonitor:
    """Rebuilds every hidden layer's output vector per image from the ``trace`` port.

    A record ``(valid=1, end=0)`` gives one nonzero output of hidden layer ``layer`` of the
    image in bank ``bank``; ``(valid=1, end=1)`` says that PE has finished the layer for the
    bank. When all ``n_pes`` PEs have ended ``(layer, bank)``, the vector is complete (neurons
    never reported are 0) and goes to ``callback(layer, image, vector, cycle)``; the ``k``-th
    completed vector of bank ``b`` belongs to image ``k * banks + b``.
    """

    def __init__(self, dut, clocking: Clocking, decode: Callable[[int], list], n_pes: int,
                 banks: int, out_features: list[int], samples: int, callback, errors: Errors):
        self.dut = dut
        self.clocking = clocking
        self.decode = decode
        self.n_pes = n_pes
        self.banks = banks
        self.out_features = out_features                 # of every layer; hidden ones traced
        self.hidden = len(out_features) - 1
        self.samples = samples
        self.callback = callback
        self.errors = errors
        self.values = {}                                  # (layer, bank) -> {column: value}
        self.ended = {}                                   # (layer, bank) -> set of PEs
        self.completed = {}                               # (layer, bank) -> vectors done
        self.records = 0

    def _open(self, key):
        if key not in self.values:
            self.values[key] = {}
            self.ended[key] = set()

    def _record(self, pe: int, record, cycle: int) -> None:
        layer, bank, column = int(record.layer), int(record.bank), int(record.column)
        where = f"cycle {cycle}: trace PE {pe}"
        if not 0 <= layer < self.hidden or not 0 <= bank < self.banks:
            self.errors.add(f"{where}: record for layer {layer}, bank {bank} (hidden layers are "
                            f"0..{self.hidden - 1}, banks 0..{self.banks - 1})")
            return
        key = (layer, bank)
        self._open(key)
        if pe in self.ended[key]:
            self.errors.add(f"{where}: {'end' if record.end else 'output'} record after this "
                            f"PE's end of layer {layer}, bank {bank}")
            return
        if record.end:
            self.ended[key].add(pe)
            return
        self.records += 1
        if not 0 <= column < self.out_features[layer]:
            self.errors.add(f"{where}: column {column} of layer {layer}, which has "
                            f"{self.out_features[layer]} outputs")
        elif column in self.values[key]:
            self.errors.add(f"{where}: layer {layer}, bank {bank}, neuron {column} reported "
                            f"twice ({self.values[key][column]}, then {int(record.value)})")
        else:
            self.values[key][column] = int(record.value)

    def _complete(self, cycle: int) -> None:
        for key in [k for k, pes in self.ended.items() if len(pes) == self.n_pes]:
            layer, bank = key
            k = self.completed.get(key, 0)
            self.completed[key] = k + 1
            image = k * self.banks + bank
            columns = self.values.pop(key)
            del self.ended[key]
            if image >= self.samples:
                self.errors.add(f"cycle {cycle}: trace completed layer {layer} of bank {bank} "
                                f"for image {image}, but only {self.samples} were sent")
                continue
            vector = [0] * self.out_features[layer]
            for column, value in columns.items():
                vector[column] = value
            self.callback(layer, image, vector, cycle)

    def pending(self) -> list[str]:
        """Descriptions of hidden vectors started but never completed."""
        return [f"layer {layer}, bank {bank}: {len(self.values[(layer, bank)])} outputs, end "
                f"from {len(pes)} of {self.n_pes} PEs"
                for (layer, bank), pes in sorted(self.ended.items())]

    @staticmethod
    def _meaningful(record) -> tuple:
        """The fields of a record that carry information: none when not valid; valid, end,
        layer and bank for an end record; every field for an output."""
        if not record.valid:
            return (0,)
        if record.end:
            return (1, 1, record.layer, record.bank)
        return (1, 0, record.layer, record.bank, record.column, record.value)

    def _records(self, value, cycle: int) -> list:
        """The decoded records of one trace sample.

        X/Z bits are allowed where they carry no information (an invalid record; the column and
        value of an end record): the bus is decoded with them read as 0 and as 1, and a record
        whose meaningful fields differ between the two is an error.
        """
        if value.is_resolvable:
            word = value.to_unsigned()
            return self.decode(word) if word else []
        bits = str(value)
        low = self.decode(int("".join(b if b in "01" else "0" for b in bits), 2))
        high = self.decode(int("".join(b if b in "01" else "1" for b in bits), 2))
        records = []
        for pe, (a, b) in enumerate(zip(low, high)):
            if self._meaningful(a) != self._meaningful(b):
                self.errors.add(f"cycle {cycle}: trace record of PE {pe} has X/Z in a "
                                f"meaningful field (read as {a} or {b})")
                records.append(a._replace(valid=0))
            else:
                records.append(a)
        return records

    async def run(self) -> None:
        dut = self.dut
        while True:
            await ReadOnly()
            value = dut.trace.value
            cycle = self.clocking.now()
            records = self._records(value, cycle)
            if any(record.valid for record in records):
                for pe, record in enumerate(records):
                    if record.valid:
                        self._record(pe, record, cycle)
                self._complete(cycle)
            await RisingEdge(dut.clk)


class StatusMonitor:
    """Counts the one-cycle ``done`` pulses and watches ``busy``."""

    def __init__(self, dut):
        self.dut = dut
        self.done_pulses = 0
        self.has_done = hasattr(dut, "done")

    async def run(self) -> None:
        dut = self.dut
        while True:
            await ReadOnly()
            if self.has_done and _bit(dut.done) == 1:
                self.done_pulses += 1
            await RisingEdge(dut.clk)


# -- reference and scoreboard ------------------------------------------------------------------

class Reference:
    """The expected outputs: ``expected[layer][sample][neuron]`` from ``sim.trace``."""

    def __init__(self, expected: list[list[list[int]]]):
        self.expected = expected
        self.n_layers = len(expected)

    def hidden(self, layer: int, sample: int) -> list[int]:
        return self.expected[layer][sample]

    def logit(self, sample: int, neuron: int) -> int:
        return self.expected[-1][sample][neuron]


class Scoreboard:
    """Compares every logit and hidden vector with the reference; measures the cycles."""

    def __init__(self, reference: Reference, samples: int, out_features: int,
                 check_hidden: bool, errors: Errors):
        self.reference = reference
        self.samples = samples
        self.out_features = out_features
        self.check_hidden = check_hidden
        self.errors = errors
        self.logits = 0                                    # logits received
        self.last_logit_cycle = [None] * samples
        self.first_by_sample: dict[int, tuple] = {}        # sample -> (layer, neuron, exp, got)
        self.hidden_seen = set()                           # (layer, sample) compared
        self.finished = Event()

    def _mismatch(self, sample: int, layer: int, neuron: int, expected: int, got: int) -> None:
        entry = (layer, neuron, expected, got)
        if sample not in self.first_by_sample or entry[:2] < self.first_by_sample[sample][:2]:
            if sample not in self.first_by_sample:
                self.errors.log.error(f"mismatch: sample {sample}, layer {layer}, neuron "
                                      f"{neuron}: expected {expected}, got {got}")
            self.first_by_sample[sample] = entry

    def logit(self, cycle: int, value: int) -> None:
        index = self.logits
        self.logits += 1
        sample, neuron = divmod(index, self.out_features)
        if sample >= self.samples:
            self.errors.add(f"cycle {cycle}: extra logit {value} (logit {index}; only "
                            f"{self.samples * self.out_features} expected)")
            return
        expected = self.reference.logit(sample, neuron)
        if value != expected:
            self._mismatch(sample, self.reference.n_layers - 1, neuron, expected, value)
        if neuron == self.out_features - 1:
            self.last_logit_cycle[sample] = cycle
        if self.logits == self.samples * self.out_features:
            self.finished.set()

    def hidden(self, layer: int, image: int, vector: list[int], cycle: int) -> None:
        if (layer, image) in self.hidden_seen:
            self.errors.add(f"cycle {cycle}: hidden layer {layer} of sample {image} completed "
                            "twice")
            return
        self.hidden_seen.add((layer, image))
        expected = self.reference.hidden(layer, image)
        for neuron, (want, got) in enumerate(zip(expected, vector)):
            if want != got:
                self._mismatch(image, layer, neuron, want, got)

    @property
    def mismatches(self) -> int:
        return len(self.first_by_sample)

    def first_mismatch(self) -> dict | None:
        if not self.first_by_sample:
            return None
        sample = min(self.first_by_sample)
        layer, neuron, expected, got = self.first_by_sample[sample]
        return {"sample": sample, "layer": layer, "neuron": neuron, "expected": expected,
                "got": got}

    def missing_hidden(self, hidden_layers: int) -> list[tuple[int, int]]:
        return [(layer, sample) for sample in range(self.samples)
                for layer in range(hidden_layers) if (layer, sample) not in self.hidden_seen]


# -- the test ----------------------------------------------------------------------------------

def load_data() -> tuple[dict, object]:
    """The data file named by ``DCACCEL_COSIM_DATA`` and the unpickled plan."""
    path = os.environ.get(DATA_ENV)
    if not path:
        raise RuntimeError(f"{DATA_ENV} is not set: run this testbench through "
                           "accel.verification.cosim.simulate")
    with open(path) as f:
        data = json.load(f)
    with open(data["plan"], "rb") as f:
        plan = pickle.load(f)
    return data, plan


class EngineTestbench:
    """Wires the driver, monitors, reference and scoreboard around the DUT."""

    def __init__(self, dut, data: dict, plan):
        self.dut = dut
        self.data = data
        self.samples = data["samples"]
        self.errors = Errors(dut._log)
        self.clocking = Clocking(dut, data["clock_period_ns"])
        out_features = data["out_features"]
        self.reference = Reference(data["expected"])
        self.hidden_layers = data["n_layers"] - 1
        self.check_hidden = bool(data["check_hidden"])
        self.scoreboard = Scoreboard(self.reference, self.samples, out_features[-1],
                                     self.check_hidden, self.errors)
        self.driver = InputDriver(dut, self.clocking, data["beats"], data["idle"],
                                  data["seed"])
        self.logits = LogitMonitor(dut, self.clocking, plan.decode_logit,
                                   data["backpressure"], data["seed"], self.scoreboard.logit,
                                   self.errors)
        self.trace = None
        if self.check_hidden:
            if not hasattr(dut, "trace"):
                raise RuntimeError("the engine has no trace port; simulate with "
                                   "check_hidden=False")
            self.trace = TraceMonitor(dut, self.clocking, plan.decode_trace, data["n_pes"],
                                      data["banks"], out_features, self.samples,
                                      self.scoreboard.hidden, self.errors)
        self.status = StatusMonitor(dut)

    async def reset(self) -> None:
        dut = self.dut
        dut.i__valid.value = 0
        dut.i__payload.value = 0
        dut.o__ready.value = 0
        if hasattr(dut, "write__valid"):
            dut.write__valid.value = 0
            dut.write__payload.value = 0
        has_reset = hasattr(dut, "rst")
        if has_reset:
            dut.rst.value = 1
        else:
            dut._log.warning("the engine has no rst port: relying on initial values")
        await ClockCycles(dut.clk, RESET_CYCLES)
        if has_reset:
            dut.rst.value = 0
        await RisingEdge(dut.clk)
        self.clocking.start_counting()

    def start(self) -> None:
        cocotb.start_soon(self.driver.run())
        cocotb.start_soon(self.logits.run())
        if self.trace is not None:
            cocotb.start_soon(self.trace.run())
        cocotb.start_soon(self.status.run())

    async def run(self) -> None:
        data = self.data
        self.dut._log.info(
            f"{self.samples} samples, {len(data['beats'])} input beats; idle {data['idle']}, "
            f"backpressure {data['backpressure']}, seed {data['seed']}; hidden layers "
            f"{'checked' if self.check_hidden else 'not checked'}; timeout after "
            f"{data['max_cycles']} cycles")
        await self.reset()
        self.start()
        budget = self.data["max_cycles"]
        try:
            await with_timeout(self.scoreboard.finished.wait(),
                               budget * self.clocking.period_ns, "ns")
        except SimTimeoutError:
            self.errors.add(self._hang_message(budget))
        else:
            await ClockCycles(self.dut.clk, DRAIN_CYCLES)
            await ReadOnly()
            self._final_checks()

    def _hang_message(self, budget: int) -> str:
        dut = self.dut
        beats = len(self.data["beats"])

        def show(name):
            return str(getattr(dut, name).value) if hasattr(dut, name) else "-"

        return (f"timeout: no completion within {budget} cycles: {len(self.driver.accepted)} of "
                f"{beats} input beats accepted, {self.scoreboard.logits} of "
                f"{self.samples * self.scoreboard.out_features} logits received "
                f"(i.ready={show('i__ready')}, o.valid={show('o__valid')}, "
                f"busy={show('busy')})")

    def _final_checks(self) -> None:
        if self.trace is not None:
            for text in self.trace.pending():
                self.errors.add(f"trace: hidden vector never completed: {text}")
            missing = self.scoreboard.missing_hidden(self.hidden_layers)
            if missing:
                shown = ", ".join(f"(layer {layer}, sample {sample})"
                                  for layer, sample in missing[:8])
                self.errors.add(f"trace: {len(missing)} hidden vectors never completed: "
                                f"{shown}{' ...' if len(missing) > 8 else ''}")
        if self.status.has_done and self.status.done_pulses != self.samples:
            self.errors.add(f"done pulsed {self.status.done_pulses} times for "
                            f"{self.samples} images")
        if hasattr(self.dut, "busy") and _bit(self.dut.busy) != 0:
            self.errors.add(f"busy is {self.dut.busy.value} {DRAIN_CYCLES} cycles after the "
                            "last logit")

    def results(self) -> dict:
        per_image = self.data["beats_per_image"]
        accepted = self.driver.accepted
        latency = []
        for sample, last in enumerate(self.scoreboard.last_logit_cycle):
            first = sample * per_image
            if last is None or first >= len(accepted):
                break
            latency.append(last - accepted[first])
        cycles = 0
        if accepted and self.scoreboard.last_logit_cycle[-1] is not None:
            cycles = self.scoreboard.last_logit_cycle[-1] - accepted[0]
        engine_cycles = None
        if hasattr(self.dut, "cycles") and self.dut.cycles.value.is_resolvable:
            engine_cycles = self.dut.cycles.value.to_unsigned()
        return {
            "version": 1,
            "samples": self.samples,
            "mismatches": self.scoreboard.mismatches,
            "mismatched_samples": sorted(self.scoreboard.first_by_sample),
            "first_mismatch": self.scoreboard.first_mismatch(),
            "cycles": cycles,
            "latency": latency,
            "hidden_checked": self.check_hidden,
            "hidden_records": self.trace.records if self.trace is not None else 0,
            "beats_accepted": len(accepted),
            "logits_received": self.scoreboard.logits,
            "done_pulses": self.status.done_pulses,
            "engine_cycles": engine_cycles,
            "errors": self.errors.messages,
        }


@cocotb.test()
async def engine_matches_reference(dut):
    """Every logit and hidden activation of the engine equals the integer reference."""
    data, plan = load_data()
    Clock(dut.clk, data["clock_period_ns"], unit="ns").start()
    bench = EngineTestbench(dut, data, plan)
    await bench.run()
    results = bench.results()
    with open(data["results"], "w") as f:
        json.dump(results, f)
    assert not results["errors"], "; ".join(results["errors"][:5])
    assert results["mismatches"] == 0, (
        f"{results['mismatches']} of {results['samples']} samples mismatch; first: "
        f"{results['first_mismatch']}")
