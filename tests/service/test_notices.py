"""Notices to --notify-url and the unused-token auto-revoke (SPEC §19), with a webhook receiver
that is down for a while."""

import http.server
import json
import sqlite3
import threading
import time

import service
from service import Server, wait_for

DAY = 86_400_000


class Receiver:
    """A webhook receiver on a fixed port that can be started late and stopped."""

    def __init__(self):
        self.port = service.free_port()
        self.got = []
        self.httpd = None

    def start(self):
        got = self.got

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got.append((self.headers.get("x-tokengate-notice"), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def age(db_path, token_id, days):
    con = sqlite3.connect(db_path, timeout=10)
    con.execute("UPDATE tokens SET created_at = created_at - ? WHERE id = ?", (days * DAY, token_id))
    con.commit()
    con.close()


def test_each_event_is_noticed_once_even_after_the_receiver_was_down(tmp_path, started):
    rx = Receiver()
    started(rx)
    db = tmp_path / "n.db"
    srv = Server(str(tmp_path / "s"), f"sqlite://{db}",
                 extra_args=["--notify-url", f"http://127.0.0.1:{rx.port}/hook", "--notify-scan-seconds", "1",
                             "--unused-notice-days", "30"])
    started(srv).start()
    now = int(time.time() * 1000)
    srv.create(name="soon", id="soon", user="a", expires=iso(now + 2 * DAY))
    srv.create(name="later", id="later", user="a", expires=iso(now + 10 * DAY))
    srv.create(name="far", id="far", user="a", expires=iso(now + 40 * DAY))
    srv.create(name="idle", id="idle", user="a")
    srv.create(name="gone", id="gone", user="a")
    age(db, "idle", 45)
    srv.ok("POST", "/api/v1/tokens/gone/revoke")
    time.sleep(4)  # several scans while the receiver is down: queued, retried
    assert rx.got == []
    rx.start()
    wait_for(lambda: len(rx.got) >= 4, 30, 0.1, "notices delivered after the receiver came up")
    time.sleep(3)  # more scans: nothing twice
    events = sorted((b["event"], b["token_id"]) for _, b in rx.got)
    assert events == [("token.expiring", "later"), ("token.expiring", "soon"), ("token.revoked", "gone"),
                      ("token.unused", "idle")], rx.got
    by = {b["token_id"]: b for _, b in rx.got}
    assert by["soon"]["days"] == 3 and by["later"]["days"] == 14 and by["idle"]["days"] == 30
    assert all(b["at"].endswith("Z") for b in by.values())
    assert len({seq for seq, _ in rx.got}) == len(rx.got)
    # A receiver that fails (here: gone again) gets the next notice once it is back.
    rx.stop()
    srv.ok("POST", "/api/v1/tokens/far/revoke")
    time.sleep(2.5)
    rx.start()
    wait_for(lambda: any(b["token_id"] == "far" for _, b in rx.got), 30, 0.1, "the later notice")
    time.sleep(2)
    assert [b["event"] for _, b in rx.got if b["token_id"] == "far"] == ["token.revoked"]


def test_auto_revoke_revokes_only_unused_tokens(tmp_path, started):
    db = tmp_path / "r.db"
    srv = Server(str(tmp_path / "s"), f"sqlite://{db}",
                 extra_args=["--revoke-unused-after-days", "30", "--notify-scan-seconds", "1"])
    started(srv).start()
    for tid in ("stale", "used", "fresh", "expired-old"):
        srv.create(name=tid, id=tid, user="a", **({"expires": "2020-01-01T00:00:00Z"} if tid == "expired-old" else {}))
    age(db, "stale", 40)
    age(db, "used", 40)
    age(db, "expired-old", 40)
    con = sqlite3.connect(db, timeout=10)
    con.execute("INSERT INTO token_usage (token_id, calls, allowed, denied, last_used_at) VALUES ('used', 1, 1, 0, ?)",
                (int(time.time() * 1000) - 2 * DAY,))
    con.commit()
    con.close()
    wait_for(lambda: srv.ok("GET", "/api/v1/tokens/stale")["status"] == "revoked", 10, 0.2, "stale revoked")
    time.sleep(2)
    status = {t["id"]: t["status"] for t in srv.ok("GET", "/api/v1/tokens")["tokens"]}
    assert status == {"stale": "revoked", "used": "active", "fresh": "active", "expired-old": "expired"}, status
    log = [e for e in srv.ok("GET", "/api/v1/admin-log")["entries"] if e["action"] == "token.revoke"]
    assert [(e["admin"], e["target"]) for e in log] == [("tokengate-server", "stale")]
    assert "30 days" in log[0]["detail"]
