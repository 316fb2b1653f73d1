"""The command handler: executes checked frames on the accelerator's ports and
answers every one of them with a reply frame (``docs/protocol.md``).

It sits between :class:`~shiftpool.hw.link.framing.FrameDecoder` and
:class:`~shiftpool.hw.link.framing.FrameEncoder`. Towards the accelerator it has the
accelerator's signature flipped (:class:`~shiftpool.hw.signature.AcceleratorSignature`:
``load``, ``inp``, ``out``, ``readback``, ``cycles``, ``busy``), and also
``accel_reset``, a one-cycle pulse that aborts an inference (RESET, or an accelerator
that stalls); not a port of the accelerator:
:func:`~shiftpool.hw.link.link.attach_accelerator` applies it with ``ResetInserter``,
and memories keep their contents.
"""

import struct

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..config import AcceleratorConfig
from ..memory_map import region_depths, region_widths
from ..program import REGIONS
from ..signature import AcceleratorSignature
from .config import LinkConfig
from .framing import event_layout, payload_layout, reply_header_layout, reply_payload_layout
from .protocol import (
    ARGS_BYTES,
    ARGS_FIELDS,
    REPLY,
    STATUS_COUNTERS,
    Command,
    Reason,
    identify_payload,
    row_bytes,
    status_length,
)

__all__ = ["CommandHandler"]


class CommandHandler(wiring.Component):
    """Executes frames and produces one reply frame per frame event.

    Requests and replies (all little-endian, ``docs/protocol.md``): IDENTIFY, STATUS,
    RESET, WRITE (region rows onto ``load``), READ (rows through ``readback``), RUN
    (input words onto ``inp``, output words from ``out``, then ``cycles``). A frame
    the decoder dropped, or a request that fails a check, is answered with a NAK
    naming the reason. Every check of a request is made before anything is written.

    It is built for the iCE40's LUT4 count (``python -m shiftpool.boards.units``):
    payloads towards the accelerator and the reply header are driven in every state
    (a value set inside a state is a gate per bit); a row shifts in a byte per cycle
    into flip-flops with an enable; the reply bytes of RUN and IDENTIFY come from one
    block RAM, the STATUS counters from another with one shared incrementer; the
    watchdog expires on its counter's carry out.

    Parameters
    ----------
    config : AcceleratorConfig
    link : LinkConfig
    config_hash : str, optional
        16 hex digits that IDENTIFY reports; ``config.hash`` by default.

    Members
    -------
    event : In(stream.Signature(event_layout()))
        From the frame decoder.
    payload : In(stream.Signature(payload_layout()))
        From the frame decoder.
    reply_header : Out(stream.Signature(reply_header_layout()))
        To the frame encoder.
    reply_payload : Out(stream.Signature(reply_payload_layout()))
        To the frame encoder.
    rx_framing_error, rx_overrun : In(1)
        One-cycle strobes of the UART receiver, counted for STATUS.
    accelerator : In(AcceleratorSignature(config))
        The accelerator's ports, flipped. ``load.payload.data`` bits above the
        addressed region's width are unspecified.
    accel_reset : Out(1)
        Resets the accelerator (see the module docstring).
    """

    def __init__(self, config: AcceleratorConfig, link: LinkConfig,
                 config_hash: str | None = None):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        if not isinstance(link, LinkConfig):
            raise TypeError(f"link must be a LinkConfig, not {link!r}")
        self.config = config
        self.link = link
        self.identity = identify_payload(config, link, config_hash)
        self._widths = region_widths(config)
        self._depths = region_depths(config)
        self._check_fits()
        super().__init__({
            "event": In(stream.Signature(event_layout())),
            "payload": In(stream.Signature(payload_layout())),
            "reply_header": Out(stream.Signature(reply_header_layout())),
            "reply_payload": Out(stream.Signature(reply_payload_layout())),
            "rx_framing_error": In(1),
            "rx_overrun": In(1),
            "accelerator": In(AcceleratorSignature(config)),
            "accel_reset": Out(1),
        })

    def _check_fits(self):
        """Every reply must fit in ``max_payload``, and a WRITE of one row too."""
        cfg, mp = self.config, self.link.max_payload
        run_reply = row_bytes(cfg.cycle_bits) + cfg.out_depth * row_bytes(cfg.acc_width)
        needs = {
            "the IDENTIFY reply": len(self.identity),
            "the STATUS reply": status_length(cfg),
            f"a RUN reply of out_depth = {cfg.out_depth} outputs": run_reply,
            "a WRITE of one row of the widest region":
                ARGS_BYTES + max(row_bytes(w) for w in self._widths.values()),
        }
        for what, size in needs.items():
            if size > mp:
                raise ValueError(f"link config field 'max_payload' = {mp} is too small for "
                                 f"{what} ({size} bytes)")

    def elaborate(self, platform):
        cfg, link = self.config, self.link
        acc = self.accelerator
        m = Module()

        in_bytes = row_bytes(cfg.act_bits)
        out_bytes = row_bytes(cfg.acc_width)
        cyc_bytes = row_bytes(cfg.cycle_bits)
        rbytes = [row_bytes(self._widths[name]) for name in REGIONS]
        depths = [self._depths[name] for name in REGIONS]
        max_rb = max(rbytes)
        n_status = status_length(cfg)
        out_total = cfg.out_depth * out_bytes

        ev = self.event.payload
        pl = self.payload
        rh = self.reply_header
        rp = self.reply_payload
        taken = pl.valid & pl.ready
        # A good frame's length is at most max_payload (the decoder drops longer
        # ones), so only its low bits take part in checks.
        ev_length = ev.length[:ceil_log2(link.max_payload + 1)]
        # The decoder's reasons are OK and its three drops: their bits are enough.
        ev_reason = ev.reason[:max(Reason.OK, Reason.BAD_CRC, Reason.BAD_LENGTH,
                                   Reason.TIMEOUT).bit_length()]
        args = Signal(data.StructLayout({name: 8 * struct.calcsize("<" + code)
                                         for name, code in ARGS_FIELDS}), reset_less=True)
        region, start, count = args.region, args.start, args.count

        # Request fields: loaded before they are used, so no reset (a flip-flop with
        # an enable and a reset costs the iCE40 a LUT). Registers that are only
        # loaded cost no LUT; what costs is logic in front of them.
        cmd = Signal(8, reset_less=True)
        seq = Signal(8, reset_less=True)
        length = Signal(range(link.max_payload + 1), reset_less=True)
        nak_reason = Signal(range(max(Reason) + 1), reset_less=True)
        # Payload bytes of the current frame not yet taken: the decoder marks the
        # last one, so a flag does what a byte counter would.
        more = Signal()
        with m.If(taken & pl.payload.last):
            m.d.sync += more.eq(0)

        # One byte counter for every multi-byte field: arguments, row bytes, words,
        # and the bytes of the small replies (`small` below).
        k = Signal(range(max(ARGS_BYTES, max_rb, in_bytes, out_bytes, cyc_bytes + 3,
                             len(STATUS_COUNTERS))),
                   reset_less=True)
        # Rows of a WRITE or READ; also the row tally of the size check, which ends
        # with it equal to `count` (then `start + row` is `start + count`). Its top
        # bit ends the tally of a region without rows (row bytes 0) at any `count`.
        aw = len(acc.load.payload.addr)
        row_w = max(aw + 1, ceil_log2(link.max_payload + 2) + 1)
        row = Signal(row_w, reset_less=True)

        rows_done = (row == count) | row[-1]
        addr_full = start[:aw + 1] + row[:aw + 1]
        addr = addr_full[:aw]

        # -- the addressed region: row bytes and depth, constants picked by its code ----
        region_ok = region < len(REGIONS)
        rb_sel = Signal(range(max_rb + 1))
        depth_sel = Signal(range(max(depths) + 1))
        with m.Switch(region[:ceil_log2(len(REGIONS))]):
            for code in range(len(REGIONS)):
                with m.Case(code):
                    m.d.comb += [rb_sel.eq(rbytes[code]), depth_sel.eq(depths[code])]
        # A start with a bit set above the deepest region's address overflows every
        # region; below that the sum is exact. The size check ends with `row` equal to
        # `count` (or, for a region without rows, with row's top bit set), so `row`
        # stands for `count` here.
        overflow = (start[aw + 1:] != 0) | (row[aw + 1:] != 0) | (addr_full > depth_sel)
        # Bytes of `count` rows, added up one row per cycle (no multiplier), from 7 for
        # a WRITE (its arguments) so that it compares with the frame's length; the
        # tally stops once it exceeds max_payload.
        total = Signal(range(link.max_payload + max_rb + ARGS_BYTES + 1), reset_less=True)
        is_write = cmd == Command.WRITE

        # -- the row register: a byte shifts in per cycle ---------------------------
        # Bytes move down by one as each arrives, and a region's first byte enters at
        # its last byte's place, so after the row's bytes it sits at byte 0: flip-flops
        # with an enable, and a 2:1 multiplexer only at the places where a region's
        # row ends (bytes above a region's width are left unspecified, as `load`
        # allows).
        row_data = [Signal(8, name=f"row_byte{i}", reset_less=True) for i in range(max_rb)]
        shift_in = Signal()
        with m.If(shift_in):
            for i, byte in enumerate(row_data):
                above = pl.payload.data if i == max_rb - 1 else row_data[i + 1]
                ends = [code for code, rb in enumerate(rbytes) if rb - 1 == i and rb < max_rb]
                if ends:
                    here = Cat(region[:ceil_log2(len(REGIONS))] == code for code in ends).any()
                    above = Mux(here, pl.payload.data, above)
                m.d.sync += byte.eq(above)
        word = Signal(8 * in_bytes, reset_less=True)

        # Payloads towards the accelerator are driven in every state (only `valid`
        # depends on the state): a payload set inside a state is zero elsewhere,
        # which costs a LUT per bit.
        m.d.comb += [
            acc.load.payload.region.eq(region), acc.load.payload.addr.eq(addr),
            acc.load.payload.data.eq(Cat(*row_data)),
            acc.readback.req.payload.region.eq(region), acc.readback.req.payload.addr.eq(addr),
            acc.readback.req.payload.byte.eq(k),
            acc.inp.payload.data.eq(word), acc.inp.payload.last.eq(~more),
        ]

        # -- reply bytes held in one byte-wide memory -------------------------------
        # RUN's outputs (written a byte per cycle) and, above them, the IDENTIFY reply
        # (the memory's initial contents): one block RAM, and no wide multiplexers
        # picking their bytes. `ptr` addresses both ports: outputs are written, then
        # read, at the same addresses. They start at byte `cyc_bytes` (the bytes
        # below are unused), so the address after the last one is the RUN reply's
        # length, cycles included.
        out_base = cyc_bytes
        id_base = out_base + out_total
        m.submodules.reply_mem = reply_mem = memory.Memory(
            shape=8, depth=id_base + len(self.identity),
            init=[0] * id_base + list(self.identity))
        rm_w, rm_r = reply_mem.write_port(), reply_mem.read_port()
        ptr = Signal(range(id_base + len(self.identity) + 1), reset_less=True)
        out_word = Signal(signed(8 * out_bytes))
        m.d.comb += [rm_w.addr.eq(ptr), rm_r.addr.eq(ptr), out_word.eq(acc.out.payload.data),
                     rm_w.data.eq(out_word.word_select(k[:ceil_log2(max(out_bytes, 2))], 8))]
        last_cycles = Signal(8 * cyc_bytes)
        poison = Signal()

        # -- watchdog on the accelerator --------------------------------------------
        # Counts consecutive cycles in which a state waits on the accelerator in vain.
        # It starts at 2**w - (run_timeout - 1), so its bit w (the carry out of the
        # count) is set on the run_timeout-th such cycle: no compare.
        waiting = Signal()
        w = ceil_log2(link.run_timeout)
        watchdog = Signal(w + 1, reset_less=True)
        expired = waiting & watchdog[w]
        m.d.sync += watchdog.eq(Mux(waiting, watchdog + 1, (1 << w) - (link.run_timeout - 1)))

        # -- STATUS counters: a small memory, one shared incrementer ---------------
        # A bump sets the counter's `pending` bit; each cycle the lowest pending
        # counter that is not being written is read, and written back one higher
        # (saturating) in the next cycle, so a bump reaches the memory within a few
        # cycles, long before the same counter can be bumped again (frames and their
        # NAKs are several bytes apart, UART characters ten bits). One incrementer and
        # a block RAM instead of a register, an incrementer and a multiplexer input
        # per counter: about 60 LUT4 fewer, for one more block RAM.
        bits = link.counter_bits
        n_cnt = len(STATUS_COUNTERS)
        bump = {name: Signal(name=f"bump_{name}") for name in STATUS_COUNTERS}
        clear = Signal()
        m.d.comb += [bump["rx_framing_errors"].eq(self.rx_framing_error),
                     bump["rx_overruns"].eq(self.rx_overrun)]
        # "block": yosys would make a memory this small of flip-flops.
        m.submodules.counter_mem = counter_mem = memory.Memory(
            shape=bits, depth=n_cnt, init=[], attrs={"ram_style": "block"})
        cnt_w, cnt_r = counter_mem.write_port(), counter_mem.read_port()
        pending = Signal(n_cnt)
        writing = Signal(n_cnt)                     # one-hot: read last cycle, written now
        writing_idx = Signal(range(n_cnt), reset_less=True)
        reading_status = Signal()                   # the STATUS reply reads counter `k`
        free = pending & ~writing
        pick = Mux(reading_status, 0, free & (~free + 1)[:n_cnt])    # lowest one
        pick_idx = Signal.like(writing_idx)
        for i in range(n_cnt):
            with m.If(pick[i]):
                m.d.comb += pick_idx.eq(i)
        m.d.comb += [
            cnt_r.addr.eq(Mux(reading_status, k, pick_idx)),
            # RESET writes zeros to every address, one per cycle (`k`).
            cnt_w.addr.eq(Mux(clear, k, writing_idx)),
            cnt_w.data.eq(Mux(clear, 0, cnt_r.data + 1)),
            cnt_w.en.eq(clear | (writing.any() & ~cnt_r.data.all())),
        ]
        bumps = Cat(bump[name] for name in STATUS_COUNTERS)
        m.d.sync += [pending.eq(Mux(clear, 0, (pending & ~pick) | bumps)), writing.eq(pick),
                     writing_idx.eq(pick_idx)]
        held = Signal(bits, reset_less=True)        # a counter on its way out
        # The bytes of the small replies, picked by `k` through one multiplexer: the
        # STATUS reply's first bytes (flags and cycles; RUN's reply sends its cycles
        # from here), then a NAK's two bytes.
        small = Cat(acc.busy, Const(0, 7), last_cycles,
                    nak_reason, Const(0, 8 - len(nak_reason)), cmd)
        cycles_k = 1                # k of the first cycles byte in `small`
        nak_k = 1 + cyc_bytes       # k of a NAK's first byte in `small`

        # The NAK reason is set in few places, each time from one expression of the
        # checks made there (IDLE, SIZE, CHECK, the watchdog, an output overflow).
        with m.If(expired):
            m.d.sync += nak_reason.eq(Reason.ACCEL_TIMEOUT)

        def fail():
            """Refuse the frame (``nak_reason`` is set): take the rest of its
            payload, then NAK."""
            m.next = "DRAIN"

        def or_timeout(poison_rest=False, then=None):
            """Closes an ``m.If`` on the accelerator's answer in a state that sets
            ``waiting``: when the watchdog expires the accelerator is reset and the
            command fails with ACCEL_TIMEOUT, or (a READ reply, whose length is sent
            already) the rest of its rows are poisoned and it goes on to ``then``."""
            with m.Elif(expired):
                m.d.comb += self.accel_reset.eq(1)
                if poison_rest:
                    m.d.sync += poison.eq(1)
                    if then is not None:
                        m.next = then
                else:
                    fail()

        # The reply header's fields are driven in every state; a header state only
        # overrides what differs (a NAK's command, a fixed length).
        nak_header = Signal()
        m.d.comb += [rh.payload.cmd.eq(Mux(nak_header, Command.NAK, cmd | REPLY)),
                     rh.payload.seq.eq(seq), rh.payload.length.eq(total)]

        def header(state, size, then, first_k=0, counter=None, extra=None):
            """A state that offers a reply header with ``size`` bytes of payload (a
            number, or ``total``), counts it in ``counter`` and sets ``extra``."""
            with m.State(state):
                m.d.comb += rh.valid.eq(1)
                if extra is not None:
                    m.d.comb += extra.eq(1)
                if size is not total:
                    m.d.comb += rh.payload.length.eq(size)
                if counter is not None:
                    m.d.comb += bump[counter].eq(rh.ready)
                with m.If(rh.ready):
                    m.d.sync += k.eq(first_k)
                    m.next = then

        def send_small(state, last_k, then):
            """A state that sends bytes ``k .. last_k`` of ``small``, then goes to
            ``then`` (a state name, or a function that sets ``m.next``)."""
            with m.State(state):
                m.d.comb += [rp.valid.eq(1), rp.payload.data.eq(small.word_select(k, 8))]
                with m.If(rp.ready):
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == last_k):
                        if callable(then):
                            then()
                        else:
                            m.next = then

        with m.FSM(name="handler"):
            with m.State("IDLE"):
                m.d.comb += self.event.ready.eq(1)
                with m.If(self.event.valid):
                    m.d.sync += [cmd.eq(ev.cmd), seq.eq(ev.seq), length.eq(ev_length),
                                 more.eq((ev_reason == Reason.OK) & (ev_length != 0)),
                                 k.eq(0), poison.eq(0)]
                    with m.Switch(ev_reason):
                        with m.Case(Reason.OK):
                            m.d.comb += bump["frames"].eq(1)
                        with m.Case(Reason.BAD_CRC):
                            m.d.comb += bump["crc_errors"].eq(1)
                        with m.Case(Reason.BAD_LENGTH):
                            m.d.comb += bump["length_errors"].eq(1)
                        with m.Case(Reason.TIMEOUT):
                            m.d.comb += bump["timeouts"].eq(1)
                    reason = self._dispatch(m, ev, ev_reason, in_bytes)
                    m.d.sync += nak_reason.eq(reason)
                    m.d.sync += ptr.eq(Mux(ev.cmd == Command.IDENTIFY, id_base, out_base))
                    with m.If(reason != Reason.OK):
                        fail()

            with m.State("DRAIN"):
                m.d.comb += pl.ready.eq(more)
                with m.If(~more):
                    m.next = "NAK"

            # NAK: reason, then the refused command byte.
            header("NAK", 2, "NAK_DATA", first_k=nak_k, counter="naks", extra=nak_header)
            send_small("NAK_DATA", nak_k + 1, "IDLE")

            header("ACK", 0, "IDLE")

            # IDENTIFY, STATUS, RESET
            header("IDENTIFY", len(self.identity), "MEM_FETCH")
            header("STATUS", n_status, "STATUS_HEAD")

            def counters_next():
                m.d.sync += k.eq(0)
                m.next = "STATUS_WAIT"

            send_small("STATUS_HEAD", cyc_bytes, counters_next)
            with m.State("STATUS_WAIT"):
                # The bumps so far (this frame's among them) are in the memory.
                with m.If(~pending.any() & ~writing.any()):
                    m.next = "STATUS_READ"
            with m.State("STATUS_READ"):
                m.d.comb += reading_status.eq(1)
                m.next = "STATUS_HOLD"
            with m.State("STATUS_HOLD"):
                m.d.sync += held.eq(cnt_r.data)
                m.next = "STATUS_LO"
            with m.State("STATUS_LO"):
                m.d.comb += [rp.valid.eq(1), rp.payload.data.eq(held[:8])]
                with m.If(rp.ready):
                    m.next = "STATUS_HI"
            with m.State("STATUS_HI"):
                m.d.comb += [rp.valid.eq(1), rp.payload.data.eq(held[8:])]
                with m.If(rp.ready):
                    m.d.sync += k.eq(k + 1)
                    m.next = "STATUS_READ"
                    with m.If(k == n_cnt - 1):
                        m.next = "IDLE"
            with m.State("RESET"):
                # A cycle per counter: zeros are written at every address, and bumps
                # meanwhile are dropped.
                m.d.comb += [self.accel_reset.eq(k == 0), clear.eq(1)]
                m.d.sync += k.eq(k + 1)
                with m.If(k == n_cnt - 1):
                    m.next = "ACK"

            # WRITE and READ: arguments, checks, then rows.
            with m.State("ARGS"):
                m.d.comb += pl.ready.eq(1)
                with m.If(pl.valid):
                    m.d.sync += [args.eq(Cat(args.as_value()[8:], pl.payload.data)),
                                 k.eq(k + 1)]
                    with m.If(k == ARGS_BYTES - 1):
                        m.d.sync += [total.eq(Mux(is_write, ARGS_BYTES, 0)), row.eq(0)]
                        m.next = "SIZE"
            with m.State("SIZE"):
                m.d.sync += nak_reason.eq(Mux(region_ok, Reason.BAD_LENGTH, Reason.BAD_REGION))
                with m.If(~region_ok):
                    fail()
                with m.Elif(rows_done):
                    m.next = "CHECK_PREP"
                with m.Elif(total > link.max_payload):
                    fail()
                with m.Else():
                    m.d.sync += [total.eq(total + rb_sel), row.eq(row + 1)]
            # The length and overflow checks' adders and compares end in registers
            # (a cycle before CHECK), not in the reason and the state.
            bad_length = Signal(reset_less=True)
            overflows = Signal(reset_less=True)
            with m.State("CHECK_PREP"):
                m.d.sync += [bad_length.eq(Mux(is_write, length != total,
                                               total > link.max_payload)),
                             overflows.eq(overflow)]
                m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [row.eq(0), k.eq(0)]
                check = Mux(bad_length, Reason.BAD_LENGTH,
                            Mux(overflows, Reason.REGION_OVERFLOW,
                                Mux(acc.busy, Reason.BUSY, Reason.OK)))
                m.d.sync += nak_reason.eq(check)
                with m.If(check != Reason.OK):
                    fail()
                with m.Elif(is_write):
                    m.next = "WRITE_NEXT"
                with m.Else():
                    m.next = "READ"

            with m.State("WRITE_NEXT"):
                m.next = "WRITE_BYTES"
                with m.If(rows_done):
                    m.next = "ACK"
            with m.State("WRITE_BYTES"):
                m.d.comb += [pl.ready.eq(1), shift_in.eq(pl.valid)]
                with m.If(pl.valid):
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == rb_sel - 1):
                        m.d.sync += k.eq(0)
                        m.next = "WRITE_ROW"
            with m.State("WRITE_ROW"):
                m.d.comb += [acc.load.valid.eq(1), waiting.eq(~acc.load.ready)]
                with m.If(acc.load.ready):
                    m.d.sync += row.eq(row + 1)
                    m.next = "WRITE_NEXT"
                or_timeout()

            # READ: the reply's length is known, so bytes go out as they come back, one
            # readback request per byte (byte k of row `row`). If the accelerator
            # stops answering, it is reset and the rest of the rows are sent as zeros
            # with a poisoned CRC (the host drops the frame, retries).
            header("READ", total, "READ_REQ")
            with m.State("READ_REQ"):
                with m.If(rows_done):
                    m.next = "IDLE"
                with m.Elif(poison):
                    m.next = "READ_DATA"
                with m.Else():
                    m.d.comb += [acc.readback.req.valid.eq(1),
                                 waiting.eq(~acc.readback.req.ready)]
                    with m.If(acc.readback.req.ready):
                        m.next = "READ_DATA"
                    or_timeout(poison_rest=True, then="READ_DATA")
            with m.State("READ_DATA"):
                resp = acc.readback.resp
                m.d.comb += [rp.valid.eq(poison | resp.valid), rp.payload.poison.eq(poison),
                             rp.payload.data.eq(Mux(poison, 0, resp.payload)),
                             resp.ready.eq(~poison & rp.ready),
                             waiting.eq(~poison & ~resp.valid)]
                with m.If(rp.valid & rp.ready):
                    m.d.sync += k.eq(k + 1)
                    m.next = "READ_REQ"
                    with m.If(k == rb_sel - 1):
                        m.d.sync += [k.eq(0), row.eq(row + 1)]
                or_timeout(poison_rest=True)

            # RUN: input words onto `inp`, outputs into the memory, then the reply.
            with m.State("RUN_BYTES"):
                m.d.comb += pl.ready.eq(1)
                with m.If(pl.valid):
                    m.d.sync += [word.eq(Cat(word[8:], pl.payload.data)), k.eq(k + 1)]
                    with m.If(k == in_bytes - 1):
                        m.d.sync += k.eq(0)
                        m.next = "RUN_INPUT"
            with m.State("RUN_INPUT"):
                m.d.comb += [acc.inp.valid.eq(1), waiting.eq(~acc.inp.ready)]
                with m.If(acc.inp.ready):
                    m.next = "RUN_BYTES"
                    with m.If(~more):
                        m.next = "RUN_OUTPUT"
                or_timeout()
            with m.State("RUN_OUTPUT"):
                # An output goes into the memory a byte per cycle (byte k), and is
                # taken with its last byte.
                m.d.comb += waiting.eq(~acc.out.valid)
                with m.If(acc.out.valid):
                    with m.If(ptr == id_base):
                        m.d.comb += self.accel_reset.eq(1)
                        m.d.sync += nak_reason.eq(Reason.OUTPUT_OVERFLOW)
                        fail()
                    with m.Else():
                        m.d.comb += rm_w.en.eq(1)
                        m.d.sync += [ptr.eq(ptr + 1), k.eq(k + 1)]
                        with m.If(k == out_bytes - 1):
                            m.d.comb += acc.out.ready.eq(1)
                            m.d.sync += k.eq(0)
                            with m.If(acc.out.payload.last):
                                m.next = "RUN_DONE"
                or_timeout()
            with m.State("RUN_DONE"):
                # `cycles` is valid once `busy` is low, after the last output.
                m.d.comb += waiting.eq(acc.busy)
                with m.If(~acc.busy):
                    m.d.sync += [last_cycles.eq(acc.cycles), total.eq(ptr), ptr.eq(out_base)]
                    m.next = "RUN_REPLY"
                or_timeout()
            header("RUN_REPLY", total, "RUN_CYCLES",
                   first_k=cycles_k)

            send_small("RUN_CYCLES", cycles_k + cyc_bytes - 1, "MEM_FETCH")

            # Bytes of the memory from `ptr` on: IDENTIFY's (up to its end) or RUN's
            # outputs (up to `total`, the reply's length).
            mem_end = Mux(cmd == Command.IDENTIFY, ptr == id_base + len(self.identity),
                          ptr == total)
            with m.State("MEM_FETCH"):
                # The read port shows `ptr`'s byte from the next cycle.
                m.next = "MEM_DATA"
                with m.If(mem_end):
                    m.next = "IDLE"
            with m.State("MEM_DATA"):
                m.d.comb += [rp.valid.eq(1), rp.payload.data.eq(rm_r.data)]
                with m.If(rp.ready):
                    m.d.sync += ptr.eq(ptr + 1)
                    m.next = "MEM_FETCH"
        return m

    def _dispatch(self, m, ev, ev_reason, in_bytes):
        """The IDLE state's choice for a frame event: the state its command goes to,
        and the reason to refuse it (``Reason.OK`` if none), which is returned."""
        cfg = self.config
        reason = Signal(range(max(Reason) + 1))
        # A good frame's length is at most max_payload: its higher bits are zero.
        length = ev.length[:ceil_log2(self.link.max_payload + 1)]
        run_ok = (length != 0) & (length % in_bytes == 0) & (length <= cfg.act_depth * in_bytes)
        checks = [(Command.IDENTIFY, "IDENTIFY", length == 0, False),
                  (Command.STATUS, "STATUS", length == 0, False),
                  (Command.RESET, "RESET", length == 0, False),
                  (Command.WRITE, "ARGS", length >= ARGS_BYTES, False),
                  (Command.READ, "ARGS", length == ARGS_BYTES, False),
                  (Command.RUN, "RUN_BYTES", run_ok, True)]
        with m.Switch(ev.cmd):
            for command, then, length_ok, needs_idle in checks:
                with m.Case(command):
                    m.next = then
                    with m.If(~length_ok):
                        m.d.comb += reason.eq(Reason.BAD_LENGTH)
                    if needs_idle:
                        with m.Elif(self.accelerator.busy):
                            m.d.comb += reason.eq(Reason.BUSY)
            with m.Default():
                m.d.comb += reason.eq(Reason.UNKNOWN_COMMAND)
        with m.If(ev_reason != Reason.OK):
            m.d.comb += reason.eq(ev_reason)
        return reason
