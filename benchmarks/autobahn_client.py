"""The client engine of ``wsgate connect`` against Autobahn|Testsuite's fuzzingserver.

The usual testee client: ask the fuzzingserver how many cases it has, run each one (echo
every message back until the server closes), then ask it to write its reports. Every
connection is opened by :func:`wsgate.client.dial.dial`, the function ``wsgate connect``
opens its own with, so the suite sees the same websockets settings (message size limit,
permessage-deflate offer, close timeout) a user's session has.

    python benchmarks/autobahn_client.py ws://127.0.0.1:9001 [AGENT]
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import quote

from websockets.exceptions import ConnectionClosed

from wsgate.client.dial import DialOptions, dial
from wsgate.errors import Failure

AGENT = "wsgate connect"


async def case_count(server: str) -> int:
    connection = await dial(DialOptions(url=f"{server}/getCaseCount", ping_interval=None))
    try:
        return int(await connection.recv())
    finally:
        await connection.close()


async def run_case(server: str, case: int, agent: str) -> None:
    """Echo every message of one case, text as text and binary as binary, until it ends."""
    try:
        url = f"{server}/runCase?case={case}&agent={quote(agent)}"
        connection = await dial(DialOptions(url=url, ping_interval=None))
    except Failure:
        return  # a case may fail the opening handshake on purpose
    try:
        async for message in connection:
            await connection.send(message)
    except ConnectionClosed:
        pass


async def update_reports(server: str, agent: str) -> None:
    connection = await dial(DialOptions(url=f"{server}/updateReports?agent={quote(agent)}",
                                        ping_interval=None))
    await connection.close()


async def main(server: str, agent: str) -> None:
    count = await case_count(server)
    for case in range(1, count + 1):
        await run_case(server, case, agent)
    await update_reports(server, agent)


if __name__ == "__main__":
    if not 2 <= len(sys.argv) <= 3:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else AGENT))
