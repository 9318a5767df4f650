"""A small HTTP/2 client for the tests (PyPI `h2`, pinned in requirements.txt), over h2c (prior
knowledge) or TLS with ALPN h2. It sends exactly what a test gives: repeated fields (two
`authorization`, split `cookie`), a body in several DATA frames with pauses, request trailers.
One connection per request, so a refused stream cannot disturb the next case."""

from __future__ import annotations

import socket
import ssl
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from harness import Response


class H2Client:
    def __init__(self, port: int, tls: bool = False, timeout: float = 10.0):
        self.port, self.tls, self.timeout = port, tls, timeout

    def _connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname="tokengate.test")
            if sock.selected_alpn_protocol() != "h2":
                raise AssertionError(f"ALPN chose {sock.selected_alpn_protocol()!r}, not h2")
        return sock

    def request(self, method: str, path, headers=(), chunks=None, trailers=None, pause: float = 0.0,
                authority: str = "tokengate.test") -> Response:
        """headers/trailers: (name, value) pairs, sent as given (names lower-case). chunks: the
        body as a list of DATA frames (None: no body). pause: seconds between frames."""
        sock = self._connect()
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=False, normalize_outbound_headers=False,
                                        validate_inbound_headers=False)
        conn = h2.connection.H2Connection(config=cfg)
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        sid = conn.get_next_available_stream_id()
        pseudo = [(":method", method), (":scheme", "https" if self.tls else "http"), (":authority", authority),
                  (":path", path)]
        chunks = list(chunks or [])
        status, rheaders, body, done = None, [], b"", False
        try:
            conn.send_headers(sid, pseudo + list(headers), end_stream=not chunks and not trailers)
            sock.sendall(conn.data_to_send())
            for i, c in enumerate(chunks):
                if pause and i:
                    time.sleep(pause)
                    # an early answer (a refusal) may have arrived: stop sending then
                    sock.setblocking(False)
                    try:
                        data = sock.recv(65536)
                    except (BlockingIOError, ssl.SSLWantReadError):
                        data = None
                    finally:
                        sock.setblocking(True)
                        sock.settimeout(self.timeout)
                    if data is not None:
                        status, rheaders, body, done = self._events(conn, conn.receive_data(data), sid,
                                                                    status, rheaders, body)
                        sock.sendall(conn.data_to_send())
                        if done or status is not None:
                            break
                conn.send_data(sid, c, end_stream=(i == len(chunks) - 1 and not trailers))
                sock.sendall(conn.data_to_send())
            else:
                if trailers:
                    conn.send_headers(sid, list(trailers), end_stream=True)
                    sock.sendall(conn.data_to_send())
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, BrokenPipeError, ConnectionResetError):
            pass  # the server answered (and closed the stream) before the request was sent whole
        try:
            while not done:
                data = sock.recv(65536)
                if not data:
                    break
                status, rheaders, body, done = self._events(conn, conn.receive_data(data), sid, status, rheaders, body)
                out = conn.data_to_send()
                if out:
                    try:
                        sock.sendall(out)
                    except OSError:
                        pass
        finally:
            sock.close()
        if status is None:
            raise AssertionError(f"no HTTP/2 response for {method} {path!r}")
        return Response(status, "", rheaders, body, b"")

    @staticmethod
    def _events(conn, events, sid, status, rheaders, body):
        done = False
        for ev in events:
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                for k, v in ev.headers:
                    k = k.decode() if isinstance(k, bytes) else k
                    v = v.decode() if isinstance(v, bytes) else v
                    if k == ":status":
                        status = int(v)
                    else:
                        rheaders.append((k, v))
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and ev.stream_id == sid:
                done = True
                if isinstance(ev, h2.events.StreamReset) and status is None:
                    status = 0  # reset without an answer
            elif isinstance(ev, h2.events.ConnectionTerminated):
                done = True
        return status, rheaders, body, done
