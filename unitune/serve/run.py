"""`unitune serve`: load the engine, bind the socket, run uvicorn until SIGTERM / Ctrl-C.

The socket is bound before uvicorn starts, so `--serve.port 0` works and the
printed address is the real one. On SIGTERM uvicorn stops accepting
connections and lets in-flight requests (streams included) finish for up to
`serve.shutdown_timeout` seconds; then the engine cancels whatever is left and
the process exits 0.
"""

import contextlib
import signal
import socket
import sys

from unitune.errors import UnituneError


def parse_adapters(specs: list[str]) -> dict[str, str]:
    adapters = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UnituneError(f"serve.adapters: '{spec}' should look like NAME=ADAPTER_FOLDER")
        if name in adapters:
            raise UnituneError(f"serve.adapters: the name '{name}' is given twice")
        adapters[name] = path
    return adapters


def bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        raise UnituneError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(cfg) -> int:
    import uvicorn

    from unitune.infer.config import load_engine
    from unitune.serve.app import create_app

    adapters = parse_adapters(cfg.serve.adapters)
    base_name = cfg.serve.model_name or cfg.model.name
    if base_name in adapters:
        raise UnituneError(f"serve.adapters: '{base_name}' is already the base model's name")
    sock = bind(cfg.serve.host, cfg.serve.port)  # fail fast on a taken port, before loading the model
    engine = load_engine(cfg, adapters)
    models = {base_name: engine.default_adapter, **{name: name for name in adapters}}
    app = create_app(engine, models, cfg)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"unitune: serving {', '.join(models)} on http://{shown}:{port}/v1"
          f"{' (API key required)' if cfg.serve.api_key else ''}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=cfg.serve.shutdown_timeout)
    try:
        _server_class()(config).run(sockets=[sock])
    finally:
        engine.close()
        sock.close()
    print("unitune: server stopped", file=sys.stderr, flush=True)
    return 0


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, minus re-raising SIGTERM after its graceful shutdown (so we exit 0)."""

        @contextlib.contextmanager
        def capture_signals(self):
            previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    return Server
