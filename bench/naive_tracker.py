"""An open tracker as people write it in an afternoon: the baseline that bench/pixel.py compares with.

Flask on its own development server (threaded, as ``app.run()`` and ``flask run`` start it), SQLite with
its default settings (rollback journal, ``synchronous=FULL``), and for every pixel a fresh connection, one
INSERT and one commit. That is durable, like deadpixel, but every open pays for its own transaction and
fsyncs, and the threads queue on SQLite's single write lock.

    python bench/naive_tracker.py --port 8001 --db /tmp/naive.db
"""

from __future__ import annotations

import argparse
import base64
import sqlite3
import time

from flask import Flask, Response, request

# The same 43-byte transparent GIF and no-cache headers that deadpixel answers with.
GIF = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS opens (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL,
    at REAL NOT NULL,
    ip TEXT,
    user_agent TEXT
)
"""


def create_app(db_path: str) -> Flask:
    app = Flask(__name__)
    with sqlite3.connect(db_path) as db:
        db.execute(SCHEMA)

    @app.get("/o/<token>.gif")
    def pixel(token: str) -> Response:
        db = sqlite3.connect(db_path)
        try:
            db.execute(
                "INSERT INTO opens (token, at, ip, user_agent) VALUES (?, ?, ?, ?)",
                (token, time.time(), request.remote_addr, request.headers.get("User-Agent")),
            )
            db.commit()
        finally:
            db.close()
        return Response(GIF, mimetype="image/gif", headers=NO_CACHE)

    @app.get("/healthz")
    def healthz() -> str:
        return "ok\n"

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="A naive Flask + SQLite open tracker.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--db", default="naive.db", help="SQLite file (created if missing).")
    args = parser.parse_args()
    create_app(args.db).run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
