# asyncio_echo: an asyncio TCP echo server and a client in one event loop,
# N round trips over loopback (hack/bench-time.sh).
import asyncio
import sys


async def main(n):
    async def echo(reader, writer):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(n):
        writer.write(b"ping %d\n" % i)
        await writer.drain()
        await reader.readline()
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()


asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))
