"""MLLP over a real loopback socket: framing, several messages per connection, bad ones in between."""

from __future__ import annotations

import asyncio

from fhir_server.hl7v2.er7 import parse
from fhir_server.hl7v2.inbound import mllp_handler
from fhir_server.hl7v2.listener import EB, CR, SB, frame, start_mllp_server


def _msg(control: str) -> bytes:
    return ("MSH|^~\\&|LAB|HOSP|FHIR|SRV|20240101120000+0100||ADT^A04^ADT_A01|" + control + "|P|2.5\r"
            "PID|1||191212121212^^^^NNSWE||Tolvansson^Tolvan||19121212|M\r").encode()


async def _read_acks(reader, n):
    out = []
    buf = b""
    while len(out) < n:
        buf += await asyncio.wait_for(reader.read(65536), 10)
        while (end := buf.find(EB + CR)) >= 0:
            start = buf.find(SB)
            out.append(parse(buf[start + 1:end]))
            buf = buf[end + 2:]
    return out


def test_many_messages_one_connection_with_bad_ones(engine, fake_apply):
    async def run():
        server = await start_mllp_server("127.0.0.1", 0, mllp_handler(engine, fake_apply), max_message_size=2000)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            big = _msg("BIG") + b"NTE|1||" + b"x" * 5000 + b"\r"
            # Two messages in one write, garbage, an oversized one, then a message split over writes.
            writer.write(frame(_msg("M1")) + frame(_msg("M2")))
            writer.write(b"noise" + frame(b"this is not hl7"))
            writer.write(frame(big))
            data = frame(_msg("M3"))
            writer.write(data[:10])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(data[10:])
            await writer.drain()
            acks = await _read_acks(reader, 5)
            # A second connection at the same time works too.
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            w2.write(frame(_msg("M4")))
            await w2.drain()
            (ack4,) = await _read_acks(r2, 1)
            w2.close()
            writer.close()
        return acks, ack4

    acks, ack4 = asyncio.run(run())
    got = [(a.first("MSA").get(1), a.first("MSA").get(2)) for a in acks]
    assert got == [("AA", "M1"), ("AA", "M2"), ("AR", ""), ("AR", "BIG"), ("AA", "M3")]
    assert "maximum size" in acks[3].first("ERR").get(8)
    assert (ack4.first("MSA").get(1), ack4.first("MSA").get(2)) == ("AA", "M4")
    assert len(fake_apply.bundles) == 4


def test_oversized_enhanced_gets_CR(engine, fake_apply):
    async def run():
        server = await start_mllp_server("127.0.0.1", 0, mllp_handler(engine, fake_apply), max_message_size=300)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            big = _msg("B2").replace(b"|P|2.5\r", b"|P|2.5|||AL|NE\r") + b"NTE|1||" + b"y" * 70000 + b"\r"
            writer.write(frame(big) + frame(_msg("after")))
            await writer.drain()
            acks = await _read_acks(reader, 2)
            writer.close()
        return acks

    acks = asyncio.run(run())
    assert [(a.first("MSA").get(1), a.first("MSA").get(2)) for a in acks] == [("CR", "B2"), ("AA", "after")]
