"""Where a search's Optuna study lives, chosen by `search.optuna.storage`:

  local (default; `sqlite` is the same)  no server needed.
      A local results root: DIR/STUDY/optuna.db (SQLite), as always, with a lock timeout
      (`sqlite_url`) so that optuna-dashboard can read it while the search runs.
      An object-store root (s3://...): Optuna's JournalStorage in a file on the driver's
      local disk, mirrored to STUDY/optuna/journal/ after every ask and every tell. The
      journal is append-only, so each mirror step uploads only the bytes added since the
      last one, as a new object named by its byte offset: the cost per step is one PUT of
      a few hundred bytes, whatever the trial count. `vaestudy resume` (also on a new head
      node) rebuilds the local file from those pieces before Optuna opens it, so a SIGKILL
      never leaves Parquet rows of a trial Optuna forgot: a trial reaches Tune only after
      its ask is mirrored.
  an RDB URL (postgresql://user@host/db, ...)  the study lives in that database. A plain
      postgresql:// URL uses psycopg 3 when psycopg2 is not installed. study.json records
      the spec, and may sit on shared object storage, so a new study's URL may not hold a
      password: `${VAR}` in the URL is read from the driver's environment when it connects
      (postgresql://vae:${PGPASS}@host/db), and libpq reads PGPASSWORD and ~/.pgpass when
      the URL has no password at all.

`check` opens nothing on storage and runs before Ray starts: a missing driver or an
unreachable database is one line and exit 2.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from study.inputs import UsageError
from resultstore.store import ResultStore

PIECE = re.compile(r"(\d{15})\.log$")
SQLITE_TIMEOUT_S = 60       # how long a write waits for a reader's lock (optuna-dashboard's)
ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def driver_dir(store: ResultStore) -> Path:
    """This study's folder on the driver's local disk (Tune's folder, the Optuna journal):
    $VAESTUDY_TUNE_DIR, else ~/ray_results/vaestudy/, then a hash of the study's location."""
    base = os.environ.get("VAESTUDY_TUNE_DIR") or os.path.expanduser("~/ray_results/vaestudy")
    return Path(base) / hashlib.sha256(store.uri().encode()).hexdigest()[:12]


class Storage:
    """The Optuna storage of one search: `optuna` is what optuna.create_study takes, `sync`
    runs after every write to it, `name` is what logs show (no password)."""

    def __init__(self, optuna_storage, name: str, mirror: "JournalMirror | None" = None):
        self.optuna, self.name, self.mirror = optuna_storage, name, mirror

    def sync(self) -> None:
        if self.mirror is not None:
            self.mirror.sync()


def refuse_password(setting: str) -> None:
    """A new study's storage URL holds no literal password (study.json would record it);
    `${VAR}` in its place is fine. Studies recorded before this rule still resume."""
    pw = None if setting == "local" else _password(setting)
    if pw is not None and not ENV_VAR.fullmatch(pw):
        raise UsageError(
            f"search.optuna.storage: {_safe(setting)} holds a password, which study.json would "
            "record; allowed: ${VAR} in its place, read from the driver's environment "
            "(postgresql://user:${PGPASS}@host/db), or no password and PGPASSWORD or "
            "~/.pgpass, which libpq reads")


def _password(url: str) -> str | None:
    """The URL's password as written (a ${VAR} kept as such), or None."""
    from sqlalchemy.engine import make_url

    try:                                    # ${...} marked, so the URL parser sees a word
        pw = make_url(ENV_VAR.sub(lambda m: f"__env_{m[1]}__", url)).password
    except Exception:                       # not a URL SQLAlchemy parses: the driver says so
        return None
    return None if pw is None else re.sub(r"__env_([A-Za-z_]\w*)__",
                                          lambda m: "${" + m[1] + "}", pw)


def expand(setting: str) -> str:
    """The URL with each ${VAR} replaced from the environment, URL-encoded as a password
    must be (so '@', ':' and '/' in it are safe); an unset one is one line."""
    from urllib.parse import quote

    def value(m: re.Match) -> str:
        if m[1] not in os.environ:
            raise UsageError(f"search.optuna.storage: ${{{m[1]}}} is not set in the driver's "
                             f"environment; allowed: export {m[1]}=... before vaestudy runs")
        return quote(os.environ[m[1]], safe="")

    return ENV_VAR.sub(value, setting)


def open_storage(setting: str, store: ResultStore) -> Storage:
    if setting != "local":
        url = rdb_url(expand(setting))
        return Storage(url, _safe(url))
    if store.local:
        return Storage(sqlite_url(store), store.path("optuna.db"))
    mirror = JournalMirror(store, driver_dir(store) / "optuna")
    mirror.restore()
    return Storage(mirror.storage(), f"{mirror.path} (mirrored to "
                   f"{store.uri('optuna', 'journal')})", mirror)


def sqlite_url(store: ResultStore) -> str:
    """The local SQLite study with a lock timeout (SQLAlchemy hands `timeout` to sqlite3): a
    dashboard reading it holds a shared lock that a write waits for instead of failing at
    once with "database is locked" (optuna-dashboard issue 545). Give the dashboard the same
    URL, so that its reads wait for our writes too."""
    return f"sqlite:///{store.path('optuna.db')}?timeout={SQLITE_TIMEOUT_S}"


def check(setting: str) -> None:
    """An RDB URL's driver is installed and its server answers; nothing is written."""
    if setting == "local":
        return
    import sqlalchemy

    url = rdb_url(expand(setting))
    args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=args)
        with engine.connect():
            pass
        engine.dispose()
    except ImportError as e:
        raise UsageError(f"search.optuna.storage: {_safe(url)} needs a database driver that is "
                         f"not installed ({e}); pip install 'vaestudy[postgres]'") from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        first = str(getattr(e, "orig", e)).strip().splitlines()[0][:200]
        raise UsageError(f"search.optuna.storage: cannot connect to {_safe(url)}: {first}") from None


def rdb_url(url: str) -> str:
    """postgresql:// with whichever PostgreSQL driver is installed (psycopg2, else psycopg 3)."""
    if not url.startswith("postgresql://"):
        return url
    for module, dialect in (("psycopg2", "postgresql+psycopg2://"),
                            ("psycopg", "postgresql+psycopg://")):
        try:
            __import__(module)
            return dialect + url[len("postgresql://"):]
        except ImportError:
            continue
    raise UsageError("search.optuna.storage: a postgresql:// URL needs a PostgreSQL driver; "
                     "none is installed; pip install 'vaestudy[postgres]' (psycopg)")


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:                       # not a URL SQLAlchemy parses: show no part of it
        return url.split("://")[0] + "://..."


class JournalMirror:
    """An Optuna journal file on the driver's disk, mirrored as append-only pieces."""

    def __init__(self, store: ResultStore, folder: Path):
        self.store, self.folder = store, folder
        self.path = folder / "journal.log"
        self.sent = 0                                  # bytes of the file already mirrored

    def storage(self):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str(self.path)))

    def pieces(self) -> list[tuple[int, str]]:
        where = self.store.path("optuna", "journal")
        return sorted((int(m[1]), f"{where}/{name}") for name in self.store.listdir(where)
                      if (m := PIECE.fullmatch(name)))

    def restore(self) -> None:
        """Rebuild the local file from the mirror (authoritative; empty for a new search)."""
        data = b""
        for offset, path in self.pieces():
            if offset != len(data):
                raise UsageError(f"{self.store.uri('optuna', 'journal')}: piece at byte "
                                 f"{offset} after {len(data)} bytes; the mirror is damaged")
            data += self.store.read_bytes(path)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("journal.log*"):    # the file and its lock
            stale.unlink()
        self.path.write_bytes(data)
        self.sent = len(data)

    def sync(self) -> None:
        """Upload the complete lines written since the last sync, as one new piece."""
        with open(self.path, "rb") as f:
            f.seek(self.sent)
            new = f.read()
        end = new.rfind(b"\n") + 1
        if end:
            self.store.write_bytes(self.store.path("optuna", "journal", f"{self.sent:015d}.log"),
                                   new[:end])
            self.sent += end
