"""`fangpin serve`, `fangpin keys add|list|revoke`, `fangpin audit`. Imports happen inside commands."""

from __future__ import annotations

from pathlib import Path

import typer


def _print_demo_keys(params) -> None:
    """One new key per role, scoped to the first county/township that has warnings (else '*')."""
    from fangpin.store import Store

    store = Store.from_params(params)
    page = store.query_warnings(limit=1)
    county, township = (page.items[0].county, page.items[0].township) if page.items else (None, None)
    scopes = {
        "county_system": county, "department": county, "township_cadre": f"{county}/{township}" if county else None,
        "county": county, "analyst": "*", "admin": "*",
    }
    typer.echo("演示密钥 (demo keys, shown once):")
    for role, scope in scopes.items():
        if scope is None:
            typer.echo(f"  {role:15s} (no warnings in the store yet: run `fangpin score` first)")
            continue
        _, key = store.add_key(role, scope, label="demo")
        typer.echo(f"  {role:15s} {scope:20s} {key}")
    store.dispose()


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="API 密钥管理（密钥只以哈希形式保存）。", no_args_is_help=True)

    @app.command()
    def serve(
        host: str = typer.Option(None, help="listen address (default: params serving.host)"),
        port: int = typer.Option(None, help="port (default: params serving.port)"),
        params_file: Path = typer.Option(None, "--params", help="params.yaml to use"),
        demo_keys: bool = typer.Option(False, "--demo-keys", help="create and print one key per role (demo)"),
    ) -> None:
        """Start the scoring API and the cadre page (model: params serving.model_uri)."""
        import uvicorn

        from fangpin.config import load_params
        from serving.app import create_app

        p = load_params(params_file)
        h, po = host or p.serving.host, port or p.serving.port
        if demo_keys:
            _print_demo_keys(p)
        typer.echo(f"API:      http://{h}:{po}/docs")
        typer.echo(f"干部页面: http://{h}:{po}/cadre/")
        from fangpin.logs import server_log_config

        # log lines carry the request id; ID/phone numbers masked, no tracebacks (fangpin.logs)
        uvicorn.run(create_app(p), host=h, port=po, log_level="info", log_config=server_log_config("info"))

    @keys.command("add")
    def keys_add(
        role: str = typer.Option(..., help="county_system | department | township_cadre | county | analyst | admin"),
        scope: str = typer.Option(..., help="'*', a county ('青石县') or 'county/township' ('青石县/兴兴镇')"),
        label: str = typer.Option(None, help="a note to recognise the key by"),
    ) -> None:
        """Create a key. The key itself is printed once, alone on the last line."""
        from fangpin.config import load_params
        from fangpin.store import Store

        try:
            info, key = Store.from_params(load_params()).add_key(role, scope, label=label)
        except ValueError as exc:
            typer.echo(f"错误：{exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"id={info.id} role={info.role} scope={info.scope}")
        typer.echo(key)

    @keys.command("list")
    def keys_list(all_: bool = typer.Option(False, "--all", help="include revoked keys")) -> None:
        """List keys (id, role, scope, label, created, revoked); never the keys themselves."""
        from fangpin.config import load_params
        from fangpin.store import Store

        for k in Store.from_params(load_params()).list_keys(include_revoked=all_):
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked else "active"
            typer.echo(f"{k.id}\t{k.role}\t{k.scope}\t{k.label or ''}\t{k.created_at:%Y-%m-%d %H:%M}\t{state}")

    @keys.command("revoke")
    def keys_revoke(key_id: str = typer.Argument(..., help="key id (from `fangpin keys list`)")) -> None:
        """Revoke a key (it stops working at once)."""
        from fangpin.config import load_params
        from fangpin.store import Store

        try:
            info = Store.from_params(load_params()).revoke_key(key_id)
        except KeyError:
            typer.echo(f"错误：没有 id 为 {key_id} 的密钥", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"revoked {info.id} ({info.role} {info.scope})")

    app.add_typer(keys, name="keys")

    @app.command()
    def audit(
        out: Path = typer.Option(..., "--out", "-o", help="output file: .csv, else JSON lines"),
        since: str = typer.Option(None, help="ISO date/time, inclusive"),
        until: str = typer.Option(None, help="ISO date/time, exclusive"),
        key_id: str = typer.Option(None, help="only this key's requests"),
    ) -> None:
        """Export the audit trail (household ids appear only as keyed hashes)."""
        from datetime import datetime

        from fangpin.config import load_params
        from fangpin.store import Store

        def when(s: str | None):
            return datetime.fromisoformat(s) if s else None

        n = Store.from_params(load_params()).audit_export(out, since=when(since), until=when(until), key_id=key_id)
        typer.echo(f"{n} audit rows → {out}")
