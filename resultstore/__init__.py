"""The results layer (`resultstore`): the bottom floor, importing nothing else of the project.

    uri       which roots are allowed; local vs object store decided here only
    backend   bytes on local/NFS, S3-compatible or other pyarrow storage
    format    the format version, schemas and every file name
    store     ResultStore: a study's files (study.json, status, Parquet)
    trial     store.trial(id): one trial's segments, checkpoints and end, fenced
    lease     one driver per study, fenced generations
    compact   finished trials merged, published atomically
    check     finding and repairing hidden or duplicated rows
"""
from resultstore.backend import StorageIOError
from resultstore.format import FINISHED, FORMAT_VERSION, SCHEMAS, STATES, TABLES
from resultstore.store import ResultStore, code_version
from resultstore.trial import FencedOut, TrialHandle, checkpoint_bytes
from resultstore.uri import StoreError

__all__ = ["FINISHED", "FORMAT_VERSION", "SCHEMAS", "STATES", "TABLES", "FencedOut",
           "ResultStore", "StorageIOError", "StoreError", "TrialHandle", "checkpoint_bytes",
           "code_version"]
