"""The `fhir-server` command: serve, load, migrate, and HL7 v2 tools."""

from __future__ import annotations

import logging
import os

import typer

app = typer.Typer(help="FHIR R4 interoperability server", no_args_is_help=True)
hl7 = typer.Typer(help="HL7 v2 interface tools", no_args_is_help=True)
app.add_typer(hl7, name="hl7")


def _settings(database_url: str | None):
    from .config import Settings

    if database_url:
        os.environ["FHIR_SERVER_DATABASE_URL"] = database_url
    return Settings()


def _where(url: str) -> str:
    """host:port/database of a database URL (never its password)."""
    from sqlalchemy import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"SQLite file {u.database}"
    return f"{u.host or 'localhost'}:{u.port or 5432}/{u.database or ''}"


def _prepare_database(settings) -> None:
    """Migrate the database, or exit with one line saying what failed (exit code 2)."""
    from .storage.database import Database
    from .storage.faults import is_connection_error
    from .storage.migrate import upgrade

    url = settings.resolved_database_url()
    db = None
    try:
        db = Database(url)
        upgrade(db.engine)
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        if not (is_connection_error(exc) or isinstance(exc, DBAPIError)):
            raise
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = detail.rsplit(" failed: ", 1)[-1].strip()  # psycopg: 'connection to server at "h", port p failed: <why>'
        typer.echo(f"fhir-server: cannot use the database at {_where(url)}: {reason}", err=True)
        raise typer.Exit(2) from None
    finally:
        if db is not None:
            db.dispose()


def uvicorn_options(settings) -> dict:
    """How `serve` runs uvicorn: our HTTP protocol (TCP_NODELAY, header/body
    deadlines), no `server` header, a bound on connections + requests in flight."""
    os.environ.setdefault("FHIR_SERVER_HTTP_HEADER_TIMEOUT", str(settings.http_header_timeout))
    os.environ.setdefault("FHIR_SERVER_HTTP_BODY_TIMEOUT", str(settings.http_body_timeout))
    return {
        "http": "fhir_server.api.protocol:NoDelayHTTPProtocol",
        "server_header": False,
        "limit_concurrency": settings.limit_concurrency or None,
        "timeout_keep_alive": 5,
        "access_log": False,  # ours (fhir_server.access) leaves query strings out
    }


def token_hint(settings, host: str, port: int) -> str:
    """The `fhir-server token` command whose token this server accepts: the audience is the
    configured FHIR base (FHIR_SERVER_AUTH_BASE_URL / FHIR_SERVER_PUBLIC_BASE_URL, which the
    token command reads too), else http://HOST:PORT/fhir as a client on this machine calls it."""
    from .auth.tokens import DEFAULT_BASE

    command = ".venv/bin/fhir-server token --scope 'system/*.*'"
    if settings.auth_base_url or settings.public_base_url:
        return command
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    audience = f"http://{shown}:{port}{settings.base_path.rstrip('/')}"
    return command if audience == DEFAULT_BASE else f"{command} --audience {audience}"


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
    port: int = typer.Option(8080, help="HTTP port; the FHIR base is http://HOST:PORT/fhir"),
    workers: int = typer.Option(1, help="Worker processes"),
    database_url: str = typer.Option(None, envvar="FHIR_SERVER_DATABASE_URL", help="SQLAlchemy URL; default: SQLite under ./data/"),
    mllp_port: int = typer.Option(0, envvar="FHIR_SERVER_MLLP_PORT", help="Listen for HL7 v2 over MLLP on this port (0 = off)"),
    mllp_host: str = typer.Option(None, envvar="FHIR_SERVER_MLLP_HOST", help="Interface for the MLLP listener; default: --host"),
    log_level: str = typer.Option("info"),
):
    """Start the server (migrating the database first)."""
    import uvicorn

    settings = _settings(database_url)
    if mllp_port:
        os.environ["FHIR_SERVER_MLLP_PORT"] = str(mllp_port)
    os.environ["FHIR_SERVER_MLLP_HOST"] = mllp_host or host  # the MLLP listener binds where HTTP does
    logging.basicConfig(level=log_level.upper())
    _prepare_database(settings)
    typer.echo(f"FHIR base: http://{host}:{port}{settings.base_path}")
    if settings.auth.strip().lower() == "off":
        typer.echo("WARNING: FHIR_SERVER_AUTH=off - every request is allowed without a token (local experiments only)")
    else:
        typer.echo(f"Every request needs a bearer token. Get one with: {token_hint(settings, host, port)}")
    uvicorn.run(
        "fhir_server.api.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        **uvicorn_options(settings),
    )


@app.command()
def migrate(database_url: str = typer.Option(None, envvar="FHIR_SERVER_DATABASE_URL")):
    """Bring the database schema up to date."""
    settings = _settings(database_url)
    _prepare_database(settings)
    typer.echo("database is up to date")


@app.command()
def load(
    paths: list[str] = typer.Argument(..., help="Bundles, resources or NDJSON files, or folders of them"),
    database_url: str = typer.Option(None, envvar="FHIR_SERVER_DATABASE_URL"),
    workers: int = typer.Option(1, help="Parallel loader processes"),
):
    """Bulk-load data; re-running skips what is already loaded."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .loader import count_resources, load_paths

    settings = _settings(database_url)
    _prepare_database(settings)
    total = count_resources(paths)
    console = Console(stderr=True)
    started = time.perf_counter()
    done = {"n": 0}
    columns = (TextColumn("[bold]loading"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]} resources/s"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("load", total=total, rate="0")

        def on_file(result):
            done["n"] += result.resources
            rate = done["n"] / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=result.resources, rate=f"{rate:,.0f}")

        results = load_paths(settings, paths, workers=workers, on_file=on_file)
    elapsed = time.perf_counter() - started
    loaded = sum(r.resources for r in results)
    skipped = sum(1 for r in results if r.skipped)
    failed = [r for r in results if r.failures]
    console.print(f"{loaded} resources from {len(results) - skipped} files in {elapsed:.1f} s ({loaded / max(elapsed, 1e-9):,.0f}/s); {skipped} files already loaded")
    for r in failed:
        console.print(f"[red]{r.path}[/red]: {len(r.failures)} failure(s)")
        for f in r.failures[:5]:
            console.print(f"  {f}")
    raise typer.Exit(1 if failed else 0)


def _hl7_context(database_url: str | None):
    from .hl7v2.service import make_apply_transaction
    from .plugins import install
    from .storage.database import Database

    settings = _settings(database_url)
    install(settings)
    _prepare_database(settings)
    db = Database(settings.resolved_database_url())
    return db, make_apply_transaction(db, settings)


@hl7.command("replay")
def hl7_replay(
    message_id: int = typer.Argument(None, help="Inbound message id; default: every message that failed"),
    force: bool = typer.Option(False, help="Replay even a message that was applied"),
    database_url: str = typer.Option(None, envvar="FHIR_SERVER_DATABASE_URL"),
):
    """Apply stored inbound HL7 v2 messages again."""
    from .hl7v2.inbound import replay

    db, apply = _hl7_context(database_url)
    for row in replay(db.engine, message_id, apply_transaction=apply, force=force):
        typer.echo(" ".join(f"{k}={v}" for k, v in row.items()))


@hl7.command("inbound")
def hl7_inbound(status: str = typer.Option(None), database_url: str = typer.Option(None, envvar="FHIR_SERVER_DATABASE_URL")):
    """List recent inbound HL7 v2 messages and their outcome."""
    from .hl7v2.inbound import inbound_status

    db, _ = _hl7_context(database_url)
    for row in inbound_status(db.engine, status):
        typer.echo(" ".join(f"{k}={v}" for k, v in row.items() if k != "raw"))


@hl7.command("outbox")
def hl7_outbox(
    status: str = typer.Option(None, help="pending, sent or failed"),
    retry: bool = typer.Option(False, help="Requeue failed messages"),
    deliver: bool = typer.Option(False, help="Attempt delivery of due messages now"),
    database_url: str = typer.Option(None, envvar="FHIR_SERVER_DATABASE_URL"),
):
    """Show the outbound HL7 v2 queue and its delivery state."""
    from .hl7v2 import outbound

    db, _ = _hl7_context(database_url)
    if retry:
        typer.echo(f"requeued {outbound.retry_failed(db.engine)} message(s)")
    if deliver:
        outbound.deliver_pending(db.engine)
    for row in outbound.outbox_status(db.engine, status):
        typer.echo(" ".join(f"{k}={v}" for k, v in row.items() if k != "message"))


notify = typer.Typer(help="Patient notifications (e-mail, SMS)", no_args_is_help=True)
app.add_typer(notify, name="notify")


@notify.command("status")
def notify_status(
    send: bool = typer.Option(False, help="Send what is due now (and requeue what waited for a channel) before reporting"),
    database_url: str = typer.Option(None, envvar="FHIR_SERVER_DATABASE_URL"),
):
    """Channels, deliveries by state, what waits (and why) and what failed."""
    import json

    from .jobs.runner import run_pending
    from .notify.delivery import requeue_waiting
    from .notify.status import status
    from .plugins import install
    from .storage.database import Database
    from .storage.migrate import upgrade

    settings = _settings(database_url)
    install(settings)
    db = Database(settings.resolved_database_url())
    upgrade(db.engine)
    if send:
        requeue_waiting(db, settings)
        typer.echo(f"ran {run_pending(db, settings, kinds=['notify.send'])} delivery job(s)")
    typer.echo(json.dumps(status(db, settings), indent=2, ensure_ascii=False, default=str))
    db.dispose()


keys_app = typer.Typer(help="Signing keys of the built-in authorization server", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _auth_db(database_url: str | None):
    from .storage.database import Database
    from .storage.migrate import upgrade

    settings = _settings(database_url)
    db = Database(settings.resolved_database_url())
    upgrade(db.engine)
    return settings, db


@app.command()
def token(
    scope: str = typer.Option("system/*.*", help="Space-separated SMART scopes, e.g. 'system/*.*' or 'patient/*.rs'"),
    patient: str = typer.Option(None, help="Patient id: the token's SMART patient context"),
    national_id: str = typer.Option(None, "--national-id", help="SYSTEM|VALUE: resolve the patient by national identifier"),
    fhir_user: str = typer.Option(None, "--fhir-user", help="fhirUser, e.g. Practitioner/123"),
    ttl: int = typer.Option(None, help="Lifetime in seconds (default FHIR_SERVER_AUTH_TOKEN_TTL)"),
    audience: str = typer.Option(None, help="The FHIR base the token is for (default FHIR_SERVER_AUTH_BASE_URL or http://127.0.0.1:8080/fhir)"),
    database_url: str = typer.Option(None, envvar="FHIR_SERVER_DATABASE_URL"),
):
    """Print a signed access token from the built-in issuer (for scripts and tests)."""
    from .auth.tokens import cli_token

    settings = _settings(database_url)
    db = _auth_db(database_url)[1] if national_id or not settings.auth_signing_key_file else None
    if national_id:
        from .auth.identity import resolve
        from .errors import FhirError

        system, sep, value = national_id.partition("|")
        if not sep:
            raise typer.BadParameter("use SYSTEM|VALUE", param_hint="--national-id")
        try:
            patient = resolve(db, system, value)
        except FhirError as exc:
            raise typer.BadParameter(exc.issues[0].diagnostics, param_hint="--national-id") from None
        if patient is None:
            typer.echo(f"no Patient has the national identifier {national_id}", err=True)
            raise typer.Exit(1)
    if patient and not fhir_user:
        fhir_user = f"Patient/{patient}"
    if not fhir_user and any(s.startswith("user/") for s in scope.split()):
        raise typer.BadParameter("user/ scopes need the user: add --fhir-user Practitioner/ID (or --patient ID)", param_hint="--scope")
    typer.echo(cli_token(settings, db, scope, patient=patient, fhir_user=fhir_user, ttl=ttl, audience=audience))


client_app = typer.Typer(help="OAuth clients of the built-in authorization server", no_args_is_help=True)
app.add_typer(client_app, name="client")


@client_app.command("add")
def client_add(
    client_id: str = typer.Argument(..., help="The client_id"),
    scope: str = typer.Option(..., help="Scopes the client may be granted, e.g. 'system/*.rs' or 'openid fhirUser launch/patient patient/*.rs'"),
    redirect_uri: list[str] = typer.Option(None, "--redirect-uri", help="Redirect URI (repeatable) for authorization-code clients"),
    jwks_file: str = typer.Option(None, help="JWKS file with the client's public keys (backend services, private_key_jwt)"),
    jwks_url: str = typer.Option(None, help="JWKS URL of the client's public keys (backend services, private_key_jwt)"),
    secret: str = typer.Option(None, help="A client secret (confidential client, client_secret_basic)"),
    database_url: str = typer.Option(None, envvar="FHIR_SERVER_DATABASE_URL"),
):
    """Register (or replace) an OAuth client: public (PKCE), confidential (secret) or backend (JWKS)."""
    import json as _json

    from .auth.clients import add_client, hash_secret

    _, db = _auth_db(database_url)
    meta: dict = {"client_id": client_id, "scope": scope, "redirect_uris": list(redirect_uri or [])}
    if jwks_file:
        meta["jwks"] = _json.loads(open(jwks_file).read())
    if jwks_url:
        meta["jwks_uri"] = jwks_url
    if jwks_file or jwks_url:
        meta["token_endpoint_auth_method"] = "private_key_jwt"
    elif secret:
        meta["token_endpoint_auth_method"] = "client_secret_basic"
        meta["client_secret_sha256"] = hash_secret(secret)
    else:
        meta["token_endpoint_auth_method"] = "none"
    try:
        add_client(db.engine, meta)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"client {client_id} registered ({meta['token_endpoint_auth_method']})")


@keys_app.command("rotate")
def keys_rotate(database_url: str = typer.Option(None, envvar="FHIR_SERVER_DATABASE_URL")):
    """Make a new signing key; the old one still verifies until its tokens expire."""
    from .auth.keys import rotate

    settings, db = _auth_db(database_url)
    try:
        kid = rotate(db.engine, settings)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"new signing key {kid}")


if __name__ == "__main__":  # pragma: no cover
    app()


audit_app = typer.Typer(help="The access log (IHE BALP AuditEvents)", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("export")
def audit_export(
    since: str = typer.Option(None, help="Only events recorded at or after this date/instant (UTC), e.g. 2026-01-01"),
    until: str = typer.Option(None, help="Only events recorded before this date/instant (UTC)"),
    database_url: str = typer.Option(None, envvar="FHIR_SERVER_DATABASE_URL"),
):
    """Write the stored AuditEvents to stdout as NDJSON (one resource per line)."""
    import sys

    from .audit.export import export_ndjson, parse_bound

    try:
        low, high = parse_bound(since), parse_bound(until)
    except ValueError as exc:
        typer.echo(f"--since/--until: {exc}", err=True)
        raise typer.Exit(2)
    _settings_, db = _auth_db(database_url)
    n = export_ndjson(db, sys.stdout.buffer, low, high)
    sys.stdout.buffer.flush()
    typer.echo(f"{n} AuditEvents written", err=True)
