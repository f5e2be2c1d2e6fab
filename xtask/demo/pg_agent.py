#!/usr/bin/env python3
"""A stand-in for an AI agent's database tool: psycopg 3, a plain connection string.

Run by `cargo xtask demo` under `interceptor run`. It believes it talks to its CRM database
at 127.0.0.2:PORT with the password it was given (a wrong one: the interceptor logs in with
the real secret, which the agent never sees).

  pg_agent.py PORT
"""
import sys

import psycopg
from psycopg import errors

port = int(sys.argv[1])
password = "password-the-agent-was-given"


def show(cur):
    cols = [d.name for d in cur.description]
    rows = [["NULL" if v is None else str(v) for v in r] for r in cur.fetchall()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    widths = [min(w, 60) for w in widths]
    fmt = "    " + " | ".join("%%-%ds" % w for w in widths)
    print((fmt % tuple(cols)).rstrip())
    print("    " + "-+-".join("-" * w for w in widths))
    for r in rows:
        print((fmt % tuple(v[:60] for v in r)).rstrip())
    print("    (%d row%s)" % (len(rows), "" if len(rows) == 1 else "s"))


print(f"  agent: connecting to 127.0.0.2:{port} as user \"support-bot\", password {password!r}")
with psycopg.connect(
    host="127.0.0.2",
    port=port,
    user="support-bot",
    password=password,
    dbname="crm",
    autocommit=True,
    connect_timeout=10,
) as conn:
    q = "SELECT id, name, email, phone, card_number, ssn, notes FROM customers WHERE id <= %s ORDER BY id"
    print(f"\n  agent> {q}   -- with %s = 6")
    show(conn.execute(q, (6,)))

    q = "DELETE FROM customers WHERE id = %s"
    print(f"\n  agent> {q}   -- with %s = 3")
    try:
        conn.execute(q, (3,))
        print("    deleted?! (the policy should have denied this)")
    except errors.InsufficientPrivilege as e:
        print(f"    ERROR {e.sqlstate} ({type(e).__name__}): {e.diag.message_primary}")
        if e.diag.message_hint:
            print(f"    HINT: {e.diag.message_hint}")

    q = "SELECT count(*) AS customers FROM customers"
    print(f"\n  agent> {q}   -- the session goes on after the denial")
    show(conn.execute(q))
