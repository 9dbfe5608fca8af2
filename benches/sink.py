#!/usr/bin/env python3
"""A minimal SMTP sink for benches/e2e.sh when Postfix's smtp-sink is missing.

Pure standard library (asyncio). Accepts every command and every message,
keeps nothing, counts messages. On SIGTERM or SIGINT it prints
`mesg=COUNT` (the same form as `smtp-sink -c`) to standard output and exits.

    python3 benches/sink.py 127.0.0.1 2525

It is slower than smtp-sink (Python parses every line), so figures measured
against it are lower bounds; the reference run uses the same sink, so the
ratio stays meaningful.
"""

import asyncio
import signal
import sys

count = 0


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global count
    writer.write(b"220 sink.py ESMTP\r\n")
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-sink.py\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 0\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                await reader.readuntil(b"\r\n.\r\n")
                count += 1
                writer.write(b"250 2.0.0 Ok: queued as %d\r\n" % count)
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 2.0.0 Ok\r\n")
            # Flush only when the client has nothing more pipelined.
            if not reader._buffer:  # noqa: SLF001 — stdlib has no public peek
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(host: str, port: int) -> None:
    server = await asyncio.start_server(session, host, port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(f"mesg={count}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: sink.py HOST PORT")
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
