#!/usr/bin/env python3
"""Sends DSNs into Herald's bounce receiver as fast as it takes them.

Reads "subscriber_id<TAB>email" lines (the readers issue ISSUE went to),
writes for each a Postfix-format DSN (RFC 3464, a 5.1.1 hard bounce) to its
VERP address b-d{issue}-{subscriber}-{mac}@DOMAIN (the MAC computed as
src/domain/token.rs does, from the instance secret), and delivers them over
CONNECTIONS SMTP connections, each pipelining MAIL/RCPT/DATA (the receiver
advertises PIPELINING). Prints one line: reports sent, seconds, reports/s and
the count of each final reply code. Used by benches/bounces.sh.
"""

import argparse
import asyncio
import collections
import hashlib
import hmac
import struct
import sys
import time


def verp_local(secret: bytes, issue_id: int, subscriber_id: int) -> str:
    msg = b"verp-d" + b"".join(b":" + struct.pack(">q", p) for p in (issue_id, subscriber_id))
    mac = hmac.new(secret, msg, hashlib.sha256).digest()[:10].hex()
    return f"b-d{issue_id}-{subscriber_id}-{mac}"


def dsn(verp: str, recipient: str, n: int) -> bytes:
    text = f"""Return-Path: <>
From: Mail Delivery System <MAILER-DAEMON@mx.bench.example.net>
Subject: Undelivered Mail Returned to Sender
To: {verp}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="Q{n}.1796205980/mx.bench.example.net"
Content-Transfer-Encoding: 8bit
Message-Id: <20261202100620.Q{n}@mx.bench.example.net>

This is a MIME-encapsulated message.

--Q{n}.1796205980/mx.bench.example.net
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mx.bench.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

<{recipient}>: host mx.example.com said: 550 5.1.1 <{recipient}>:
    Recipient address rejected: User unknown (in reply to RCPT TO command)

--Q{n}.1796205980/mx.bench.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.bench.example.net
X-Postfix-Queue-ID: Q{n}
X-Postfix-Sender: rfc822; {verp}
Arrival-Date: Wed,  2 Dec 2026 10:06:20 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected:
    User unknown

--Q{n}.1796205980/mx.bench.example.net
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <{verp}>
Received: from [127.0.0.1] (localhost [127.0.0.1])
	by mx.bench.example.net (Postfix) with ESMTP id Q{n};
	Wed,  2 Dec 2026 10:06:20 +0000 (UTC)
From: Weekly Digest <digest@bench.example.com>
To: {recipient}
Subject: Weekly Digest #1
Message-ID: <issue-1.bench{n}@bench.example.com>

--Q{n}.1796205980/mx.bench.example.net--
"""
    lines = text.split("\n")
    out = "".join(("." + l if l.startswith(".") else l) + "\r\n" for l in lines)
    return out.encode() + b".\r\n"


async def reply(reader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("the receiver closed the connection")
        if line[3:4] != b"-":
            return int(line[:3])


async def connection(host, port, jobs, counts):
    reader, writer = await asyncio.open_connection(host, port)
    assert await reply(reader) == 220
    writer.write(b"EHLO bench-client.test\r\n")
    assert await reply(reader) == 250
    for rcpt, body in jobs:
        writer.write(b"MAIL FROM:<>\r\nRCPT TO:<" + rcpt + b">\r\nDATA\r\n")
        mail, rcpt_code, data = await reply(reader), await reply(reader), await reply(reader)
        if data != 354:
            counts[f"refused {mail}/{rcpt_code}/{data}"] += 1
            continue
        writer.write(body)
        counts[await reply(reader)] += 1
    writer.write(b"QUIT\r\n")
    await reply(reader)
    writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--domain", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--issue", type=int, default=1)
    p.add_argument("--readers", required=True, help="file of subscriber_id<TAB>email lines")
    p.add_argument("--connections", type=int, default=8)
    a = p.parse_args()
    secret = a.secret.encode()
    jobs = []
    with open(a.readers) as f:
        for n, line in enumerate(f):
            sid, email = line.rstrip("\n").split("\t")
            verp = f"{verp_local(secret, a.issue, int(sid))}@{a.domain}"
            jobs.append((verp.encode(), dsn(verp, email, n)))
    counts = collections.Counter()
    shares = [jobs[i :: a.connections] for i in range(a.connections)]
    start = time.monotonic()
    await asyncio.gather(*(connection(a.host, a.port, s, counts) for s in shares if s))
    seconds = time.monotonic() - start
    replies = " ".join(f"{k}:{v}" for k, v in sorted(counts.items(), key=str))
    print(f"reports={len(jobs)} seconds={seconds:.3f} rate={len(jobs) / seconds:.0f} replies={replies}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
