"""`triage` command line: serve, mock-upstream, and the classifier/accounting commands."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import logging  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Optional  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Triage: a cost-aware, OpenAI-compatible LLM gateway.")
console = Console(stderr=True)


def state_dir_default() -> Path:
    return Path(os.environ.get("TRIAGE_STATE_DIR", ".triage"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the simulated upstream exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the simulated upstream did not start in time")


def _master_key(state_dir: Path) -> str:
    """Embedded defaults get a persistent generated master key, so restarts keep working clients."""
    f = state_dir / "master.key"
    if f.exists():
        return f.read_text().strip()
    key = "sk-triage-master-" + secrets.token_urlsafe(24)
    state_dir.mkdir(parents=True, exist_ok=True)
    f.write_text(key)
    f.chmod(0o600)
    return key


@app.command()
def serve(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (LiteLLM model_list + tiers). Omit for embedded defaults."),
    host: str = typer.Option("127.0.0.1", envvar="TRIAGE_HOST", help="Interface to bind."),
    port: int = typer.Option(8000, envvar="TRIAGE_PORT", help="Port to listen on."),
    workers: int = typer.Option(1, min=1, help="Worker processes (they share Redis, so budgets hold across them)."),
    redis_url: Optional[str] = typer.Option(None, "--redis-url", envvar="REDIS_URL", help="Use this Redis; otherwise a private one is started."),
    state_dir: Path = typer.Option(None, "--state-dir", help="Where the embedded Redis keeps its data (default .triage/ or TRIAGE_STATE_DIR)."),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Start the proxy. With no flags: private Redis + simulated upstream, ready for a first request."""
    import uvicorn

    from accounting.redis_server import EmbeddedRedis
    from router.config import ConfigError, TriageConfig

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.WARNING), format="%(levelname)s %(name)s: %(message)s")
    # uvicorn re-raises the signal it stopped on once it has shut down; make SIGTERM unwind like
    # SIGINT does, so the `finally` below still stops the embedded Redis and the simulated upstream.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    state_dir = state_dir or state_dir_default()
    cleanups: list = []
    mock_proc: subprocess.Popen[bytes] | None = None
    try:
        defaults_upstream = None
        if config is None:
            mport = _free_port()
            mock_proc = subprocess.Popen([sys.executable, "-m", "simulator", "--port", str(mport)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            proc = mock_proc

            def stop_simulator() -> None:
                proc.terminate()
                proc.wait(5)

            cleanups.append(stop_simulator)
            _wait_port(mport, mock_proc)
            defaults_upstream = f"http://127.0.0.1:{mport}/v1"
        try:
            cfg = TriageConfig.load(config, defaults_upstream=defaults_upstream)
        except ConfigError as e:
            console.print(f"[red]config error[/red]\n{e}")
            raise typer.Exit(2) from None
        if cfg.derived:
            console.print(f"  {cfg.derived}")
        url = redis_url or cfg.redis_url
        if not url:
            srv = EmbeddedRedis(state_dir / "redis", persist=True).start()
            cleanups.append(srv.stop)
            url = srv.url
            (state_dir / "redis.url").write_text(url)
            cleanups.append(lambda: (state_dir / "redis.url").unlink(missing_ok=True))
        master = cfg.master_key or os.environ.get("TRIAGE_MASTER_KEY")
        if not master and config is None:
            master = _master_key(state_dir)
        cfg = cfg.model_copy(update={"redis_url": url, "master_key": master})
        os.environ["REDIS_URL"] = url
        if master:
            os.environ["TRIAGE_MASTER_KEY"] = master
        if config is not None:
            os.environ["TRIAGE_CONFIG"] = str(config.resolve())
        if defaults_upstream:
            os.environ["TRIAGE_DEFAULTS_UPSTREAM"] = defaults_upstream
        if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # every worker writes its counters here and a scrape of any worker sums them all;
            # emptied first, or a previous run's counts would be added to this one's
            import shutil

            mp = state_dir / "prometheus"
            shutil.rmtree(mp, ignore_errors=True)
            mp.mkdir(parents=True)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mp.resolve())

        base = f"http://{host}:{port}/v1"
        console.print(f"[bold green]Triage[/bold green] on {base}  (config: {cfg.source}, redis: {url}, workers: {workers})")
        if master:
            console.print(f"  api key (master): {master if config is None else '<TRIAGE_MASTER_KEY>'}")
        console.print("  client keys: triage keys create --tenant NAME")
        console.print(f'  try: OpenAI(base_url="{base}", api_key=...).chat.completions.create(model="triage/auto", messages=[...])')
        kw: dict[str, Any] = dict(host=host, port=port, log_level=log_level, access_log=False, loop="uvloop",
                  http="router.http.protocol:ShapedHttpToolsProtocol",  # parse errors OpenAI-shaped too
                  timeout_graceful_shutdown=10,
                  # Nothing here reads the client's address, so X-Forwarded-* rewriting is a per-request
                  # cost for nothing; uvicorn's own FORWARDED_ALLOW_IPS turns it back on for a proxy setup.
                  proxy_headers=bool(os.environ.get("FORWARDED_ALLOW_IPS")))
        if workers == 1:
            from router.http.app import build_app

            uvicorn.run(build_app(config=cfg, config_path=str(config) if config else None,
                                  defaults_upstream=defaults_upstream), **kw)
        else:
            uvicorn.run("router.http.app:create_app", factory=True, workers=workers, **kw)
    finally:
        for fn in reversed(cleanups):
            try:
                fn()
            except Exception:  # best-effort shutdown of helpers we started
                pass


@app.command("mock-upstream")
def mock_upstream(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(9000),
    latency_ms: float = typer.Option(0.0, help="Added latency before the response (non-stream)."),
    ttft_ms: float = typer.Option(0.0, help="Time to first token when streaming."),
    itl_ms: float = typer.Option(0.0, help="Inter-token delay when streaming."),
    completion_tokens: Optional[int] = typer.Option(None, help="Completion tokens per answer (default: model-dependent)."),
) -> None:
    """Run the simulated OpenAI-compatible upstream (deterministic usage, injectable faults)."""
    # A separate process image: production modules never import the simulator package.
    argv = [sys.executable, "-m", "simulator", "--host", host, "--port", str(port), "--latency-ms", str(latency_ms),
            "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms)]
    if completion_tokens is not None:
        argv += ["--completion-tokens", str(completion_tokens)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


config_app = typer.Typer(no_args_is_help=True, help="Inspect the configuration.")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    config: Optional[Path] = typer.Option(None, "--config", "-c", envvar="TRIAGE_CONFIG",
                                          help="YAML config (a LiteLLM proxy config works as it is)."),
) -> None:
    """Print the effective config: derived tiers, mapped LiteLLM settings, secrets redacted."""
    import yaml

    from router.config import ConfigError, TriageConfig

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = TriageConfig.load(config, defaults_upstream="http://127.0.0.1:0/v1")
    except ConfigError as e:
        console.print(f"[red]config error[/red]\n{e}")
        raise typer.Exit(2) from None
    out = cfg.model_dump(mode="json", exclude_none=True, exclude={"tiers"})
    out["tiers"] = {name: spec.model_dump(mode="json", exclude_none=True) for name, spec in cfg.tiers.items()}
    if out.get("master_key"):
        out["master_key"] = "<redacted>"
    for m in out.get("model_list", ()):
        if m.get("litellm_params", {}).get("api_key"):
            m["litellm_params"]["api_key"] = "<redacted>"
    if cfg.redis_url and "@" in cfg.redis_url:
        out["redis_url"] = "<redacted>"
    sys.stdout.write(yaml.safe_dump(out, sort_keys=False))


def _register_commands() -> None:
    from router.commands import accounting as acct_cmds
    from router.commands import cascade as cascade_cmds
    from router.commands import classifier as clf_cmds
    from router.commands import forecast as forecast_cmds
    from router.commands import workflows as workflow_cmds

    clf_cmds.register(app)
    acct_cmds.register(app)
    cascade_cmds.register(app)
    forecast_cmds.register(app)
    workflow_cmds.register(app)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
