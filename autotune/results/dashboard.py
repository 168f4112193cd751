"""The live optuna-dashboard on a storage, bound to 127.0.0.1."""

from __future__ import annotations

from typing import Callable

from autotune.errors import AutotuneError
from autotune.storage import display_url, load_study, open_existing_storage


def serve_dashboard(storage_url: str, study_name: str | None, port: int, *, say: Callable[[str], None] = print) -> None:
    """Run optuna-dashboard on ``storage_url``, bound to 127.0.0.1, until interrupted."""
    try:
        import optuna_dashboard
    except ImportError:
        raise AutotuneError("optuna-dashboard is not installed: pip install optuna-dashboard "
                            "(or pip install -e '.[dashboard]')") from None
    storage = open_existing_storage(storage_url)
    path = "dashboard/"
    if study_name is not None:
        load_study(storage, study_name)  # an unknown name: one line listing the studies
        path += f"studies/{storage.get_study_id_from_name(study_name)}"
    say(f"optuna-dashboard for {display_url(storage_url)} on http://127.0.0.1:{port}/{path} (Ctrl-C stops it)")
    try:
        optuna_dashboard.run_server(storage, host="127.0.0.1", port=port)
    except OSError as exc:
        raise AutotuneError(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}; pick another --port") from None

