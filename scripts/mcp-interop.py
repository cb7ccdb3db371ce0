"""Helpers for scripts/check-mcp-interop, run with the Python `mcp` client's venv.

  client-stdio CMD...          list tools and call two through the Python MCP client over stdio;
                               with a big.bin in the --root folder, hash it and check that
                               progress notifications count its bytes
  client-http URL TOKEN [BIG]  the same over Streamable HTTP with a Bearer token; with BIG (a
                               file in the demo device's folder), hash it on the device and
                               check the progress notifications
  client-oauth URL EMAIL PASS  the same, signed in with the client's own OAuth support: it
                               discovers the app's authorization server, registers, and sends
                               the person to the consent page, which this script answers as
                               that person (EMAIL, PASS) would in a browser
  allow BASE EMAIL PASS        reads lines on stdin until one is an authorization URL of BASE,
                               allows it as that person, and follows the redirect (for the
                               conformance suite's authorization-server scenarios)
  register BASE REDIRECT_URI   registers a public OAuth client (RFC 7591); prints its client_id
  forward PORT TARGET TOKEN    an HTTP forwarder that adds `Authorization: Bearer TOKEN`
                               (the conformance suite cannot send one); Host and Origin
                               pass through unchanged, bodies and SSE streams are streamed

Each client check prints one line per step and exits non-zero on the first failure.
"""

import asyncio
import html
import http.client
import http.server
import json
import os
import re
import sys
import urllib.parse
import urllib.request


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


async def progress(session, path, device=None):
    """hash_file on a file that takes seconds to hash, with a progress callback: the tool's
    own count arrives, of the file's size, and only rises. On the app's /mcp
    the count comes from the device, through the server."""
    size = os.path.getsize(path)
    seen = []

    async def heard(progress, total, message):
        seen.append((progress, total, message))

    args = {"path": os.path.basename(path), **({"device": device} if device else {})}
    out = await session.call_tool("hash_file", args, progress_callback=heard)
    if out.is_error:
        fail(f"hash_file failed: {out.content}")
    counted = [p for p in seen if p[1] == size and p[2] and "bytes hashed" in p[2]]
    if not counted:
        fail(f"no progress notification counted bytes of {size}: {seen}")
    if any(b[0] <= a[0] for a, b in zip(seen, seen[1:])):
        fail(f"progress went back: {seen}")
    print(f"ok  hash_file of {size} bytes: {len(seen)} progress notifications, e.g. {counted[-1][2]!r}")


async def client_stdio(command):
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=command[0], args=command[1:])
    root = command[command.index("--root") + 1] if "--root" in command else None
    big = os.path.join(root, "big.bin") if root else None
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await exercise(session, remote=False)
            if big and os.path.exists(big):
                await progress(session, big)


async def client_http(url, token, big=None):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, streamable_http_client(url, http_client=http) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await exercise(session, remote=True)
            if big:
                devices = (await session.call_tool("list_devices", {})).structured_content["devices"]
                await progress(session, big, device=devices[0]["id"])


async def person_allows(base, email, password, authorization_url):
    """The person in the browser: signs in, reads the consent page, allows;
    returns where the browser is sent (the client's redirect URI and code)."""
    import httpx2 as httpx

    async with httpx.AsyncClient(follow_redirects=False) as browser:
        page = await browser.get(f"{base}/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        signed_in = await browser.post(f"{base}/signin", data={"email": email, "password": password, "csrf": csrf})
        if signed_in.status_code != 303:
            fail(f"signing in as {email} answered {signed_in.status_code}")
        consent = await browser.get(authorization_url)
        if consent.status_code != 200 or "Allow" not in consent.text:
            fail(f"the consent page answered {consent.status_code}: {consent.text[:300]}")
        form = consent.text.split('action="/oauth/authorize"', 1)[1].split("</form>", 1)[0]
        fields = {
            name: html.unescape(value)
            for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)
        }
        fields.update(decision="allow", propose="on")
        answer = await browser.post(f"{base}/oauth/authorize", data=fields)
        if answer.status_code != 303:
            fail(f"allowing answered {answer.status_code}: {answer.text[:300]}")
        print("ok  the consent page named the client; the person allowed it", flush=True)
        return answer.headers["location"]


async def allow(base, email, password, lines):
    """Waits for an authorization URL among `lines` (the conformance suite
    prints one), allows it as the person, and follows the redirect to the
    suite's callback listener."""
    import httpx2 as httpx

    for line in lines:
        line = line.strip()
        if line.startswith(f"{base}/oauth/authorize?"):
            location = await person_allows(base, email, password, line)
            async with httpx.AsyncClient() as browser:
                await browser.get(location)
            print("ok  the browser went back to the callback", flush=True)
            for _ in lines:  # the rest of the suite's output, so it never writes to a closed pipe
                pass
            return
    fail("no authorization URL was printed")


async def client_oauth(url, email, password):
    from mcp import ClientSession
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

    class Memory:
        tokens = None
        client = None

        async def get_tokens(self):
            return self.tokens

        async def set_tokens(self, tokens):
            self.tokens = tokens

        async def get_client_info(self):
            return self.client

        async def set_client_info(self, client):
            self.client = client

    base = url.rsplit("/mcp", 1)[0]
    landed = {}

    async def redirect_handler(authorization_url):
        landed["url"] = await person_allows(base, email, password, authorization_url)

    async def callback():
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(landed["url"]).query)
        if "code" not in query:
            fail(f"the redirect carries no code: {landed['url']}")
        return AuthorizationCodeResult(
            code=query["code"][0], state=query.get("state", [None])[0], iss=query.get("iss", [None])[0]
        )

    storage = Memory()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="Python MCP client (interop check)",
            redirect_uris=["http://127.0.0.1:9/callback"],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback,
    )
    http = create_mcp_http_client(auth=provider)
    async with http, streamable_http_client(url, http_client=http) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await exercise(session, remote=True)
    token = storage.tokens.access_token if storage.tokens else ""
    if not token.startswith("fha_"):
        fail(f"the client did not end up with an OAuth access token: {storage.tokens}")
    print(f"ok  signed in with OAuth: client {storage.client.client_id}, scope {storage.tokens.scope}")


def register(base, redirect_uri):
    request = urllib.request.Request(
        f"{base}/oauth/register",
        data=json.dumps({"client_name": "MCP conformance suite", "redirect_uris": [redirect_uri]}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        print(json.load(response)["client_id"])


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
        asyncio.run(client_http(rest[0], rest[1], rest[2] if len(rest) > 2 else None))
    elif what == "register":
        register(rest[0], rest[1])
    elif what == "allow":
        asyncio.run(allow(rest[0], rest[1], rest[2], sys.stdin))
    elif what == "client-oauth":
        asyncio.run(client_oauth(rest[0], rest[1], rest[2]))
    elif what == "forward":
        forward(int(rest[0]), rest[1], rest[2])
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
