#!/usr/bin/env python3
"""psycopg 3 scenarios for the PostgreSQL root tests (run under `interceptor run`).

  pg_client.py SCENARIO PORT      prints one JSON object with what the scenario observed

The agent connects to 127.0.0.2:PORT with a user and password the interceptor ignores.
Scenarios: extended, copy, cancel, rowlimit.
"""
import json
import sys
import threading
import time

import psycopg
from psycopg import errors

PORT = int(sys.argv[2])
CONNINFO = (
    f"host=127.0.0.2 port={PORT} user=agent password=wrong-password dbname=anything "
    "connect_timeout=20"
)


def err(e):
    return {"class": type(e).__name__, "sqlstate": e.sqlstate, "message": str(e)}


def extended():
    r = {}
    with psycopg.connect(CONNINFO, autocommit=True) as conn:
        # Parameterised SELECT (Parse/Bind/Describe/Execute/Sync, text results).
        cur = conn.execute(
            "SELECT id, name, email, ssn FROM users WHERE id = %s", (2,)
        )
        r["select"] = cur.fetchall()
        r["select_rowcount"] = cur.rowcount
        # The same with binary results.
        bcur = conn.cursor(binary=True)
        bcur.execute("SELECT id, email, ssn, note FROM users WHERE id = %s", (2,))
        r["binary"] = bcur.fetchall()
        # Denied via Parse: 42501, and the connection stays usable.
        try:
            conn.execute("DELETE FROM orders WHERE id = %s", (1,))
            r["denied"] = None
        except errors.InsufficientPrivilege as e:
            r["denied"] = err(e)
        r["after_denied"] = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
        # Prepared statement reuse: named statement, executed several times.
        emails = []
        for i in (123456789, 2, 3, 2):
            row = conn.execute(
                "SELECT email FROM users WHERE id = %s", (i,), prepare=True
            ).fetchone()
            emails.append(row[0])
        r["prepared"] = emails
        r["server_prepared"] = conn.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql"
        ).fetchone()[0]
        # executemany (pipelined Bind/Execute) into the writable table.
        with conn.cursor() as c:
            c.executemany(
                "INSERT INTO imports (id, email, note) VALUES (%s, %s, %s)",
                [(i, f"person{i}@example.net", f"row {i}") for i in range(1, 21)],
            )
            r["executemany_rowcount"] = c.rowcount
        r["imports"] = conn.execute(
            "SELECT count(*), min(email) FROM imports"
        ).fetchone()
        # A denied executemany fails as a whole.
        try:
            with conn.cursor() as c:
                c.executemany(
                    "UPDATE orders SET total = %s WHERE id = %s", [(0, 1), (0, 2)]
                )
            r["denied_many"] = None
        except errors.InsufficientPrivilege as e:
            r["denied_many"] = err(e)
        r["after_denied_many"] = conn.execute("SELECT 'still usable'").fetchone()[0]
    # A transaction (psycopg's default): the denial aborts it like any error.
    with psycopg.connect(CONNINFO) as conn:
        conn.execute("SELECT 1")
        try:
            conn.execute("DELETE FROM orders WHERE user_id = %s", (1,))
        except errors.InsufficientPrivilege as e:
            r["tx_denied"] = err(e)
        try:
            conn.execute("SELECT 1")
            r["tx_after"] = "not aborted"
        except errors.InFailedSqlTransaction as e:
            r["tx_after"] = err(e)
        conn.rollback()
        r["tx_rolled_back"] = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    return r


def copy():
    r = {}
    with psycopg.connect(CONNINFO, autocommit=True) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY imports (id, email, note) FROM STDIN") as cp:
                for i in range(100, 110):
                    cp.write_row((i, f"copy{i}@example.com", "from psycopg"))
            r["copy_in_rowcount"] = cur.rowcount
        r["copied"] = conn.execute(
            "SELECT count(*) FROM imports WHERE note = 'from psycopg'"
        ).fetchone()[0]
        try:
            with conn.cursor() as cur:
                with cur.copy("COPY users TO STDOUT") as cp:
                    r["copy_out_rows"] = [bytes(b).decode() for b in cp]
        except errors.InsufficientPrivilege as e:
            r["copy_out"] = err(e)
        try:
            with conn.cursor() as cur:
                with cur.copy("COPY orders FROM STDIN") as cp:
                    cp.write_row((999, 1, 1))
            r["copy_in_denied"] = None
        except errors.InsufficientPrivilege as e:
            r["copy_in_denied"] = err(e)
        r["after"] = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    return r


def cancel():
    r = {}
    with psycopg.connect(CONNINFO, autocommit=True) as conn:
        done = threading.Event()
        sent = []

        def canceller():
            # Cancel until the query has returned: a cancel that arrives before the
            # query starts is a no-op, so repeat it.
            while not done.wait(0.5):
                if hasattr(conn, "cancel_safe"):
                    conn.cancel_safe(timeout=10)
                else:
                    conn.cancel()
                sent.append(time.monotonic())

        t = threading.Thread(target=canceller, daemon=True)
        start = time.monotonic()
        t.start()
        try:
            conn.execute("SELECT pg_sleep(30)")
            r["result"] = "not cancelled"
        except errors.QueryCanceled as e:
            r["result"] = err(e)
        finally:
            done.set()
        r["elapsed_s"] = round(time.monotonic() - start, 2)
        t.join()
        r["cancels_sent"] = len(sent)
        r["after"] = conn.execute("SELECT 'usable after cancel'").fetchone()[0]
    return r


def rowlimit():
    r = {}
    notices = []
    with psycopg.connect(CONNINFO, autocommit=True) as conn:
        conn.add_notice_handler(
            lambda d: notices.append(
                {"severity": d.severity, "sqlstate": d.sqlstate, "message": d.message_primary}
            )
        )
        cur = conn.execute("SELECT id FROM orders WHERE id > %s ORDER BY id", (0,))
        rows = cur.fetchall()
        r["extended_rows"] = len(rows)
        r["extended_rowcount"] = cur.rowcount
        r["extended_last"] = rows[-1][0] if rows else None
        small = conn.execute("SELECT id FROM orders WHERE id <= %s", (3,)).fetchall()
        r["small_rows"] = len(small)
    r["notices"] = notices
    return r


SCENARIOS = {"extended": extended, "copy": copy, "cancel": cancel, "rowlimit": rowlimit}

if __name__ == "__main__":
    result = SCENARIOS[sys.argv[1]]()
    result["psycopg"] = f"{psycopg.__version__} ({sys.executable})"
    print(json.dumps(result, default=str), flush=True)
