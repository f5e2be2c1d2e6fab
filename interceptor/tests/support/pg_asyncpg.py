#!/usr/bin/env python3
"""asyncpg scenario for the PostgreSQL root tests (run under `interceptor run`).

  pg_asyncpg.py PORT      prints one JSON object with what the scenario observed

asyncpg speaks only the extended protocol with named statements and binary results (and
the simple protocol for `execute` without arguments): the agent connects to 127.0.0.2:PORT
with a user and password the interceptor ignores.
"""
import asyncio
import json
import sys

import asyncpg

PORT = int(sys.argv[1])


def err(e):
    return {"class": type(e).__name__, "sqlstate": e.sqlstate, "message": str(e)}


async def denied(coro):
    try:
        await coro
        return None
    except asyncpg.PostgresError as e:
        return err(e)


async def main():
    r = {}
    conn = await asyncpg.connect(
        host="127.0.0.2", port=PORT, user="agent", password="wrong-password",
        database="anything", ssl=False, timeout=20,
    )
    # Named statement, binary results: masked text columns arrive masked.
    rows = await conn.fetch(
        "SELECT id, name, email, ssn, note FROM users WHERE id = $1", 2
    )
    r["select"] = [list(x) for x in rows]
    # An explicitly prepared statement executed several times.
    stmt = await conn.prepare("SELECT email FROM users WHERE id = $1")
    r["prepared"] = [await stmt.fetchval(i) for i in (123456789, 2, 3, 2)]
    r["all"] = [list(x) for x in await conn.fetch("SELECT id, email, ssn FROM users ORDER BY id")]
    # Denied through Parse, then through a simple Query; the connection goes on.
    r["denied"] = await denied(conn.execute("DELETE FROM orders WHERE id = $1", 1))
    r["denied_simple"] = await denied(conn.execute("DELETE FROM orders"))
    r["after_denied"] = await conn.fetchval("SELECT count(*) FROM orders")
    # executemany into the writable table: stored as sent, masked on the way back.
    await conn.executemany(
        "INSERT INTO imports (id, email, note) VALUES ($1, $2, $3)",
        [(i, f"async{i}@example.net", "batch") for i in range(10)],
    )
    r["imports"] = await conn.fetchval(
        "SELECT count(*) FROM imports WHERE note = 'batch'"
    )
    r["imports_email"] = await conn.fetchval(
        "SELECT email FROM imports WHERE id = 7 AND note = 'batch'"
    )
    # A cursor fetching one row per Execute (PortalSuspended between them), in a transaction.
    async with conn.transaction():
        r["cursor"] = [
            row["email"]
            async for row in conn.cursor("SELECT email FROM users ORDER BY id", prefetch=1)
        ]
    # A denial inside a transaction aborts it; asyncpg rolls back.
    try:
        async with conn.transaction():
            await conn.fetchval("SELECT count(*) FROM orders")
            await conn.execute("DELETE FROM orders WHERE id = $1", 2)
        r["tx_denied"] = None
    except asyncpg.PostgresError as e:
        r["tx_denied"] = err(e)
    r["tx_after"] = await conn.fetchval("SELECT count(*) FROM orders")
    # COPY … FROM STDIN in binary format (asyncpg reads the table's columns first).
    r["copy_in"] = await conn.copy_records_to_table(
        "imports", records=[(100 + i, f"copy{i}@example.net", "copied") for i in range(5)]
    )
    # COPY … TO STDOUT would return rows unmasked: denied under masking.
    sink = []
    r["copy_out"] = await denied(conn.copy_from_query("SELECT id, email FROM users", output=sink.append))
    r["copy_out_chunks"] = len(sink)
    r["after_copy"] = await conn.fetchval("SELECT count(*) FROM imports")
    await conn.close()
    print(json.dumps(r, default=str))


asyncio.run(main())
