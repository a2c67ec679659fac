"""notes: a small sqlite-backed HTTP service (the standard library only).

    python3 /srv/notes.py PORT DB

POST /notes with a body stores a note, stamped with the time and a random
id, and answers it as JSON; GET /notes lists every note; GET /notes/ID one.
ThreadingHTTPServer: a thread per connection, each with its own sqlite
connection, as a small real service is written.
"""
import json
import sqlite3
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DB = sys.argv[2]
lock = threading.Lock()  # one writer at a time, as sqlite wants


def db():
    c = sqlite3.connect(DB, timeout=30)
    c.row_factory = sqlite3.Row
    return c


class Notes(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, code, obj):
        body = (json.dumps(obj, sort_keys=True) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        text = self.rfile.read(n).decode()
        note = {"id": str(uuid.uuid4()), "at": time.time(), "text": text}
        with lock, db() as c:
            c.execute("INSERT INTO notes (id, at, text) VALUES (?, ?, ?)", (note["id"], note["at"], text))
            note["n"] = c.execute("SELECT COUNT(*) FROM notes").fetchone()[0]
        self.answer(201, note)

    def do_GET(self):
        with db() as c:
            if self.path == "/notes":
                rows = c.execute("SELECT id, at, text FROM notes ORDER BY at, id").fetchall()
                return self.answer(200, [dict(r) for r in rows])
            key = self.path.removeprefix("/notes/")
            r = c.execute("SELECT id, at, text FROM notes WHERE id = ?", (key,)).fetchone()
            if r is None:
                return self.answer(404, {"error": "no note " + key})
            self.answer(200, dict(r))


with db() as c:
    c.execute("CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, at REAL, text TEXT)")
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Notes).serve_forever()
