"""A psycopg 3 client run twice by the integration tests: directly and through Tandem.

Prints one JSON document of everything it observed; the test compares the two runs.
Usage: psycopg_check.py DSN TABLE
"""

import json
import sys

import psycopg


def main() -> None:
    dsn, table = sys.argv[1], sys.argv[2]
    seen = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text, score numeric, at date)")
        with conn.cursor() as cur:
            # Server-side prepared statements (psycopg prepares after repeated use or prepare=True).
            for i in range(20):
                cur.execute(
                    f"INSERT INTO {table} VALUES (%s, %s, %s, %s)",
                    (i, f"name {i}", i * 1.5, "2026-01-%02d" % (i % 28 + 1)),
                    prepare=True,
                )
            cur.executemany(f"UPDATE {table} SET score = score + %s WHERE id = %s", [(1, i) for i in range(5)])
            seen["rowcount_update"] = cur.rowcount
            # COPY in, row by row, binary-safe text.
            with cur.copy(f"COPY {table} (id, name, score, at) FROM STDIN") as copy:
                for i in range(100, 1100):
                    copy.write_row((i, f"copied\t{i}", i, None))
            seen["copy_in_rowcount"] = cur.rowcount
            # COPY out.
            out = bytearray()
            with cur.copy(f"COPY (SELECT id, name FROM {table} WHERE id >= 1090 ORDER BY id) TO STDOUT") as copy:
                for chunk in copy:
                    out += chunk
            seen["copy_out"] = out.decode()
            # Binary results via a prepared statement.
            cur.execute(f"SELECT id, name, score, at FROM {table} WHERE id < %s ORDER BY id", (3,), binary=True, prepare=True)
            seen["binary_rows"] = [[str(v) for v in row] for row in cur.fetchall()]
            seen["description"] = [(d.name, d.type_code) for d in cur.description]
            # An error inside a transaction, then recovery.
            try:
                with conn.transaction():
                    cur.execute(f"INSERT INTO {table} VALUES (1, 'dup', 0, NULL)")
            except psycopg.errors.UniqueViolation as e:
                seen["error"] = [e.sqlstate, e.diag.message_primary, e.diag.message_detail, e.diag.constraint_name]
            cur.execute(f"SELECT count(*), sum(score) FROM {table}")
            seen["totals"] = [str(v) for v in cur.fetchone()]
        conn.execute(f"DROP TABLE {table}")
    print(json.dumps(seen, sort_keys=True))


if __name__ == "__main__":
    main()
