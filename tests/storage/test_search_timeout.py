"""PostgreSQL: a search on the event-loop reader that runs longer than
`search_timeout_seconds` is cancelled by the database (statement_timeout) and answered
503 `timeout`, once: a cancelled statement is not a lost connection, so it is not run again
(before, asyncpg's QueryCanceledError counted as one and the reader re-ran the query: an
operator's pg_cancel_backend of a runaway search started it over)."""

from __future__ import annotations

import asyncio
import time

import pytest

from fhir_server.errors import FhirError
from fhir_server.storage import faults


def test_a_cancelled_statement_is_a_503_timeout_and_not_a_lost_connection():
    class Canceled(Exception):
        sqlstate = "57014"

    assert not faults.is_connection_error(Canceled())
    answer = faults.classify(Canceled())
    assert answer.status == 503 and answer.issues[0].code == "timeout"


def test_a_slow_search_statement_is_cancelled_once_and_the_connection_kept(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL reader only")
    from fhir_server.storage.async_reads import PgReader

    runs = []

    async def go():
        reader = PgReader(database_url, 2, search_timeout_seconds=0.2)
        await reader.open()
        try:
            async def slow(conn):
                runs.append(conn)
                return await conn.fetch("SELECT pg_sleep(2)")

            started = time.monotonic()
            with pytest.raises(FhirError) as caught:
                await reader._run(slow, search=True)
            elapsed = time.monotonic() - started
            after = await reader.fetch("SELECT 1", ())  # the same connection, still usable
            by_id = await reader._run(lambda c: c.fetchval("SHOW statement_timeout"))  # reads by id: no limit
            return caught.value, elapsed, after, by_id
        finally:
            await reader.close()

    err, elapsed, after, by_id = asyncio.run(go())
    assert err.status == 503 and err.issues[0].code == "timeout"
    assert len(runs) == 1 and elapsed < 1.5  # cancelled at 0.2 s, not run a second time
    assert list(after[0]) == [1] and by_id == "0"
