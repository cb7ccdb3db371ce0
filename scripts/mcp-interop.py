"""Helpers for scripts/check-mcp-interop, run with the Python `mcp` client's venv.

  client-stdio CMD...          list tools and call two through the Python MCP client over stdio
  client-http URL TOKEN        the same over Streamable HTTP with a Bearer token
  forward PORT TARGET TOKEN    an HTTP forwarder that adds `Authorization: Bearer TOKEN`
                               (the conformance suite cannot send one); Host and Origin
                               pass through unchanged, bodies and SSE streams are streamed

Each client check prints one line per step and exits non-zero on the first failure.
"""

import asyncio
import http.client
import http.server
import json
import sys
import urllib.parse


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


async def exercise(session, remote):
    await session.initialize()
    tools = (await session.list_tools()).tools
    names = [t.name for t in tools]
    expected = "list_devices" if remote else "rename_batch"
    if expected not in names:
        fail(f"tools/list has no {expected}: {names}")
    print(f"ok  tools/list: {len(names)} tools, {expected} among them")
    if remote:
        out = await session.call_tool("list_devices", {})
        devices = out.structured_content["devices"]
        if not devices:
            fail("list_devices is empty; the demo device should be there")
        print(f"ok  list_devices: {[d['name'] for d in devices]}")
        out = await session.call_tool("glob", {"device": devices[0]["id"], "pattern": "*.md"})
    else:
        out = await session.call_tool("list_directory", {})
    if out.is_error:
        fail(f"the call failed: {out.content}")
    print(f"ok  tools/call: structuredContent has {sorted(out.structured_content)}")
    out = await session.call_tool("read_file", {"path": "../../etc/passwd", **({"device": devices[0]["id"]} if remote else {})})
    if not out.is_error or out.structured_content.get("code") != "outside_scope":
        fail(f"an escape should be an isError result with outside_scope: {out}")
    print("ok  an escape is an isError result with code outside_scope")


async def client_stdio(command):
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=command[0], args=command[1:])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await exercise(session, remote=False)


async def client_http(url, token):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, streamable_http_client(url, http_client=http) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await exercise(session, remote=True)


def forward(port, target, token):
    base = urllib.parse.urlsplit(target)

    class Forward(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def relay(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
            upstream = http.client.HTTPConnection(base.hostname, base.port, timeout=120)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "authorization")}
            headers["Authorization"] = f"Bearer {token}"
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            self.send_response(response.status)
            for k, v in response.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            while True:
                chunk = response.read1(65536)
                if not chunk:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

        do_GET = do_POST = do_DELETE = relay

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Forward)
    print(f"forwarding 127.0.0.1:{port} to {target}", flush=True)
    server.serve_forever()


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    what, rest = sys.argv[1], sys.argv[2:]
    if what == "client-stdio":
        asyncio.run(client_stdio(rest))
    elif what == "client-http":
        asyncio.run(client_http(rest[0], rest[1]))
    elif what == "forward":
        forward(int(rest[0]), rest[1], rest[2])
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
