"""The C++ driver :mod:`accel.verification.batch_sim` compiles with the engine's Verilog.

:func:`_driver_source` writes the driver for one plan's port widths and trace layout: it
streams the input beats (with seeded idle cycles and output backpressure, and the reloads
through the write port), takes the logits, rebuilds every hidden layer from the trace bus and
writes the results file (its format is in :mod:`accel.verification.batch_sim`'s docstring).
:func:`_wrapper_source` is the Verilog top level ``batch_top`` around the engine, its ports
renamed for the driver; :func:`_setter` and :func:`_getter` copy a port of any width to and
from 32-bit words (:func:`_words`). Text only: nothing here compiles or runs.
"""

from __future__ import annotations

__all__: list[str] = []         # the driver's text, for batch_sim only


def _words(bits: int) -> int:
    return max(1, -(-bits // 32))


_WRAPPER = """// The engine under accel.verification.batch_sim's C++ driver: ports renamed (``trace`` would clash with
// the Verilated class's trace() method, and Verilator escapes the ``__`` of Amaranth's names).
module batch_top(
  input clk, input rst,
  input i_valid, output i_ready, input [@IN@:0] i_payload,
  output o_valid, input o_ready, output [@LOGIT@:0] o_payload,
  input w_valid, output w_ready, input [@WRITE@:0] w_payload,
  output busy, output done, output [47:0] cycles, output [@TRACE@:0] trace_bus);
  engine engine(.clk(clk), .rst(rst),
    .i__valid(i_valid), .i__ready(i_ready), .i__payload(i_payload),
    .o__valid(o_valid), .o__ready(o_ready), .o__payload(o_payload),
    .write__valid(w_valid), .write__ready(w_ready), .write__payload(w_payload),
    .busy(busy), .done(done), .cycles(cycles), .trace(trace_bus));
endmodule
"""


def _wrapper_source(plan) -> str:
    text = _WRAPPER
    for key, bits in [("IN", plan.input_lanes * plan.input_bits), ("LOGIT", plan.logit_bits),
                      ("WRITE", plan.address_bits + plan.data_bits),
                      ("TRACE", plan.n_pes * plan.trace_bits)]:
        text = text.replace(f"@{key}@", str(bits - 1))
    return text


def _setter(port: str, bits: int) -> str:
    """C++ that copies ``w`` (32-bit words) into an input port ``bits`` wide."""
    field = f"t->{port}"
    if bits <= 32:
        return f"{field} = w[0];"
    if bits <= 64:
        return f"{field} = (uint64_t)w[0] | ((uint64_t)w[1] << 32);"
    return f"for (int k = 0; k < {_words(bits)}; k++) {field}.m_storage[k] = w[k];"


def _getter(port: str, bits: int) -> str:
    """C++ that copies an output port ``bits`` wide into ``w`` (32-bit words)."""
    field = f"t->{port}"
    if bits <= 32:
        return f"w[0] = (uint32_t){field};"
    if bits <= 64:
        return f"{{ uint64_t v = {field}; w[0] = (uint32_t)v; w[1] = (uint32_t)(v >> 32); }}"
    return f"for (int k = 0; k < {_words(bits)}; k++) w[k] = {field}.m_storage[k];"


_DRIVER = r"""// The batch driver of accel.verification.batch_sim, generated for one EnginePlan.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "Vbatch_top.h"
#include "verilated.h"

static const int IN_WORDS = @IN_WORDS@;
static const int WR_WORDS = @WR_WORDS@;
static const int TR_WORDS = @TR_WORDS@;
static const long BEATS = @BEATS@;
static const long OUT = @OUT@;
static const int LOGIT_BITS = @LOGIT_BITS@;
static const int N_PES = @N_PES@;
static const int TRACE_BITS = @TRACE_BITS@;
static const int LAYER_BITS = @LAYER_BITS@;
static const int BANK_BITS = @BANK_BITS@;
static const int COLUMN_BITS = @COLUMN_BITS@;
static const int VALUE_BITS = @VALUE_BITS@;
static const int BANKS = @BANKS@;
static const int N_HIDDEN = @N_HIDDEN@;
static const long HIDDEN_SIZE[] = {@HIDDEN_SIZE@};

static inline void set_i(Vbatch_top* t, const uint32_t* w) { @SET_I@ }
static inline void set_write(Vbatch_top* t, const uint32_t* w) { @SET_WRITE@ }
static inline void get_trace(Vbatch_top* t, uint32_t* w) { @GET_TRACE@ }
static inline uint64_t get_logit(Vbatch_top* t) { return (uint64_t)t->o_payload; }

static inline uint64_t field(const uint32_t* w, int lo, int width) {
    uint64_t v = 0;
    for (int k = 0; k < width; k++) {
        int b = lo + k;
        v |= (uint64_t)((w[b >> 5] >> (b & 31)) & 1u) << k;
    }
    return v;
}

static inline int64_t sign(uint64_t v, int bits) {
    if (bits < 64) {
        v &= (((uint64_t)1) << bits) - 1;
        if ((v >> (bits - 1)) & 1) return (int64_t)(v - (((uint64_t)1) << bits));
    }
    return (int64_t)v;
}

struct Rng {                                  // splitmix64
    uint64_t s;
    double next() {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        return (double)(z >> 11) * (1.0 / 9007199254740992.0);
    }
};

static bool read_file(const char* path, std::vector<char>& out) {
    FILE* f = fopen(path, "rb");
    if (!f) return false;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    out.resize(size);
    bool ok = size == 0 || fread(out.data(), 1, size, f) == (size_t)size;
    fclose(f);
    return ok;
}

struct Group { long image; long count; const uint32_t* words; };

enum Phase { WAIT = 0, WRITE = 1, IDLE = 2, BEAT = 3, DONE = 4 };

int main(int argc, char** argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s INPUTS N WRITES RESULTS SEED IDLE BACKPRESSURE MAX_CYCLES\n",
                argv[0]);
        return 2;
    }
    const long n = atol(argv[2]);
    const uint64_t seed = strtoull(argv[5], nullptr, 10);
    const double idle = atof(argv[6]), backpressure = atof(argv[7]);
    const uint64_t max_cycles = strtoull(argv[8], nullptr, 10);
    std::vector<char> inputs_raw, writes_raw;
    if (!read_file(argv[1], inputs_raw) || !read_file(argv[3], writes_raw)) {
        fprintf(stderr, "cannot read the input files\n");
        return 2;
    }
    const uint32_t* inputs = (const uint32_t*)inputs_raw.data();
    const long total_beats = n * BEATS;
    if ((long)inputs_raw.size() != total_beats * IN_WORDS * 4) {
        fprintf(stderr, "inputs file holds %ld bytes, expected %ld\n", (long)inputs_raw.size(),
                total_beats * IN_WORDS * 4);
        return 2;
    }
    std::vector<Group> groups;
    for (size_t at = 0; at < writes_raw.size();) {
        const int64_t* head = (const int64_t*)(writes_raw.data() + at);
        Group g{(long)head[0], (long)head[1], (const uint32_t*)(writes_raw.data() + at + 16)};
        groups.push_back(g);
        at += 16 + (size_t)g.count * WR_WORDS * 4;
    }

    std::vector<int64_t> logits(n * OUT, 0), starts(n, -1), ends(n, -1);
    std::vector<int32_t> hidden[N_HIDDEN > 0 ? N_HIDDEN : 1];
    for (int l = 0; l < N_HIDDEN; l++) hidden[l].assign(n * HIDDEN_SIZE[l], 0);
    // Per (layer, bank): the values of the context being received, its end marks and how many
    // contexts it completed (the k-th completed context of bank b is image b + k * BANKS).
    std::vector<std::vector<std::pair<long, int32_t>>> pending(
        (N_HIDDEN > 0 ? N_HIDDEN : 1) * BANKS);
    std::vector<long> ends_seen(pending.size(), 0), completed(pending.size(), 0);
    long stray = 0;

    auto context = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vbatch_top>(context.get(), "batch_top");
    Vbatch_top* t = top.get();
    Rng idle_rng{seed * 2 + 1}, out_rng{seed * 2 + 2};
    t->clk = 0;
    t->rst = 0;
    t->i_valid = 0;
    t->o_ready = 0;                       // as the Amaranth testbench: low until edge 0
    t->w_valid = 0;
    t->eval();

    long beat = 0, taken = 0, total = n * OUT;
    size_t group = 0;
    long word = 0, idle_left = 0;
    int64_t first = -1, last = -1, busy = 0;
    uint64_t clock = 0;
    int status = 0, after = 0;
    Phase phase = DONE;
    uint32_t trace[TR_WORDS];

    // The next beat: a reload first if one is due before this image, then the idle draws.
    auto next_beat = [&]() {
        if (beat == total_beats) { phase = DONE; return; }
        if (beat % BEATS == 0 && group < groups.size() && groups[group].image <= beat / BEATS) {
            phase = WAIT;
            return;
        }
        idle_left = 0;
        if (idle > 0)
            while (idle_rng.next() < idle) idle_left++;
        phase = idle_left ? IDLE : BEAT;
    };
    next_beat();

    for (;;) {
        if (phase == WAIT && taken >= groups[group].image * OUT && !t->busy) {
            word = 0;
            phase = WRITE;
            while (phase == WRITE && word == groups[group].count) {   // an empty group
                group++;
                next_beat();
            }
        }
        t->i_valid = phase == BEAT;
        if (phase == BEAT) set_i(t, inputs + (size_t)beat * IN_WORDS);
        t->w_valid = phase == WRITE;
        if (phase == WRITE) set_write(t, groups[group].words + (size_t)word * WR_WORDS);
        t->clk = 0;
        t->eval();
        // What the clock edge sees.
        bool beat_taken = phase == BEAT && t->i_ready;
        bool word_taken = phase == WRITE && t->w_ready;
        if (t->o_ready && t->o_valid && taken < total) {
            logits[taken++] = sign(get_logit(t), LOGIT_BITS);
            if (taken % OUT == 0) {
                ends[taken / OUT - 1] = (int64_t)clock;
                last = (int64_t)clock;
            }
        }
        busy = (int64_t)t->cycles;
        get_trace(t, trace);
        for (int p = 0; p < N_PES; p++) {
            int lo = p * TRACE_BITS;
            if (!((trace[lo >> 5] >> (lo & 31)) & 1u)) continue;
            uint64_t end = field(trace, lo + 1, 1);
            long layer = (long)field(trace, lo + 2, LAYER_BITS);
            long bank = (long)field(trace, lo + 2 + LAYER_BITS, BANK_BITS);
            if (layer >= N_HIDDEN || bank >= BANKS) { stray++; continue; }
            size_t key = layer * BANKS + bank;
            if (end) {
                if (++ends_seen[key] == N_PES) {
                    ends_seen[key] = 0;
                    long image = bank + completed[key]++ * BANKS;
                    if (image >= n) { stray++; pending[key].clear(); continue; }
                    int32_t* row = hidden[layer].data() + image * HIDDEN_SIZE[layer];
                    for (auto& cv : pending[key]) row[cv.first] = cv.second;
                    pending[key].clear();
                }
            } else {
                long column = (long)field(trace, lo + 2 + LAYER_BITS + BANK_BITS, COLUMN_BITS);
                int64_t value = sign(field(trace, lo + 2 + LAYER_BITS + BANK_BITS + COLUMN_BITS,
                                           VALUE_BITS), VALUE_BITS);
                if (column >= HIDDEN_SIZE[layer]) { stray++; continue; }
                pending[key].emplace_back(column, (int32_t)value);
            }
        }
        if (beat_taken) {
            if (beat % BEATS == 0) {
                starts[beat / BEATS] = (int64_t)clock;
                if (first < 0) first = (int64_t)clock;
            }
            beat++;
            next_beat();
        } else if (phase == IDLE) {
            if (--idle_left == 0) phase = BEAT;
        }
        if (word_taken && ++word == groups[group].count) {
            group++;
            next_beat();
        }
        t->clk = 1;
        t->eval();
        clock++;
        t->o_ready = !(backpressure > 0 && out_rng.next() < backpressure);
        if (taken == total && ++after > 2) break;   // as the Amaranth testbench: 2 more clocks
        if (clock > max_cycles) { status = 1; break; }
    }
    t->final();

    FILE* f = fopen(argv[4], "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", argv[4]); return 2; }
    int64_t header[8] = {status, taken, first, last, busy, (int64_t)clock, stray, (int64_t)phase};
    bool ok = fwrite(header, sizeof header, 1, f) == 1;
    ok = ok && fwrite(logits.data(), 8, logits.size(), f) == logits.size();
    ok = ok && fwrite(starts.data(), 8, starts.size(), f) == starts.size();
    ok = ok && fwrite(ends.data(), 8, ends.size(), f) == ends.size();
    for (int l = 0; l < N_HIDDEN; l++)
        ok = ok && fwrite(hidden[l].data(), 4, hidden[l].size(), f) == hidden[l].size();
    ok = fclose(f) == 0 && ok;
    if (!ok) { fprintf(stderr, "cannot write %s\n", argv[4]); return 2; }
    return 0;
}
"""


def _driver_source(plan) -> str:
    """The C++ driver for ``plan``'s port widths and trace layout."""
    hidden = [layer.output_columns for layer in plan.layers[:-1]]
    in_bits = plan.input_lanes * plan.input_bits
    write_bits = plan.address_bits + plan.data_bits
    trace_bits = plan.n_pes * plan.trace_bits
    values = {
        "IN_WORDS": _words(in_bits), "WR_WORDS": _words(write_bits),
        "TR_WORDS": _words(trace_bits), "BEATS": plan.beats_per_image,
        "OUT": plan.out_features, "LOGIT_BITS": plan.logit_bits, "N_PES": plan.n_pes,
        "TRACE_BITS": plan.trace_bits, "LAYER_BITS": plan.layer_bits,
        "BANK_BITS": plan.bank_bits, "COLUMN_BITS": plan.column_bits,
        "VALUE_BITS": plan.value_bits, "BANKS": plan.banks, "N_HIDDEN": len(hidden),
        "HIDDEN_SIZE": ", ".join(map(str, hidden or [0])),
        "SET_I": _setter("i_payload", in_bits),
        "SET_WRITE": _setter("w_payload", write_bits),
        "GET_TRACE": _getter("trace_bus", trace_bits),
    }
    text = _DRIVER
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    return text
